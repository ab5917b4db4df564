"""The API's view of client cards: contacts and companies with their phones, e-mails,
messenger ids, links, member companies, legal entities and live requisites, loaded in a few
queries for a whole list.

These render records the caller has already loaded through an access-checked use case (a get
or a listing); they check nothing themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients.model import (
    CardFields,
    Company,
    Contact,
    ContactCompany,
    Email,
    LegalEntity,
    MessengerId,
    Phone,
    Requisites,
)
from crm_core.clients.schemas import (
    CARD_FIELDS,
    CompanyContactOut,
    CompanyOut,
    ContactLinkOut,
    ContactOut,
    LegalEntityOut,
    MessengerOut,
    RequisitesOut,
)


def _card_out(obj: CardFields) -> dict[str, Any]:
    out = {name: getattr(obj, name) for name in CARD_FIELDS}
    out.update(
        custom=dict(obj.custom or {}),
        created_at=obj.created_at,
        updated_at=obj.updated_at,
        created_by_id=obj.created_by_id,
    )
    return out


async def contact_cards(session: AsyncSession, contacts: Sequence[Contact]) -> list[ContactOut]:
    """Full cards of ``contacts`` with phones, e-mails, messengers and companies (a few
    queries for the whole list, not per contact)."""
    ids = [c.id for c in contacts]
    phones: dict[int | None, list[str]] = {i: [] for i in ids}
    emails: dict[int | None, list[str]] = {i: [] for i in ids}
    messengers: dict[int, list[MessengerOut]] = {i: [] for i in ids}
    links: dict[int, list[ContactLinkOut]] = {i: [] for i in ids}
    if ids:
        for owner, e164 in await session.execute(
            select(Phone.contact_id, Phone.e164).where(Phone.contact_id.in_(ids)).order_by(Phone.id)
        ):
            phones[owner].append(e164)
        for owner, address in await session.execute(
            select(Email.contact_id, Email.address)
            .where(Email.contact_id.in_(ids))
            .order_by(Email.id)
        ):
            emails[owner].append(address)
        for m in await session.scalars(
            select(MessengerId).where(MessengerId.contact_id.in_(ids)).order_by(MessengerId.id)
        ):
            messengers[m.contact_id].append(
                MessengerOut(channel=m.channel, external_id=m.external_id)
            )
        for link, company_name in await session.execute(
            select(ContactCompany, Company.name)
            .join(Company, Company.id == ContactCompany.company_id)
            .where(ContactCompany.contact_id.in_(ids))
            .order_by(ContactCompany.id)
        ):
            links[link.contact_id].append(
                ContactLinkOut(
                    company_id=link.company_id,
                    company_name=company_name,
                    position=link.position,
                    is_decision_maker=link.is_decision_maker,
                )
            )
    return [
        ContactOut(
            id=c.id,
            name=c.name,
            position=c.position,
            comment=c.comment,
            phones=phones[c.id],
            emails=emails[c.id],
            messengers=messengers[c.id],
            companies=links[c.id],
            merged_into_id=c.merged_into_id,
            **_card_out(c),
        )
        for c in contacts
    ]


async def company_cards(
    session: AsyncSession, companies: Sequence[Company], *, full: bool = True
) -> list[CompanyOut]:
    """Cards of ``companies`` with phones, e-mails, member ids and, when ``full``, legal
    entities with their live requisites and the linked contacts."""
    ids = [c.id for c in companies]
    phones: dict[int | None, list[str]] = {i: [] for i in ids}
    emails: dict[int | None, list[str]] = {i: [] for i in ids}
    members: dict[int | None, list[int]] = {i: [] for i in ids}
    entities: dict[int, list[LegalEntityOut]] = {i: [] for i in ids}
    contacts: dict[int, list[CompanyContactOut]] = {i: [] for i in ids}
    if ids:
        for owner, e164 in await session.execute(
            select(Phone.company_id, Phone.e164).where(Phone.company_id.in_(ids)).order_by(Phone.id)
        ):
            phones[owner].append(e164)
        for owner, address in await session.execute(
            select(Email.company_id, Email.address)
            .where(Email.company_id.in_(ids))
            .order_by(Email.id)
        ):
            emails[owner].append(address)
        for head, member in await session.execute(
            select(Company.head_id, Company.id)
            .where(Company.head_id.in_(ids), Company.merged_into_id.is_(None))
            .order_by(Company.id)
        ):
            members[head].append(member)
    if ids and full:
        rows = list(
            await session.scalars(
                select(LegalEntity).where(LegalEntity.company_id.in_(ids)).order_by(LegalEntity.id)
            )
        )
        live: dict[int, list[RequisitesOut]] = {e.id: [] for e in rows}
        if rows:
            for r in await session.scalars(
                select(Requisites)
                .where(Requisites.legal_entity_id.in_(live), Requisites.retired_at.is_(None))
                .order_by(Requisites.id)
            ):
                live[r.legal_entity_id].append(RequisitesOut.model_validate(r))
        for e in rows:
            entities[e.company_id].append(
                LegalEntityOut(
                    id=e.id,
                    company_id=e.company_id,
                    name=e.name,
                    is_active=e.is_active,
                    created_at=e.created_at,
                    requisites=live[e.id],
                )
            )
        for link, contact_name in await session.execute(
            select(ContactCompany, Contact.name)
            .join(Contact, Contact.id == ContactCompany.contact_id)
            .where(ContactCompany.company_id.in_(ids), Contact.merged_into_id.is_(None))
            .order_by(ContactCompany.is_decision_maker.desc(), ContactCompany.id)
        ):
            contacts[link.company_id].append(
                CompanyContactOut(
                    contact_id=link.contact_id,
                    contact_name=contact_name,
                    position=link.position,
                    is_decision_maker=link.is_decision_maker,
                )
            )
    return [
        CompanyOut(
            id=c.id,
            name=c.name,
            head_id=c.head_id,
            member_ids=members[c.id],
            website=c.website,
            comment=c.comment,
            phones=phones[c.id],
            emails=emails[c.id],
            legal_entities=entities[c.id],
            contacts=contacts[c.id],
            merged_into_id=c.merged_into_id,
            **_card_out(c),
        )
        for c in companies
    ]


def legal_entity_out(entity: LegalEntity, requisites: Sequence[Requisites]) -> LegalEntityOut:
    """A legal entity with its live requisites."""
    return LegalEntityOut(
        id=entity.id,
        company_id=entity.company_id,
        name=entity.name,
        is_active=entity.is_active,
        created_at=entity.created_at,
        requisites=[RequisitesOut.model_validate(r) for r in requisites if r.retired_at is None],
    )
