"""Use cases of a company's legal entities and their requisites, kept as history: a change
adds a new set and retires the old one, which points at its replacement.

Legal entities and requisites belong to the company's card: reading them needs read access to
the company, changing them write access. Every change returns ``client.updated`` of the
company.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import Actor
from crm_core.clients import events
from crm_core.clients.duplicates import duplicate_error, duplicates_of
from crm_core.clients.errors import (
    CompanyNotFound,
    LegalEntityNotFound,
    RequisitesNotFound,
    RequisitesRetired,
)
from crm_core.clients.model import Company, LegalEntity, Requisites
from crm_core.clients.records import get_company
from crm_core.clients.schemas import LegalEntityInput, LegalEntityPatch, RequisitesInput
from crm_core.db import utcnow
from crm_core.events import DomainEvent
from crm_core.rules import CrmRules
from crm_core.validation import validate_requisites


def requisites_values(data: RequisitesInput, prefix: str = "") -> dict[str, Any]:
    """The requisites' column values, checksums verified (a field named with ``prefix``)."""
    values = validate_requisites(data.model_dump(), prefix=prefix)
    values["full_name"] = data.full_name.strip()
    return values


async def add_entity_rows(
    session: AsyncSession,
    company_id: int,
    name: str,
    requisites: Sequence[Mapping[str, Any]],
    *,
    created_by_id: int | None,
) -> LegalEntity:
    """Insert a legal entity with its requisites (already validated) into a company whose
    card the caller is writing."""
    entity = LegalEntity(company_id=company_id, name=name.strip())
    session.add(entity)
    await session.flush()
    for values in requisites:
        session.add(Requisites(legal_entity_id=entity.id, created_by_id=created_by_id, **values))
    await session.flush()
    return entity


async def _entity(
    session: AsyncSession, legal_entity_id: int, *, actor: Actor, rules: CrmRules, write: bool
) -> tuple[LegalEntity, Company]:
    missing = LegalEntityNotFound(
        f"no legal entity {legal_entity_id}", details={"legal_entity_id": legal_entity_id}
    )
    entity = await session.get(LegalEntity, legal_entity_id)
    if entity is None:
        raise missing
    try:
        company = await get_company(
            session, entity.company_id, actor=actor, rules=rules, write=write
        )
    except CompanyNotFound:
        raise missing from None
    return entity, company


async def get_legal_entity(
    session: AsyncSession,
    legal_entity_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
) -> LegalEntity:
    """A legal entity of a company ``actor`` may read (or change, with ``write``)."""
    entity, _ = await _entity(session, legal_entity_id, actor=actor, rules=rules, write=write)
    return entity


async def _requisites(
    session: AsyncSession, requisites_id: int, *, actor: Actor, rules: CrmRules, write: bool
) -> tuple[Requisites, Company]:
    missing = RequisitesNotFound(
        f"no requisites {requisites_id}", details={"requisites_id": requisites_id}
    )
    row = await session.get(Requisites, requisites_id)
    if row is None:
        raise missing
    try:
        _, company = await _entity(
            session, row.legal_entity_id, actor=actor, rules=rules, write=write
        )
    except LegalEntityNotFound:
        raise missing from None
    return row, company


async def get_requisites(
    session: AsyncSession,
    requisites_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
) -> Requisites:
    """A set of requisites of a company ``actor`` may read (or change, with ``write``)."""
    row, _ = await _requisites(session, requisites_id, actor=actor, rules=rules, write=write)
    return row


async def _refuse_foreign_inn(
    session: AsyncSession, inn: str | None, company_id: int, actor: Actor, rules: CrmRules
) -> None:
    duplicates = await duplicates_of(session, kind="company", inns=[inn], exclude=company_id)
    if duplicates:
        raise duplicate_error(duplicates, actor, rules)


def _changed(company: Company, what: str, actor: Actor) -> list[DomainEvent]:
    return [events.updated("company", company.id, (what,), company.responsible_id, actor.id)]


async def add_legal_entity(
    session: AsyncSession,
    company_id: int,
    data: LegalEntityInput,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[LegalEntity, list[DomainEvent]]:
    """Add a legal entity (with requisites) to a company; an INN live at another company is a
    duplicate (409)."""
    company = await get_company(session, company_id, actor=actor, rules=rules, write=True)
    reqs = [requisites_values(r, f"requisites.{j}.") for j, r in enumerate(data.requisites)]
    for values in reqs:
        await _refuse_foreign_inn(session, values["inn"], company_id, actor, rules)
    entity = await add_entity_rows(session, company_id, data.name, reqs, created_by_id=actor.id)
    return entity, _changed(company, "legal_entities", actor)


async def update_legal_entity(
    session: AsyncSession,
    legal_entity_id: int,
    patch: LegalEntityPatch,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[LegalEntity, list[DomainEvent]]:
    """Rename or (de)activate a legal entity; deactivating it retires its live requisites."""
    entity, company = await _entity(session, legal_entity_id, actor=actor, rules=rules, write=True)
    if patch.name is not None:
        entity.name = patch.name.strip()
    if patch.is_active is not None:
        entity.is_active = patch.is_active
        if not patch.is_active:
            now = utcnow()
            for row in await session.scalars(
                select(Requisites).where(
                    Requisites.legal_entity_id == legal_entity_id, Requisites.retired_at.is_(None)
                )
            ):
                row.retired_at = now
    await session.flush()
    return entity, _changed(company, "legal_entities", actor)


async def add_requisites(
    session: AsyncSession,
    legal_entity_id: int,
    data: RequisitesInput,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[Requisites, list[DomainEvent]]:
    """Add a set of requisites to a legal entity (checksums verified; an INN live at another
    company is a duplicate, 409)."""
    entity, company = await _entity(session, legal_entity_id, actor=actor, rules=rules, write=True)
    values = requisites_values(data)
    await _refuse_foreign_inn(session, values["inn"], entity.company_id, actor, rules)
    row = Requisites(legal_entity_id=legal_entity_id, created_by_id=actor.id, **values)
    session.add(row)
    await session.flush()
    return row, _changed(company, "requisites", actor)


async def change_requisites(
    session: AsyncSession,
    requisites_id: int,
    data: RequisitesInput,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[Requisites, list[DomainEvent]]:
    """Change requisites without losing history: a new row with the new values, the old one
    retired and pointing to it (``replaced_by_id``). Returns the new row."""
    old, company = await _requisites(session, requisites_id, actor=actor, rules=rules, write=True)
    if old.retired_at is not None:
        raise RequisitesRetired(
            f"requisites {requisites_id} are retired; change the current ones",
            details={"requisites_id": requisites_id, "replaced_by_id": old.replaced_by_id},
        )
    values = requisites_values(data)
    await _refuse_foreign_inn(session, values["inn"], company.id, actor, rules)
    new = Requisites(legal_entity_id=old.legal_entity_id, created_by_id=actor.id, **values)
    session.add(new)
    await session.flush()
    old.retired_at = utcnow()
    old.replaced_by_id = new.id
    await session.flush()
    return new, _changed(company, "requisites", actor)


async def retire_requisites(
    session: AsyncSession, requisites_id: int, *, actor: Actor, rules: CrmRules
) -> tuple[Requisites, list[DomainEvent]]:
    """Retire a set of requisites (kept in the history)."""
    row, company = await _requisites(session, requisites_id, actor=actor, rules=rules, write=True)
    if row.retired_at is not None:
        raise RequisitesRetired(
            f"requisites {requisites_id} are already retired",
            details={"requisites_id": requisites_id},
        )
    row.retired_at = utcnow()
    await session.flush()
    return row, _changed(company, "requisites", actor)


async def requisites_history(
    session: AsyncSession,
    legal_entity_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    include_retired: bool = True,
) -> list[Requisites]:
    """A legal entity's requisites, oldest first (live ones only without ``include_retired``)."""
    await _entity(session, legal_entity_id, actor=actor, rules=rules, write=False)
    stmt = select(Requisites).where(Requisites.legal_entity_id == legal_entity_id)
    if not include_retired:
        stmt = stmt.where(Requisites.retired_at.is_(None))
    return list(await session.scalars(stmt.order_by(Requisites.created_at, Requisites.id)))
