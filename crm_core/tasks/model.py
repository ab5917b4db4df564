"""Tasks and daily plans."""

from __future__ import annotations

import enum
from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class TaskKind(enum.StrEnum):
    CALL_BACK = "call_back"
    MEETING = "meeting"
    SEND_PROPOSAL = "send_proposal"
    INVOICE_FOLLOW_UP = "invoice_follow_up"
    CUSTOM = "custom"


class TaskStatus(enum.StrEnum):
    OPEN = "open"
    DONE = "done"
    CANCELLED = "cancelled"


class Task(Base):
    """A to-do of a manager, optionally about a client, deal, lead or invoice. Its reminder
    (at ``remind_at``, else ``due_at``) is a scheduled job that publishes ``task.due``."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_responsible_status_due", "responsible_id", "status", "due_at"),
        # Plan-vs-fact: proposals a manager completed on a day.
        Index("ix_tasks_responsible_kind_completed", "responsible_id", "kind", "completed_at"),
        # The task list: open (or done) tasks, soonest due first, walked in order until a
        # page matches the filters and the access check.
        Index("ix_tasks_status_due", "status", "due_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=TaskStatus.OPEN.value)
    due_at: Mapped[datetime | None]
    remind_at: Mapped[datetime | None]
    responsible_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    deal_id: Mapped[int | None] = mapped_column(
        ForeignKey("deals.id", ondelete="SET NULL"), index=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), index=True
    )
    invoice_id: Mapped[int | None] = mapped_column(
        ForeignKey("invoices.id", ondelete="SET NULL"), index=True
    )
    bulk_id: Mapped[str | None] = mapped_column(String(32), index=True)  # one bulk assignment
    # What created it, e.g. "missed-call:+74951234567": a later answered call closes it.
    origin_key: Mapped[str | None] = mapped_column(String(200), index=True)
    completed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DailyPlan(Base):
    """What the head of sales plans for a manager on a day."""

    __tablename__ = "daily_plans"
    __table_args__ = (UniqueConstraint("user_id", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    day: Mapped[date] = mapped_column(Date)
    calls: Mapped[int] = mapped_column(default=0)  # counted calls to make
    meetings: Mapped[int] = mapped_column(default=0)
    proposals: Mapped[int] = mapped_column(default=0)
    note: Mapped[str | None] = mapped_column(Text)
    set_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
