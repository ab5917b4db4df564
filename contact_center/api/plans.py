"""Daily plans (the head of sales sets them), plan-vs-fact by day and week, and each manager's
"today" list."""

from __future__ import annotations

from datetime import date
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contact_center.api.common import actor, clock, path_id, rules, settings, uow
from contact_center.api.invoices import zone
from contact_center.http.api import Api
from crm_core import access
from crm_core.errors import InvalidInput
from crm_core.invoices.schemas import InvoiceOut
from crm_core.tasks import plan as plans
from crm_core.tasks.schemas import PlanDayOut, PlanInput, PlanOut, PlanReport, TaskOut

api = Api()
TAGS = ["plans"]


DAY = {"type": "string", "format": "date", "description": "YYYY-MM-DD"}


def path_day(request: web.Request) -> date:
    raw = request.match_info["day"]
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise InvalidInput(
            f"day {raw!r} is not a date (YYYY-MM-DD)", details={"field": "day", "value": raw}
        ) from exc


class PlanQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: date | None = Field(None, alias="from", description="first day (inclusive)")
    end: date | None = Field(None, alias="to", description="last day (inclusive)")
    week_of: date | None = Field(
        None, description="instead of from/to: Monday to Sunday of this day's week"
    )
    user_id: int | None = Field(None, description="one manager; default: all (head, admin)")


@api.route(
    "PUT",
    "/plans/{user_id}/{day}",
    summary="Set a manager's plan for a day (head of sales, admin)",
    body=PlanInput,
    response=PlanOut,
    roles=["admin", "head"],
    tags=TAGS,
    path_params={"day": DAY},
    errors={404: "No such user"},
)
async def set_plan(request: web.Request, body: PlanInput) -> PlanOut:
    user_id = path_id(request, "user_id", "user")
    day = path_day(request)
    async with uow(request) as u:
        plan, event = await plans.set_plan(
            u.session, user_id, day, body, actor=actor(request), now=clock(request).now()
        )
        u.emit(event)
        await u.commit()
    return PlanOut.of(plan)


@api.route(
    "GET",
    "/plans/{user_id}/{day}",
    summary="Plan and fact of a manager on a day",
    response=PlanDayOut,
    tags=TAGS,
    path_params={"day": DAY},
    errors={403: "Another manager's plan"},
)
async def get_plan_day(request: web.Request) -> PlanDayOut:
    user_id = path_id(request, "user_id", "user")
    day = path_day(request)
    plans.ensure_may_read_plans(actor(request), user_id)
    async with uow(request) as u:
        rows, _ = await plans.plan_vs_fact(
            u.session, user_ids=[user_id], start=day, end=day, tz=zone(request)
        )
    return rows[0]


@api.route(
    "GET",
    "/plans",
    summary="Plan-vs-fact per manager per day and totals (default: this week)",
    query=PlanQuery,
    response=PlanReport,
    tags=TAGS,
    errors={403: "Another manager's plan"},
)
async def plan_report(request: web.Request, query: PlanQuery) -> PlanReport:
    user = actor(request)
    tz = zone(request)
    if query.week_of is not None or (query.start is None and query.end is None):
        start, end = plans.week_of(query.week_of or clock(request).now().astimezone(tz).date())
    else:
        first, last = query.start or query.end, query.end or query.start
        assert first is not None and last is not None
        start, end = first, last
    user_ids: list[int] | None
    if query.user_id is not None:
        plans.ensure_may_read_plans(user, query.user_id)
        user_ids = [query.user_id]
    elif access.is_privileged(user):
        user_ids = None
    else:
        user_ids = [user.id]
    async with uow(request) as u:
        days, totals = await plans.plan_vs_fact(
            u.session, user_ids=user_ids, start=start, end=end, tz=tz
        )
    return PlanReport(
        start=start,
        end=end,
        timezone=settings(request).locale.timezone,
        days=days,
        totals=totals,
    )


class TodayQuery(BaseModel):
    user_id: int | None = Field(None, description="another manager's list (head, admin)")


class TodayOut(BaseModel):
    day: date
    timezone: str
    overdue: list[TaskOut]
    due_today: list[TaskOut]
    callbacks: list[TaskOut]
    invoices_expiring: list[InvoiceOut]
    invoices_overdue: list[InvoiceOut]
    plan: PlanDayOut | None


@api.route(
    "GET",
    "/me/today",
    summary="My today: overdue and due tasks, call-backs, invoices about to expire or overdue",
    query=TodayQuery,
    response=TodayOut,
    tags=TAGS,
    errors={403: "Another manager's list"},
)
async def my_today(request: web.Request, query: TodayQuery) -> TodayOut:
    user = actor(request)
    user_id = query.user_id if query.user_id is not None else user.id
    plans.ensure_may_read_plans(user, user_id)
    now = clock(request).now()
    async with uow(request) as u:
        today = await plans.today_list(
            u.session, user_id, now=now, tz=zone(request), rules=rules(request)
        )

    def out(items: list[Any]) -> list[TaskOut]:
        return [TaskOut.of(t, now) for t in items]

    return TodayOut(
        day=today.day,
        timezone=settings(request).locale.timezone,
        overdue=out(today.overdue),
        due_today=out(today.due_today),
        callbacks=out(today.callbacks),
        invoices_expiring=[InvoiceOut.of(i, today.day) for i in today.invoices_expiring],
        invoices_overdue=[InvoiceOut.of(i, today.day) for i in today.invoices_overdue],
        plan=today.plan,
    )
