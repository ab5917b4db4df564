"""Leads and their stage history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, validates

from crm_core.clients.model import CardFields, fold_name, responsible_index
from crm_core.db import Base, JsonDoc, utcnow


class Lead(CardFields, Base):
    """An unqualified request: from a call, a website form, a message, an import or by hand."""

    __tablename__ = "leads"
    __table_args__ = (
        Index("ix_leads_created_at", "created_at"),
        responsible_index("leads"),
        # A kanban column: a stage's leads, most recently moved first.
        Index("ix_leads_stage_moved", "stage", "stage_changed_at", "id"),
        # The kanban's counts and sums per stage, read from the index alone on PostgreSQL.
        Index("ix_leads_stage", "stage", postgresql_include=["potential_amount", "responsible_id"]),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    stage: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(16), default="manual")  # call, web, message...
    contact_name: Mapped[str | None] = mapped_column(String(300))
    company_name: Mapped[str | None] = mapped_column(String(300))
    # Both names folded (crm_core.clients.model.fold_name) for case-insensitive search on
    # SQLite too, whose lower() folds ASCII only.
    name_search: Mapped[str] = mapped_column(String(601), default="", server_default="")
    inn: Mapped[str | None] = mapped_column(String(12))
    comment: Mapped[str | None] = mapped_column(Text)
    tracking: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)  # visitor, utm, landing
    junk_reason: Mapped[str | None] = mapped_column(String(200))
    stage_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    converted_at: Mapped[datetime | None]
    # Indexed: every client and deal card asks for its converted leads (their history is the
    # client's too), and deleting a client sets these to NULL.
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    deal_id: Mapped[int | None] = mapped_column(
        ForeignKey("deals.id", ondelete="SET NULL"), index=True
    )

    @validates("contact_name", "company_name")
    def _fold_names(self, key: str, value: str | None) -> str | None:
        names = {"contact_name": self.contact_name, "company_name": self.company_name, key: value}
        self.name_search = fold_name(f"{names['contact_name'] or ''} {names['company_name'] or ''}")
        return value


class LeadStageChange(Base):
    """One move of a lead between stages (``from_stage`` None: the lead was created)."""

    __tablename__ = "lead_stage_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_stage: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    reason: Mapped[str | None] = mapped_column(String(200))
