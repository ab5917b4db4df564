"""Events of the deals slice, addressed to the deal's responsible manager and the heads of
sales (``role:head``)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from crm_core.events import DomainEvent


def funnel_audience(*responsible_ids: int | None) -> tuple[str, ...]:
    """``user:<id>`` of each responsible (if any, without repeats) and ``role:head``."""
    users = dict.fromkeys(f"user:{r}" for r in responsible_ids if r is not None)
    return (*users, "role:head")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DealCreated(DomainEvent):
    name = "deal.created"
    deal_id: int
    title: str
    pipeline: str
    stage: str
    amount: Decimal | None = None
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DealUpdated(DomainEvent):
    name = "deal.updated"
    deal_id: int
    fields: tuple[str, ...] = ()
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DealStageChanged(DomainEvent):
    """A deal moved; ``kind`` is the new stage's kind (open, won, lost)."""

    name = "deal.stage_changed"
    deal_id: int
    pipeline: str
    from_stage: str | None
    to_stage: str
    kind: str
    reason: str | None = None
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class DealDeleted(DomainEvent):
    name = "deal.deleted"
    deal_id: int
    responsible_id: int | None = None
    actor_id: int | None = None
