"""Invoices: payment reminders N days before and on the due date, moved with the due date and
cancelled by payment; consistency of links; who may do what."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import InvalidInput, NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.invoices import service as invoices
from crm_core.invoices.events import InvoiceChanged, InvoiceReminder
from crm_core.invoices.model import Invoice
from crm_core.invoices.schemas import InvoiceInput, InvoiceOut, InvoicePatch
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.schemas import TaskInput
from tests.crm_core.tasks.world import T0, World, build_world

MSK = ZoneInfo("Europe/Moscow")
RULES = CrmRules()
MONDAY = date(2026, 3, 2)  # T0 is Monday 10:00 Moscow time


def data(w: World, **kw: Any) -> InvoiceInput:
    base: dict[str, Any] = {
        "number": "СЧ-17",
        "legal_entity_id": w["entity"],
        "amount": "125000.50",
        "issued_on": MONDAY,
        "due_on": MONDAY + timedelta(days=10),
    }
    base.update(kw)
    return InvoiceInput.model_validate(base)


async def _issue(session: AsyncSession, w: World, who: str = "ivan", **kw: Any) -> Invoice:
    invoice, _ = await invoices.create_invoice(
        session, data(w, **kw), actor=w.user(who), rules=RULES, tz=MSK, now=T0
    )
    return invoice


async def _reminders(session: AsyncSession, invoice_id: int) -> dict[str, Any]:
    rows = await session.scalars(
        select(ScheduledJob)
        .where(ScheduledJob.dedupe_key.like(f"invoice:{invoice_id}:%"))
        .execution_options(populate_existing=True)
    )
    found: dict[str, Any] = {}
    for r in rows:
        assert r.dedupe_key is not None  # matched by its key above
        found[r.dedupe_key] = (r.status, r.due_at)
    return found


def at_9(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, 9, 0, tzinfo=MSK).astimezone(UTC)


async def test_issue_fills_company_and_responsible_and_schedules_reminders(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    invoice, [event] = await invoices.create_invoice(
        session, data(w), actor=w.user("boss"), rules=RULES, tz=MSK, now=T0
    )
    assert invoice.company_id == w["ivan_co"] and invoice.responsible_id == w["ivan"]
    assert invoice.amount == Decimal("125000.50") and invoice.status == "issued"
    assert isinstance(event, InvoiceChanged)
    assert event.name == "invoice.changed" and event.change == "created"
    assert event.audience == (f"user:{w['ivan']}",)
    assert DomainEvent.from_dict(event.to_dict()) == event
    due = invoice.due_on
    assert await _reminders(session, invoice.id) == {
        f"invoice:{invoice.id}:remind:3d": ("pending", at_9(due - timedelta(days=3))),
        f"invoice:{invoice.id}:remind:0d": ("pending", at_9(due)),
    }


async def test_reminder_days_already_past_are_skipped(session: AsyncSession) -> None:
    w = await build_world(session)
    # Due in 2 days: "3 days before" was yesterday; only the due-date reminder is left.
    soon = await _issue(session, w, due_on=MONDAY + timedelta(days=2))
    assert list(await _reminders(session, soon.id)) == [f"invoice:{soon.id}:remind:0d"]
    # Due today, saved at 10:00 after the 09:00 reminder time: it still fires (at once).
    today = await _issue(session, w, number="СЧ-18", due_on=MONDAY)
    assert await _reminders(session, today.id) == {
        f"invoice:{today.id}:remind:0d": ("pending", at_9(MONDAY))
    }
    overdue = await _issue(
        session,
        w,
        number="СЧ-19",
        issued_on=MONDAY - timedelta(days=9),
        due_on=MONDAY - timedelta(days=1),
    )
    assert await _reminders(session, overdue.id) == {}
    assert InvoiceOut.of(overdue, MONDAY).overdue is True
    assert InvoiceOut.of(overdue, MONDAY).days_left == -1
    assert InvoiceOut.of(today, MONDAY).overdue is False


async def test_configured_reminder_days(session: AsyncSession) -> None:
    w = await build_world(session)
    invoice, _ = await invoices.create_invoice(
        session,
        data(w),
        actor=w.user("ivan"),
        rules=CrmRules(invoice_reminder_days=(7, 1)),
        tz=MSK,
        now=T0,
    )
    assert sorted(await _reminders(session, invoice.id)) == [
        f"invoice:{invoice.id}:remind:1d",
        f"invoice:{invoice.id}:remind:7d",
    ]


async def test_moving_the_due_date_moves_the_reminders(session: AsyncSession) -> None:
    w = await build_world(session)
    invoice = await _issue(session, w)
    new_due = MONDAY + timedelta(days=20)
    invoice, [event] = await invoices.update_invoice(
        session,
        invoice.id,
        InvoicePatch(due_on=new_due),
        actor=w.user("ivan"),
        rules=RULES,
        tz=MSK,
        now=T0,
    )
    assert isinstance(event, InvoiceChanged)
    assert event.change == "updated" and event.due_on == new_due.isoformat()
    assert await _reminders(session, invoice.id) == {
        f"invoice:{invoice.id}:remind:3d": ("pending", at_9(new_due - timedelta(days=3))),
        f"invoice:{invoice.id}:remind:0d": ("pending", at_9(new_due)),
    }
    # Moved to the day after tomorrow: the 3-days-before reminder is cancelled.
    await invoices.update_invoice(
        session,
        invoice.id,
        InvoicePatch(due_on=MONDAY + timedelta(days=2)),
        actor=w.user("ivan"),
        rules=RULES,
        tz=MSK,
        now=T0,
    )
    reminders = await _reminders(session, invoice.id)
    assert reminders[f"invoice:{invoice.id}:remind:3d"][0] == "cancelled"
    assert reminders[f"invoice:{invoice.id}:remind:0d"][0] == "pending"
    with pytest.raises(InvalidInput):
        await invoices.update_invoice(
            session,
            invoice.id,
            InvoicePatch(due_on=MONDAY - timedelta(days=1)),
            actor=w.user("ivan"),
            rules=RULES,
            tz=MSK,
            now=T0,
        )


async def test_paying_cancels_reminders_and_completes_follow_ups(session: AsyncSession) -> None:
    w = await build_world(session)
    invoice = await _issue(session, w)
    follow_up, _ = await tasks.create_task(
        session,
        TaskInput(title="Оплата?", kind="invoice_follow_up", invoice_id=invoice.id),
        actor=w.user("ivan"),
        rules=RULES,
        now=T0,
    )
    assert follow_up.company_id == w["ivan_co"]
    paid, [event] = await invoices.pay_invoice(
        session, invoice.id, actor=w.user("ivan"), rules=RULES, now=T0 + timedelta(days=1)
    )
    assert paid.status == "paid" and paid.paid_at == T0 + timedelta(days=1)
    assert isinstance(event, InvoiceChanged)
    assert event.change == "paid"
    assert {s for s, _ in (await _reminders(session, invoice.id)).values()} == {"cancelled"}
    await session.refresh(follow_up)
    assert follow_up.status == "done"
    with pytest.raises(invoices.InvoiceNotIssued) as err:
        await invoices.cancel_invoice(
            session, invoice.id, actor=w.user("ivan"), rules=RULES, now=T0
        )
    assert err.value.details == {"status": "paid", "action": "cancel"}


async def test_cancelling_cancels_reminders_and_follow_ups(session: AsyncSession) -> None:
    w = await build_world(session)
    invoice = await _issue(session, w)
    follow_up, _ = await tasks.create_task(
        session,
        TaskInput(title="Оплата?", kind="invoice_follow_up", invoice_id=invoice.id),
        actor=w.user("ivan"),
        rules=RULES,
        now=T0,
    )
    await invoices.cancel_invoice(session, invoice.id, actor=w.user("boss"), rules=RULES, now=T0)
    assert {s for s, _ in (await _reminders(session, invoice.id)).values()} == {"cancelled"}
    await session.refresh(follow_up)
    assert follow_up.status == "cancelled"
    with pytest.raises(invoices.InvoiceNotIssued):
        await invoices.pay_invoice(session, invoice.id, actor=w.user("boss"), rules=RULES, now=T0)
    # A cancelled invoice frees its number.
    again = await _issue(session, w)
    assert again.number == invoice.number


async def test_the_reminder_handler(session: AsyncSession) -> None:
    w = await build_world(session)
    invoice = await _issue(session, w)
    await session.commit()
    moment = at_9(invoice.due_on - timedelta(days=3))
    [job] = await jobs.claim_due(session, moment, limit=5, worker_id="w")
    [event] = await invoices.remind_invoice(session, job, moment)
    assert isinstance(event, InvoiceReminder)
    assert event.name == "invoice.reminder" and event.days_left == 3
    assert event.amount == Decimal("125000.50") and event.number == "СЧ-17"
    assert event.audience == (f"user:{w['ivan']}",)
    # Delivered late (the server was down for two days): the days left are today's.
    [late] = await invoices.remind_invoice(session, job, moment + timedelta(days=2))
    assert isinstance(late, InvoiceReminder)
    assert late.days_left == 1
    await invoices.pay_invoice(session, invoice.id, actor=w.user("ivan"), rules=RULES, now=T0)
    assert await invoices.remind_invoice(session, job, moment) == []


async def test_numbers_are_unique_per_year_among_live_invoices(session: AsyncSession) -> None:
    w = await build_world(session)
    await _issue(session, w)
    with pytest.raises(invoices.InvoiceNumberTaken) as err:
        await _issue(session, w)
    assert err.value.details["field"] == "number"
    next_year = await _issue(session, w, issued_on=date(2027, 1, 10), due_on=date(2027, 1, 20))
    assert next_year.number == "СЧ-17"


async def test_links_must_agree(session: AsyncSession) -> None:
    w = await build_world(session)
    with pytest.raises(InvalidInput) as err:
        await _issue(session, w, "boss", company_id=w["anna_co"])
    assert err.value.details["field"] == "legal_entity_id"
    with pytest.raises(InvalidInput) as err:
        await _issue(
            session,
            w,
            "boss",
            legal_entity_id=None,
            company_id=w["ivan_co"],
            deal_id=w["anna_deal"],
        )
    assert err.value.details["field"] == "deal_id"
    with pytest.raises(InvalidInput):
        await _issue(session, w, "boss", legal_entity_id=999_999)
    by_deal = await _issue(session, w, "boss", legal_entity_id=None, deal_id=w["anna_deal"])
    assert by_deal.company_id == w["anna_co"] and by_deal.responsible_id == w["anna"]
    with pytest.raises(ValidationError):
        data(w, due_on=MONDAY - timedelta(days=1))
    with pytest.raises(ValidationError):
        data(w, amount="10.001")
    with pytest.raises(ValidationError):
        data(w, amount="0")


async def test_who_may_issue_read_and_change(session: AsyncSession) -> None:
    w = await build_world(session)
    with pytest.raises(InvalidInput):  # anna does not see ivan's legal entity's company
        await _issue(session, w, "anna")
    with pytest.raises(PermissionDenied):
        await _issue(session, w, "ivan", responsible_id=w["anna"])
    invoice = await _issue(session, w, "ivan")
    for login in ("adm", "boss", "ivan"):
        got = await invoices.get_invoice(session, invoice.id, actor=w.user(login), rules=RULES)
        assert got.id == invoice.id
    with pytest.raises(NotFound):
        await invoices.get_invoice(session, invoice.id, actor=w.user("anna"), rules=RULES)
    shared = CrmRules(managers_read_all=True)
    await invoices.get_invoice(session, invoice.id, actor=w.user("anna"), rules=shared)
    with pytest.raises(PermissionDenied):
        await invoices.pay_invoice(session, invoice.id, actor=w.user("anna"), rules=shared, now=T0)
    rows, total = await invoices.list_invoices(
        session, actor=w.user("anna"), rules=RULES, today=MONDAY
    )
    assert (rows, total) == ([], 0)
    rows, total = await invoices.list_invoices(
        session, actor=w.user("ivan"), rules=RULES, today=MONDAY
    )
    assert total == 1


async def test_list_by_derived_overdue_status(session: AsyncSession) -> None:
    w = await build_world(session)
    current = await _issue(session, w)
    late = await _issue(
        session,
        w,
        number="СЧ-2",
        issued_on=MONDAY - timedelta(days=20),
        due_on=MONDAY - timedelta(days=5),
    )
    paid_late = await _issue(
        session,
        w,
        number="СЧ-3",
        issued_on=MONDAY - timedelta(days=20),
        due_on=MONDAY - timedelta(days=5),
    )
    await invoices.pay_invoice(session, paid_late.id, actor=w.user("ivan"), rules=RULES, now=T0)
    adm = w.user("adm")

    async def ids(**kw: Any) -> list[int]:
        rows, _ = await invoices.list_invoices(session, actor=adm, rules=RULES, today=MONDAY, **kw)
        return [i.id for i in rows]

    assert await ids(status="overdue") == [late.id]
    assert await ids(status="issued") == [late.id, current.id]
    assert await ids(status="paid") == [paid_late.id]
    assert await ids(number="СЧ-2") == [late.id]
    assert await ids(due_from=MONDAY) == [current.id]
    assert await ids(company_id=w["ivan_co"]) == [late.id, paid_late.id, current.id]
    assert await ids(company_id=w["anna_co"]) == []
    job_rows = await session.scalars(
        select(ScheduledJob.status).where(ScheduledJob.dedupe_key.like(f"invoice:{late.id}:%"))
    )
    assert list(job_rows) == []  # past due when issued: no reminders
