"""Pipelines with ordered stages, deals, stage history."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, Money, utcnow


class StageKind(enum.StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class Pipeline(Base):
    """A sales pipeline, synchronised from ``crm.pipelines`` by code; ``name`` is Russian."""

    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200), default="", server_default="")
    is_default: Mapped[bool] = mapped_column(default=False)
    sort: Mapped[int] = mapped_column(default=0)
    is_active: Mapped[bool] = mapped_column(default=True)


class PipelineStage(Base):
    """A stage of a pipeline, matched to the configuration by ``(pipeline_id, code)``. A stage
    dropped from the configuration is kept: deals and their history may point at it."""

    __tablename__ = "pipeline_stages"
    __table_args__ = (UniqueConstraint("pipeline_id", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(64))
    name_ru: Mapped[str] = mapped_column(String(200))
    name_en: Mapped[str] = mapped_column(String(200))
    sort: Mapped[int] = mapped_column(default=0)
    kind: Mapped[str] = mapped_column(String(8), default=StageKind.OPEN.value)


class Deal(Base):
    """An opportunity moving through one pipeline's stages; amounts in RUB."""

    __tablename__ = "deals"
    __table_args__ = (
        # A manager's deals by one index range, their ids included (access checks ask for them).
        Index("ix_deals_responsible_id_id", "responsible_id", "id"),
        # A kanban column: a stage's deals, most recently moved first.
        Index("ix_deals_stage_moved", "stage_id", "stage_changed_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id"), index=True)
    stage_id: Mapped[int] = mapped_column(ForeignKey("pipeline_stages.id"), index=True)
    amount: Mapped[Decimal | None] = mapped_column(Money())
    margin: Mapped[Decimal | None] = mapped_column(Money())  # expected profit
    products: Mapped[str | None] = mapped_column(Text)
    responsible_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    source_id: Mapped[int | None] = mapped_column(
        ForeignKey("sources.id", ondelete="SET NULL"), index=True
    )
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    legal_entity_id: Mapped[int | None] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="SET NULL")
    )
    lost_reason: Mapped[str | None] = mapped_column(String(200))
    # Exempts the deal's call recordings from retention (a dispute, a court request).
    legal_hold: Mapped[bool] = mapped_column(default=False)
    # Milestones the customer tracks besides the stage.
    samples_sent_at: Mapped[datetime | None]
    meeting_at: Mapped[datetime | None]
    exhibition_invited_at: Mapped[datetime | None]
    promotion_offered_at: Mapped[datetime | None]
    stage_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class DealStageChange(Base):
    """One move of a deal (``from_stage_id`` None: the deal was created); the rows give the time
    spent in each stage for the funnel reports."""

    __tablename__ = "deal_stage_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    deal_id: Mapped[int] = mapped_column(ForeignKey("deals.id", ondelete="CASCADE"), index=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("pipeline_stages.id"))
    to_stage_id: Mapped[int] = mapped_column(ForeignKey("pipeline_stages.id"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reason: Mapped[str | None] = mapped_column(String(200))
