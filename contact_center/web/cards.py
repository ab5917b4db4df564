"""The client card (contact, company or lead): a page the card script fills from the REST API
with the session, so the access rules are the API's. The names of regions, sources, users and
lead stages come with the page (short reference tables), so the card shows names, not ids."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center.keys import RULES, SESSIONS
from contact_center.web.leads import stage_names
from contact_center.web.shell import language, page, t_of
from crm_core.reference.model import Region, Source
from crm_core.users.model import User

MENU = ()
CARD_KINDS = ("contact", "company", "lead")


@page("cards/client.html")
async def client_card(request: web.Request, user: User) -> dict[str, Any]:
    kind = request.match_info["kind"]
    card_id = int(request.match_info["id"])
    async with request.app[SESSIONS]() as session:
        names = {
            "regions": dict((await session.execute(select(Region.id, Region.name))).all()),
            "sources": dict((await session.execute(select(Source.id, Source.name))).all()),
            "users": dict((await session.execute(select(User.id, User.display_name))).all()),
        }
    names["stages"] = stage_names(request.app[RULES], language(request))
    back = {"lead": "/leads"}.get(kind, "/clients")
    return {
        "title": t_of(request)(f"card.title.{kind}"),
        "kind": kind,
        "card_id": card_id,
        "back": back,
        "_page": {"view": "card", "kind": kind, "id": card_id, "names": names},
    }


def routes(app: web.Application) -> None:
    app.router.add_get(r"/clients/{kind:contact|company|lead}/{id:\d{1,18}}", client_card)
