"""A call recording: where its processing stands and, once stored, what and where it is."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, utcnow


class RecordingState(enum.StrEnum):
    PENDING = "pending"  # waiting for the file (or for a retry)
    STORED = "stored"  # a verified copy is in storage
    MISSING = "missing"  # no file came within recordings.wait_minutes
    FAILED = "failed"  # corrupt audio or a conversion that does not verify; source kept
    PURGED = "purged"  # removed by retention


class Recording(Base):
    """One MixMonitor file of a call (a call normally has one).

    Nothing from a request ever names a file: the storage key is random and only ever read
    from this row, by id.
    """

    __tablename__ = "recordings"
    __table_args__ = (
        UniqueConstraint("pbx", "call_ref", "filename"),
        Index("ix_recordings_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pbx: Mapped[str] = mapped_column(String(64))
    call_ref: Mapped[str] = mapped_column(String(64))  # the call's Linkedid
    call_pk: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL"), index=True
    )
    activity_id: Mapped[int | None] = mapped_column(
        ForeignKey("activities.id", ondelete="SET NULL"), index=True
    )
    filename: Mapped[str] = mapped_column(String(200))  # the MixMonitor file name
    state: Mapped[str] = mapped_column(String(16), default=RecordingState.PENDING.value)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    ended_at: Mapped[datetime]  # when the call ended: the wait for the file counts from it
    error: Mapped[str | None] = mapped_column(String(500))
    storage_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    format: Mapped[str | None] = mapped_column(String(8))
    size: Mapped[int | None] = mapped_column(BigInteger)
    duration_s: Mapped[float | None]
    sha256: Mapped[str | None] = mapped_column(String(64))
    original_kept: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    stored_at: Mapped[datetime | None] = mapped_column(index=True)
    purged_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
