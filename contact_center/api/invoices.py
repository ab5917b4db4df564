"""The invoices API: issue, change, pay, cancel, list; registers the payment reminder job."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import Field

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, settings, uow
from contact_center.http.api import Api
from crm_core.invoices import service as invoices
from crm_core.invoices.schemas import (
    STATUS_LABELS,
    InvoiceInput,
    InvoiceOut,
    InvoicePatch,
    PayInput,
)

api = Api()
TAGS = ["invoices"]


def zone(request: web.Request) -> ZoneInfo:
    """The configured time zone of days (``locale.timezone``)."""
    return ZoneInfo(settings(request).locale.timezone)


def today(request: web.Request) -> date:
    return clock(request).now().astimezone(zone(request)).date()


class InvoiceQuery(PageQuery):
    status: Literal["issued", "paid", "cancelled", "overdue"] | None = None
    company_id: int | None = None
    deal_id: int | None = None
    responsible_id: int | None = None
    number: str | None = Field(None, max_length=64)
    due_from: date | None = None
    due_to: date | None = None


@api.route(
    "GET",
    "/invoices",
    summary="Invoices by due date (status overdue: issued and past due)",
    query=InvoiceQuery,
    tags=TAGS,
)
async def list_invoices(request: web.Request, query: InvoiceQuery) -> dict[str, Any]:
    day = today(request)
    async with uow(request) as u:
        rows, total = await invoices.list_invoices(
            u.session,
            actor=actor(request),
            rules=rules(request),
            today=day,
            status=query.status,
            company_id=query.company_id,
            deal_id=query.deal_id,
            responsible_id=query.responsible_id,
            number=query.number,
            due_from=query.due_from,
            due_to=query.due_to,
            limit=query.limit,
            offset=query.offset,
        )
    return page([InvoiceOut.of(i, day).model_dump(mode="json") for i in rows], total, query)


@api.route(
    "POST",
    "/invoices",
    summary="Issue an invoice (its payment reminders are scheduled)",
    body=InvoiceInput,
    response=InvoiceOut,
    status=201,
    tags=TAGS,
    errors={403: "Another manager's client", 409: "Number already used this year"},
)
async def create_invoice(request: web.Request, body: InvoiceInput) -> InvoiceOut:
    async with uow(request) as u:
        invoice, events = await invoices.create_invoice(
            u.session,
            body,
            actor=actor(request),
            rules=rules(request),
            tz=zone(request),
            now=clock(request).now(),
        )
        u.emit(*events)
        await u.commit()
    return InvoiceOut.of(invoice, today(request))


@api.route(
    "GET",
    "/invoices/{id}",
    summary="One invoice",
    response=InvoiceOut,
    tags=TAGS,
    errors={404: "No such invoice"},
)
async def get_invoice(request: web.Request) -> InvoiceOut:
    invoice_id = path_id(request, "id", "invoice")
    async with uow(request) as u:
        invoice = await invoices.get_invoice(
            u.session, invoice_id, actor=actor(request), rules=rules(request)
        )
    return InvoiceOut.of(invoice, today(request))


@api.route(
    "PATCH",
    "/invoices/{id}",
    summary="Change an issued invoice (a new due date moves its reminders)",
    body=InvoicePatch,
    response=InvoiceOut,
    tags=TAGS,
    errors={403: "Another manager's", 404: "No such invoice", 409: "Paid or cancelled"},
)
async def update_invoice(request: web.Request, body: InvoicePatch) -> InvoiceOut:
    invoice_id = path_id(request, "id", "invoice")
    async with uow(request) as u:
        invoice, events = await invoices.update_invoice(
            u.session,
            invoice_id,
            body,
            actor=actor(request),
            rules=rules(request),
            tz=zone(request),
            now=clock(request).now(),
        )
        u.emit(*events)
        await u.commit()
    return InvoiceOut.of(invoice, today(request))


@api.route(
    "POST",
    "/invoices/{id}/pay",
    summary="Mark an invoice paid (reminders cancelled, follow-up tasks completed)",
    query=PayInput,
    response=InvoiceOut,
    tags=TAGS,
    errors={403: "Another manager's", 404: "No such invoice", 409: "Not issued"},
)
async def pay_invoice(request: web.Request, query: PayInput) -> InvoiceOut:
    invoice_id = path_id(request, "id", "invoice")
    async with uow(request) as u:
        invoice, events = await invoices.pay_invoice(
            u.session,
            invoice_id,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
            paid_at=query.paid_at,
        )
        u.emit(*events)
        await u.commit()
    return InvoiceOut.of(invoice, today(request))


@api.route(
    "POST",
    "/invoices/{id}/cancel",
    summary="Cancel an invoice (reminders and follow-up tasks cancelled)",
    response=InvoiceOut,
    tags=TAGS,
    errors={403: "Another manager's", 404: "No such invoice", 409: "Not issued"},
)
async def cancel_invoice(request: web.Request) -> InvoiceOut:
    invoice_id = path_id(request, "id", "invoice")
    async with uow(request) as u:
        invoice, events = await invoices.cancel_invoice(
            u.session,
            invoice_id,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        u.emit(*events)
        await u.commit()
    return InvoiceOut.of(invoice, today(request))


@api.route("GET", "/invoice-statuses", summary="Invoice statuses with their names", tags=TAGS)
async def invoice_statuses(request: web.Request) -> list[dict[str, str]]:
    return [{"code": str(k), "name_ru": ru, "name_en": en} for k, (ru, en) in STATUS_LABELS.items()]
