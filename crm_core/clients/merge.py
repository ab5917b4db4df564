"""Merging duplicate clients: a contact into a contact, a company into a company.

Everything that points at the loser is re-pointed to the survivor: the foreign keys are found
in the schema itself (``Base.metadata``), so a table another slice adds later (calls,
conversations, identities) is moved too without touching this module. Rows that would collide
on the survivor (the same phone twice, two links to the same company) are folded first. The
survivor's empty card fields are filled from the loser, the loser is marked
``merged_into_id`` and an audit entry records what moved, all in the caller's transaction.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import Actor
from crm_core.audit.model import AuditEntry
from crm_core.clients import events
from crm_core.clients.checks import fill_empty, merge_custom
from crm_core.clients.companies import group_company_ids
from crm_core.clients.errors import MergeNotAllowed
from crm_core.clients.model import Company, Contact, ContactCompany, Email, Phone
from crm_core.clients.records import get_company, get_contact, referencing_columns
from crm_core.clients.schemas import CARD_FIELDS
from crm_core.events import DomainEvent
from crm_core.rules import CrmRules


async def merge_contacts(
    session: AsyncSession, survivor_id: int, loser_id: int, *, actor: Actor, rules: CrmRules
) -> tuple[Contact, list[DomainEvent]]:
    """Merge contact ``loser_id`` into ``survivor_id`` and return the survivor.

    Moves every activity, deal, task, call, lead, phone, e-mail, messenger id and company
    link; fills the survivor's empty card fields; marks the loser merged; writes an audit
    entry. The actor must be allowed to change both contacts (404 for one he may not read,
    403 for one he may only read).
    """
    survivor, loser = await _pair(session, "contact", survivor_id, loser_id, actor, rules)
    assert isinstance(survivor, Contact) and isinstance(loser, Contact)
    loser_responsible = loser.responsible_id
    loser_values = {n: getattr(loser, n) for n in (*CARD_FIELDS, "position", "comment")}
    loser_custom = dict(loser.custom or {})
    await _fold_owned(session, "contact_id", survivor_id, loser_id)
    for link in list(
        await session.scalars(select(ContactCompany).where(ContactCompany.contact_id == loser_id))
    ):
        kept = await session.scalar(
            select(ContactCompany).where(
                ContactCompany.contact_id == survivor_id,
                ContactCompany.company_id == link.company_id,
            )
        )
        if kept is not None:
            kept.is_decision_maker = kept.is_decision_maker or link.is_decision_maker
            kept.position = kept.position or link.position
            await session.delete(link)
    await session.flush()
    moved = await _repoint(session, "contacts", survivor_id, loser_id)
    survivor, loser = await _reload(session, Contact, survivor_id, loser_id)
    filled = fill_empty(survivor, loser_values) + merge_custom(survivor, loser_custom)
    survivor.legal_hold = survivor.legal_hold or loser.legal_hold
    loser.merged_into_id = survivor_id
    _audit(session, actor, "contact", survivor_id, loser_id, moved, filled)
    await session.flush()
    event = events.merged(
        "contact", survivor_id, loser_id, survivor.responsible_id, actor.id, loser_responsible
    )
    return survivor, [event]


async def merge_companies(
    session: AsyncSession, survivor_id: int, loser_id: int, *, actor: Actor, rules: CrmRules
) -> tuple[Company, list[DomainEvent]]:
    """Merge company ``loser_id`` into ``survivor_id`` and return the survivor.

    Moves every activity, deal, task, call, invoice, lead, phone, e-mail, contact link, legal
    entity (with its requisites) and member company; fills the survivor's empty card fields;
    marks the loser merged; writes an audit entry. The actor must be allowed to change both
    (404 for one he may not read, 403 for one he may only read). A survivor that was a member
    of the loser takes the loser's place in the group.
    """
    survivor, loser = await _pair(session, "company", survivor_id, loser_id, actor, rules)
    assert isinstance(survivor, Company) and isinstance(loser, Company)
    loser_responsible = loser.responsible_id
    loser_values = {n: getattr(loser, n) for n in (*CARD_FIELDS, "website", "comment")}
    loser_custom = dict(loser.custom or {})
    loser_head = loser.head_id
    if survivor.head_id == loser_id:
        survivor.head_id = loser_head
    await _fold_owned(session, "company_id", survivor_id, loser_id)
    survivor_has_dm = False
    for link in await session.scalars(
        select(ContactCompany).where(ContactCompany.company_id == survivor_id)
    ):
        survivor_has_dm = survivor_has_dm or link.is_decision_maker
    for link in list(
        await session.scalars(select(ContactCompany).where(ContactCompany.company_id == loser_id))
    ):
        kept = await session.scalar(
            select(ContactCompany).where(
                ContactCompany.company_id == survivor_id,
                ContactCompany.contact_id == link.contact_id,
            )
        )
        if kept is not None:
            if link.is_decision_maker and not survivor_has_dm:
                kept.is_decision_maker = survivor_has_dm = True
            kept.position = kept.position or link.position
            await session.delete(link)
        elif link.is_decision_maker:
            if survivor_has_dm:
                link.is_decision_maker = False  # the survivor's decision maker stays
            survivor_has_dm = True
    await session.flush()
    moved = await _repoint(session, "companies", survivor_id, loser_id)
    survivor, loser = await _reload(session, Company, survivor_id, loser_id)
    group = await group_company_ids(session, survivor_id)
    if loser_head is not None and (loser_head in group or loser_head == loser_id):
        loser_values["head_id"] = None
    else:
        loser_values["head_id"] = loser_head
    filled = fill_empty(survivor, loser_values) + merge_custom(survivor, loser_custom)
    survivor.legal_hold = survivor.legal_hold or loser.legal_hold
    loser.merged_into_id = survivor_id
    _audit(session, actor, "company", survivor_id, loser_id, moved, filled)
    await session.flush()
    event = events.merged(
        "company", survivor_id, loser_id, survivor.responsible_id, actor.id, loser_responsible
    )
    return survivor, [event]


async def _pair(
    session: AsyncSession,
    kind: str,
    survivor_id: int,
    loser_id: int,
    actor: Actor,
    rules: CrmRules,
) -> tuple[Contact | Company, Contact | Company]:
    get = get_contact if kind == "contact" else get_company
    survivor = await get(session, survivor_id, actor=actor, rules=rules, write=True)
    if survivor_id == loser_id:
        raise MergeNotAllowed(
            f"cannot merge {kind} {survivor_id} into itself",
            details={"survivor_id": survivor_id, "loser_id": loser_id},
        )
    loser = await get(session, loser_id, actor=actor, rules=rules, write=True)
    return survivor, loser


async def _fold_owned(session: AsyncSession, owner: str, survivor_id: int, loser_id: int) -> None:
    """Drop the loser's phones and e-mails the survivor already has (no double rows)."""
    for model, value in ((Phone, Phone.e164), (Email, Email.address)):
        column = getattr(model, owner)
        have = select(value).where(column == survivor_id).scalar_subquery()
        await session.execute(
            delete(model)
            .where(column == loser_id, value.in_(have))
            .execution_options(synchronize_session=False)
        )


async def _repoint(
    session: AsyncSession, table_name: str, survivor_id: int, loser_id: int
) -> dict[str, int]:
    """Point every foreign key to ``<table_name>.id`` = loser at the survivor."""
    moved: dict[str, int] = {}
    touched: set[str] = set()
    for table, column in referencing_columns(table_name):
        result: Any = await session.execute(
            update(table).where(column == loser_id).values({column.key: survivor_id})
        )
        if result.rowcount:
            moved[f"{table.name}.{column.key}"] = int(result.rowcount)
            touched.add(table.name)
    # The ORM's copies of the moved rows are stale now.
    for obj in list(session.identity_map.values()):
        table = getattr(obj, "__table__", None)
        if table is not None and table.name in touched:
            session.expire(obj)
    return moved


_Client = TypeVar("_Client", Contact, Company)


async def _reload(
    session: AsyncSession, model: type[_Client], survivor_id: int, loser_id: int
) -> tuple[_Client, _Client]:
    survivor = await session.get(model, survivor_id, populate_existing=True)
    loser = await session.get(model, loser_id, populate_existing=True)
    assert survivor is not None and loser is not None  # locked in by the caller's checks
    return survivor, loser


def _audit(
    session: AsyncSession,
    actor: Actor,
    kind: str,
    survivor_id: int,
    loser_id: int,
    moved: dict[str, int],
    filled: list[str],
) -> None:
    session.add(
        AuditEntry(
            user_id=actor.id,
            action=f"{kind}.merge",
            object_type=kind,
            object_id=str(survivor_id),
            details={"loser_id": loser_id, "moved": moved, "filled": filled},
        )
    )
