"""The user's own pages: profile (password, language), the forced change of a one-time
password, the global search, and the small pieces the shell refreshes (the PBX state)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from contact_center.http import auth
from contact_center.i18n import LANGUAGES
from contact_center.keys import BUS, RULES, SESSIONS, SETTINGS
from contact_center.web.shell import (
    PASSWORD_PAGE,
    flash,
    language,
    page,
    pbx_state,
    remember_language,
    render,
    session_user,
    t_of,
)
from crm_core.clients.search import ClientFilter, list_companies, list_contacts
from crm_core.deals import service as deals
from crm_core.leads import service as leads
from crm_core.users import service as users
from crm_core.users.errors import InvalidCredentials
from crm_core.users.model import TokenKind, User

MENU = ()
SEARCH_LIMIT = 10


async def _new_session(request: web.Request, user: User, response: web.StreamResponse) -> None:
    """A password change ends every session; the one changing it gets a fresh one."""
    settings = request.app[SETTINGS]
    ttl = timedelta(hours=settings.auth.session_ttl_hours)
    async with request.app[SESSIONS]() as session:
        fresh = await users.get_user(session, user.id)
        assert fresh is not None
        issued = await users.issue_token(session, fresh, kind=TokenKind.SESSION, ttl=ttl)
        await session.commit()
    auth.set_session_cookie(request, response, issued.secret, ttl)


async def _change_password(request: web.Request, user: User) -> dict[str, str]:
    """Check the form and change the password; the field errors (empty: changed)."""
    t = t_of(request)
    form = await request.post()
    current = str(form.get("current_password", ""))
    new = str(form.get("new_password", ""))
    again = str(form.get("new_password_again", ""))
    problems: dict[str, str] = {}
    if len(new) < users.MIN_PASSWORD_LENGTH:
        problems["new_password"] = t("password.too_short", n=users.MIN_PASSWORD_LENGTH)
    elif new != again:
        problems["new_password_again"] = t("password.mismatch")
    elif new == current:
        problems["new_password"] = t("password.same")
    if problems:
        return problems
    settings = request.app[SETTINGS]
    async with request.app[SESSIONS]() as session:
        try:
            fresh = await users.authenticate(
                session, user.login, current, scrypt_n=settings.auth.scrypt_n
            )
        except InvalidCredentials:
            return {"current_password": t("password.wrong_current")}
        revoked = await users.set_password(session, fresh, new, scrypt_n=settings.auth.scrypt_n)
        await session.commit()
    await request.app[BUS].publish(revoked)  # every other page of his is closed
    return {}


@page("account/password.html", allow_password_change_pending=True)
async def password_page(request: web.Request, user: User) -> Any:
    t = t_of(request)
    data: dict[str, Any] = {"title": t("password.title"), "errors": {}, "forced": True}
    if request.method == "POST":
        data["errors"] = await _change_password(request, user)
        if not data["errors"]:
            response = web.HTTPSeeOther("/")
            await _new_session(request, user, response)
            flash(response, "password")
            raise response
        data["_status"] = 422
    return data


@page("account/profile.html")
async def profile_page(request: web.Request, user: User) -> Any:
    t = t_of(request)
    data: dict[str, Any] = {
        "title": t("user.profile"),
        "errors": {},
        "languages": LANGUAGES,
        "current_lang": user.locale or language(request),
    }
    if request.method == "POST":
        form = await request.post()
        what = form.get("form")
        if what == "password":
            data["errors"] = await _change_password(request, user)
            if data["errors"]:
                data["_status"] = 422
            else:
                response = web.HTTPSeeOther("/settings/profile")
                await _new_session(request, user, response)
                flash(response, "password")
                raise response
        elif what == "language":
            lang = str(form.get("locale", ""))
            async with request.app[SESSIONS]() as session:
                fresh = await users.get_user(session, user.id)
                assert fresh is not None
                await users.update_user(session, fresh, locale=lang)
                await session.commit()
            response = web.HTTPSeeOther("/settings/profile")
            remember_language(response, lang)
            raise response
    return data


async def pbx_state_partial(request: web.Request) -> web.StreamResponse:
    session_user(request)
    return await render("_pbx_state.html", request, {"pbx_state": pbx_state(request.app)})


@page("account/search.html")
async def search_page(request: web.Request, user: User) -> Any:
    """One box for clients, leads and deals: a name, a phone in any format or its last digits,
    an e-mail, an INN (the same search as the lists)."""
    t = t_of(request)
    q = request.query.get("q", "").strip()[:200]
    rules = request.app[RULES]
    found: dict[str, Any] = {"contacts": [], "companies": [], "leads": [], "deals": []}
    totals = dict.fromkeys(found, 0)
    if q:
        async with request.app[SESSIONS]() as session:
            flt = ClientFilter(q=q)
            found["contacts"], totals["contacts"] = await list_contacts(
                session, flt, actor=user, rules=rules, limit=SEARCH_LIMIT, count_cap=100
            )
            found["companies"], totals["companies"] = await list_companies(
                session, flt, actor=user, rules=rules, limit=SEARCH_LIMIT, count_cap=100
            )
            found["leads"], totals["leads"] = await leads.list_leads(
                session,
                leads.LeadFilter(q=q),
                actor=user,
                rules=rules,
                limit=SEARCH_LIMIT,
                count_cap=100,
            )
            found["deals"], totals["deals"] = await deals.list_deals(
                session,
                deals.DealFilter(q=q),
                actor=user,
                rules=rules,
                limit=SEARCH_LIMIT,
                count_cap=100,
            )
    return {
        "title": t("search.title"),
        "search_q": q,
        "found": found,
        "totals": totals,
        "nothing": q and not any(found.values()),
    }


def routes(app: web.Application) -> None:
    app.router.add_route("*", PASSWORD_PAGE, password_page)
    app.router.add_route("*", "/settings/profile", profile_page)
    app.router.add_get("/ui/pbx-state", pbx_state_partial)
    app.router.add_get("/search", search_page)
