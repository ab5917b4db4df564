"""Use cases of contact-company links: a person works at a company, with a position, and may
be its decision maker (a company has at most one).

A link belongs to the contact's card: changing it needs write access to the contact and read
access to the company.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients import events
from crm_core.clients.errors import LinkExists, LinkNotFound
from crm_core.clients.model import ContactCompany
from crm_core.clients.records import get_company, get_contact
from crm_core.errors import PermissionDenied
from crm_core.events import DomainEvent
from crm_core.rules import CrmRules


async def link_contact_company(
    session: AsyncSession,
    contact_id: int,
    company_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    position: str | None = None,
    is_decision_maker: bool = False,
) -> ContactCompany:
    """Link a contact to a company (idempotent: an existing link gets the position and the
    decision-maker flag given). ``actor`` may read both and change at least one: the card he
    links the other to (a converted lead's new contact to another manager's company). A company
    has at most one decision maker: marking this link unmarks the others. Used where a card is
    created or a lead converted (their events tell); :func:`add_link` is the user's request."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules)
    company = await get_company(session, company_id, actor=actor, rules=rules)
    if not (
        access.can_write(actor, contact.responsible_id)
        or access.can_write(actor, company.responsible_id)
    ):
        raise PermissionDenied(
            f"contact {contact_id} and company {company_id} belong to other managers; "
            "you may only read them"
        )
    link = await session.scalar(
        select(ContactCompany).where(
            ContactCompany.contact_id == contact_id, ContactCompany.company_id == company_id
        )
    )
    if link is None:
        link = ContactCompany(contact_id=contact_id, company_id=company_id, position=position)
        session.add(link)
    elif position is not None:
        link.position = position
    if is_decision_maker:
        await _unmark_decision_makers(session, company_id, except_contact=contact_id)
        link.is_decision_maker = True
    await session.flush()
    return link


async def _unmark_decision_makers(
    session: AsyncSession, company_id: int, *, except_contact: int
) -> None:
    others = await session.scalars(
        select(ContactCompany).where(
            ContactCompany.company_id == company_id,
            ContactCompany.contact_id != except_contact,
            ContactCompany.is_decision_maker.is_(True),
        )
    )
    for other in others:
        other.is_decision_maker = False


def _companies_changed(contact_id: int, responsible_id: int | None, actor: Actor) -> DomainEvent:
    return events.updated("contact", contact_id, ("companies",), responsible_id, actor.id)


async def add_link(
    session: AsyncSession,
    contact_id: int,
    company_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    position: str | None = None,
    is_decision_maker: bool = False,
) -> tuple[ContactCompany, list[DomainEvent]]:
    """Link a contact ``actor`` may change to a company he may read; an existing link is
    refused (409)."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules, write=True)
    await get_company(session, company_id, actor=actor, rules=rules)
    existing = await session.scalar(
        select(ContactCompany.id).where(
            ContactCompany.contact_id == contact_id, ContactCompany.company_id == company_id
        )
    )
    if existing is not None:
        raise LinkExists(
            f"contact {contact_id} is already linked to company {company_id}",
            details={"contact_id": contact_id, "company_id": company_id},
        )
    link = await link_contact_company(
        session,
        contact_id,
        company_id,
        actor=actor,
        rules=rules,
        position=position,
        is_decision_maker=is_decision_maker,
    )
    return link, [_companies_changed(contact_id, contact.responsible_id, actor)]


async def get_link(
    session: AsyncSession, contact_id: int, company_id: int, *, actor: Actor, rules: CrmRules
) -> ContactCompany:
    """The link of a contact ``actor`` may read to a company (404 when there is none)."""
    await get_contact(session, contact_id, actor=actor, rules=rules)
    return await _link(session, contact_id, company_id)


async def _link(session: AsyncSession, contact_id: int, company_id: int) -> ContactCompany:
    link = await session.scalar(
        select(ContactCompany).where(
            ContactCompany.contact_id == contact_id, ContactCompany.company_id == company_id
        )
    )
    if link is None:
        raise LinkNotFound(
            f"contact {contact_id} is not linked to company {company_id}",
            details={"contact_id": contact_id, "company_id": company_id},
        )
    return link


async def update_link(
    session: AsyncSession,
    contact_id: int,
    company_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    position: str | None = None,
    set_position: bool = False,
    is_decision_maker: bool | None = None,
) -> tuple[ContactCompany, list[DomainEvent]]:
    """Change a link's position (``set_position``) and/or decision-maker flag."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules, write=True)
    link = await _link(session, contact_id, company_id)
    if set_position:
        link.position = position
    if is_decision_maker is True:
        await _unmark_decision_makers(session, company_id, except_contact=contact_id)
    if is_decision_maker is not None:
        link.is_decision_maker = is_decision_maker
    await session.flush()
    return link, [_companies_changed(contact_id, contact.responsible_id, actor)]


async def unlink_contact_company(
    session: AsyncSession, contact_id: int, company_id: int, *, actor: Actor, rules: CrmRules
) -> list[DomainEvent]:
    """Remove the link of a contact ``actor`` may change to a company."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules, write=True)
    link = await _link(session, contact_id, company_id)
    await session.delete(link)
    await session.flush()
    return [_companies_changed(contact_id, contact.responsible_id, actor)]
