"""A notification kept for one user until he reads it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        # The bell: a user's unread ones, newest first; and his list, newest first.
        Index("ix_notifications_user_unread", "user_id", "read_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))  # "task.due", "lead.assigned", ...
    # What it is about (opened from the notification): "contact", "lead", "deal", "task" ...
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[int | None]
    data: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    read_at: Mapped[datetime | None]
    # One notification per fact and user, however often the fact's event is seen.
    dedupe_key: Mapped[str] = mapped_column(String(160), unique=True)
