"""Who serves which region (rules and their managers) and the website requests they receive."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class Strategy(enum.StrEnum):
    FIXED = "fixed"  # one responsible for the region
    ROUND_ROBIN = "round_robin"  # weighted turns, the pointer is stored in the rule's row
    LEAST_LOADED = "least_loaded"  # fewest open leads + open tasks (per unit of weight)
    MANUAL = "manual"  # everything goes to the manual queue the head of sales works


class RequestStatus(enum.StrEnum):
    ASSIGNED = "assigned"  # a manager was chosen (automatically or by hand)
    QUEUED = "queued"  # waits in the manual queue
    SPAM = "spam"  # the honeypot was filled: stored, never a lead


class DistributionRule(Base):
    """How requests of one region are distributed; ``region_id`` None is the default rule
    (at most one), used when neither the region nor its parents have a rule that can serve."""

    __tablename__ = "distribution_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    region_id: Mapped[int | None] = mapped_column(
        ForeignKey("regions.id", ondelete="CASCADE"), unique=True
    )
    strategy: Mapped[str] = mapped_column(String(16))
    # Round-robin turns taken so far; advanced by one atomic UPDATE ... RETURNING, so restarts
    # and several instances continue the same sequence.
    turn: Mapped[int] = mapped_column(default=0, server_default="0")
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuleManager(Base):
    """A manager serving a rule's region: his weight and working hours.

    ``hours`` maps weekday keys (``mon`` … ``sun``) to ``"HH:MM-HH:MM"`` intervals in
    ``timezone`` (else the region's, else ``locale.timezone``); None means any time. A fixed
    rule has exactly one manager.
    """

    __tablename__ = "distribution_managers"
    __table_args__ = (UniqueConstraint("rule_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_id: Mapped[int] = mapped_column(
        ForeignKey("distribution_rules.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    weight: Mapped[int] = mapped_column(default=1)
    timezone: Mapped[str | None] = mapped_column(String(64))
    hours: Mapped[dict[str, list[str]] | None] = mapped_column(JsonDoc)


class WebRequest(Base):
    """One submission of a website form, kept whatever became of it (spam included)."""

    __tablename__ = "web_requests"
    __table_args__ = (
        Index("ix_web_requests_created_at", "created_at"),
        Index("ix_web_requests_site_visitor", "site", "visitor_id"),
        Index("ix_web_requests_status_created", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    site: Mapped[str] = mapped_column(String(64))  # the tracking site's code
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(300))
    phone: Mapped[str | None] = mapped_column(String(32))  # E.164
    email: Mapped[str | None] = mapped_column(String(320))
    comment: Mapped[str | None] = mapped_column(Text)
    form: Mapped[dict[str, Any]] = mapped_column(JsonDoc)  # every field as posted
    attribution: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)
    ip: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    is_spam: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str | None] = mapped_column(String(64))  # why this manager / the queue
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    responsible_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("tasks.id", ondelete="SET NULL"))
    assigned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    assigned_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
