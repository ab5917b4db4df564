"""Мой день: counters first (просрочено, на сегодня, пропущенные звонки, счета истекают), then
the lists behind them, each row with its one-click action. The head of sales (and the admin)
sees his team: the same counters per manager, today's plan against the fact, and who is on a
call right now (live from /ws)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.keys import PBX, RULES, SESSIONS
from contact_center.web import links, listing
from contact_center.web.shell import HEADS, MenuEntry, now, page, t_of, zone
from crm_core.calls.model import Call
from crm_core.calls.record import MISSED
from crm_core.distribution.model import RequestStatus, WebRequest
from crm_core.invoices.model import Invoice, InvoiceStatus
from crm_core.tasks import plan as plans
from crm_core.tasks.model import Task, TaskKind, TaskStatus
from crm_core.users.model import Role, User, UserExtension

MENU = (MenuEntry("today", "/today", "menu.today", "today", 10),)
RECENT_MISSED = 10
# Tasks of each list shown on My day; the counters and «ещё N» count them all.
LIST_LIMIT = 30


def _task_rows(tasks: list[Task], refs: dict[int, Any], at: datetime) -> list[dict[str, Any]]:
    rows = []
    for task in tasks:
        ref = refs.get(id(task))
        number = None
        if task.origin_key and task.origin_key.startswith("missed-call:"):
            number = task.origin_key.split(":", 1)[1]
        rows.append(
            {
                "id": task.id,
                "kind": task.kind,
                "title": task.title,
                "due_at": task.due_at,
                "overdue": task.due_at is not None and task.due_at < at,
                "client": ref,
                "phone": number or (ref.phone if ref else None),
            }
        )
    return rows


async def _missed_calls(
    session: AsyncSession, user_id: int, since: datetime
) -> tuple[list[Call], int]:
    stmt = select(Call).where(
        Call.user_id == user_id,
        Call.disposition.in_(sorted(MISSED)),
        Call.direction == "inbound",
        Call.started_at >= since,
    )
    total = await session.scalar(select(func.count()).select_from(stmt.subquery()))
    rows = await session.scalars(stmt.order_by(Call.started_at.desc()).limit(RECENT_MISSED))
    return list(rows), int(total or 0)


async def _task_counts(
    session: AsyncSession, user_id: int, at: datetime, end: datetime
) -> dict[str, int]:
    """How many of his open tasks each list of My day holds (one query, whatever the lists
    show): overdue and today's tasks, overdue and today's call-backs."""
    callback = Task.kind == TaskKind.CALL_BACK.value
    due = Task.due_at

    def count(*when: Any) -> Any:
        return func.coalesce(func.sum(case((and_(*when), 1), else_=0)), 0)

    row = (
        await session.execute(
            select(
                count(~callback, due < at),
                count(~callback, due >= at),
                count(callback, due < at),
                count(callback, or_(due.is_(None), due >= at)),
            ).where(
                Task.responsible_id == user_id,
                Task.status == TaskStatus.OPEN.value,
                or_(due.is_(None), due < end),
            )
        )
    ).one()
    overdue, today, callbacks_overdue, callbacks_today = (int(v or 0) for v in row)
    return {
        "overdue": overdue,
        "due_today": today,
        "callbacks_overdue": callbacks_overdue,
        "callbacks_today": callbacks_today,
    }


async def personal_day(request: web.Request, session: AsyncSession, user: User) -> dict[str, Any]:
    """The manager's own day."""
    at = now(request)
    tz = zone(request)
    rules = request.app[RULES]
    day = await plans.today_list(session, user.id, now=at, tz=tz, rules=rules, limit=LIST_LIMIT)
    start, end = plans.day_bounds(day.day, tz)
    counts = await _task_counts(session, user.id, at, end)
    missed, missed_total = await _missed_calls(session, user.id, start - timedelta(days=1))
    missed_today = sum(1 for c in missed if c.started_at >= start)
    if missed_total > RECENT_MISSED:
        missed_today = int(
            await session.scalar(
                select(func.count()).where(
                    Call.user_id == user.id,
                    Call.disposition.in_(sorted(MISSED)),
                    Call.direction == "inbound",
                    Call.started_at >= start,
                )
            )
            or 0
        )
    tasks = [*day.overdue, *day.due_today, *day.callbacks]
    invoices = [*day.invoices_overdue, *day.invoices_expiring]
    refs = await links.client_refs(session, [*tasks, *invoices, *missed])
    callbacks = _task_rows(day.callbacks, refs, at)
    return {
        "day": day.day,
        # Each task is counted where it is listed: a call-back under «Перезвонить» (red when
        # one of them is overdue), not in «просрочено» / «на сегодня».
        "counters": {
            "overdue": counts["overdue"],
            "today": counts["due_today"],
            "callbacks": counts["callbacks_overdue"] + counts["callbacks_today"],
            "callbacks_overdue": counts["callbacks_overdue"],
            "missed": missed_today,
            "invoices": len(invoices),
        },
        # How many each list holds in all (it shows the first LIST_LIMIT).
        "totals": {
            "overdue": counts["overdue"],
            "due-today": counts["due_today"],
            "callbacks": counts["callbacks_overdue"] + counts["callbacks_today"],
        },
        "overdue": _task_rows(day.overdue, refs, at),
        "due_today": _task_rows(day.due_today, refs, at),
        "callbacks": callbacks,
        "invoices": [
            {
                "id": i.id,
                "number": i.number,
                "amount": i.amount,
                "due_on": i.due_on,
                "overdue": i.due_on < day.day,
                "client": refs.get(id(i)),
            }
            for i in invoices
        ],
        "missed": [
            {"id": c.id, "at": c.started_at, "number": c.caller, "client": refs.get(id(c))}
            for c in missed
        ],
        "plan": day.plan,
    }


async def team_day(request: web.Request, session: AsyncSession) -> dict[str, Any]:
    """Each active manager's counters and today's plan against the fact, in a few grouped
    queries for the whole team."""
    at = now(request)
    tz = zone(request)
    rules = request.app[RULES]
    today = plans.local_day(at, tz)
    start, end = plans.day_bounds(today, tz)
    team = list(
        await session.execute(
            select(User.id, User.display_name, User.login)
            .where(User.is_active.is_(True), User.role == Role.MANAGER.value)
            .order_by(User.display_name)
        )
    )
    ids = [row.id for row in team]
    open_task = Task.status == TaskStatus.OPEN.value

    async def grouped(column: Any, *where: Any) -> dict[int, int]:
        if not ids:
            return {}
        stmt = select(column, func.count()).where(column.in_(ids), *where).group_by(column)
        return {row[0]: int(row[1]) for row in await session.execute(stmt)}

    # Counted as each manager's own day counts them: a call-back under «Перезвонить», not in
    # «просрочено» / «на сегодня».
    callback = Task.kind == TaskKind.CALL_BACK.value
    overdue = await grouped(Task.responsible_id, open_task, ~callback, Task.due_at < at)
    due_today = await grouped(
        Task.responsible_id, open_task, ~callback, Task.due_at >= at, Task.due_at < end
    )
    callbacks = await grouped(
        Task.responsible_id, open_task, callback, or_(Task.due_at.is_(None), Task.due_at < end)
    )
    missed = await grouped(
        Call.user_id,
        Call.disposition.in_(sorted(MISSED)),
        Call.direction == "inbound",
        Call.started_at >= start,
    )
    window = max(rules.invoice_reminder_days, default=0)
    invoices = await grouped(
        Invoice.responsible_id,
        Invoice.status == InvoiceStatus.ISSUED.value,
        Invoice.due_on <= today + timedelta(days=window),
    )
    rows, _ = await plans.plan_vs_fact(session, user_ids=ids, start=today, end=today, tz=tz)
    plan_of = {r.user_id: r for r in rows}
    queued = int(
        await session.scalar(
            select(func.count())
            .select_from(WebRequest)
            .where(WebRequest.status == RequestStatus.QUEUED.value)
        )
        or 0
    )
    unassigned = int(
        await session.scalar(
            select(func.count()).select_from(Task).where(open_task, Task.responsible_id.is_(None))
        )
        or 0
    )
    members = [
        {
            "id": row.id,
            "name": row.display_name or row.login,
            "overdue": overdue.get(row.id, 0),
            "today": due_today.get(row.id, 0),
            "callbacks": callbacks.get(row.id, 0),
            "missed": missed.get(row.id, 0),
            "invoices": invoices.get(row.id, 0),
            "plan": plan_of.get(row.id),
        }
        for row in team
    ]
    totals = {
        key: sum(m[key] for m in members)
        for key in ("overdue", "today", "callbacks", "missed", "invoices")
    }
    return {"members": members, "totals": totals, "queued": queued, "unassigned": unassigned}


def _on_call(request: web.Request, ext_names: dict[str, str]) -> list[dict[str, Any]]:
    """Calls in progress as this instance's PBX links see them (the page then follows /ws)."""
    out = []
    for pbx_name, link in request.app[PBX].links.items():
        for call in link.folder.live_calls():
            if call.answered_ts is None and not call.rang:
                continue  # still in the IVR or the queue: nobody's phone yet
            extension = call.extension or (call.rang[0] if call.rang else None)
            out.append(
                {
                    "call_id": call.call_id,
                    "pbx": pbx_name,
                    "extension": extension,
                    "who": ext_names.get(extension or "", extension or ""),
                    "number": call.caller if call.direction != "outbound" else call.callee,
                    "answered": call.answered_ts is not None,
                    "since": datetime.fromtimestamp(call.answered_ts or call.started_ts, UTC),
                }
            )
    return out


@page("today/today.html", partial="today/_today.html")
async def today_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    team = user.role in HEADS
    data: dict[str, Any] = {"title": t("menu.today"), "team": None, "on_call": []}
    async with request.app[SESSIONS]() as session:
        data["me"] = await personal_day(request, session, user)
        if team:
            data["team"] = await team_day(request, session)
            names = await listing.names(session)
            owners = {
                ext: names.user(uid)
                for ext, uid in await session.execute(
                    select(UserExtension.extension, UserExtension.user_id)
                )
            }
    if team:
        data["on_call"] = _on_call(request, owners)
        data["_page"] = {"view": "team", "ext_names": owners}
    else:
        data["_page"] = {"view": "today"}
    me = data["me"]
    data["has_own_work"] = bool(
        me["overdue"] or me["due_today"] or me["callbacks"] or me["invoices"] or me["missed"]
    )
    return data


def routes(app: web.Application) -> None:
    app.router.add_get("/", today_page)
    app.router.add_get("/today", today_page)
