"""Лиды: the list of leads with search, filters, sorting and pagination."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contact_center.keys import RULES, SESSIONS
from contact_center.web import kanban, listing
from contact_center.web.shell import MenuEntry, language, page, t_of, zone
from crm_core.leads import service as leads
from crm_core.rules import CrmRules
from crm_core.users.model import User

MENU = (MenuEntry("leads", "/leads", "menu.leads", "leads", 20),)
SORTS = ("created_at", "title", "stage", "potential")
ORIGINS = ("call", "web", "message", "manual", "import")


def stage_names(rules: CrmRules, lang: str) -> dict[str, str]:
    return {
        s.code: (s.name_en or s.name_ru) if lang == "en" else s.name_ru for s in rules.lead_stages
    }


def client_type_options(rules: CrmRules, t: Any) -> tuple[tuple[str, str], ...]:
    return tuple((c, t("client_type." + c)) for c in rules.client_types)


def potential_options(t: Any) -> tuple[tuple[str, str], ...]:
    return (("one_off", t("purchase.one_off")), ("regular", t("purchase.regular")))


@page("lists/leads.html", partial="lists/_leads.html")
async def leads_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    lang = language(request)
    rules = request.app[RULES]
    tz = zone(request)
    stages = stage_names(rules, lang)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        filters = [
            listing.Filter("responsible", "filter.responsible", options=names.user_options()),
            listing.Filter("stage", "filter.stage", options=listing.options(stages)),
            listing.Filter("source", "filter.source", options=names.source_options()),
            listing.Filter("region", "filter.region", options=names.region_options()),
            listing.Filter(
                "client_type", "filter.client_type", options=client_type_options(rules, t)
            ),
            listing.Filter("potential", "filter.potential", options=potential_options(t)),
            listing.Filter(
                "origin", "filter.origin", options=tuple((o, t("origin." + o)) for o in ORIGINS)
            ),
            listing.Filter("from", "filter.created_from", kind="date"),
            listing.Filter("to", "filter.created_to", kind="date"),
        ]
        state = listing.state_of(request, filters, SORTS, "-created_at")
        flt = leads.LeadFilter(
            q=state.q or None,
            stage=state.value("stage") or None,
            origin=state.value("origin") or None,
            source_id=state.int_value("source"),
            region_id=state.int_value("region"),
            responsible_id=state.int_value("responsible"),
            client_type=state.value("client_type") or None,
            purchase_mode=state.value("potential") or None,
            created_from=listing.day_start(state.date_value("from"), tz),
            created_to=listing.day_end(state.date_value("to"), tz),
        )
        rows, state.total = await leads.list_leads(
            session,
            flt,
            actor=user,
            rules=rules,
            limit=listing.PER_PAGE,
            offset=state.offset,
            sort=state.sort,
            count_cap=listing.COUNT_CAP,
        )
        views = await leads.describe(session, rows, rules, actor=user)
    state.shown = len(rows)
    state.make_chips(t)
    items = [
        {
            "id": v.id,
            "title": v.title or v.contact_name or v.company_name or t("pop.no_name"),
            "who": " · ".join(x for x in (v.contact_name, v.company_name) if x),
            "phone": v.phones[0] if v.phones else None,
            "email": v.emails[0] if v.emails else None,
            "stage": stages.get(v.stage, v.stage),
            "stage_code": v.stage,
            "source": names.source(v.source_id),
            "region": names.region(v.region_id),
            "responsible": names.user(v.responsible_id),
            "potential": v.potential_amount,
            "created_at": v.created_at,
        }
        for v in views
    ]
    return {"title": t("menu.leads"), "state": state, "items": items}


def routes(app: web.Application) -> None:
    app.router.add_get("/leads", kanban.with_board(leads_page, kanban.lead_board_page))
