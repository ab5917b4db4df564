"""Call tracking: websites, their tracking numbers and pools, visitors and the sessions that
held a number.

A number is a DID the PBX receives. It is *static* (one source for good: a billboard, an
exhibition), a member of a *pool* (leased for a while to one website visitor whose source and
region the pool covers), or a site's *default* number for a region (visitors no pool covers).
Which session holds a pool number right now lives in the lease store (Redis or memory); the
``tracking_sessions`` rows are the history, so a call is attributed even after a restart.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow

SITE_CODE_PATTERN = r"^[a-z0-9_-]{1,64}$"


class NumberKind(enum.StrEnum):
    STATIC = "static"  # always one source
    POOL = "pool"  # leased to visitor sessions of the pool's (source, region)
    DEFAULT = "default"  # a site's number for a region when no pool covers the visitor


class TrackingSite(Base):
    """A website that embeds ``track.js`` (``data-site`` = ``code``)."""

    __tablename__ = "tracking_sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Origins (scheme://host[:port]) allowed to call the tracking API from a browser (CORS).
    origins: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    # sha256 hex of the key the site's forms send with website requests; None: forms refused.
    form_key_hash: Mapped[str | None] = mapped_column(String(64))
    default_region_id: Mapped[int | None] = mapped_column(
        ForeignKey("regions.id", ondelete="SET NULL")
    )
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrackingPool(Base):
    """Numbers leased to visitors of one site whose source and region match.

    ``channel`` is a classified channel (``yandex_direct``, ``google_ads``, ``vk`` …) and
    ``kind`` a class of sources (``paid``, ``organic``, ``social``, ``referral``, ``direct``);
    None matches any. ``region_id`` None matches every region. ``source_id`` is the source a
    call to the pool carries when the visitor's own could not be resolved.
    """

    __tablename__ = "tracking_pools"
    __table_args__ = (UniqueConstraint("site_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(
        ForeignKey("tracking_sites.id", ondelete="CASCADE"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str | None] = mapped_column(String(16))
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrackingNumber(Base):
    """One DID (E.164) and what a call to it means."""

    __tablename__ = "tracking_numbers"

    id: Mapped[int] = mapped_column(primary_key=True)
    did: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_sites.id", ondelete="CASCADE"), index=True
    )
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_pools.id", ondelete="CASCADE"), index=True
    )
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    campaign: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(String(500))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrackingVisitor(Base):
    """A first-party visitor id of one site and his attribution: the first touch, replaced
    only by a new campaign click (UTM, ``yclid``, ``gclid``)."""

    __tablename__ = "tracking_visitors"
    __table_args__ = (UniqueConstraint("site_id", "visitor_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("tracking_sites.id", ondelete="CASCADE"))
    visitor_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    source_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    campaign: Mapped[str | None] = mapped_column(String(200))
    utm: Mapped[dict[str, str]] = mapped_column(JsonDoc, default=dict)
    landing_page: Mapped[str | None] = mapped_column(String(2000))
    referrer: Mapped[str | None] = mapped_column(String(2000))
    region_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    touched_at: Mapped[datetime] = mapped_column(default=utcnow)  # when this attribution began
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrackingSession(Base):
    """One page session that asked for a number: which number it held and from when to when.

    ``ended_at`` is set on release; a session that just stopped sending heartbeats keeps None
    and counts as ended ``lease_minutes`` after ``last_seen_at``.
    """

    __tablename__ = "tracking_sessions"
    __table_args__ = (
        Index("ix_tracking_sessions_did_started", "did", "started_at"),
        Index("ix_tracking_sessions_site_visitor", "site_id", "visitor_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(36), unique=True)  # the public session id
    site_id: Mapped[int] = mapped_column(ForeignKey("tracking_sites.id", ondelete="CASCADE"))
    # The visitor by his public id, not a foreign key: sessions are written in batches, and
    # the visitor row may be written in the same batch.
    visitor_id: Mapped[str | None] = mapped_column(String(64))
    number_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_numbers.id", ondelete="SET NULL")
    )
    pool_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracking_pools.id", ondelete="SET NULL")
    )
    did: Mapped[str | None] = mapped_column(String(32))
    low_confidence: Mapped[bool] = mapped_column(default=False)
    page: Mapped[str | None] = mapped_column(String(2000))
    # The visitor's attribution as it was when the session started (what a call carries).
    attribution: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
