"""What a card is about (a contact, company, lead, deal or invoice): loading it for its reader
through the crm_core service that checks access, changing it through the service the REST API
uses, and the names the card shows instead of ids."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact
from crm_core.clients.schemas import CompanyPatch, ContactPatch
from crm_core.deals import service as deals
from crm_core.deals.schemas import MILESTONES, DealPatch
from crm_core.events import DomainEvent
from crm_core.invoices import service as invoices
from crm_core.invoices.schemas import InvoiceOut, InvoicePatch
from crm_core.leads import service as leads
from crm_core.leads.schemas import LeadPatch
from crm_core.rules import CrmRules
from crm_core.users.model import User

KINDS = ("contact", "company", "lead", "deal", "invoice")
LINK_FIELD = {
    "contact": "contact_id",
    "company": "company_id",
    "lead": "lead_id",
    "deal": "deal_id",
    "invoice": "invoice_id",
}


@dataclass
class Subject:
    """A loaded card: its API view (``ContactOut``, ``LeadOut``…), whether the reader may change
    it, and its display name."""

    kind: str
    id: int
    view: Any
    record: Any
    can_write: bool
    name: str

    @property
    def url(self) -> str:
        if self.kind in ("deal", "invoice"):
            return f"/{self.kind}s/{self.id}"
        return f"/clients/{self.kind}/{self.id}"

    @property
    def base(self) -> str:
        """The prefix of the card's htmx endpoints."""
        return f"/card/{self.kind}/{self.id}"


def lead_name(lead: Any) -> str:
    return lead.contact_name or lead.company_name or lead.title or ""


async def load(
    session: AsyncSession,
    kind: str,
    record_id: int,
    *,
    user: User,
    rules: CrmRules,
    today: date,
) -> Subject:
    """The card ``user`` may read (NotFound otherwise, as the API answers)."""
    if kind == "contact":
        contact = await clients.get_contact(session, record_id, actor=user, rules=rules)
        view = (await clients.contact_cards(session, [contact]))[0]
        return Subject(
            kind,
            record_id,
            view,
            contact,
            access.can_write(user, contact.responsible_id),
            contact.name,
        )
    if kind == "company":
        company = await clients.get_company(session, record_id, actor=user, rules=rules)
        cview = (await clients.company_cards(session, [company]))[0]
        return Subject(
            kind,
            record_id,
            cview,
            company,
            access.can_write(user, company.responsible_id),
            company.name,
        )
    if kind == "lead":
        lead = await leads.get_lead(session, record_id, actor=user, rules=rules)
        lview = (await leads.describe(session, [lead], rules, actor=user, with_duplicates=True))[0]
        return Subject(
            kind,
            record_id,
            lview,
            lead,
            access.can_write(user, lead.responsible_id),
            lead_name(lead),
        )
    if kind == "deal":
        deal = await deals.get_deal(session, record_id, actor=user, rules=rules)
        dview = (await deals.describe(session, [deal], with_history=True))[0]
        return Subject(
            kind, record_id, dview, deal, access.can_write(user, deal.responsible_id), deal.title
        )
    if kind == "invoice":
        invoice = await invoices.get_invoice(session, record_id, actor=user, rules=rules)
        owners = [
            r
            for r in (
                await session.scalar(
                    select(Company.responsible_id).where(Company.id == invoice.company_id)
                )
                if invoice.company_id
                else None,
            )
            if r is not None
        ]
        return Subject(
            kind,
            record_id,
            InvoiceOut.of(invoice, today),
            invoice,
            access.can_write(user, invoice.responsible_id, owners),
            invoice.number,
        )
    raise ValueError(f"unknown card kind {kind}")


async def change(
    session: AsyncSession,
    kind: str,
    record_id: int,
    values: dict[str, Any],
    *,
    user: User,
    rules: CrmRules,
    now: datetime,
    tz: tzinfo,
) -> list[DomainEvent]:
    """Change the fields in ``values`` through the service the REST API uses (a pydantic
    ``ValidationError`` for a malformed value, a ``DomainError`` for a refusal)."""
    events: list[DomainEvent]
    if kind == "contact":
        _, events = await clients.update_contact(
            session, record_id, ContactPatch.model_validate(values), actor=user, rules=rules
        )
    elif kind == "company":
        _, events = await clients.update_company(
            session, record_id, CompanyPatch.model_validate(values), actor=user, rules=rules
        )
    elif kind == "lead":
        _, events = await leads.update_lead(
            session, record_id, LeadPatch.model_validate(values), actor=user, rules=rules, now=now
        )
    elif kind == "deal":
        for name in MILESTONES:
            day = values.get(name)
            if isinstance(day, date) and not isinstance(day, datetime):
                # A milestone is a day; it is stored as that day's noon in the local zone.
                values[name] = datetime.combine(day, time(12, 0), tzinfo=tz)
        _, events = await deals.update_deal(
            session, record_id, DealPatch.model_validate(values), actor=user, rules=rules, now=now
        )
    elif kind == "invoice":
        _, events = await invoices.update_invoice(
            session,
            record_id,
            InvoicePatch.model_validate(values),
            actor=user,
            rules=rules,
            tz=tz,
            now=now,
        )
    else:
        raise ValueError(f"unknown card kind {kind}")
    return events


async def client_names(
    session: AsyncSession, refs: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], str]:
    """Names of contacts and companies by ``(kind, id)`` (for refusals and previews: the ids
    come from answers that already left out what the reader may not see)."""
    wanted = list(refs)
    out: dict[tuple[str, int], str] = {}
    contact_ids = [i for k, i in wanted if k == "contact"]
    company_ids = [i for k, i in wanted if k == "company"]
    if contact_ids:
        for cid, name in await session.execute(
            select(Contact.id, Contact.name).where(Contact.id.in_(contact_ids))
        ):
            out[("contact", cid)] = name
    if company_ids:
        for cid, name in await session.execute(
            select(Company.id, Company.name).where(Company.id.in_(company_ids))
        ):
            out[("company", cid)] = name
    return out
