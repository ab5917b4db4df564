"""Events of call tracking. Internal: a configuration change makes every instance reload its
in-memory directory of numbers."""

from __future__ import annotations

import dataclasses

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrackingChanged(DomainEvent):
    """A site, pool or number was created, changed or deleted."""

    name = "tracking.changed"
    entity: str
    entity_id: int
