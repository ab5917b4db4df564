"""Who may see and change what.

``admin`` and ``head`` see and change everything. A ``manager`` sees and changes the records he
is responsible for; with ``crm.managers_read_all`` he may also read (not change) the others'.
A record a user may not read is reported as missing (404), so ids do not leak; one he may read
but not change is refused (403).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import ColumnElement, Select

from crm_core.errors import NotFound, PermissionDenied
from crm_core.rules import CrmRules

PRIVILEGED = frozenset({"admin", "head"})


class Actor(Protocol):
    """The user acting: only ``id`` and ``role`` matter here."""

    id: int
    role: str


def is_privileged(user: Actor) -> bool:
    return user.role in PRIVILEGED


def can_read(user: Actor, responsible_id: int | None, rules: CrmRules) -> bool:
    return is_privileged(user) or rules.managers_read_all or responsible_id == user.id


def can_write(user: Actor, responsible_id: int | None) -> bool:
    return is_privileged(user) or responsible_id == user.id


def ensure_read(user: Actor, responsible_id: int | None, rules: CrmRules, what: str) -> None:
    if not can_read(user, responsible_id, rules):
        raise NotFound(f"no {what}")


def ensure_write(user: Actor, responsible_id: int | None, rules: CrmRules, what: str) -> None:
    ensure_read(user, responsible_id, rules, what)
    if not can_write(user, responsible_id):
        raise PermissionDenied(f"{what} belongs to another manager; you may only read it")


def scope(
    stmt: Select[Any], responsible: ColumnElement[Any], user: Actor, rules: CrmRules
) -> Select[Any]:
    """Restrict a listing to what ``user`` may read."""
    if is_privileged(user) or rules.managers_read_all:
        return stmt
    return stmt.where(responsible == user.id)
