"""Events of conversations. The audience is the assigned manager; a conversation nobody has
yet goes to the heads of sales and the managers (the "unassigned" list is shared)."""

from __future__ import annotations

import dataclasses

from crm_core.events import DomainEvent

UNASSIGNED_AUDIENCE = ("role:head", "role:admin", "role:manager")


def conversation_audience(assignee_id: int | None) -> tuple[str, ...]:
    if assignee_id is None:
        return UNASSIGNED_AUDIENCE
    return (f"user:{assignee_id}", "role:head")


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageNew(DomainEvent):
    """A message was stored in a conversation: a client's, a manager's reply or a note."""

    name = "message.new"
    conversation_id: int
    message_id: int
    channel: str
    channel_kind: str
    direction: str
    author_kind: str
    kind: str
    text: str | None = None
    status: str
    client_name: str = ""
    assignee_id: int | None = None
    unread: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MessageStatusChanged(DomainEvent):
    """What became of a message we sent (sent, delivered, read, failed with ``error``)."""

    name = "message.status"
    conversation_id: int
    message_id: int
    status: str
    error: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConversationChanged(DomainEvent):
    """A conversation was assigned, resolved, reopened or read (``changes`` names what)."""

    name = "conversation.changed"
    conversation_id: int
    changes: tuple[str, ...]
    status: str
    assignee_id: int | None = None
    unread: int = 0
