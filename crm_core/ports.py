"""Ports the domain needs from the outside, implemented in the composition root."""

from __future__ import annotations

from typing import Protocol

from crm_core.events import DomainEvent


class EventPublisher(Protocol):
    """Publishes domain events to whoever subscribed (in this process and, with Redis, others)."""

    async def publish(self, event: DomainEvent) -> None: ...
