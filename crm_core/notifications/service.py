"""Which facts a user is told of, stored in the same transaction as the facts themselves.

Every place that commits domain events (the API's unit of work, the scheduler's jobs, the
call-end transaction) passes them to :func:`record` before committing: the notifications are
then as durable as what they are about. A reminder that falls due while nobody is signed in
(or the server was down) waits in the user's list instead of going to an empty room; the
:class:`NotificationCreated` events returned are published after the commit, so open pages
show it at once.

The rules (:func:`notices_of`): a task due or given to someone by another, a lead, deal or
website request given to a manager by someone else (or by the server), a website request
waiting in the manual queue (to the users of the queue's roles), an invoice reminder. What a
user did himself is not news to him.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import UnnestInsert, fetch_pg, is_postgresql, rowcount
from crm_core.deals.events import DealCreated
from crm_core.distribution.events import WebRequestAssigned, WebRequestReceived
from crm_core.events import DomainEvent
from crm_core.invoices.events import InvoiceReminder
from crm_core.leads.events import LeadCreated
from crm_core.notifications.events import NotificationCreated, NotificationsRead
from crm_core.notifications.model import Notification
from crm_core.tasks.events import TaskCreated, TaskDue, TasksBulkCreated
from crm_core.users.model import User


@dataclass(frozen=True)
class Notice:
    """One notification to store: for ``user_id``, or for every active user of ``roles``."""

    kind: str
    key: str  # the fact, unique per kind (with the user: one notification per fact and user)
    user_id: int | None = None
    roles: tuple[str, ...] = ()
    object_type: str | None = None
    object_id: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


def _by_another(responsible: int | None, by: int | None) -> bool:
    return responsible is not None and responsible != by


def _client_object(event: TaskDue) -> tuple[str, int]:
    """What a task reminder opens: the deal, lead, contact or company it is about."""
    for kind, value in (
        ("deal", event.deal_id),
        ("lead", event.lead_id),
        ("contact", event.contact_id),
        ("company", event.company_id),
        ("invoice", event.invoice_id),
    ):
        if value is not None:
            return kind, value
    return "task", event.task_id


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notices_of(event: DomainEvent) -> list[Notice]:
    """The notifications one event gives rise to (none for most)."""
    match event:
        case TaskDue() if event.responsible_id is not None:
            object_type, object_id = _client_object(event)
            return [
                Notice(
                    "task.due",
                    f"{event.task_id}:{_iso(event.remind_at)}",
                    user_id=event.responsible_id,
                    object_type=object_type,
                    object_id=object_id,
                    data={
                        "title": event.title,
                        "task_id": event.task_id,
                        "kind": event.kind,
                        "due_at": _iso(event.due_at),
                    },
                )
            ]
        case TaskCreated() if event.bulk_id is None and _by_another(
            event.responsible_id, event.created_by_id
        ):
            return [
                Notice(
                    "task.assigned",
                    str(event.task_id),
                    user_id=event.responsible_id,
                    object_type="task",
                    object_id=event.task_id,
                    data={"title": event.title, "kind": event.kind, "due_at": _iso(event.due_at)},
                )
            ]
        case TasksBulkCreated() if _by_another(event.responsible_id, event.by_id):
            return [
                Notice(
                    "tasks.assigned",
                    f"{event.bulk_id}:{event.responsible_id}",
                    user_id=event.responsible_id,
                    data={"title": event.title, "count": event.count},
                )
            ]
        case LeadCreated() if _by_another(event.responsible_id, event.actor_id):
            return [
                Notice(
                    "lead.assigned",
                    f"created:{event.lead_id}",
                    user_id=event.responsible_id,
                    object_type="lead",
                    object_id=event.lead_id,
                    data={"title": event.title, "origin": event.origin},
                )
            ]
        case DealCreated() if _by_another(event.responsible_id, event.actor_id):
            return [
                Notice(
                    "deal.assigned",
                    f"created:{event.deal_id}",
                    user_id=event.responsible_id,
                    object_type="deal",
                    object_id=event.deal_id,
                    data={"title": event.title, "amount": _amount(event.amount)},
                )
            ]
        case WebRequestReceived() if event.queued:
            roles = tuple(a.split(":", 1)[1] for a in event.audience if a.startswith("role:"))
            return [
                Notice(
                    "web_request.queued",
                    str(event.request_id),
                    roles=roles,
                    object_type="lead" if event.lead_id else None,
                    object_id=event.lead_id,
                    data={"name": event.client_name, "phone": event.phone, "region": event.region},
                )
            ]
        case WebRequestAssigned() if _by_another(event.responsible_id, event.by_id):
            return [
                Notice(
                    "web_request.assigned",
                    f"{event.request_id}:{event.responsible_id}",
                    user_id=event.responsible_id,
                    object_type="lead" if event.lead_id else None,
                    object_id=event.lead_id,
                    data={},
                )
            ]
        case InvoiceReminder() if event.responsible_id is not None:
            return [
                Notice(
                    "invoice.reminder",
                    f"{event.invoice_id}:{event.days_left}",
                    user_id=event.responsible_id,
                    object_type="invoice",
                    object_id=event.invoice_id,
                    data={
                        "number": event.number,
                        "amount": _amount(event.amount),
                        "due_on": event.due_on,
                        "days_left": event.days_left,
                    },
                )
            ]
    return []


def _amount(value: Decimal | None) -> str | None:
    return str(value) if value is not None else None


# Built once: asked in every inbox batch that creates a lead.
_MEMBERS = select(User.role, User.id).where(
    User.role.in_(bindparam("roles", expanding=True)), User.is_active.is_(True)
)


async def record(
    session: AsyncSession, events: Sequence[DomainEvent], *, now: datetime
) -> list[NotificationCreated]:
    """Store the notifications ``events`` give rise to, in the caller's transaction (once per
    fact and user: a fact seen again stores nothing); the events to publish after commit."""
    notices = [notice for event in events for notice in notices_of(event)]
    if not notices:
        return []
    roles = {role for notice in notices for role in notice.roles}
    members: dict[str, list[int]] = {}
    if roles:
        rows = await session.execute(_MEMBERS, {"roles": sorted(roles)})
        for role, user_id in rows:
            members.setdefault(role, []).append(user_id)
    wanted: dict[str, tuple[Notice, int]] = {}  # dedupe key -> (notice, user); first wins
    for notice in notices:
        recipients = {notice.user_id} if notice.user_id is not None else set()
        for role in notice.roles:
            recipients.update(members.get(role, ()))
        for user_id in sorted(r for r in recipients if r is not None):
            wanted.setdefault(_dedupe_key(notice, user_id), (notice, user_id))
    if not wanted:
        return []
    if len(wanted) == 1 and not is_postgresql(session):
        ((key, (notice, user_id)),) = wanted.items()
        row_id = await _insert_once(session, notice, user_id, now)
        inserted = {key: row_id} if row_id is not None else {}
    else:  # a batch (the inbox's new leads), or one on PostgreSQL: one statement, prepared once
        params = [_values(notice, user_id, now) for notice, user_id in wanted.values()]
        result: Sequence[Any]
        if is_postgresql(session):  # its SQL the same for any number of rows
            result = await fetch_pg(session, _UNNEST.statement, _UNNEST.params(params))
        else:
            result = (
                await session.execute(
                    sqlite_insert(Notification)
                    .on_conflict_do_nothing(index_elements=["dedupe_key"])
                    .returning(Notification.id, Notification.dedupe_key),
                    params,
                )
            ).all()
        inserted = {key: row_id for row_id, key in result}
    created: list[NotificationCreated] = []
    for key, (notice, user_id) in wanted.items():
        row_id = inserted.get(key)
        if row_id is None:
            continue
        created.append(
            NotificationCreated(
                notification_id=row_id,
                user_id=user_id,
                kind=notice.kind,
                object_type=notice.object_type,
                object_id=notice.object_id,
                data=notice.data,
                occurred_at=now,
                audience=(f"user:{user_id}",),
            )
        )
    return created


_UNNEST = UnnestInsert(
    Notification.__table__,
    ("user_id", "kind", "object_type", "object_id", "data", "created_at", "dedupe_key"),
    conflict="ON CONFLICT (dedupe_key) DO NOTHING",
    returning=("id", "dedupe_key"),
)


def _dedupe_key(notice: Notice, user_id: int) -> str:
    return f"{notice.kind}:{notice.key}:{user_id}"[:160]


def _values(notice: Notice, user_id: int, now: datetime) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "kind": notice.kind,
        "object_type": notice.object_type,
        "object_id": notice.object_id,
        "data": notice.data,
        "created_at": now,
        "dedupe_key": _dedupe_key(notice, user_id),
    }


async def _insert_once(
    session: AsyncSession, notice: Notice, user_id: int, now: datetime
) -> int | None:
    """Insert unless this fact was already notified to this user; the new row's id or None."""
    values = _values(notice, user_id, now)
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = (
        insert(Notification)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Notification.id)
    )
    return await session.scalar(stmt)


async def list_for(
    session: AsyncSession,
    user_id: int,
    *,
    unread_only: bool = False,
    before_id: int | None = None,
    limit: int = 50,
) -> list[Notification]:
    """The user's notifications, newest first (``before_id``: the next page)."""
    stmt = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    if before_id is not None:
        stmt = stmt.where(Notification.id < before_id)
    rows = await session.scalars(stmt.order_by(Notification.id.desc()).limit(limit))
    return list(rows)


async def unread_count(session: AsyncSession, user_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
    )
    return int(count or 0)


async def mark_read(
    session: AsyncSession, user_id: int, *, ids: Sequence[int] | None, now: datetime
) -> int:
    """Mark the user's notifications ``ids`` (None: all of them) read; how many changed. Ids
    of other users' notifications change nothing."""
    stmt = update(Notification).where(
        Notification.user_id == user_id, Notification.read_at.is_(None)
    )
    if ids is not None:
        stmt = stmt.where(Notification.id.in_(list(ids)))
    result = await session.execute(
        stmt.values(read_at=now).execution_options(synchronize_session=False)
    )
    return rowcount(result)


def read_event(user_id: int, unread: int, now: datetime) -> NotificationsRead:
    """What to publish after marking ``user_id``'s notifications read (his other pages)."""
    return NotificationsRead(
        user_id=user_id, unread=unread, occurred_at=now, audience=(f"user:{user_id}",)
    )
