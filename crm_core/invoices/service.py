"""Use cases of invoices: issue, change, pay, cancel, list, and the payment reminders.

Reminders go to the responsible manager on each of ``rules.invoice_reminder_days`` days before
the due date (0: on it) at :data:`REMINDER_TIME` local time, as ``invoice.reminder`` events.
They are scheduled jobs keyed ``invoice:<id>:remind:<n>d``, written in the same transaction as
the invoice: moving the due date moves them, paying or cancelling cancels them. A reminder day
already past when the invoice is saved is skipped (today's still fires).

Every function takes the caller's session; the caller commits and publishes the returned
events after the commit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import Select, extract, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access, listing
from crm_core.access import Actor
from crm_core.activities.service import (
    ClientLinks,
    check_links,
    ensure_active_user,
    link_owners,
    linked_to_clients_of,
)
from crm_core.clients.model import Company, LegalEntity
from crm_core.deals.model import Deal
from crm_core.errors import Conflict, InvalidInput, NotFound
from crm_core.events import DomainEvent
from crm_core.invoices.events import InvoiceChanged, InvoiceReminder
from crm_core.invoices.model import Invoice, InvoiceStatus
from crm_core.invoices.schemas import InvoiceInput, InvoicePatch
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskStatus

REMINDER_JOB = "invoice.remind"
REMINDER_TIME = time(9, 0)  # local time of day the reminders arrive


class InvoiceNotIssued(Conflict):
    """Only an issued (unpaid, not cancelled) invoice can be changed, paid or cancelled."""

    error_id = "invoice-not-issued"


class InvoiceNumberTaken(Conflict):
    error_id = "invoice-number-taken"


def reminder_key(invoice_id: int, days_before: int) -> str:
    return f"invoice:{invoice_id}:remind:{days_before}d"


def _zone_name(tz: tzinfo) -> str | None:
    return getattr(tz, "key", None)


def local_today(now: datetime, tz: tzinfo) -> date:
    return now.astimezone(tz).date()


async def sync_reminders(
    session: AsyncSession, invoice: Invoice, *, rules: CrmRules, tz: tzinfo, now: datetime
) -> list[datetime]:
    """Make the reminder jobs match the invoice; returns the moments scheduled."""
    prefix = f"invoice:{invoice.id}:remind:"
    wanted: dict[str, tuple[datetime, int]] = {}
    if invoice.status == InvoiceStatus.ISSUED.value and invoice.responsible_id is not None:
        today = local_today(now, tz)
        for days in sorted(set(rules.invoice_reminder_days), reverse=True):
            day = invoice.due_on - timedelta(days=days)
            if day < today:
                continue
            moment = datetime.combine(day, REMINDER_TIME, tzinfo=tz).astimezone(UTC)
            wanted[reminder_key(invoice.id, days)] = (moment, days)
    for key in await jobs.live_keys(session, prefix):
        if key not in wanted:
            await jobs.cancel(session, key, at=now)
    for key, (moment, days) in wanted.items():
        payload = {"invoice_id": invoice.id, "days": days, "tz": _zone_name(tz)}
        await jobs.schedule(session, REMINDER_JOB, moment, payload, key)
    return [m for m, _ in wanted.values()]


def _event(invoice: Invoice, change: str) -> InvoiceChanged:
    return InvoiceChanged(
        invoice_id=invoice.id,
        change=change,
        number=invoice.number,
        amount=invoice.amount,
        due_on=invoice.due_on.isoformat(),
        status=invoice.status,
        company_id=invoice.company_id,
        deal_id=invoice.deal_id,
        responsible_id=invoice.responsible_id,
        audience=(f"user:{invoice.responsible_id}",) if invoice.responsible_id else (),
    )


async def _check_number(
    session: AsyncSession, number: str, issued_on: date, exclude_id: int | None
) -> None:
    """Invoice numbers are unique among live invoices of one calendar year."""
    stmt = select(Invoice.id).where(
        Invoice.number == number,
        Invoice.status != InvoiceStatus.CANCELLED.value,
        extract("year", Invoice.issued_on) == issued_on.year,
    )
    if exclude_id is not None:
        stmt = stmt.where(Invoice.id != exclude_id)
    existing = await session.scalar(stmt.limit(1))
    if existing is not None:
        raise InvoiceNumberTaken(
            f"invoice number {number!r} is already used in {issued_on.year}",
            details={"field": "number", "existing_id": existing},
        )


async def _resolve_company(
    session: AsyncSession,
    company_id: int | None,
    legal_entity_id: int | None,
    deal_id: int | None,
) -> tuple[int | None, int | None, int | None]:
    """(company, deal's responsible, company's responsible); the company comes from the legal
    entity or the deal when not given, and all three must agree."""
    deal_responsible = None
    if legal_entity_id is not None:
        entity_company = await session.scalar(
            select(LegalEntity.company_id).where(LegalEntity.id == legal_entity_id)
        )
        if entity_company is None:
            raise InvalidInput(
                f"no legal entity {legal_entity_id}",
                details={"field": "legal_entity_id", "value": legal_entity_id},
            )
        if company_id is not None and entity_company != company_id:
            raise InvalidInput(
                f"legal entity {legal_entity_id} is not of company {company_id}",
                details={"field": "legal_entity_id", "value": legal_entity_id},
            )
        company_id = entity_company
    if deal_id is not None:
        row = (
            await session.execute(
                select(Deal.company_id, Deal.responsible_id).where(Deal.id == deal_id)
            )
        ).first()
        if row is not None:
            if company_id is not None and row[0] is not None and row[0] != company_id:
                raise InvalidInput(
                    f"deal {deal_id} is not of company {company_id}",
                    details={"field": "deal_id", "value": deal_id},
                )
            company_id = company_id if company_id is not None else row[0]
            deal_responsible = row[1]
    company_responsible = None
    if company_id is not None:
        company_responsible = await session.scalar(
            select(Company.responsible_id).where(Company.id == company_id)
        )
    return company_id, deal_responsible, company_responsible


async def create_invoice(
    session: AsyncSession,
    data: InvoiceInput,
    *,
    actor: Actor,
    rules: CrmRules,
    tz: tzinfo,
    now: datetime,
) -> tuple[Invoice, list[DomainEvent]]:
    """Issue an invoice to a client ``actor`` may change and schedule its reminders."""
    await check_links(
        session,
        ClientLinks(company_id=data.company_id, deal_id=data.deal_id),
        actor=actor,
        rules=rules,
    )
    company_id, deal_responsible, company_responsible = await _resolve_company(
        session, data.company_id, data.legal_entity_id, data.deal_id
    )
    if company_id is not None and data.company_id is None:
        await check_links(session, ClientLinks(company_id=company_id), actor=actor, rules=rules)
    if "responsible_id" in data.model_fields_set:
        responsible = data.responsible_id
        access.check_acting_for(actor, responsible, "responsible_id")
    else:
        responsible = deal_responsible or company_responsible or actor.id
    await ensure_active_user(session, responsible, "responsible_id")
    await _check_number(session, data.number, data.issued_on, None)
    invoice = Invoice(
        number=data.number,
        company_id=company_id,
        legal_entity_id=data.legal_entity_id,
        deal_id=data.deal_id,
        amount=data.amount,
        issued_on=data.issued_on,
        due_on=data.due_on,
        status=InvoiceStatus.ISSUED.value,
        responsible_id=responsible,
        comment=data.comment,
        created_at=now,
        updated_at=now,
    )
    session.add(invoice)
    await session.flush()
    await sync_reminders(session, invoice, rules=rules, tz=tz, now=now)
    return invoice, [_event(invoice, "created")]


async def _owners(session: AsyncSession, invoice: Invoice) -> set[int]:
    return await link_owners(
        session, ClientLinks(company_id=invoice.company_id, deal_id=invoice.deal_id)
    )


async def get_invoice(
    session: AsyncSession, invoice_id: int, *, actor: Actor, rules: CrmRules
) -> Invoice:
    """An invoice ``actor`` may read: his, or of his client or deal (404 otherwise)."""
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    owners = await _owners(session, invoice)
    access.check(
        actor,
        invoice.responsible_id,
        rules,
        write=False,
        what=f"invoice {invoice_id}",
        owners=owners,
    )
    return invoice


async def _writable_issued(
    session: AsyncSession, invoice_id: int, *, actor: Actor, rules: CrmRules, action: str
) -> Invoice:
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound(f"no invoice {invoice_id}")
    owners = await _owners(session, invoice)
    access.check(
        actor,
        invoice.responsible_id,
        rules,
        write=True,
        what=f"invoice {invoice_id}",
        owners=owners,
    )
    if invoice.status != InvoiceStatus.ISSUED.value:
        raise InvoiceNotIssued(
            f"cannot {action} invoice {invoice.number!r}: it is {invoice.status}",
            details={"status": invoice.status, "action": action},
        )
    return invoice


async def update_invoice(
    session: AsyncSession,
    invoice_id: int,
    patch: InvoicePatch,
    *,
    actor: Actor,
    rules: CrmRules,
    tz: tzinfo,
    now: datetime,
) -> tuple[Invoice, list[DomainEvent]]:
    """Change an issued invoice; a new due date moves its reminders."""
    invoice = await _writable_issued(session, invoice_id, actor=actor, rules=rules, action="change")
    sent = patch.model_dump(exclude_unset=True)
    for key in ("number", "amount", "issued_on", "due_on"):
        if key in sent and sent[key] is None:
            raise InvalidInput(f"{key} may not be null", details={"field": key})
    issued_on = sent.get("issued_on", invoice.issued_on)
    due_on = sent.get("due_on", invoice.due_on)
    if due_on < issued_on:
        raise InvalidInput("due_on must not be before issued_on", details={"field": "due_on"})
    if "responsible_id" in sent:
        access.check_acting_for(actor, sent["responsible_id"], "responsible_id")
        await ensure_active_user(session, sent["responsible_id"], "responsible_id")
    if sent.get("deal_id") is not None:
        await check_links(session, ClientLinks(deal_id=sent["deal_id"]), actor=actor, rules=rules)
    if "legal_entity_id" in sent or "deal_id" in sent:
        company_id, _, _ = await _resolve_company(
            session,
            invoice.company_id,
            sent.get("legal_entity_id", invoice.legal_entity_id),
            sent.get("deal_id", invoice.deal_id),
        )
        if invoice.company_id is None and company_id is not None:
            await check_links(session, ClientLinks(company_id=company_id), actor=actor, rules=rules)
            sent["company_id"] = company_id
    if "number" in sent or "issued_on" in sent:
        await _check_number(
            session, sent.get("number", invoice.number), issued_on, exclude_id=invoice.id
        )
    changed = False
    for key, value in sent.items():
        if getattr(invoice, key) != value:
            setattr(invoice, key, value)
            changed = True
    if not changed:
        return invoice, []
    invoice.updated_at = now
    await session.flush()
    await sync_reminders(session, invoice, rules=rules, tz=tz, now=now)
    return invoice, [_event(invoice, "updated")]


async def pay_invoice(
    session: AsyncSession,
    invoice_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
    paid_at: datetime | None = None,
) -> tuple[Invoice, list[DomainEvent]]:
    """Mark an issued invoice paid: its reminders are cancelled and its open follow-up tasks
    completed."""
    invoice = await _writable_issued(session, invoice_id, actor=actor, rules=rules, action="pay")
    invoice.status = InvoiceStatus.PAID.value
    invoice.paid_at = paid_at or now
    invoice.updated_at = now
    await session.flush()
    await jobs.cancel_prefix(session, f"invoice:{invoice.id}:remind:", at=now)
    await tasks.close_invoice_tasks(session, invoice.id, status=TaskStatus.DONE.value, at=now)
    return invoice, [_event(invoice, "paid")]


async def cancel_invoice(
    session: AsyncSession,
    invoice_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> tuple[Invoice, list[DomainEvent]]:
    """Cancel an issued invoice: its reminders and open follow-up tasks are cancelled."""
    invoice = await _writable_issued(session, invoice_id, actor=actor, rules=rules, action="cancel")
    invoice.status = InvoiceStatus.CANCELLED.value
    invoice.updated_at = now
    await session.flush()
    await jobs.cancel_prefix(session, f"invoice:{invoice.id}:remind:", at=now)
    await tasks.close_invoice_tasks(session, invoice.id, status=TaskStatus.CANCELLED.value, at=now)
    return invoice, [_event(invoice, "cancelled")]


def scope(stmt: Select[Any], actor: Actor, rules: CrmRules) -> Select[Any]:
    """Restrict an invoice query to what ``actor`` may read."""
    if access.is_privileged(actor) or rules.managers_read_all:
        return stmt
    assert actor.id is not None  # only the system has none, and it is privileged
    return stmt.where(
        or_(
            Invoice.responsible_id == actor.id,
            *linked_to_clients_of(actor.id, company=Invoice.company_id, deal=Invoice.deal_id),
        )
    )


async def list_invoices(
    session: AsyncSession,
    *,
    actor: Actor,
    rules: CrmRules,
    today: date,
    status: str | None = None,
    company_id: int | None = None,
    deal_id: int | None = None,
    responsible_id: int | None = None,
    number: str | None = None,
    due_from: date | None = None,
    due_to: date | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    count_cap: int | None = None,
) -> tuple[list[Invoice], int]:
    """Invoices ``actor`` may read, by due date, with their total. ``status`` "overdue" is the
    derived state: issued and due before ``today``."""
    stmt = select(Invoice)
    if status == "overdue":
        stmt = stmt.where(Invoice.status == InvoiceStatus.ISSUED.value, Invoice.due_on < today)
    elif status is not None:
        stmt = stmt.where(Invoice.status == status)
    for column, value in (
        (Invoice.company_id, company_id),
        (Invoice.deal_id, deal_id),
        (Invoice.responsible_id, responsible_id),
        (Invoice.number, number),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if due_from is not None:
        stmt = stmt.where(Invoice.due_on >= due_from)
    if due_to is not None:
        stmt = stmt.where(Invoice.due_on <= due_to)
    stmt = scope(stmt, actor, rules)
    total = await listing.total(session, stmt, count_cap)
    sorts = {
        "due_on": Invoice.due_on,
        "issued_on": Invoice.issued_on,
        "number": Invoice.number,
        "amount": Invoice.amount,
    }
    stmt = listing.order(stmt, sorts, sort, (Invoice.due_on, Invoice.id), Invoice.id)
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), total


async def remind_invoice(
    session: AsyncSession, job: ScheduledJob, now: datetime
) -> Sequence[DomainEvent]:
    """The ``invoice.remind`` job: ``invoice.reminder`` to the responsible of an invoice still
    unpaid (one paid or cancelled meanwhile is not reminded of)."""
    invoice = await session.get(Invoice, int(job.payload["invoice_id"]))
    if (
        invoice is None
        or invoice.status != InvoiceStatus.ISSUED.value
        or invoice.responsible_id is None
    ):
        return []
    days_left = int(job.payload.get("days", 0))
    zone = job.payload.get("tz")
    if zone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            days_left = (invoice.due_on - local_today(now, ZoneInfo(zone))).days
    return [
        InvoiceReminder(
            invoice_id=invoice.id,
            number=invoice.number,
            amount=invoice.amount,
            due_on=invoice.due_on.isoformat(),
            days_left=days_left,
            company_id=invoice.company_id,
            deal_id=invoice.deal_id,
            responsible_id=invoice.responsible_id,
            audience=(f"user:{invoice.responsible_id}",),
        )
    ]
