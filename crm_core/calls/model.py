"""The call log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class Call(Base):
    """One finished call as folded from the PBX's events (``call_id`` is the Linkedid)."""

    __tablename__ = "calls"
    __table_args__ = (
        UniqueConstraint("pbx", "call_id"),
        Index("ix_calls_user_started", "user_id", "started_at"),
        Index("ix_calls_company_started", "company_id", "started_at"),
        Index("ix_calls_contact_started", "contact_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(64))
    call_id: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))  # inbound, outbound, internal
    caller: Mapped[str | None] = mapped_column(String(64), index=True)
    callee: Mapped[str | None] = mapped_column(String(64))
    did: Mapped[str | None] = mapped_column(String(32), index=True)
    queue: Mapped[str | None] = mapped_column(String(64))
    extension: Mapped[str | None] = mapped_column(String(32))
    rang: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    disposition: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(index=True)
    answered_at: Mapped[datetime | None]
    ended_at: Mapped[datetime]
    ring_seconds: Mapped[float] = mapped_column(default=0.0)
    talk_seconds: Mapped[float] = mapped_column(default=0.0)
    counted: Mapped[bool] = mapped_column(default=False)
    transfers: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    recording: Mapped[str | None] = mapped_column(String(500))
    hangup_cause: Mapped[int | None]
    # An unanswered click-to-call: "manager" (his own phone did not pick up) or "client".
    unanswered_by: Mapped[str | None] = mapped_column(String(16))
    # Times not observed as they happened ("started_at", "answered_at", "ended_at"): shown "≈".
    estimated: Mapped[list[str] | None] = mapped_column(JsonDoc, default=list)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), index=True
    )
    deal_id: Mapped[int | None] = mapped_column(ForeignKey("deals.id", ondelete="SET NULL"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    tracking: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
