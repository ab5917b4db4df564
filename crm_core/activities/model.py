"""Activities."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class ActivityKind(enum.StrEnum):
    CALL = "call"
    MEETING = "meeting"
    EMAIL = "email"
    MESSAGE = "message"
    NOTE = "note"


class Activity(Base):
    """One entry of a client's timeline. ``external_id`` ("call:<pbx>:<linkedid>") makes
    writes from the telephony and channel adapters idempotent."""

    __tablename__ = "activities"
    __table_args__ = (
        Index("ix_activities_company_at", "company_id", "occurred_at"),
        Index("ix_activities_contact_at", "contact_id", "occurred_at"),
        Index("ix_activities_user_kind_at", "user_id", "kind", "occurred_at"),
        Index("ix_activities_occurred_at", "occurred_at"),  # the whole timeline, newest first
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str | None] = mapped_column(String(16))  # inbound, outbound, internal
    subject: Mapped[str] = mapped_column(String(300), default="")
    body: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    duration_s: Mapped[float | None]
    talk_s: Mapped[float | None]
    counted: Mapped[bool] = mapped_column(default=False)  # a call with enough talk time
    outcome: Mapped[str | None] = mapped_column(String(32))  # answered, missed, held...
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    deal_id: Mapped[int | None] = mapped_column(
        ForeignKey("deals.id", ondelete="SET NULL"), index=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), index=True
    )
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    # A personal mailbox's letter: read only by this user, the one it belongs to (user_id)
    # and the head, whoever else may open the client's card.
    private_to_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
