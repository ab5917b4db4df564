"""Клиенты: contacts and companies (a switch), with the client search, filters, sorting,
pagination and, for the head of sales, one task for every client of the filter (bulk)."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from aiohttp import web

from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS
from contact_center.web import listing
from contact_center.web.leads import client_type_options, potential_options
from contact_center.web.shell import HEADS, MenuEntry, allowed, now, page, t_of, zone
from crm_core.clients import service as clients
from crm_core.clients.search import ClientFilter, list_companies, list_contacts
from crm_core.errors import InvalidInput
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskKind
from crm_core.tasks.schemas import BulkFilter, BulkTaskInput, BulkTaskTemplate
from crm_core.users.model import User

MENU = (MenuEntry("clients", "/clients", "menu.clients", "clients", 40),)
SORTS = ("name", "created_at", "potential")
KINDS = ("contact", "company")


def _kind(request: web.Request) -> str:
    kind = request.query.get("kind", "contact")
    return kind if kind in KINDS else "contact"


@page("lists/clients.html", partial="lists/_clients.html")
async def clients_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    tz = zone(request)
    rules = request.app[RULES]
    kind = _kind(request)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        filters = [
            listing.Filter("responsible", "filter.responsible", options=names.user_options()),
            listing.Filter(
                "client_type", "filter.client_type", options=client_type_options(rules, t)
            ),
            listing.Filter("potential", "filter.potential", options=potential_options(t)),
            listing.Filter("source", "filter.source", options=names.source_options()),
            listing.Filter("region", "filter.region", options=names.region_options()),
            listing.Filter("from", "filter.created_from", kind="date"),
            listing.Filter("to", "filter.created_to", kind="date"),
        ]
        state = listing.state_of(request, filters, SORTS, "name", keep=("kind",))
        flt = ClientFilter(
            q=state.q or None,
            client_type=state.value("client_type") or None,
            purchase_mode=state.value("potential") or None,
            source_id=state.int_value("source"),
            region_id=state.int_value("region"),
            responsible_id=state.int_value("responsible"),
            created_from=listing.day_start(state.date_value("from"), tz),
            created_to=listing.day_end(state.date_value("to"), tz),
        )
        cards: list[Any]
        if kind == "contact":
            contacts, state.total = await list_contacts(
                session,
                flt,
                actor=user,
                rules=rules,
                limit=listing.PER_PAGE,
                offset=state.offset,
                sort=state.sort,
                count_cap=listing.COUNT_CAP,
            )
            cards, shown = list(await clients.contact_cards(session, contacts)), len(contacts)
        else:
            companies, state.total = await list_companies(
                session,
                flt,
                actor=user,
                rules=rules,
                limit=listing.PER_PAGE,
                offset=state.offset,
                sort=state.sort,
                count_cap=listing.COUNT_CAP,
            )
            cards = list(await clients.company_cards(session, companies, full=False))
            shown = len(companies)
    state.shown = shown
    state.make_chips(t)
    items = [
        {
            "id": c.id,
            "name": c.name,
            "phone": c.phones[0] if c.phones else None,
            "email": c.emails[0] if c.emails else None,
            "companies": [link.company_name for link in c.companies] if kind == "contact" else [],
            "position": getattr(c, "position", None),
            "client_type": t("client_type." + c.client_type) if c.client_type else "",
            "potential": c.potential_amount,
            "purchase_mode": t("purchase." + c.purchase_mode) if c.purchase_mode else "",
            "region": names.region(c.region_id),
            "source": names.source(c.source_id),
            "responsible": names.user(c.responsible_id),
        }
        for c in cards
    ]
    return {
        "title": t("menu.clients"),
        "state": state,
        "items": items,
        "kind": kind,
        "may_bulk": allowed(user, HEADS),
        "task_kinds": [(k.value, t("task.kind." + k.value)) for k in TaskKind],
        "bulk_result": request.query.get("bulk_created"),
    }


@page("errors/partial.html", roles=HEADS)
async def bulk_task(request: web.Request, user: User) -> web.StreamResponse:
    """One task for every client of the list's filter, each for the client's responsible."""
    form = await request.post()
    kind = str(form.get("kind", "company"))
    title = str(form.get("title", "")).strip()
    if not title:
        raise InvalidInput("title: required", details={"field": "title"})
    due_text = str(form.get("due", "")).strip()
    due_day = listing.parse_day(due_text)
    if due_text and due_day is None:
        raise InvalidInput("due: not a date", details={"field": "due"})
    due_at = datetime.combine(due_day, time(10, 0), tzinfo=zone(request)) if due_day else None

    def number(name: str) -> int | None:
        raw = str(form.get(name, ""))
        return int(raw) if raw.isdigit() else None

    body = BulkTaskInput(
        filter=BulkFilter(
            entity="contact" if kind == "contact" else "company",
            client_type=str(form.get("client_type", "")) or None,
            region_id=number("region"),
            source_id=number("source"),
            responsible_id=number("responsible"),
        ),
        task=BulkTaskTemplate(
            kind=TaskKind(str(form.get("task_kind", "custom"))), title=title, due_at=due_at
        ),
    )
    async with UnitOfWork(request) as u:
        result, events = await tasks.bulk_create_tasks(
            u.session, body, actor=user, rules=request.app[RULES], now=now(request)
        )
        u.emit(*events)
        await u.commit()
    back = str(form.get("back", "/clients"))
    if not back.startswith("/") or back.startswith("//"):
        back = "/clients"
    sep = "&" if "?" in back else "?"
    raise web.HTTPSeeOther(f"{back}{sep}bulk_created={result.created}")


def routes(app: web.Application) -> None:
    app.router.add_get("/clients", clients_page)
    app.router.add_post("/clients/bulk-task", bulk_task)
