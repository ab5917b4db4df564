"""Сделки: the list of deals (the kanban and the deal card come with the next increment)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contact_center.keys import RULES, SESSIONS
from contact_center.web import kanban, links, listing
from contact_center.web.shell import MenuEntry, language, page, t_of, zone
from crm_core.deals import service as deals
from crm_core.users.model import User

MENU = (MenuEntry("deals", "/deals", "menu.deals", "deals", 30),)
SORTS = ("created_at", "title", "amount", "stage", "closed_at")
STATUSES = ("open", "won", "lost")


@page("lists/deals.html", partial="lists/_deals.html")
async def deals_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    lang = language(request)
    tz = zone(request)
    rules = request.app[RULES]
    stages: dict[str, str] = {}
    for pipeline in rules.pipelines:
        for s in pipeline.stages:
            stages.setdefault(s.code, (s.name_en or s.name_ru) if lang == "en" else s.name_ru)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        filters = [
            listing.Filter("responsible", "filter.responsible", options=names.user_options()),
            listing.Filter("stage", "filter.stage", options=listing.options(stages)),
            listing.Filter(
                "status",
                "filter.deal_status",
                options=tuple((s, t("deal.status." + s)) for s in STATUSES),
            ),
            listing.Filter("source", "filter.source", options=names.source_options()),
            listing.Filter("from", "filter.created_from", kind="date"),
            listing.Filter("to", "filter.created_to", kind="date"),
        ]
        state = listing.state_of(request, filters, SORTS, "-created_at")
        status = state.value("status")
        rows, state.total = await deals.list_deals(
            session,
            deals.DealFilter(
                q=state.q or None,
                stage=state.value("stage") or None,
                status=status if status in STATUSES else None,
                responsible_id=state.int_value("responsible"),
                source_id=state.int_value("source"),
                created_from=listing.day_start(state.date_value("from"), tz),
                created_to=listing.day_end(state.date_value("to"), tz),
            ),
            actor=user,
            rules=rules,
            limit=listing.PER_PAGE,
            offset=state.offset,
            sort=state.sort,
            count_cap=listing.COUNT_CAP,
        )
        views = await deals.describe(session, rows)
        refs = await links.client_refs(session, views)
    state.shown = len(rows)
    state.make_chips(t)
    items = [
        {
            "id": d.id,
            "title": d.title,
            "client": refs.get(id(d)),
            "stage": (d.stage.name_en or d.stage.name_ru) if lang == "en" else d.stage.name_ru,
            "status": str(d.status),
            "amount": d.amount,
            "responsible": names.user(d.responsible_id),
            "source": names.source(d.source_id),
            "created_at": d.created_at,
            "closed_at": d.closed_at,
        }
        for d in views
    ]
    return {"title": t("menu.deals"), "state": state, "items": items}


def routes(app: web.Application) -> None:
    app.router.add_get("/deals", kanban.with_board(deals_page, kanban.deal_board_page))
