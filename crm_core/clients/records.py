"""Loading a contact or a company for an actor (the access check every client use case
starts with), completing a card from another source, and what decides whether a record may be
deleted or must be merged instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients import events
from crm_core.clients.checks import ClientType, fill_empty, merge_custom
from crm_core.clients.duplicates import DuplicateRef
from crm_core.clients.errors import ClientHasHistory, ClientMerged, CompanyNotFound, ContactNotFound
from crm_core.clients.model import Company, Contact
from crm_core.db import Base, utcnow
from crm_core.events import DomainEvent
from crm_core.rules import CrmRules

ClientT = TypeVar("ClientT", Contact, Company)

# Rows that are part of a card itself (deleted with it), as opposed to its history.
_CARD_PARTS = frozenset(
    {"phones", "emails", "messenger_ids", "contact_companies", "legal_entities", "requisites"}
)


@dataclass(frozen=True)
class SaveResult:
    """What creating a contact or a company did: created a record, or merged the input into an
    existing duplicate (``created`` False)."""

    client: Any  # Contact | Company
    created: bool
    duplicates: tuple[DuplicateRef, ...] = ()


async def _load(
    session: AsyncSession,
    model: type[ClientT],
    client_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool,
    include_merged: bool,
) -> ClientT:
    kind = "contact" if model is Contact else "company"
    not_found = ContactNotFound if model is Contact else CompanyNotFound
    missing = not_found(f"no {kind} {client_id}", details={f"{kind}_id": client_id})
    client = await session.get(model, client_id)
    if client is None:
        raise missing
    access.check(
        actor,
        client.responsible_id,
        rules,
        write=write,
        what=f"{kind} {client_id}",
        missing=missing,
    )
    if client.merged_into_id is not None and not include_merged:
        raise ClientMerged(
            f"{kind} {client_id} was merged into {client.merged_into_id}",
            details={f"{kind}_id": client_id, "merged_into_id": client.merged_into_id},
        )
    return client


async def get_contact(
    session: AsyncSession,
    contact_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
    include_merged: bool = False,
) -> Contact:
    """A live contact ``actor`` may read (or change, with ``write``): 404 when there is none or
    he may not read it, 403 when he may only read it."""
    contact: Contact = await _load(
        session,
        Contact,
        contact_id,
        actor=actor,
        rules=rules,
        write=write,
        include_merged=include_merged,
    )
    return contact


async def get_company(
    session: AsyncSession,
    company_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
    include_merged: bool = False,
) -> Company:
    """A live company ``actor`` may read (or change, with ``write``): 404 when there is none
    or he may not read it, 403 when he may only read it."""
    company: Company = await _load(
        session,
        Company,
        company_id,
        actor=actor,
        rules=rules,
        write=write,
        include_merged=include_merged,
    )
    return company


def refuse_legal_hold(record: Contact | Company, kind: str) -> None:
    """A record on legal hold is never deleted."""
    if record.legal_hold:
        raise ClientHasHistory(
            f"{kind} {record.id} is on legal hold", details={"id": record.id, "legal_hold": True}
        )


async def refuse_with_history(
    session: AsyncSession, table_name: str, ids: Sequence[int], *, owner: int | None = None
) -> None:
    """Refuse when any table outside the card itself points at one of ``ids``."""
    if not ids:
        return
    used: list[str] = []
    for table, column in referencing_columns(table_name):
        if table.name in _CARD_PARTS:
            continue
        if await session.scalar(select(exists().where(column.in_(ids)))):
            used.append(table.name)
    if used:
        record_id = owner if owner is not None else ids[0]
        raise ClientHasHistory(
            f"client {record_id} has history in {', '.join(used)}; merge it instead",
            details={"id": record_id, "referenced_by": used},
        )


def referencing_columns(table_name: str) -> list[tuple[Any, Any]]:
    """(table, column) of every foreign key to ``<table_name>.id`` in the whole schema."""
    import crm_core.models  # noqa: F401  (registers every slice's tables)

    out = []
    for table in Base.metadata.sorted_tables:
        for fk in table.foreign_keys:
            if fk.column.table.name == table_name and fk.column.name == "id":
                out.append((table, fk.parent))
    return out


async def complete_card(
    session: AsyncSession,
    kind: ClientType,
    client_id: int,
    values: Mapping[str, Any],
    *,
    custom: Mapping[str, Any] | None = None,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> list[DomainEvent]:
    """Fill the empty card fields (and missing custom fields) of a client ``actor`` may change
    from ``values``, e.g. the lead converted into it; the client keeps its responsible.
    ``client.updated`` names what was filled (no event when nothing was)."""
    load = get_contact if kind == "contact" else get_company
    record = await load(session, client_id, actor=actor, rules=rules, write=True)
    filled = fill_empty(record, {k: v for k, v in values.items() if k != "responsible_id"})
    filled += merge_custom(record, custom)
    if not filled:
        return []
    record.updated_at = now or utcnow()
    return [events.updated(kind, record.id, tuple(filled), record.responsible_id, actor.id)]
