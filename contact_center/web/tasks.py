"""Задачи: the list of tasks, and the one-click actions on a task (done, postpone to tomorrow)
that My day and the list share."""

from __future__ import annotations

import json
from datetime import datetime, time, timedelta
from typing import Any

from aiohttp import web

from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS
from contact_center.web import links, listing
from contact_center.web.shell import MenuEntry, is_partial, now, page, t_of, zone
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskKind, TaskStatus
from crm_core.tasks.schemas import TaskPatch
from crm_core.users.model import User

MENU = (MenuEntry("tasks", "/tasks", "menu.tasks", "tasks", 50),)
SORTS = ("due_at", "title", "created_at", "completed_at")
# A task postponed "to tomorrow" without a time of its own is due at this local time.
MORNING = time(10, 0)
ALL = "all"


@page("lists/tasks.html", partial="lists/_tasks.html")
async def tasks_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    tz = zone(request)
    at = now(request)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        filters = [
            listing.Filter("responsible", "filter.responsible", options=names.user_options()),
            listing.Filter(
                "status",
                "filter.status",
                options=(
                    *((s.value, t("task.status." + s.value)) for s in TaskStatus),
                    (ALL, t("task.status.all")),
                ),
                required=True,
            ),
            listing.Filter(
                "kind",
                "filter.kind",
                options=tuple((k.value, t("task.kind." + k.value)) for k in TaskKind),
            ),
            listing.Filter("overdue", "filter.overdue", options=(("1", t("list.yes")),)),
            listing.Filter("from", "filter.due_from", kind="date"),
            listing.Filter("to", "filter.due_to", kind="date"),
        ]
        state = listing.state_of(request, filters, SORTS, "due_at")
        # Open tasks unless another status is asked for (as in Bitrix24 and amoCRM).
        status = state.value("status") or TaskStatus.OPEN.value
        rows, state.total = await tasks.list_tasks(
            session,
            actor=user,
            rules=request.app[RULES],
            status=[status] if status in {s.value for s in TaskStatus} else None,
            kind=state.value("kind") or None,
            responsible_id=state.int_value("responsible"),
            due_from=listing.day_start(state.date_value("from"), tz),
            due_to=listing.day_end(state.date_value("to"), tz),
            overdue_at=at if state.value("overdue") == "1" else None,
            limit=listing.PER_PAGE,
            offset=state.offset,
            sort=state.sort,
            count_cap=listing.COUNT_CAP,
        )
        refs = await links.client_refs(session, rows)
    state.shown = len(rows)
    state.make_chips(t)
    items = []
    for task in rows:
        ref = refs.get(id(task))
        number = None
        if task.origin_key and task.origin_key.startswith("missed-call:"):
            number = task.origin_key.split(":", 1)[1]
        items.append(
            {
                "id": task.id,
                "title": task.title,
                "kind": t("task.kind." + task.kind),
                "status": task.status,
                "status_text": t("task.status." + task.status),
                "due_at": task.due_at,
                "overdue": task.status == TaskStatus.OPEN.value
                and task.due_at is not None
                and task.due_at < at,
                "client": ref,
                "phone": number or (ref.phone if ref else None),
                "responsible": names.user(task.responsible_id),
                "completed_at": task.completed_at,
            }
        )
    return {"title": t("menu.tasks"), "state": state, "items": items}


def _changed(request: web.Request, message: str) -> web.StreamResponse:
    """After an action: htmx gets 204 with events (the lists reload, a toast says what was
    done); a plain form goes back to where it came from."""
    if is_partial(request):
        trigger = {"tasks-changed": None, "cc-toast": {"text": message}}
        return web.Response(status=204, headers={"HX-Trigger": json.dumps(trigger)})
    raise web.HTTPSeeOther("/today")


def _task_id(request: web.Request) -> int:
    return int(request.match_info["id"])


@page("errors/partial.html")
async def task_done(request: web.Request, user: User) -> web.StreamResponse:
    async with UnitOfWork(request) as u:
        _, events = await tasks.change_status(
            u.session,
            _task_id(request),
            "complete",
            actor=user,
            rules=request.app[RULES],
            now=now(request),
        )
        u.emit(*events)
        await u.commit()
    return _changed(request, t_of(request)("task.done_toast"))


def tomorrow(due: datetime | None, at: datetime, tz: Any) -> datetime:
    """The same local time tomorrow (of today, for an overdue task), or 10:00 tomorrow."""
    today = at.astimezone(tz).date()
    clock = due.astimezone(tz).time() if due is not None else MORNING
    return datetime.combine(today + timedelta(days=1), clock, tzinfo=tz)


@page("errors/partial.html")
async def task_postpone(request: web.Request, user: User) -> web.StreamResponse:
    at = now(request)
    rules = request.app[RULES]
    async with UnitOfWork(request) as u:
        task = await tasks.get_task(u.session, _task_id(request), actor=user, rules=rules)
        due = tomorrow(task.due_at, at, zone(request))
        _, events = await tasks.update_task(
            u.session, task.id, TaskPatch(due_at=due), actor=user, rules=rules, now=at
        )
        u.emit(*events)
        await u.commit()
    return _changed(request, t_of(request)("task.postponed_toast"))


def routes(app: web.Application) -> None:
    app.router.add_get("/tasks", tasks_page)
    app.router.add_post(r"/tasks/{id:\d{1,18}}/done", task_done)
    app.router.add_post(r"/tasks/{id:\d{1,18}}/postpone", task_postpone)
