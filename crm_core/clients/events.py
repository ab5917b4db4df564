"""Events of the clients slice. The audience is the responsible manager and every head of
sales, so their screens can refresh the card."""

from __future__ import annotations

import dataclasses
from typing import Literal

from crm_core.events import DomainEvent

ClientKind = Literal["contact", "company"]


def client_audience(*responsible_ids: int | None) -> tuple[str, ...]:
    """Who sees a client's events: ``user:<responsible>`` (each, if any) and ``role:head``."""
    users = dict.fromkeys(f"user:{r}" for r in responsible_ids if r is not None)
    return (*users, "role:head")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientCreated(DomainEvent):
    name = "client.created"
    kind: str  # "contact" | "company"
    client_id: int
    client_name: str
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientUpdated(DomainEvent):
    name = "client.updated"
    kind: str
    client_id: int
    fields: tuple[str, ...] = ()  # what changed ("phones", "legal_entities", "custom.x"...)
    responsible_id: int | None = None
    actor_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientMerged(DomainEvent):
    name = "client.merged"
    kind: str
    survivor_id: int
    loser_id: int
    responsible_id: int | None = None
    actor_id: int | None = None


def created(
    kind: ClientKind, client_id: int, name: str, responsible_id: int | None, actor_id: int | None
) -> ClientCreated:
    """``client.created`` addressed to the responsible and the heads."""
    return ClientCreated(
        kind=kind,
        client_id=client_id,
        client_name=name,
        responsible_id=responsible_id,
        actor_id=actor_id,
        audience=client_audience(responsible_id),
    )


def updated(
    kind: ClientKind,
    client_id: int,
    fields: tuple[str, ...],
    responsible_id: int | None,
    actor_id: int | None,
) -> ClientUpdated:
    """``client.updated`` addressed to the responsible and the heads."""
    return ClientUpdated(
        kind=kind,
        client_id=client_id,
        fields=fields,
        responsible_id=responsible_id,
        actor_id=actor_id,
        audience=client_audience(responsible_id),
    )


def merged(
    kind: ClientKind,
    survivor_id: int,
    loser_id: int,
    responsible_id: int | None,
    actor_id: int | None,
    loser_responsible_id: int | None = None,
) -> ClientMerged:
    """``client.merged`` addressed to both records' responsibles and the heads."""
    return ClientMerged(
        kind=kind,
        survivor_id=survivor_id,
        loser_id=loser_id,
        responsible_id=responsible_id,
        actor_id=actor_id,
        audience=client_audience(responsible_id, loser_responsible_id),
    )
