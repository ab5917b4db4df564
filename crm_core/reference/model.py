"""Regions and sources."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class Region(Base):
    """A federal subject or city (``code`` e.g. ``RU-MOW``, ``RU-SPE``, ``kazan``)."""

    __tablename__ = "regions"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("regions.id", ondelete="SET NULL"))
    timezone: Mapped[str | None] = mapped_column(String(64))
    is_active: Mapped[bool] = mapped_column(default=True)


class SourceKind(enum.StrEnum):
    AD_CHANNEL = "ad_channel"  # Yandex Direct, Google Ads
    CAMPAIGN = "campaign"  # one campaign of an ad channel
    EXHIBITION = "exhibition"
    TRACKING_NUMBER = "tracking_number"  # a static call-tracking number
    WEBSITE = "website"  # organic, direct, referral sites
    REFERRAL = "referral"
    COLD_CALL = "cold_call"
    OTHER = "other"


class Source(Base):
    """Where a client came from; campaigns hang under their ad channel."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("kind", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("sources.id", ondelete="SET NULL"))
    utm: Mapped[dict[str, str] | None] = mapped_column(JsonDoc)  # utm_source/medium/campaign
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
