"""Use cases of tasks: create, change, complete/cancel/reopen, list, bulk assignments, closing
by origin, and the reminder job that publishes ``task.due``.

A task's reminder is a scheduled job keyed ``task:<id>:remind`` at ``remind_at`` (default
``due_at``), written in the same transaction as the task: rescheduling the task moves it,
completing or cancelling cancels it, reopening restores it.

Every function takes the caller's session; the caller commits and publishes the returned
events after the commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access, listing
from crm_core.access import Actor
from crm_core.activities.service import (
    ClientLinks,
    check_links,
    complete_links,
    ensure_active_user,
    link_owners,
    linked_to_clients_of,
)
from crm_core.clients.model import Company, Contact
from crm_core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.invoices.model import Invoice
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.rules import CrmRules
from crm_core.tasks.events import (
    TaskCreated,
    TaskDue,
    TasksBulkCreated,
    TaskStatusChanged,
    TaskUpdated,
    audience_of,
)
from crm_core.tasks.model import Task, TaskStatus
from crm_core.tasks.schemas import BulkResult, BulkTaskInput, TaskInput, TaskPatch
from crm_core.users.model import User

REMINDER_JOB = "task.remind"
MAX_BULK = 2000  # clients per bulk assignment; beyond that the filter is too broad to be a plan
_LINK_FIELDS = ("company_id", "contact_id", "deal_id", "lead_id")


class TaskStatusConflict(Conflict):
    """The task is not in a status the requested transition starts from."""

    error_id = "task-status-conflict"


class BulkTooLarge(InvalidInput):
    error_id = "bulk-too-large"


def reminder_key(task_id: int) -> str:
    """The dedupe key of a task's reminder job."""
    return f"task:{task_id}:remind"


def reminder_moment(task: Task) -> datetime | None:
    """When the responsible is reminded: ``remind_at``, else ``due_at``."""
    return task.remind_at or task.due_at


async def sync_reminder(session: AsyncSession, task: Task, *, now: datetime) -> None:
    """Make the reminder job match the task: scheduled for an open task with a time and a
    responsible, cancelled otherwise."""
    key = reminder_key(task.id)
    moment = reminder_moment(task)
    if task.status != TaskStatus.OPEN.value or moment is None or task.responsible_id is None:
        await jobs.cancel(session, key, at=now)
        return
    await jobs.schedule(session, REMINDER_JOB, moment, {"task_id": task.id}, key)


def _links(task: Task | TaskInput | TaskPatch) -> ClientLinks:
    return ClientLinks(
        company_id=task.company_id,
        contact_id=task.contact_id,
        deal_id=task.deal_id,
        lead_id=task.lead_id,
    )


async def _check_invoice(
    session: AsyncSession, invoice_id: int, *, actor: Actor, rules: CrmRules
) -> Invoice:
    missing = InvalidInput(f"no invoice {invoice_id}", details={"field": "invoice_id"})
    invoice = await session.get(Invoice, invoice_id)
    if invoice is None:
        raise missing
    owners = await link_owners(
        session, ClientLinks(company_id=invoice.company_id, deal_id=invoice.deal_id)
    )
    try:
        access.check(
            actor,
            invoice.responsible_id,
            rules,
            write=True,
            what=f"invoice {invoice_id}",
            owners=owners,
            missing=missing,
        )
    except PermissionDenied:
        raise PermissionDenied(
            f"invoice {invoice_id} belongs to another manager",
            details={"field": "invoice_id", "value": invoice_id},
        ) from None
    return invoice


async def find_open_by_origin(session: AsyncSession, origin_key: str) -> Task | None:
    """The open task created for ``origin_key`` (e.g. the call-back of a missed number)."""
    return await session.scalar(
        select(Task)
        .where(Task.origin_key == origin_key, Task.status == TaskStatus.OPEN.value)
        .order_by(Task.id)
        .limit(1)
    )


async def create_task(
    session: AsyncSession,
    data: TaskInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> tuple[Task, list[DomainEvent]]:
    """Create a task and schedule its reminder.

    For :data:`~crm_core.access.SYSTEM` (a missed call, a website request) a responsible who
    is no longer active leaves the task unassigned. A manager creates tasks for himself about
    clients he may change; head and admin for anyone. With ``origin_key``, an open task of
    that origin is returned instead of a second one (and no event).
    """
    if data.origin_key is not None:
        existing = await find_open_by_origin(session, data.origin_key)
        if existing is not None:
            return existing, []
    fields = data.model_fields_set
    responsible = data.responsible_id
    if "responsible_id" not in fields:
        responsible = actor.id
    if not access.is_system(actor):
        access.check_acting_for(actor, responsible, "responsible_id")
        await ensure_active_user(session, responsible, "responsible_id")
    elif responsible is not None and not await session.scalar(
        select(User.is_active).where(User.id == responsible)
    ):
        # The system (a missed call) must not fail over a manager who left: the task is
        # created unassigned and shows up for the head of sales.
        responsible = None
    links = _links(data)
    await check_links(session, links, actor=actor, rules=rules)
    if data.invoice_id is not None:
        invoice = await _check_invoice(session, data.invoice_id, actor=actor, rules=rules)
        links = ClientLinks(
            company_id=links.company_id or invoice.company_id,
            contact_id=links.contact_id,
            deal_id=links.deal_id or invoice.deal_id,
            lead_id=links.lead_id,
        )
    links = await complete_links(session, links)
    task = Task(
        kind=str(data.kind),
        title=data.title,
        description=data.description,
        status=TaskStatus.OPEN.value,
        due_at=data.due_at,
        remind_at=data.remind_at,
        responsible_id=responsible,
        created_by_id=actor.id,
        company_id=links.company_id,
        contact_id=links.contact_id,
        deal_id=links.deal_id,
        lead_id=links.lead_id,
        invoice_id=data.invoice_id,
        origin_key=data.origin_key,
        created_at=now,
        updated_at=now,
    )
    session.add(task)
    await session.flush()
    await sync_reminder(session, task, now=now)
    event = TaskCreated(
        task_id=task.id,
        kind=task.kind,
        title=task.title,
        due_at=task.due_at,
        responsible_id=task.responsible_id,
        created_by_id=task.created_by_id,
        audience=audience_of(task.responsible_id),
    )
    return task, [event]


async def _owners(session: AsyncSession, task: Task) -> set[int]:
    return await link_owners(session, _links(task))


async def get_task(session: AsyncSession, task_id: int, *, actor: Actor, rules: CrmRules) -> Task:
    """A task ``actor`` may read: his, or about his clients (404 otherwise)."""
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    owners = await _owners(session, task)
    access.check(
        actor, task.responsible_id, rules, write=False, what=f"task {task_id}", owners=owners
    )
    return task


async def _writable(session: AsyncSession, task_id: int, *, actor: Actor, rules: CrmRules) -> Task:
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    owners = await _owners(session, task)
    access.check(
        actor, task.responsible_id, rules, write=True, what=f"task {task_id}", owners=owners
    )
    return task


async def update_task(
    session: AsyncSession,
    task_id: int,
    patch: TaskPatch,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> tuple[Task, list[DomainEvent]]:
    """Change a task; moving its time moves its reminder."""
    task = await _writable(session, task_id, actor=actor, rules=rules)
    sent = patch.model_dump(exclude_unset=True)
    for key in ("kind", "title"):
        if key in sent and sent[key] is None:
            raise InvalidInput(f"{key} may not be null", details={"field": key})
    previous_responsible = task.responsible_id
    if "responsible_id" in sent:
        access.check_acting_for(actor, sent["responsible_id"], "responsible_id")
        await ensure_active_user(session, sent["responsible_id"], "responsible_id")
    changed_links = ClientLinks(**{k: sent[k] for k in _LINK_FIELDS if sent.get(k) is not None})
    await check_links(session, changed_links, actor=actor, rules=rules)
    if sent.get("invoice_id") is not None:
        await _check_invoice(session, sent["invoice_id"], actor=actor, rules=rules)
    keeps_lead_time = "due_at" in sent and "remind_at" not in sent
    if keeps_lead_time and None not in (task.remind_at, task.due_at, sent["due_at"]):
        sent["remind_at"] = task.remind_at + (sent["due_at"] - task.due_at)
    changes: list[str] = []
    for key, value in sent.items():
        if key == "kind":
            value = str(value)
        if getattr(task, key) != value:
            setattr(task, key, value)
            changes.append(key)
    if not changes:
        return task, []
    task.updated_at = now
    await session.flush()
    await sync_reminder(session, task, now=now)
    event = TaskUpdated(
        task_id=task.id,
        changes=tuple(changes),
        title=task.title,
        due_at=task.due_at,
        responsible_id=task.responsible_id,
        audience=audience_of(task.responsible_id, previous_responsible),
    )
    return task, [event]


_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "complete": ((TaskStatus.OPEN.value,), TaskStatus.DONE.value),
    "cancel": ((TaskStatus.OPEN.value,), TaskStatus.CANCELLED.value),
    "reopen": ((TaskStatus.DONE.value, TaskStatus.CANCELLED.value), TaskStatus.OPEN.value),
}


async def change_status(
    session: AsyncSession,
    task_id: int,
    action: str,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> tuple[Task, list[DomainEvent]]:
    """``complete`` or ``cancel`` an open task (its reminder is cancelled), or ``reopen`` a
    done or cancelled one (its reminder is restored if it has not fired yet). 409 otherwise."""
    sources, target = _TRANSITIONS[action]
    task = await _writable(session, task_id, actor=actor, rules=rules)
    if task.status not in sources:
        raise TaskStatusConflict(
            f"cannot {action} a task that is {task.status}",
            details={"status": task.status, "action": action},
        )
    previous = task.status
    task.status = target
    task.completed_at = None if target == TaskStatus.OPEN.value else now
    task.updated_at = now
    await session.flush()
    await sync_reminder(session, task, now=now)
    event = TaskStatusChanged(
        task_id=task.id,
        status=target,
        previous=previous,
        title=task.title,
        responsible_id=task.responsible_id,
        by_id=actor.id,
        audience=audience_of(task.responsible_id),
    )
    return task, [event]


async def close_tasks_by_origin(session: AsyncSession, origin_key: str, *, at: datetime) -> int:
    """Complete every open task created for ``origin_key`` (a later answered call from the
    same number closes its call-back task) and cancel their reminders; returns how many."""
    ids = list(
        await session.scalars(
            select(Task.id).where(
                Task.origin_key == origin_key, Task.status == TaskStatus.OPEN.value
            )
        )
    )
    if not ids:
        return 0
    await session.execute(
        update(Task)
        .where(Task.id.in_(ids), Task.status == TaskStatus.OPEN.value)
        .values(status=TaskStatus.DONE.value, completed_at=at, updated_at=at)
        .execution_options(synchronize_session="fetch")
    )
    for task_id in ids:
        await jobs.cancel(session, reminder_key(task_id), at=at)
    return len(ids)


async def close_invoice_tasks(
    session: AsyncSession, invoice_id: int, *, status: str, at: datetime
) -> int:
    """Close the open tasks about an invoice that was paid (done) or cancelled (cancelled)."""
    ids = list(
        await session.scalars(
            select(Task.id).where(
                Task.invoice_id == invoice_id, Task.status == TaskStatus.OPEN.value
            )
        )
    )
    if not ids:
        return 0
    await session.execute(
        update(Task)
        .where(Task.id.in_(ids))
        .values(status=status, completed_at=at, updated_at=at)
        .execution_options(synchronize_session="fetch")
    )
    for task_id in ids:
        await jobs.cancel(session, reminder_key(task_id), at=at)
    return len(ids)


def scope(stmt: Select[Any], actor: Actor, rules: CrmRules) -> Select[Any]:
    """Restrict a task query to what ``actor`` may read."""
    if access.is_privileged(actor) or rules.managers_read_all:
        return stmt
    assert actor.id is not None  # only the system has none, and it is privileged
    return stmt.where(
        or_(
            Task.responsible_id == actor.id,
            *linked_to_clients_of(
                actor.id,
                company=Task.company_id,
                contact=Task.contact_id,
                deal=Task.deal_id,
                lead=Task.lead_id,
            ),
        )
    )


async def list_tasks(
    session: AsyncSession,
    *,
    actor: Actor,
    rules: CrmRules,
    status: Sequence[str] | None = None,
    kind: str | None = None,
    responsible_id: int | None = None,
    company_id: int | None = None,
    contact_id: int | None = None,
    deal_id: int | None = None,
    lead_id: int | None = None,
    invoice_id: int | None = None,
    bulk_id: str | None = None,
    due_from: datetime | None = None,
    due_to: datetime | None = None,
    overdue_at: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    count_cap: int | None = None,
    count: bool = True,
) -> tuple[list[Task], int]:
    """Tasks ``actor`` may read, soonest due first (undated last), with their total.
    ``overdue_at``: only open tasks due before that moment. ``count=False`` skips counting
    (a card shows no total) and gives the number of rows returned."""
    stmt = select(Task)
    if status:
        stmt = stmt.where(Task.status.in_(list(status)))
    for column, value in (
        (Task.kind, kind),
        (Task.responsible_id, responsible_id),
        (Task.company_id, company_id),
        (Task.contact_id, contact_id),
        (Task.deal_id, deal_id),
        (Task.lead_id, lead_id),
        (Task.invoice_id, invoice_id),
        (Task.bulk_id, bulk_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if due_from is not None:
        stmt = stmt.where(Task.due_at >= due_from)
    if due_to is not None:
        stmt = stmt.where(Task.due_at < due_to)
    if overdue_at is not None:
        stmt = stmt.where(Task.status == TaskStatus.OPEN.value, Task.due_at < overdue_at)
    stmt = scope(stmt, actor, rules)
    total = await listing.total(session, stmt, count_cap) if count else 0
    sorts = {
        "due_at": Task.due_at,
        "title": Task.title,
        "created_at": Task.created_at,
        "completed_at": Task.completed_at,
    }
    # Undated last: ``NULLS LAST`` (not ``due_at IS NULL`` first) is the order the
    # (status, due_at, id) index reads.
    default = (Task.due_at.asc().nulls_last(), Task.id)
    stmt = listing.order(stmt, sorts, sort, default, Task.id)
    rows = list(await session.scalars(stmt.limit(limit).offset(offset)))
    return rows, total if count else len(rows)


async def bulk_create_tasks(
    session: AsyncSession,
    spec: BulkTaskInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> tuple[BulkResult, list[DomainEvent]]:
    """One task per live client matching ``spec.filter``, sharing a new ``bulk_id``.

    A manager works only over his own clients and assigns only to himself; head and admin over
    anyone's. With ``assign: "responsible"`` clients without a responsible are left out (and
    counted). More than :data:`MAX_BULK` matches is refused: narrow the filter.
    """
    f = spec.filter
    privileged = access.is_privileged(actor)
    responsible_filter = f.responsible_id
    if not privileged:
        access.check_acting_for(actor, f.responsible_id, "filter.responsible_id")
        responsible_filter = actor.id
        if spec.assign != "responsible":
            access.check_acting_for(actor, spec.assign, "assign")
    if isinstance(spec.assign, int):
        await ensure_active_user(session, spec.assign, "assign")
    if f.client_type is not None and f.client_type not in rules.client_types:
        raise InvalidInput(
            f"unknown client type {f.client_type!r}",
            details={"field": "filter.client_type", "allowed": list(rules.client_types)},
        )
    model: type[Company] | type[Contact] = Company if f.entity == "company" else Contact
    stmt = select(model.id, model.responsible_id, model.current_suppliers).where(
        model.merged_into_id.is_(None)
    )
    for column, value in (
        (model.client_type, f.client_type),
        (model.region_id, f.region_id),
        (model.source_id, f.source_id),
        (model.responsible_id, responsible_filter),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    needle = f.supplier_contains.strip().casefold() if f.supplier_contains else None
    in_sql = session.get_bind().dialect.name == "postgresql"
    if needle:
        stmt = stmt.where(model.current_suppliers.is_not(None))
        if in_sql:
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(model.current_suppliers.ilike(f"%{escaped}%", escape="\\"))
    if in_sql or not needle:
        stmt = stmt.limit(MAX_BULK + 1)
    rows = (await session.execute(stmt.order_by(model.id))).all()
    # SQLite folds ASCII case only; the final match is Python's, for Cyrillic names too.
    matches = [r for r in rows if not needle or needle in (r[2] or "").casefold()]
    if len(matches) > MAX_BULK:
        raise BulkTooLarge(
            f"the filter matches more than {MAX_BULK} clients; narrow it",
            details={"limit": MAX_BULK},
        )
    bulk_id = uuid.uuid4().hex
    link = "company_id" if f.entity == "company" else "contact_id"
    t = spec.task
    tasks: list[Task] = []
    skipped = 0
    for client_id, client_responsible, _ in matches:
        assignee = client_responsible if spec.assign == "responsible" else spec.assign
        if assignee is None:
            skipped += 1
            continue
        tasks.append(
            Task(
                kind=str(t.kind),
                title=t.title,
                description=t.description,
                status=TaskStatus.OPEN.value,
                due_at=t.due_at,
                remind_at=t.remind_at,
                responsible_id=assignee,
                created_by_id=actor.id,
                bulk_id=bulk_id,
                created_at=now,
                updated_at=now,
                **{link: client_id},
            )
        )
    session.add_all(tasks)
    await session.flush()
    moment = t.remind_at or t.due_at
    if moment is not None:
        await jobs.schedule_many(
            session,
            REMINDER_JOB,
            [(moment, {"task_id": task.id}, reminder_key(task.id)) for task in tasks],
        )
    per_user: dict[int, int] = {}
    for task in tasks:
        assert task.responsible_id is not None
        per_user[task.responsible_id] = per_user.get(task.responsible_id, 0) + 1
    events: list[DomainEvent] = [
        TasksBulkCreated(
            bulk_id=bulk_id,
            count=count,
            title=t.title,
            responsible_id=user_id,
            by_id=actor.id,
            audience=audience_of(user_id),
        )
        for user_id, count in sorted(per_user.items())
    ]
    result = BulkResult(bulk_id=bulk_id, created=len(tasks), skipped_without_responsible=skipped)
    return result, events


async def remind_task(
    session: AsyncSession, job: ScheduledJob, now: datetime
) -> Sequence[DomainEvent]:
    """The ``task.remind`` job: ``task.due`` to the responsible of a task still open (a task
    closed or unassigned meanwhile is not reminded of)."""
    task = await session.get(Task, int(job.payload["task_id"]))
    if task is None or task.status != TaskStatus.OPEN.value or task.responsible_id is None:
        return []
    return [
        TaskDue(
            task_id=task.id,
            kind=task.kind,
            title=task.title,
            due_at=task.due_at,
            remind_at=reminder_moment(task),
            responsible_id=task.responsible_id,
            contact_id=task.contact_id,
            company_id=task.company_id,
            deal_id=task.deal_id,
            lead_id=task.lead_id,
            invoice_id=task.invoice_id,
            audience=audience_of(task.responsible_id),
        )
    ]
