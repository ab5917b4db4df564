"""The workspace shell every page plugs into: menu entries, the page decorator (session, forced
password change, roles, CSRF, htmx partials, translated error pages) and the context every
template gets (user, menu, CSRF token, language, formats, notifications, PBX state).

A page module declares ``MENU`` (a tuple of :class:`MenuEntry`) and ``setup(app)`` adding its
routes; :mod:`contact_center.web.pages` lists the modules. Nothing else needs to know a page
exists.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp_jinja2
from aiohttp import web
from yarl import URL

from contact_center.http.api import AUTH_KIND, USER
from contact_center.http.security import script_json
from contact_center.i18n import (
    LANGUAGES,
    Translate,
    error_text,
    pick_language,
    table,
    translator,
)
from contact_center.keys import CLOCK, PBX, RULES, SESSIONS, SETTINGS
from contact_center.web import formats
from crm_core import errors
from crm_core.conversations import service as conversations
from crm_core.notifications import service as notifications
from crm_core.users.model import Role, TokenKind, User

ADMIN = Role.ADMIN.value
HEAD = Role.HEAD.value
MANAGER = Role.MANAGER.value
EVERYONE: frozenset[str] | None = None
HEADS = frozenset({HEAD, ADMIN})
PASSWORD_PAGE = "/settings/password"
# One-time confirmations carried over a redirect (cookie value -> message key).
FLASH_COOKIE = "cc_flash"
FLASHES = {"password": "password.changed"}

MENU_KEY = web.AppKey("web_menu", tuple)
LANG = web.RequestKey("web_lang", str)


@dataclass(frozen=True)
class MenuEntry:
    """One item of the left menu. ``roles`` None: everyone; admins see every entry."""

    key: str
    path: str
    label: str  # message id
    icon: str  # symbol id in static/icons.svg
    order: int
    roles: frozenset[str] | None = EVERYONE
    group: str = "main"  # "main" or "head" (the head of sales' block)


def allowed(user: User, roles: frozenset[str] | None) -> bool:
    return roles is None or user.role == ADMIN or user.role in roles


def menu_for(app: web.Application, user: User) -> list[MenuEntry]:
    return [e for e in app[MENU_KEY] if allowed(user, e.roles)]


def build_menu(modules: Iterable[Any]) -> tuple[MenuEntry, ...]:
    entries = [e for m in modules for e in getattr(m, "MENU", ())]
    keys = [e.key for e in entries]
    if len(set(keys)) != len(keys):
        raise ValueError(f"menu keys repeat: {keys}")
    return tuple(sorted(entries, key=lambda e: e.order))


# ---------------------------------------------------------------- CSRF


def csrf_token(request: web.Request) -> str:
    """The session's CSRF token: derived from the session cookie (which a cross-site page
    cannot read), so nothing is stored. Forms send it as ``csrf_token``, htmx and fetch as the
    ``X-CSRF-Token`` header."""
    secret = request.cookies.get(request.app[SETTINGS].auth.cookie_name, "")
    if not secret:
        return ""
    return hmac.new(secret.encode(), b"cc-csrf", hashlib.sha256).hexdigest()[:40]


async def check_csrf(request: web.Request) -> None:
    expected = csrf_token(request)
    sent = request.headers.get("X-CSRF-Token", "")
    if not sent and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        sent = str((await request.post()).get("csrf_token", ""))
    if not expected or not hmac.compare_digest(sent, expected):
        raise errors.PermissionDenied(
            "the form is stale or came from another site", details={"reason": "csrf"}
        )


# ---------------------------------------------------------------- formats in templates


class Formatter:
    """The formats of :mod:`contact_center.web.formats` bound to a language, zone and now."""

    def __init__(self, lang: str, tz: ZoneInfo, now: datetime) -> None:
        self.lang = lang
        self.tz = tz
        self.now = now
        self.today = now.astimezone(tz).date()

    def phone(self, value: str | None) -> str:
        return formats.phone(value)

    def money(self, value: Any) -> str:
        return formats.money(value)

    def number(self, value: Any) -> str:
        return formats.number(value)

    def when(self, value: datetime | None) -> str:
        return formats.moment(value, self.tz, self.now, self.lang)

    def day(self, value: date | None) -> str:
        return formats.day(value, self.lang, today=self.today)

    def duration(self, value: float | None) -> str:
        return formats.duration(value, self.lang)

    def iso_day(self, value: datetime | None) -> str:
        return value.astimezone(self.tz).date().isoformat() if value else ""


def language(request: web.Request) -> str:
    if LANG in request:
        return request[LANG]
    user = request.get(USER)
    lang = pick_language(
        request, request.app[SETTINGS].locale.default, user.locale if user else None
    )
    request[LANG] = lang
    return lang


def t_of(request: web.Request) -> Translate:
    return translator(language(request))


def zone(request: web.Request) -> ZoneInfo:
    return ZoneInfo(request.app[SETTINGS].locale.timezone)


def now(request: web.Request) -> datetime:
    return request.app[CLOCK].now()


def pbx_state(app: web.Application) -> str:
    """``ok`` (a PBX link is up, or another instance holds it), ``down``, or ``none`` (no PBX
    is configured)."""
    links = app[PBX].links if PBX in app else {}
    if not links:
        return "none"
    states = [link.provide_status().get("status") for link in links.values()]
    return "ok" if any(s in ("ok", "standby") for s in states) else "down"


async def context(request: web.Request) -> dict[str, Any]:
    """What every template gets: the user, his menu, the CSRF token, the language, formats."""
    lang = language(request)
    t = translator(lang)
    user = request.get(USER)
    ctx: dict[str, Any] = {
        "lang": lang,
        "other_lang": "en" if lang == "ru" else "ru",
        "_": t,
        "fmt": Formatter(lang, zone(request), now(request)),
        "user": user,
        "path": request.path,
        "csrf_token": csrf_token(request),
        "i18n_json": script_json(table(lang)),
    }
    if user is not None:
        ctx["menu"] = menu_for(request.app, user)
        ctx["pbx_state"] = pbx_state(request.app)
        # The bell's unread count (its list loads when opened; /ws keeps the count live).
        async with request.app[SESSIONS]() as session:
            unread = await notifications.unread_count(session, user.id)
        ctx["notifications"] = {"count": unread}
        ctx["extensions"] = [e.extension for e in user.extensions]
        ctx["inbox_unread"] = await inbox_unread(request, user)
    return ctx


async def inbox_unread(request: web.Request, user: User) -> int:
    """The menu's Входящие counter: unread messages in his conversations, plus the open
    conversations nobody has yet."""
    async with request.app[SESSIONS]() as session:
        counts = await conversations.unread_counts(session, actor=user, rules=request.app[RULES])
    return counts["mine"] + counts["unassigned"]


def page_data(request: web.Request, **extra: Any) -> str:
    """The JSON the page's scripts read (``<script type="application/json" id="cc-page">``)."""
    user = request[USER]
    return script_json(
        {
            "user_id": user.id,
            "role": user.role,
            "lang": language(request),
            "extensions": [e.extension for e in user.extensions],
            **extra,
        }
    )


# ---------------------------------------------------------------- the page decorator

Handler = Callable[[web.Request, User], Awaitable[Any]]


def is_partial(request: web.Request) -> bool:
    """An htmx request for a piece of the page (not a history restore, which wants it all)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


def session_user(request: web.Request) -> User:
    user = request.get(USER)
    if user is None or request.get(AUTH_KIND) is not TokenKind.SESSION:
        target = request.path_qs if request.method == "GET" and request.path != "/" else None
        location = URL("/login").with_query(next=target) if target else URL("/login")
        if is_partial(request):
            raise web.HTTPUnauthorized(headers={"HX-Redirect": str(location)})
        raise web.HTTPSeeOther(location)
    signed_in: User = user
    return signed_in


async def render(
    template: str, request: web.Request, data: dict[str, Any], *, status: int = 200
) -> web.Response:
    """``template`` with the shell's context (:func:`context`) and ``data``. (Not an
    aiohttp-jinja2 context processor: that runs as a middleware on every request, the API's
    and the dialplan's included.)"""
    ctx = await context(request)
    flash = FLASHES.get(request.cookies.get(FLASH_COOKIE, ""))
    if flash and not is_partial(request):
        ctx["flash"] = ctx["_"](flash)
    response = aiohttp_jinja2.render_template(template, request, {**ctx, **data}, status=status)
    if flash and not is_partial(request):
        response.del_cookie(FLASH_COOKIE)
    lang = request.query.get("lang")
    if lang in LANGUAGES:  # ?lang= is remembered for the next pages
        remember_language(response, lang)
    return response


def flash(response: web.StreamResponse, what: str) -> None:
    """Say ``what`` (a key of :data:`FLASHES`) once on the next full page, wherever a redirect
    leads (the confirmation of an action whose page is left)."""
    assert what in FLASHES
    response.set_cookie(FLASH_COOKIE, what, max_age=300, samesite="Lax", httponly=True)


def remember_language(response: web.StreamResponse, lang: str) -> None:
    response.set_cookie("cc_lang", lang, max_age=365 * 86400, samesite="Lax", httponly=True)


async def render_error(request: web.Request, status: int, message: str) -> web.Response:
    t = t_of(request)
    template = "errors/partial.html" if is_partial(request) else "errors/page.html"
    title = {403: "error.title.403", 404: "error.title.404"}.get(status, "error.title.other")
    return await render(
        template, request, {"status": status, "title": t(title), "message": message}, status=status
    )


async def render_domain_error(request: web.Request, exc: errors.DomainError) -> web.Response:
    from contact_center.http.errors import STATUS

    status = next(code for cls, code in STATUS if isinstance(exc, cls))
    t = t_of(request)
    if isinstance(exc, errors.PermissionDenied) and exc.details.get("reason") == "csrf":
        return await render_error(request, 403, t("error.csrf"))
    if isinstance(exc, errors.NotFound):
        return await render_error(request, 404, t("error.not-found"))
    return await render_error(request, status, error_text(t, exc.error_id, exc.details))


def page(
    template: str,
    *,
    roles: frozenset[str] | None = EVERYONE,
    partial: str | None = None,
    allow_password_change_pending: bool = False,
    too_large: str = "error.too_large",
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A workspace page: ``handler(request, user)`` returns the template's data (a dict) or a
    response. A visitor without a session goes to /login; a user who must change his one-time
    password goes to the password page first; a role not in ``roles`` gets the 403 page; a
    POST must carry the CSRF token; an htmx request gets ``partial`` instead of the page; a
    domain error becomes a translated page (or partial), never JSON; a body past the limit
    the ``too_large`` text."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            user = session_user(request)
            if user.must_change_password and not allow_password_change_pending:
                if is_partial(request):
                    raise web.HTTPUnauthorized(headers={"HX-Redirect": PASSWORD_PAGE})
                raise web.HTTPSeeOther(PASSWORD_PAGE)
            if not allowed(user, roles):
                return await render_error(request, 403, t_of(request)("error.forbidden_page"))
            try:
                if request.method not in ("GET", "HEAD"):
                    await check_csrf(request)
                result = await handler(request, user)
            except errors.DomainError as exc:
                return await render_domain_error(request, exc)
            except web.HTTPRequestEntityTooLarge:  # found while reading the form
                return await render_error(request, 413, t_of(request)(too_large))
            if isinstance(result, web.StreamResponse):
                return result
            status = int(result.pop("_status", 200))
            name = partial if partial and is_partial(request) else template
            result.setdefault("page_json", page_data(request, **result.pop("_page", {})))
            resp = await render(name, request, result, status=status)
            resp.headers["Vary"] = "HX-Request"
            resp.headers["Cache-Control"] = "no-store"
            return resp

        return wrapped

    return decorate


def hx_redirect(request: web.Request, location: str) -> web.StreamResponse:
    """After a POST: htmx follows ``HX-Location``; a plain form follows a 303."""
    if is_partial(request):
        return web.Response(status=204, headers={"HX-Location": location})
    raise web.HTTPSeeOther(location)
