"""Уведомления: the bell's dropdown and the page behind it (``/notifications``), read marks (one
or all), and one notification as a toast (``/notifications/{id}.json``) for the page script
when ``notification.created`` arrives over ``/ws``. Each notification is written here, once,
as a title, a line and the link to its object (the lead, deal, client, invoice; a task opens
the record it is about)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import UnitOfWork
from contact_center.http.api import path_id
from contact_center.keys import CLOCK, SESSIONS
from contact_center.web.shell import (
    Formatter,
    is_partial,
    language,
    now,
    page,
    render,
    t_of,
    zone,
)
from crm_core import errors
from crm_core.notifications import service as notifications
from crm_core.notifications.model import Notification
from crm_core.tasks.model import Task
from crm_core.users.model import User

MENU = ()
PER_PAGE = 50
IN_BOX = 8

TITLES = {
    "task.due": "toast.task_due",
    "task.assigned": "toast.task_assigned",
    "tasks.assigned": "notifications.tasks_assigned",
    "lead.assigned": "toast.lead_assigned",
    "deal.assigned": "notifications.deal_assigned",
    "web_request.queued": "toast.web_request_queued",
    "web_request.assigned": "notifications.web_request_assigned",
    "invoice.reminder": "toast.invoice",
}
PATHS = {
    "lead": "/clients/lead/{}",
    "contact": "/clients/contact/{}",
    "company": "/clients/company/{}",
    "deal": "/deals/{}",
    "invoice": "/invoices/{}",
}


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²" and other digits int() refuses)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class NoteView:
    id: int
    title: str
    text: str
    url: str
    created_at: datetime
    unread: bool

    def as_dict(self, fmt: Formatter) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "text": self.text,
            "url": self.url,
            "when": fmt.when(self.created_at),
        }


async def _task_targets(session: AsyncSession, rows: list[Notification]) -> dict[int, str]:
    """Where a notification about a task leads: the record the task is about."""
    ids = [r.object_id for r in rows if r.object_type == "task" and r.object_id is not None]
    if not ids:
        return {}
    out: dict[int, str] = {}
    for task in await session.scalars(select(Task).where(Task.id.in_(ids))):
        for kind in ("deal", "lead", "contact", "company", "invoice"):
            value = getattr(task, f"{kind}_id")
            if value is not None:
                out[task.id] = PATHS[kind].format(value)
                break
    return out


def _url(row: Notification, tasks: dict[int, str]) -> str:
    if row.object_type == "task" and row.object_id is not None:
        return tasks.get(row.object_id, "/tasks")
    if row.object_type in PATHS and row.object_id is not None:
        return PATHS[row.object_type].format(row.object_id)
    if row.kind == "web_request.queued":
        return "/distribution"
    return "/tasks" if row.kind.startswith("task") else "/today"


def _text(row: Notification, fmt: Formatter) -> str:
    data = row.data or {}
    if row.kind == "invoice.reminder":
        parts = [f"№ {data.get('number', '')}", fmt.money(data.get("amount"))]
        return " · ".join(p for p in parts if p)
    if row.kind == "web_request.queued":
        return " · ".join(
            str(x)
            for x in (data.get("name"), fmt.phone(data.get("phone")), data.get("region"))
            if x
        )
    text = str(data.get("title") or "")
    if row.kind == "tasks.assigned" and data.get("count"):
        text = f"{text} ({data['count']})"
    due = data.get("due_at")
    if isinstance(due, str) and due:
        with contextlib.suppress(ValueError):
            text += " · " + fmt.when(datetime.fromisoformat(due))
    return text


async def describe(
    request: web.Request, session: AsyncSession, rows: list[Notification]
) -> list[NoteView]:
    t = t_of(request)
    fmt = Formatter(language(request), zone(request), now(request))
    tasks = await _task_targets(session, rows)
    return [
        NoteView(
            id=row.id,
            title=t(TITLES.get(row.kind, "toast.notification")),
            text=_text(row, fmt),
            url=_url(row, tasks),
            created_at=row.created_at,
            unread=row.read_at is None,
        )
        for row in rows
    ]


def _before(request: web.Request) -> int | None:
    value = request.query.get("before", "")
    return int(value) if _digits(value) and len(value) < 10 else None


@page("notifications/page.html", partial="notifications/_list.html")
async def notifications_page(request: web.Request, user: User) -> dict[str, Any]:
    return await _list_data(request, user)


async def _list_data(request: web.Request, user: User) -> dict[str, Any]:
    box = request.query.get("box") == "1"
    unread_only = request.query.get("unread") == "1"
    limit = IN_BOX if box else PER_PAGE
    async with request.app[SESSIONS]() as session:
        rows = await notifications.list_for(
            session,
            user.id,
            unread_only=unread_only,
            before_id=_before(request),
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = await describe(request, session, rows)
        unread = await notifications.unread_count(session, user.id)
    return {
        "title": t_of(request)("notifications.title"),
        "items": items,
        "box": box,
        "unread": unread,
        "unread_only": unread_only,
        "next_before": rows[-1].id if more and rows else None,
    }


async def _ids(request: web.Request) -> list[int] | None:
    """The ids to mark read (form ``id`` repeated, or JSON ``ids``); None: all of them."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        values = body.get("ids") if isinstance(body, dict) else None
    else:
        form = await request.post()
        values = None if form.get("all") == "1" else form.getall("id", [])
    if values is None:
        return None
    if not isinstance(values, list) or len(values) > 500:
        raise errors.InvalidInput("id: notification ids", details={"field": "id"})
    ids = [int(v) for v in values if _digits(str(v)) and len(str(v)) < 10]
    if len(ids) != len(values):
        raise errors.InvalidInput("id: notification ids", details={"field": "id"})
    return ids


@page("notifications/page.html", partial="notifications/_list.html")
async def mark_read(request: web.Request, user: User) -> web.StreamResponse:
    """Mark one, some or all read; htmx gets the list again and the new unread count."""
    ids = await _ids(request)
    moment = request.app[CLOCK].now()
    async with UnitOfWork(request) as u:
        marked = await notifications.mark_read(u.session, user.id, ids=ids, now=moment)
        if marked:  # the user's other pages update their bell
            unread = await notifications.unread_count(u.session, user.id)
            u.emit(notifications.read_event(user.id, unread, moment))
        await u.commit()
    if not is_partial(request):
        raise web.HTTPSeeOther("/notifications")
    data = await _list_data(request, user)
    response = await render("notifications/_list.html", request, data)
    response.headers["HX-Trigger"] = json.dumps({"cc-unread": {"count": data["unread"]}})
    response.headers["Cache-Control"] = "no-store"
    return response


@page("notifications/page.html")
async def one_notification(request: web.Request, user: User) -> web.StreamResponse:
    """One of the user's notifications as the toast shows it (title, line, link)."""
    notification_id = path_id(request, "id", "notification")
    async with request.app[SESSIONS]() as session:
        row = await session.get(Notification, notification_id)
        if row is None or row.user_id != user.id:
            raise errors.NotFound("no such notification")
        [view] = await describe(request, session, [row])
    fmt = Formatter(language(request), zone(request), now(request))
    return web.json_response(view.as_dict(fmt), headers={"Cache-Control": "no-store"})


def routes(app: web.Application) -> None:
    app.router.add_get("/notifications", notifications_page)
    app.router.add_post("/notifications/read", mark_read)
    app.router.add_get(r"/notifications/{id:\d+}.json", one_notification)
