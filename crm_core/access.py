"""Who may see and change what: the one access check every service uses.

``admin`` and ``head`` see and change everything. A ``manager`` sees and changes the records he
is responsible for (and, for activities, tasks and invoices, those linked to his clients); with
``crm.managers_read_all`` he may also read (not change) the others'. A record a user may not
read is reported as missing (404), so ids do not leak; one he may read but not change is
refused (403).

Every service function takes an actor; none accepts "nobody". The server acting on its own
(telephony, the scheduler, robots, website requests) passes :data:`SYSTEM`: it may read and
change everything, and it is never a user: its ``id`` is None, so whatever records who did
something (``created_by_id``, a history row's ``user_id``, an audit entry) records nobody.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, Select
from sqlalchemy.orm import InstrumentedAttribute

from crm_core.errors import DomainError, NotFound, PermissionDenied
from crm_core.rules import CrmRules

PRIVILEGED = frozenset({"admin", "head"})


class Actor(Protocol):
    """Who acts: a signed-in user, or :data:`SYSTEM`. Only ``id`` and ``role`` matter here."""

    @property
    def id(self) -> int | None: ...

    @property
    def role(self) -> str: ...


@dataclass(frozen=True)
class SystemActor:
    """The server acting on its own behalf. Use the single instance :data:`SYSTEM`."""

    id: None = None
    role: str = "system"

    def __repr__(self) -> str:
        return "SYSTEM"


SYSTEM: Final = SystemActor()


def is_system(actor: Actor) -> bool:
    return isinstance(actor, SystemActor)


def is_privileged(actor: Actor) -> bool:
    """Head, admin and the system see and change everything."""
    return is_system(actor) or actor.role in PRIVILEGED


def can_read(
    actor: Actor, responsible_id: int | None, rules: CrmRules, owners: Iterable[int] = ()
) -> bool:
    """``actor`` may read a record of ``responsible_id`` (linked to clients of ``owners``)."""
    if is_privileged(actor) or rules.managers_read_all:
        return True
    return actor.id is not None and (responsible_id == actor.id or actor.id in set(owners))


def can_write(actor: Actor, responsible_id: int | None, owners: Iterable[int] = ()) -> bool:
    """``actor`` may change a record of ``responsible_id`` (linked to clients of ``owners``)."""
    if is_privileged(actor):
        return True
    return actor.id is not None and (responsible_id == actor.id or actor.id in set(owners))


def check(
    actor: Actor,
    responsible_id: int | None,
    rules: CrmRules,
    *,
    write: bool,
    what: str,
    owners: Iterable[int] = (),
    missing: DomainError | None = None,
) -> None:
    """The access check: raise ``missing`` (default ``NotFound("no <what>")``) when ``actor``
    may not read the record, ``PermissionDenied`` when ``write`` and he may only read it."""
    owners = set(owners)
    if not can_read(actor, responsible_id, rules, owners):
        raise missing if missing is not None else NotFound(f"no {what}")
    if write and not can_write(actor, responsible_id, owners):
        raise PermissionDenied(f"{what} belongs to another manager; you may only read it")


def scope(
    stmt: Select[Any],
    responsible: ColumnElement[Any] | InstrumentedAttribute[Any],
    actor: Actor,
    rules: CrmRules,
) -> Select[Any]:
    """Restrict a listing to what ``actor`` may read."""
    if is_privileged(actor) or rules.managers_read_all:
        return stmt
    return stmt.where(responsible == actor.id)


def responsible_for_new(actor: Actor, requested: int | None) -> int | None:
    """The responsible of a record ``actor`` creates: a manager creates records for himself;
    head and admin assign anyone; the system assigns what it was given (possibly nobody)."""
    if is_system(actor):
        return requested
    if requested is None:
        return actor.id
    if requested != actor.id and not is_privileged(actor):
        raise PermissionDenied(
            "a manager may only make himself responsible",
            details={"field": "responsible_id", "value": requested},
        )
    return requested


def check_handover(actor: Actor, current: int | None, requested: int | None) -> None:
    """Only the head of sales, an admin or the system hands a record to another manager (or
    to nobody)."""
    if requested == current or is_privileged(actor):
        return
    raise PermissionDenied(
        "only the head of sales or an admin changes the responsible manager",
        details={"field": "responsible_id", "value": requested},
    )


def check_acting_for(actor: Actor, user_id: int | None, field: str) -> None:
    """A manager acts only for himself (sets ``field`` to his own id); head, admin and the
    system for anyone."""
    if user_id is not None and user_id != actor.id and not is_privileged(actor):
        raise PermissionDenied(
            f"a manager may not set {field} to another user", details={"field": field}
        )
