"""A contact's companies on his card: link him to a company found by its name, mark him as its
decision maker (ЛПР) or not, unlink — through the clients service's link use cases."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from contact_center.api.common import UnitOfWork
from contact_center.i18n import error_text
from contact_center.keys import RULES, SESSIONS
from contact_center.web.card_subjects import load
from contact_center.web.shell import now, page, render, t_of, zone
from crm_core.clients import service as clients
from crm_core.errors import DomainError, NotFound
from crm_core.users.model import User


async def _response(
    request: web.Request, user: User, contact_id: int, *, error: str | None = None
) -> web.StreamResponse:
    today = now(request).astimezone(zone(request)).date()
    async with request.app[SESSIONS]() as session:
        subject = await load(
            session, "contact", contact_id, user=user, rules=request.app[RULES], today=today
        )
    data: dict[str, Any] = {"subject": subject, "view": subject.view, "links_error": error}
    resp = await render(
        "cards/_contact_companies.html", request, data, status=422 if error else 200
    )
    if error is None:
        resp.headers["HX-Trigger"] = json.dumps({"cc-toast": {"text": t_of(request)("card.saved")}})
    return resp


@page("cards/_contact_companies.html")
async def change_link(request: web.Request, user: User) -> web.StreamResponse:
    """``action``: link (``company`` by name), dm / not_dm, unlink (``company_id``)."""
    t = t_of(request)
    contact_id = int(request.match_info["id"])
    form = await request.post()
    action = str(form.get("action", ""))
    rules = request.app[RULES]
    raw_id = str(form.get("company_id", ""))
    company_id = int(raw_id) if raw_id.isdigit() else None
    try:
        async with UnitOfWork(request) as u:
            if action == "link":
                name = str(form.get("company", "")).strip()
                found, total = await clients.list_companies(
                    u.session, clients.ClientFilter(q=name), actor=user, rules=rules, limit=2
                )
                exact = [c for c in found if c.name.casefold() == name.casefold()]
                pick = exact[:1] or (found if total == 1 else [])
                if not name or not pick:
                    return await _response(
                        request,
                        user,
                        contact_id,
                        error=t("card.error.head_not_found", name=name),
                    )
                _, events = await clients.add_link(
                    u.session,
                    contact_id,
                    pick[0].id,
                    actor=user,
                    rules=rules,
                    position=str(form.get("position", "")).strip() or None,
                )
            elif action in ("dm", "not_dm") and company_id is not None:
                _, events = await clients.update_link(
                    u.session,
                    contact_id,
                    company_id,
                    actor=user,
                    rules=rules,
                    is_decision_maker=action == "dm",
                )
            elif action == "unlink" and company_id is not None:
                events = await clients.unlink_contact_company(
                    u.session, contact_id, company_id, actor=user, rules=rules
                )
            else:
                raise web.HTTPBadRequest()
            u.emit(*events)
            await u.commit()
    except NotFound:
        raise
    except DomainError as exc:
        message = (
            t("card.error.already_linked")
            if exc.error_id == "contact-company-link-exists"
            else error_text(t, exc.error_id, exc.details)
        )
        return await _response(request, user, contact_id, error=message)
    return await _response(request, user, contact_id)


def routes(app: web.Application) -> None:
    app.router.add_post(r"/card/contact/{id:\d{1,18}}/companies", change_link)
