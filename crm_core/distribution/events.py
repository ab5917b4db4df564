"""Events of distribution. Rule changes are internal (they invalidate the dialplan's cache on
every instance); request events reach the chosen manager, or the manual queue's audience."""

from __future__ import annotations

import dataclasses

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class RulesChanged(DomainEvent):
    """A distribution rule was created, changed or deleted."""

    name = "distribution.rules_changed"
    rule_id: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebRequestReceived(DomainEvent):
    """A website request arrived: for the manager it went to, or for the manual queue
    (``queued``). The page toasts it."""

    name = "web_request.received"
    request_id: int
    site: str
    client_name: str | None = None
    phone: str | None = None
    lead_id: int | None = None
    responsible_id: int | None = None
    queued: bool = False
    source: str | None = None
    region: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class WebRequestAssigned(DomainEvent):
    """The head of sales assigned a queued request to a manager."""

    name = "web_request.assigned"
    request_id: int
    lead_id: int | None
    responsible_id: int
    task_id: int | None = None
    by_id: int | None = None
