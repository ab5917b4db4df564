"""The tasks API: tasks, status changes, bulk assignments; installs the job scheduler that
delivers their reminders (``task.due``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, uow
from contact_center.http.api import Api
from crm_core.tasks import service as tasks
from crm_core.tasks.schemas import (
    KIND_LABELS,
    STATUS_LABELS,
    BulkResult,
    BulkTaskInput,
    TaskInput,
    TaskOut,
    TaskPatch,
)

api = Api()
TAGS = ["tasks"]


class TaskQuery(PageQuery):
    model_config = ConfigDict(populate_by_name=True)

    # Literals, not the enums: query parameters are inlined in the OpenAPI document.
    status: Literal["open", "done", "cancelled"] | None = None
    kind: Literal["call_back", "meeting", "send_proposal", "invoice_follow_up", "custom"] | None = (
        None
    )
    responsible_id: int | None = None
    company_id: int | None = None
    contact_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    invoice_id: int | None = None
    bulk_id: str | None = Field(None, max_length=32)
    overdue: bool | None = Field(None, description="only open tasks past their due time")
    due_from: datetime | None = Field(None, alias="from")
    due_to: datetime | None = Field(None, alias="to")


@api.route("GET", "/tasks", summary="Tasks, soonest due first", query=TaskQuery, tags=TAGS)
async def list_tasks(request: web.Request, query: TaskQuery) -> dict[str, Any]:
    now = clock(request).now()
    async with uow(request) as u:
        rows, total = await tasks.list_tasks(
            u.session,
            actor=actor(request),
            rules=rules(request),
            status=[query.status] if query.status else None,
            kind=query.kind,
            responsible_id=query.responsible_id,
            company_id=query.company_id,
            contact_id=query.contact_id,
            deal_id=query.deal_id,
            lead_id=query.lead_id,
            invoice_id=query.invoice_id,
            bulk_id=query.bulk_id,
            due_from=query.due_from,
            due_to=query.due_to,
            overdue_at=now if query.overdue else None,
            limit=query.limit,
            offset=query.offset,
        )
    return page([TaskOut.of(t, now).model_dump(mode="json") for t in rows], total, query)


@api.route(
    "POST",
    "/tasks",
    summary="Create a task (its reminder is scheduled)",
    body=TaskInput,
    response=TaskOut,
    status=201,
    tags=TAGS,
    errors={403: "For another user or about another manager's client"},
)
async def create_task(request: web.Request, body: TaskInput) -> TaskOut:
    now = clock(request).now()
    async with uow(request) as u:
        task, events = await tasks.create_task(
            u.session, body, actor=actor(request), rules=rules(request), now=now
        )
        u.emit(*events)
        await u.commit()
    return TaskOut.of(task, now)


@api.route(
    "POST",
    "/tasks/bulk",
    summary="One task per client matching a filter (a shared bulk_id)",
    body=BulkTaskInput,
    response=BulkResult,
    status=201,
    tags=TAGS,
    errors={403: "A manager over other managers' clients"},
)
async def bulk_tasks(request: web.Request, body: BulkTaskInput) -> BulkResult:
    async with uow(request) as u:
        result, events = await tasks.bulk_create_tasks(
            u.session, body, actor=actor(request), rules=rules(request), now=clock(request).now()
        )
        u.emit(*events)
        await u.commit()
    return result


@api.route(
    "GET",
    "/tasks/{id}",
    summary="One task",
    response=TaskOut,
    tags=TAGS,
    errors={404: "No such task"},
)
async def get_task(request: web.Request) -> TaskOut:
    task_id = path_id(request, "id", "task")
    async with uow(request) as u:
        task = await tasks.get_task(u.session, task_id, actor=actor(request), rules=rules(request))
    return TaskOut.of(task, clock(request).now())


@api.route(
    "PATCH",
    "/tasks/{id}",
    summary="Change a task (a new time moves its reminder)",
    body=TaskPatch,
    response=TaskOut,
    tags=TAGS,
    errors={403: "Another manager's task", 404: "No such task"},
)
async def update_task(request: web.Request, body: TaskPatch) -> TaskOut:
    task_id = path_id(request, "id", "task")
    now = clock(request).now()
    async with uow(request) as u:
        task, events = await tasks.update_task(
            u.session, task_id, body, actor=actor(request), rules=rules(request), now=now
        )
        u.emit(*events)
        await u.commit()
    return TaskOut.of(task, now)


def _status_route(action: Literal["complete", "cancel", "reopen"], summary: str) -> None:
    async def handler(request: web.Request) -> TaskOut:
        task_id = path_id(request, "id", "task")
        now = clock(request).now()
        async with uow(request) as u:
            task, events = await tasks.change_status(
                u.session, task_id, action, actor=actor(request), rules=rules(request), now=now
            )
            u.emit(*events)
            await u.commit()
        return TaskOut.of(task, now)

    handler.__name__ = f"{action}_task"
    api.route(
        "POST",
        f"/tasks/{{id}}/{action}",
        summary=summary,
        response=TaskOut,
        tags=TAGS,
        errors={403: "Another manager's task", 404: "No such task", 409: "Wrong status"},
    )(handler)


_status_route("complete", "Complete an open task (its reminder is cancelled)")
_status_route("cancel", "Cancel an open task (its reminder is cancelled)")
_status_route("reopen", "Reopen a done or cancelled task")


@api.route("GET", "/task-kinds", summary="Task kinds and statuses with their names", tags=TAGS)
async def task_kinds(request: web.Request) -> dict[str, list[dict[str, str]]]:
    def labels(table: dict[str, tuple[str, str]]) -> list[dict[str, str]]:
        return [{"code": str(k), "name_ru": ru, "name_en": en} for k, (ru, en) in table.items()]

    return {"kinds": labels(KIND_LABELS), "statuses": labels(STATUS_LABELS)}
