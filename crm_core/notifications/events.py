"""The live side of a stored notification: pushed to the user's open pages."""

from __future__ import annotations

import dataclasses
from typing import Any

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotificationCreated(DomainEvent):
    """A notification was stored for ``user_id`` (``audience``: ``user:<id>``)."""

    name = "notification.created"
    notification_id: int
    user_id: int
    kind: str
    object_type: str | None = None
    object_id: int | None = None
    data: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NotificationsRead(DomainEvent):
    """The user marked notifications read: his other open pages update the bell to ``unread``
    (``audience``: ``user:<id>``)."""

    name = "notifications.read"
    user_id: int
    unread: int
