"""Daily plans (set by the head of sales), plan-vs-fact, and a manager's "today" list.

Days are calendar days in the configured time zone (``locale.timezone``), passed in as
``tz``: a Moscow day runs from 00:00 to 24:00 Moscow time, whatever the server's zone.

Fact of a day, per manager:

* calls: his *counted* call activities (enough talk time; the telephony writes them);
* meetings: his meeting activities;
* proposals: his ``send_proposal`` tasks completed that day. A proposal is counted when the
  manager marks its task done, not from e-mails (an e-mail is not necessarily a proposal).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.activities.model import Activity, ActivityKind
from crm_core.errors import InvalidInput, NotFound, PermissionDenied
from crm_core.invoices.model import Invoice, InvoiceStatus
from crm_core.rules import CrmRules
from crm_core.tasks.events import DailyPlanSet, audience_of
from crm_core.tasks.model import DailyPlan, Task, TaskKind, TaskStatus
from crm_core.tasks.schemas import Figures, PlanDayOut, PlanInput, PlanTotalOut
from crm_core.users.model import Role, User

MAX_RANGE_DAYS = 93


def local_day(moment: datetime, tz: tzinfo) -> date:
    """The calendar day ``moment`` falls on in ``tz``."""
    return moment.astimezone(tz).date()


def day_bounds(day: date, tz: tzinfo) -> tuple[datetime, datetime]:
    """[start, end) of ``day`` in ``tz``, as UTC moments (23 or 25 hours long on DST days)."""
    start = datetime.combine(day, time(0), tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def week_of(day: date) -> tuple[date, date]:
    """Monday and Sunday of the ISO week of ``day``."""
    monday = day - timedelta(days=day.weekday())
    return monday, monday + timedelta(days=6)


def _days(start: date, end: date) -> list[date]:
    if end < start:
        raise InvalidInput("to is before from", details={"field": "to"})
    count = (end - start).days + 1
    if count > MAX_RANGE_DAYS:
        raise InvalidInput(
            f"at most {MAX_RANGE_DAYS} days at once, got {count}",
            details={"field": "to", "max_days": MAX_RANGE_DAYS},
        )
    return [start + timedelta(days=i) for i in range(count)]


async def set_plan(
    session: AsyncSession,
    user_id: int,
    day: date,
    data: PlanInput,
    *,
    actor: Actor,
    now: datetime,
) -> tuple[DailyPlan, DailyPlanSet]:
    """Set (create or replace) ``user_id``'s plan for ``day``; head and admin only."""
    if not access.is_privileged(actor):
        raise PermissionDenied("only the head of sales or an admin sets plans")
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise NotFound(f"no active user {user_id}")
    plan = await session.scalar(
        select(DailyPlan).where(DailyPlan.user_id == user_id, DailyPlan.day == day)
    )
    if plan is None:
        plan = DailyPlan(user_id=user_id, day=day)
        session.add(plan)
    plan.calls = data.calls
    plan.meetings = data.meetings
    plan.proposals = data.proposals
    plan.note = data.note
    plan.set_by_id = actor.id
    plan.updated_at = now
    await session.flush()
    event = DailyPlanSet(
        user_id=user_id,
        day=day.isoformat(),
        calls=plan.calls,
        meetings=plan.meetings,
        proposals=plan.proposals,
        set_by_id=actor.id,
        audience=audience_of(user_id),
    )
    return plan, event


def ensure_may_read_plans(actor: Actor, user_id: int) -> None:
    """Head and admin read everyone's plans; a manager his own."""
    if user_id != actor.id and not access.is_privileged(actor):
        raise PermissionDenied("a manager reads only his own plan", details={"user_id": user_id})


async def _per_day_counts(
    session: AsyncSession,
    ts: Any,
    user_col: Any,
    conditions: Sequence[Any],
    user_ids: Sequence[int],
    bounds: Sequence[tuple[datetime, datetime]],
) -> dict[int, list[int]]:
    """{user id: [count per day]} in one grouped query (one SUM(CASE) column per day)."""
    columns = [
        func.coalesce(func.sum(case((and_(ts >= lo, ts < hi), 1), else_=0)), 0) for lo, hi in bounds
    ]
    stmt = (
        select(user_col, *columns)
        .where(user_col.in_(list(user_ids)), ts >= bounds[0][0], ts < bounds[-1][1], *conditions)
        .group_by(user_col)
    )
    return {row[0]: [int(v) for v in row[1:]] for row in await session.execute(stmt)}


async def plan_vs_fact(
    session: AsyncSession,
    *,
    user_ids: Sequence[int] | None,
    start: date,
    end: date,
    tz: tzinfo,
) -> tuple[list[PlanDayOut], list[PlanTotalOut]]:
    """Plan and fact per user per day from ``start`` to ``end`` (inclusive), and per-user
    totals over the range (a week: Monday to Sunday). ``user_ids`` None: every active manager
    plus anyone with a plan in the range."""
    days = _days(start, end)
    if user_ids is None:
        ids = set(
            await session.scalars(
                select(User.id).where(User.role == Role.MANAGER.value, User.is_active.is_(True))
            )
        )
        ids.update(
            await session.scalars(
                select(DailyPlan.user_id).where(DailyPlan.day >= start, DailyPlan.day <= end)
            )
        )
        user_ids = sorted(ids)
    if not user_ids:
        return [], []
    plans = {
        (p.user_id, p.day): p
        for p in await session.scalars(
            select(DailyPlan).where(
                DailyPlan.user_id.in_(list(user_ids)),
                DailyPlan.day >= start,
                DailyPlan.day <= end,
            )
        )
    }
    bounds = [day_bounds(d, tz) for d in days]
    calls = await _per_day_counts(
        session,
        Activity.occurred_at,
        Activity.user_id,
        [Activity.kind == ActivityKind.CALL.value, Activity.counted.is_(True)],
        user_ids,
        bounds,
    )
    meetings = await _per_day_counts(
        session,
        Activity.occurred_at,
        Activity.user_id,
        [Activity.kind == ActivityKind.MEETING.value],
        user_ids,
        bounds,
    )
    proposals = await _per_day_counts(
        session,
        Task.completed_at,
        Task.responsible_id,
        [Task.kind == TaskKind.SEND_PROPOSAL.value, Task.status == TaskStatus.DONE.value],
        user_ids,
        bounds,
    )
    rows: list[PlanDayOut] = []
    totals: list[PlanTotalOut] = []
    zeros = [0] * len(days)
    for uid in user_ids:
        plan_sum = Figures()
        fact_sum = Figures()
        for i, day in enumerate(days):
            plan = plans.get((uid, day))
            fact = Figures(
                calls=calls.get(uid, zeros)[i],
                meetings=meetings.get(uid, zeros)[i],
                proposals=proposals.get(uid, zeros)[i],
            )
            planned = Figures(
                calls=plan.calls if plan else 0,
                meetings=plan.meetings if plan else 0,
                proposals=plan.proposals if plan else 0,
            )
            rows.append(
                PlanDayOut(
                    user_id=uid,
                    day=day,
                    planned=plan is not None,
                    plan=planned,
                    fact=fact,
                    note=plan.note if plan else None,
                    set_by_id=plan.set_by_id if plan else None,
                )
            )
            for target, add in ((plan_sum, planned), (fact_sum, fact)):
                target.calls += add.calls
                target.meetings += add.meetings
                target.proposals += add.proposals
        totals.append(PlanTotalOut(user_id=uid, start=start, end=end, plan=plan_sum, fact=fact_sum))
    return rows, totals


@dataclass
class TodayList:
    """What a manager has to do today."""

    day: date
    overdue: list[Task]  # open, due before now (call-backs apart)
    due_today: list[Task]  # open, due from now to the end of the day (call-backs apart)
    callbacks: list[Task]  # open call-back tasks due by the end of the day or undated
    invoices_expiring: list[Invoice]  # issued, due within the reminder window
    invoices_overdue: list[Invoice]  # issued, due before today
    plan: PlanDayOut | None


async def today_list(
    session: AsyncSession,
    user_id: int,
    *,
    now: datetime,
    tz: tzinfo,
    rules: CrmRules,
    limit: int = 200,
) -> TodayList:
    """The "today" list of ``user_id``: his overdue and due-today tasks, his call-backs, his
    invoices about to expire (due within ``max(rules.invoice_reminder_days)`` days) and his
    overdue unpaid invoices, with today's plan-vs-fact."""
    today = local_day(now, tz)
    _, end_of_day = day_bounds(today, tz)
    open_mine = select(Task).where(
        Task.responsible_id == user_id, Task.status == TaskStatus.OPEN.value
    )
    not_callback = Task.kind != TaskKind.CALL_BACK.value
    order = (Task.due_at, Task.id)
    overdue = await session.scalars(
        open_mine.where(not_callback, Task.due_at < now).order_by(*order).limit(limit)
    )
    due_today = await session.scalars(
        open_mine.where(not_callback, Task.due_at >= now, Task.due_at < end_of_day)
        .order_by(*order)
        .limit(limit)
    )
    callbacks = await session.scalars(
        open_mine.where(
            Task.kind == TaskKind.CALL_BACK.value,
            or_(Task.due_at.is_(None), Task.due_at < end_of_day),
        )
        .order_by(Task.due_at.is_(None), *order)
        .limit(limit)
    )
    window = max(rules.invoice_reminder_days, default=0)
    issued_mine = select(Invoice).where(
        Invoice.responsible_id == user_id, Invoice.status == InvoiceStatus.ISSUED.value
    )
    expiring = await session.scalars(
        issued_mine.where(Invoice.due_on >= today, Invoice.due_on <= today + timedelta(window))
        .order_by(Invoice.due_on, Invoice.id)
        .limit(limit)
    )
    overdue_invoices = await session.scalars(
        issued_mine.where(Invoice.due_on < today).order_by(Invoice.due_on, Invoice.id).limit(limit)
    )
    rows, _ = await plan_vs_fact(session, user_ids=[user_id], start=today, end=today, tz=tz)
    return TodayList(
        day=today,
        overdue=list(overdue),
        due_today=list(due_today),
        callbacks=list(callbacks),
        invoices_expiring=list(expiring),
        invoices_overdue=list(overdue_invoices),
        plan=rows[0] if rows else None,
    )
