"""Events of the leads slice, addressed to the lead's responsible manager and the heads of
sales (``role:head``)."""

from __future__ import annotations

import dataclasses

from crm_core.events import DomainEvent


def lead_audience(*responsible_ids: int | None) -> tuple[str, ...]:
    """``user:<id>`` of each responsible (if any, without repeats) and ``role:head``."""
    users = dict.fromkeys(f"user:{r}" for r in responsible_ids if r is not None)
    return (*users, "role:head")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeadCreated(DomainEvent):
    name = "lead.created"
    lead_id: int
    origin: str
    stage: str
    title: str = ""
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeadUpdated(DomainEvent):
    name = "lead.updated"
    lead_id: int
    fields: tuple[str, ...] = ()
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeadStageChanged(DomainEvent):
    name = "lead.stage_changed"
    lead_id: int
    from_stage: str | None
    to_stage: str
    reason: str | None = None
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeadConverted(DomainEvent):
    """The lead became a contact and/or a company (created or found) and maybe a deal."""

    name = "lead.converted"
    lead_id: int
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    contact_created: bool = False
    company_created: bool = False
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LeadDeleted(DomainEvent):
    name = "lead.deleted"
    lead_id: int
    responsible_id: int | None = None
    actor_id: int | None = None
