"""Input and output shapes of tasks, bulk tasks and daily plans."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from crm_core.tasks.model import DailyPlan, Task, TaskKind, TaskStatus

KIND_LABELS: dict[str, tuple[str, str]] = {
    TaskKind.CALL_BACK: ("Перезвонить", "Call back"),
    TaskKind.MEETING: ("Встреча", "Meeting"),
    TaskKind.SEND_PROPOSAL: ("Отправить КП", "Send a proposal"),
    TaskKind.INVOICE_FOLLOW_UP: ("Проконтролировать оплату счёта", "Invoice follow-up"),
    TaskKind.CUSTOM: ("Задача", "Task"),
}
STATUS_LABELS: dict[str, tuple[str, str]] = {
    TaskStatus.OPEN: ("Открыта", "Open"),
    TaskStatus.DONE: ("Выполнена", "Done"),
    TaskStatus.CANCELLED: ("Отменена", "Cancelled"),
}


class TaskInput(BaseModel):
    """A new task. ``responsible_id`` defaults to the creator; ``remind_at`` to ``due_at``.

    ``origin_key`` names what created the task (``"missed-call:+74951234567"``): while an open
    task with that key exists, creating another returns it instead of a duplicate.
    """

    model_config = ConfigDict(extra="forbid")

    kind: TaskKind = TaskKind.CUSTOM
    title: str = Field(min_length=1, max_length=300)
    description: str | None = Field(None, max_length=20_000)
    due_at: AwareDatetime | None = None
    remind_at: AwareDatetime | None = Field(None, description="default: due_at")
    responsible_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    invoice_id: int | None = None
    origin_key: str | None = Field(None, min_length=1, max_length=200)


class TaskPatch(BaseModel):
    """Changes to a task; only the fields sent change.

    Moving ``due_at`` moves an explicit ``remind_at`` by the same amount (the lead time is
    kept) unless ``remind_at`` is sent too; ``remind_at: null`` means "at the due time".
    """

    model_config = ConfigDict(extra="forbid")

    kind: TaskKind | None = None
    title: str | None = Field(None, min_length=1, max_length=300)
    description: str | None = Field(None, max_length=20_000)
    due_at: AwareDatetime | None = None
    remind_at: AwareDatetime | None = None
    responsible_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    invoice_id: int | None = None


class TaskOut(BaseModel):
    id: int
    kind: str
    title: str
    description: str | None
    status: str
    due_at: datetime | None
    remind_at: datetime | None
    overdue: bool = Field(description="open and past its due time")
    responsible_id: int | None
    created_by_id: int | None
    contact_id: int | None
    company_id: int | None
    deal_id: int | None
    lead_id: int | None
    invoice_id: int | None
    bulk_id: str | None
    origin_key: str | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, task: Task, now: datetime) -> TaskOut:
        overdue = (
            task.status == TaskStatus.OPEN.value and task.due_at is not None and task.due_at < now
        )
        data = {k: getattr(task, k) for k in cls.model_fields if k != "overdue"}
        return cls.model_validate({**data, "overdue": overdue})


class BulkFilter(BaseModel):
    """Which clients get a task: every live company (or contact) matching all the criteria."""

    model_config = ConfigDict(extra="forbid")

    entity: Literal["company", "contact"] = "company"
    client_type: str | None = Field(None, max_length=64)
    region_id: int | None = None
    source_id: int | None = None
    responsible_id: int | None = None
    supplier_contains: str | None = Field(
        None,
        min_length=2,
        max_length=200,
        description="a competitor named in the client's current suppliers (case-insensitive)",
    )


class BulkTaskTemplate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: TaskKind = TaskKind.CUSTOM
    title: str = Field(min_length=1, max_length=300)
    description: str | None = Field(None, max_length=20_000)
    due_at: AwareDatetime | None = None
    remind_at: AwareDatetime | None = None


class BulkTaskInput(BaseModel):
    """One task per matching client, assigned to each client's responsible manager
    (``assign: "responsible"``) or to one user (``assign: <user id>``)."""

    model_config = ConfigDict(extra="forbid")

    filter: BulkFilter
    task: BulkTaskTemplate
    assign: Literal["responsible"] | int = "responsible"


class BulkResult(BaseModel):
    bulk_id: str
    created: int
    skipped_without_responsible: int = Field(
        0, description='clients left out because they have no responsible (assign "responsible")'
    )


class PlanInput(BaseModel):
    """A manager's plan for a day, set by the head of sales."""

    model_config = ConfigDict(extra="forbid")

    calls: int = Field(0, ge=0, le=1000, description="counted calls to make")
    meetings: int = Field(0, ge=0, le=100)
    proposals: int = Field(0, ge=0, le=1000)
    note: str | None = Field(None, max_length=2000)


class Figures(BaseModel):
    calls: int = 0
    meetings: int = 0
    proposals: int = 0


class PlanDayOut(BaseModel):
    """Plan and fact of one manager on one day. Fact: counted calls and meetings from the
    timeline, proposals = ``send_proposal`` tasks completed that day."""

    user_id: int
    day: date
    planned: bool = Field(description="a plan was set for the day")
    plan: Figures
    fact: Figures
    note: str | None = None
    set_by_id: int | None = None


class PlanTotalOut(BaseModel):
    user_id: int
    start: date
    end: date
    plan: Figures
    fact: Figures


class PlanReport(BaseModel):
    start: date
    end: date
    timezone: str
    days: list[PlanDayOut]
    totals: list[PlanTotalOut]


class PlanOut(BaseModel):
    user_id: int
    day: date
    calls: int
    meetings: int
    proposals: int
    note: str | None
    set_by_id: int | None
    updated_at: datetime

    @classmethod
    def of(cls, plan: DailyPlan) -> PlanOut:
        return cls.model_validate(plan, from_attributes=True)
