"""The client a row (a task, a call, an invoice) is about: its name, card link and first phone,
for a whole page of rows in a handful of queries (one per kind of record), never one per row."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients.model import Company, Contact, Phone
from crm_core.deals.model import Deal
from crm_core.leads.model import Lead


@dataclass(frozen=True)
class ClientRef:
    name: str
    url: str
    phone: str | None
    deal: str | None = None
    deal_url: str | None = None


def _ids(rows: Iterable[Any], attr: str) -> list[int]:
    return sorted({v for r in rows if (v := getattr(r, attr, None)) is not None})


async def client_refs(session: AsyncSession, rows: list[Any]) -> dict[int, ClientRef | None]:
    """``{id(row): ClientRef | None}`` for rows with ``contact_id``/``company_id``/``lead_id``
    (and optionally ``deal_id``): the contact wins over the company, the company over the
    lead."""
    contacts = _ids(rows, "contact_id")
    companies = _ids(rows, "company_id")
    leads = _ids(rows, "lead_id")
    deal_ids = _ids(rows, "deal_id")
    contact_names: dict[int, str] = {}
    company_names: dict[int, str] = {}
    lead_names: dict[int, str] = {}
    deal_titles: dict[int, str] = {}
    phones: dict[tuple[str, int | None], str] = {}
    if contacts:
        contact_names = dict(
            (
                await session.execute(
                    select(Contact.id, Contact.name).where(Contact.id.in_(contacts))
                )
            ).all()
        )
    if companies:
        company_names = dict(
            (
                await session.execute(
                    select(Company.id, Company.name).where(Company.id.in_(companies))
                )
            ).all()
        )
    if leads:
        for lead_id, title, person, org in await session.execute(
            select(Lead.id, Lead.title, Lead.contact_name, Lead.company_name).where(
                Lead.id.in_(leads)
            )
        ):
            lead_names[lead_id] = person or org or title or f"#{lead_id}"
    if deal_ids:
        deal_titles = dict(
            (await session.execute(select(Deal.id, Deal.title).where(Deal.id.in_(deal_ids)))).all()
        )
    owners = []
    if contacts:
        owners.append(Phone.contact_id.in_(contacts))
    if companies:
        owners.append(Phone.company_id.in_(companies))
    if leads:
        owners.append(Phone.lead_id.in_(leads))
    if owners:
        for of_contact, of_company, of_lead, e164 in await session.execute(
            select(Phone.contact_id, Phone.company_id, Phone.lead_id, Phone.e164)
            .where(or_(*owners))
            .order_by(Phone.id)
        ):
            key = (
                ("contact", of_contact)
                if of_contact
                else ("company", of_company)
                if of_company
                else ("lead", of_lead)
            )
            phones.setdefault(key, e164)
    out: dict[int, ClientRef | None] = {}
    for row in rows:
        ref: ClientRef | None = None
        deal_id = getattr(row, "deal_id", None)
        deal = deal_titles.get(deal_id) if deal_id else None
        deal_url = f"/deals/{deal_id}" if deal_id else None
        for kind, names, attr in (
            ("contact", contact_names, "contact_id"),
            ("company", company_names, "company_id"),
            ("lead", lead_names, "lead_id"),
        ):
            value = getattr(row, attr, None)
            if value is not None and value in names:
                ref = ClientRef(
                    name=names[value],
                    url=f"/clients/{kind}/{value}",
                    phone=phones.get((kind, value)),
                    deal=deal,
                    deal_url=deal_url,
                )
                break
        if ref is None and deal:
            ref = ClientRef(name=deal, url=deal_url or "", phone=None)
        out[id(row)] = ref
    return out
