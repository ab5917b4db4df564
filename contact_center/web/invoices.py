"""Счета: the list of invoices by due date (paid, issued, expiring, overdue)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from contact_center.keys import RULES, SESSIONS
from contact_center.web import links, listing
from contact_center.web.shell import MenuEntry, now, page, t_of, zone
from crm_core.invoices import service as invoices
from crm_core.users.model import User

MENU = (MenuEntry("invoices", "/invoices", "menu.invoices", "invoices", 70),)
SORTS = ("due_on", "issued_on", "number", "amount")
STATUSES = ("issued", "overdue", "paid", "cancelled")


@page("lists/invoices.html", partial="lists/_invoices.html")
async def invoices_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    rules = request.app[RULES]
    today = now(request).astimezone(zone(request)).date()
    window = max(rules.invoice_reminder_days, default=0)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        filters = [
            listing.Filter("responsible", "filter.responsible", options=names.user_options()),
            listing.Filter(
                "status",
                "filter.invoice_status",
                options=tuple((s, t("invoice.status." + s)) for s in STATUSES),
            ),
            listing.Filter("from", "filter.due_from", kind="date"),
            listing.Filter("to", "filter.due_to", kind="date"),
        ]
        state = listing.state_of(request, filters, SORTS, "due_on")
        status = state.value("status")
        rows, state.total = await invoices.list_invoices(
            session,
            actor=user,
            rules=rules,
            today=today,
            status=status if status in STATUSES else None,
            responsible_id=state.int_value("responsible"),
            number=state.q or None,
            due_from=state.date_value("from"),
            due_to=state.date_value("to"),
            limit=listing.PER_PAGE,
            offset=state.offset,
            sort=state.sort,
            count_cap=listing.COUNT_CAP,
        )
        refs = await links.client_refs(session, rows)
    state.shown = len(rows)
    state.make_chips(t)
    items = []
    for inv in rows:
        issued = inv.status == "issued"
        state_key = inv.status
        if issued and inv.due_on < today:
            state_key = "overdue"
        elif issued and inv.due_on <= today + timedelta(days=window):
            state_key = "expiring"
        items.append(
            {
                "id": inv.id,
                "number": inv.number,
                "client": refs.get(id(inv)),
                "amount": inv.amount,
                "issued_on": inv.issued_on,
                "due_on": inv.due_on,
                "state": state_key,
                "state_text": t("invoice.status." + state_key),
                "responsible": names.user(inv.responsible_id),
            }
        )
    return {"title": t("menu.invoices"), "state": state, "items": items}


def routes(app: web.Application) -> None:
    app.router.add_get("/invoices", invoices_page)
