"""The signed-in user's notifications: the list behind the bell, the unread count, read marks.
A reminder that fell due while he was away is here when he comes back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contact_center.api.common import actor, clock, uow
from contact_center.http.api import Api
from crm_core.notifications import service as notifications
from crm_core.notifications.model import Notification

api = Api()
TAGS = ["notifications"]


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(description="task.due, task.assigned, lead.assigned, deal.assigned, ...")
    object_type: str | None = Field(None, description="what it opens: lead, deal, contact, ...")
    object_id: int | None
    data: dict[str, Any]
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    unread: int = Field(description="the user's unread notifications in all")


class NotificationQuery(BaseModel):
    unread: bool = False
    before_id: int | None = Field(None, ge=1, le=2**31 - 1, description="the next page")
    limit: int = Field(50, ge=1, le=200)


class MarkRead(BaseModel):
    ids: list[int] | None = Field(
        None, max_length=500, description="these notifications; omitted: all of them"
    )


class MarkedOut(BaseModel):
    marked: int
    unread: int


def _out(row: Notification) -> NotificationOut:
    return NotificationOut.model_validate(row)


@api.route(
    "GET",
    "/notifications",
    summary="My notifications, newest first, with my unread count",
    query=NotificationQuery,
    response=NotificationPage,
    tags=TAGS,
)
async def list_notifications(request: web.Request, query: NotificationQuery) -> NotificationPage:
    user = actor(request)
    async with uow(request) as u:
        rows = await notifications.list_for(
            u.session,
            user.id,
            unread_only=query.unread,
            before_id=query.before_id,
            limit=query.limit,
        )
        unread = await notifications.unread_count(u.session, user.id)
    return NotificationPage(items=[_out(r) for r in rows], unread=unread)


@api.route(
    "POST",
    "/notifications/read",
    summary="Mark my notifications read (some, or all)",
    body=MarkRead,
    response=MarkedOut,
    tags=TAGS,
)
async def mark_read(request: web.Request, body: MarkRead) -> MarkedOut:
    user = actor(request)
    async with uow(request) as u:
        marked = await notifications.mark_read(
            u.session, user.id, ids=body.ids, now=clock(request).now()
        )
        unread = await notifications.unread_count(u.session, user.id)
        if marked:  # the user's other pages update their bell
            u.emit(notifications.read_event(user.id, unread, clock(request).now()))
        await u.commit()
    return MarkedOut(marked=marked, unread=unread)
