"""Events of tasks, reminders and daily plans. The audience is the responsible manager."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from crm_core.events import DomainEvent


def audience_of(*user_ids: int | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f"user:{u}" for u in user_ids if u is not None))


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskCreated(DomainEvent):
    name = "task.created"
    task_id: int
    kind: str
    title: str
    due_at: datetime | None = None
    responsible_id: int | None = None
    created_by_id: int | None = None
    bulk_id: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskUpdated(DomainEvent):
    """Fields of a task changed (``changes`` names them); a reassigned task's event reaches
    the previous responsible too."""

    name = "task.updated"
    task_id: int
    changes: tuple[str, ...]
    title: str
    due_at: datetime | None = None
    responsible_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskStatusChanged(DomainEvent):
    """A task was completed, cancelled or reopened."""

    name = "task.status_changed"
    task_id: int
    status: str
    previous: str
    title: str
    responsible_id: int | None = None
    by_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TaskDue(DomainEvent):
    """The reminder of an open task, published by the scheduler at its remind time."""

    name = "task.due"
    task_id: int
    kind: str
    title: str
    due_at: datetime | None = None
    remind_at: datetime | None = None
    responsible_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    invoice_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class TasksBulkCreated(DomainEvent):
    """Tasks of one bulk assignment; one event per assignee with his count."""

    name = "tasks.bulk_created"
    bulk_id: str
    count: int
    title: str
    responsible_id: int
    by_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DailyPlanSet(DomainEvent):
    name = "plan.set"
    user_id: int
    day: str  # ISO date: the event codec carries datetimes, not dates
    calls: int
    meetings: int
    proposals: int
    set_by_id: int | None = None
