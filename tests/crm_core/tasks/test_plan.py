"""Daily plans, plan-vs-fact in the configured time zone, and the "today" list."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import SYSTEM
from crm_core.activities import service as activities
from crm_core.activities.schemas import ActivityInput
from crm_core.errors import InvalidInput, NotFound, PermissionDenied
from crm_core.invoices.model import Invoice
from crm_core.rules import CrmRules
from crm_core.tasks import plan as plans
from crm_core.tasks import service as tasks
from crm_core.tasks.model import Task
from crm_core.tasks.schemas import PlanInput, TaskInput
from tests.crm_core.tasks.world import T0, World, build_world

MSK = ZoneInfo("Europe/Moscow")
MONDAY = date(2026, 3, 2)
RULES = CrmRules()


def msk(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=MSK)


def test_day_bounds_are_local_midnights() -> None:
    start, end = plans.day_bounds(MONDAY, MSK)
    assert start == datetime(2026, 3, 1, 21, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
    # A DST day elsewhere is 23 hours long.
    start, end = plans.day_bounds(date(2026, 3, 29), ZoneInfo("Europe/Berlin"))
    assert end - start == timedelta(hours=23)
    assert plans.week_of(date(2026, 3, 5)) == (MONDAY, date(2026, 3, 8))
    assert plans.local_day(datetime(2026, 3, 1, 21, 30, tzinfo=UTC), MSK) == MONDAY


async def test_only_head_and_admin_set_plans(session: AsyncSession) -> None:
    w = await build_world(session)
    data = PlanInput(calls=40, meetings=2, proposals=3)
    plan, event = await plans.set_plan(
        session, w["ivan"], MONDAY, data, actor=w.user("boss"), now=T0
    )
    assert (plan.calls, plan.set_by_id) == (40, w["boss"])
    assert event.name == "plan.set" and event.day == "2026-03-02"
    assert event.audience == (f"user:{w['ivan']}",)
    again, _ = await plans.set_plan(
        session, w["ivan"], MONDAY, PlanInput(calls=50), actor=w.user("adm"), now=T0
    )
    assert again.id == plan.id and again.calls == 50 and again.meetings == 0
    with pytest.raises(PermissionDenied):
        await plans.set_plan(session, w["ivan"], MONDAY, data, actor=w.user("ivan"), now=T0)
    with pytest.raises(NotFound):
        await plans.set_plan(session, 999_999, MONDAY, data, actor=w.user("boss"), now=T0)
    plans.ensure_may_read_plans(w.user("ivan"), w["ivan"])
    plans.ensure_may_read_plans(w.user("boss"), w["ivan"])
    with pytest.raises(PermissionDenied):
        plans.ensure_may_read_plans(w.user("anna"), w["ivan"])


async def _facts(session: AsyncSession, w: World) -> None:
    """Ivan on Monday (Moscow): 2 counted calls, 1 short call, 1 meeting, 1 proposal sent;
    a counted call at 23:59 Sunday and one at 00:00 Tuesday fall on other days."""

    async def act(kind: str, at: datetime, counted: bool = False, ext: str | None = None) -> None:
        data = ActivityInput(
            kind=kind, occurred_at=at, counted=counted, user_id=w["ivan"], external_id=ext
        )
        await activities.record_activity(session, data, actor=SYSTEM)

    await act("call", msk(MONDAY, 0, 0), True, "c1")
    await act("call", msk(MONDAY, 23, 59), True, "c2")
    await act("call", msk(MONDAY, 12), False, "c3")
    await act("call", msk(MONDAY, 0) - timedelta(minutes=1), True, "c4")  # Sunday
    await act("call", msk(MONDAY + timedelta(days=1), 0), True, "c5")  # Tuesday
    await act("meeting", msk(MONDAY, 15))
    for kind, done_at in (
        ("send_proposal", msk(MONDAY, 16)),
        ("send_proposal", None),  # still open: not a fact
        ("call_back", msk(MONDAY, 16)),  # not a proposal
    ):
        task, _ = await tasks.create_task(
            session, TaskInput(title="КП", kind=kind), actor=w.user("ivan"), rules=RULES, now=T0
        )
        if done_at is not None:
            await tasks.change_status(
                session, task.id, "complete", actor=w.user("ivan"), rules=RULES, now=done_at
            )
    await session.commit()


async def test_plan_vs_fact_for_a_day_and_a_week(session: AsyncSession) -> None:
    w = await build_world(session)
    await _facts(session, w)
    await plans.set_plan(
        session, w["ivan"], MONDAY, PlanInput(calls=3, meetings=1), actor=w.user("boss"), now=T0
    )
    rows, totals = await plans.plan_vs_fact(
        session, user_ids=[w["ivan"]], start=MONDAY, end=MONDAY, tz=MSK
    )
    [day] = rows
    assert day.planned and (day.plan.calls, day.plan.meetings) == (3, 1)
    assert (day.fact.calls, day.fact.meetings, day.fact.proposals) == (2, 1, 1)
    monday, sunday = plans.week_of(MONDAY)
    rows, totals = await plans.plan_vs_fact(
        session, user_ids=[w["ivan"]], start=monday, end=sunday, tz=MSK
    )
    assert len(rows) == 7
    assert [r.fact.calls for r in rows] == [2, 1, 0, 0, 0, 0, 0]
    assert not rows[1].planned
    [total] = totals
    assert (total.plan.calls, total.fact.calls, total.fact.proposals) == (3, 3, 1)
    # In UTC the Monday 00:00 Moscow call belongs to Sunday and the Tuesday 00:00 one to Monday.
    rows, _ = await plans.plan_vs_fact(
        session, user_ids=[w["ivan"]], start=MONDAY - timedelta(days=1), end=MONDAY, tz=UTC
    )
    assert [r.fact.calls for r in rows] == [2, 2]


async def test_everyone_by_default_and_range_limits(session: AsyncSession) -> None:
    w = await build_world(session)
    await plans.set_plan(
        session, w["boss"], MONDAY, PlanInput(calls=1), actor=w.user("adm"), now=T0
    )
    _, totals = await plans.plan_vs_fact(session, user_ids=None, start=MONDAY, end=MONDAY, tz=MSK)
    # Both managers, plus the head who has a plan that day.
    assert sorted(t.user_id for t in totals) == sorted([w["ivan"], w["anna"], w["boss"]])
    with pytest.raises(InvalidInput):
        await plans.plan_vs_fact(
            session, user_ids=None, start=MONDAY, end=MONDAY - timedelta(days=1), tz=MSK
        )
    with pytest.raises(InvalidInput):
        await plans.plan_vs_fact(
            session, user_ids=None, start=MONDAY, end=MONDAY + timedelta(days=100), tz=MSK
        )


async def test_today_list(session: AsyncSession) -> None:
    w = await build_world(session)
    now = msk(MONDAY, 10)
    ivan = w.user("ivan")

    async def task(title: str, due: datetime | None, kind: str = "custom", **kw: object) -> Task:
        data = TaskInput.model_validate({"title": title, "kind": kind, "due_at": due, **kw})
        t, _ = await tasks.create_task(session, data, actor=ivan, rules=RULES, now=T0)
        return t

    overdue = await task("overdue", msk(MONDAY, 9))
    yesterday = await task("yesterday", msk(MONDAY - timedelta(days=1), 9))
    later = await task("later today", msk(MONDAY, 18))
    await task("tomorrow", msk(MONDAY + timedelta(days=1), 9))
    await task("undated", None)
    callback = await task("call back", msk(MONDAY, 9, 30), "call_back")
    await task("call back tomorrow", msk(MONDAY + timedelta(days=1), 9), "call_back")
    done = await task("done", msk(MONDAY, 8))
    await tasks.change_status(session, done.id, "complete", actor=ivan, rules=RULES, now=T0)
    await task("anna's", msk(MONDAY, 9), responsible_id=None)  # unassigned

    def invoice(number: str, due: date, status: str = "issued", who: int | None = None) -> Invoice:
        inv = Invoice(
            number=number,
            amount=Decimal("100.00"),
            issued_on=MONDAY - timedelta(days=30),
            due_on=due,
            status=status,
            responsible_id=who or w["ivan"],
        )
        session.add(inv)
        return inv

    in_3_days = invoice("1", MONDAY + timedelta(days=3))
    due_today = invoice("2", MONDAY)
    invoice("3", MONDAY + timedelta(days=4))  # outside the window
    late = invoice("4", MONDAY - timedelta(days=1))
    invoice("5", MONDAY - timedelta(days=1), status="paid")
    invoice("6", MONDAY, who=w["anna"])
    await session.commit()

    today = await plans.today_list(session, w["ivan"], now=now, tz=MSK, rules=RULES)
    assert today.day == MONDAY
    assert [t.id for t in today.overdue] == [yesterday.id, overdue.id]
    assert [t.id for t in today.due_today] == [later.id]
    assert [t.id for t in today.callbacks] == [callback.id]
    assert [i.id for i in today.invoices_expiring] == [due_today.id, in_3_days.id]
    assert [i.id for i in today.invoices_overdue] == [late.id]
    assert today.plan is not None and not today.plan.planned
    narrow = await plans.today_list(
        session, w["ivan"], now=now, tz=MSK, rules=CrmRules(invoice_reminder_days=(1, 0))
    )
    assert [i.id for i in narrow.invoices_expiring] == [due_today.id]
