"""Duplicate detection: which live clients already have a phone, e-mail, messenger id or INN,
and the refusal that says so without naming a record its reader may not see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients.checks import ClientType
from crm_core.clients.errors import DuplicateClient
from crm_core.clients.model import (
    Company,
    Contact,
    Email,
    LegalEntity,
    MessengerId,
    Phone,
    Requisites,
)
from crm_core.phones import try_normalize_phone
from crm_core.rules import CrmRules


@dataclass(frozen=True, order=True)
class DuplicateRef:
    """An existing client that already has a phone, e-mail, messenger id or INN."""

    type: ClientType
    id: int
    matched_on: str  # "phone" | "email" | "messenger" | "inn"
    value: str
    # Who may see the record: not part of the reference's identity.
    responsible_id: int | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "id": self.id,
            "matched_on": self.matched_on,
            "value": self.value,
        }

    def shown_to(self, actor: Actor, rules: CrmRules) -> dict[str, Any]:
        """:meth:`as_dict` for a reader who may see the record; for one who may not, only that
        a duplicate exists and on what (``id`` None): the value is his own input."""
        out = self.as_dict()
        if not access.can_read(actor, self.responsible_id, rules):
            out["id"] = None
        return out


async def find_duplicates(
    session: AsyncSession,
    *,
    phones: Sequence[str] = (),
    emails: Sequence[str] = (),
    inn: str | None = None,
    exclude: tuple[str, int] | None = None,
    messengers: Sequence[tuple[str, str]] = (),
    region: str = "RU",
) -> list[DuplicateRef]:
    """Live (not merged) contacts and companies that already have one of these phones (raw
    numbers are normalised; unparsable ones are ignored), e-mails (case-insensitive), messenger
    ids ``(channel, external_id)`` or the INN in live requisites. ``exclude`` = ``("contact",
    5)`` leaves that record out (for updates).

    Whoever the caller is, every duplicate is found (de-duplication must see them all); show
    them to a person through :meth:`DuplicateRef.shown_to`.
    """
    found: set[DuplicateRef] = set()
    e164s = sorted({n for p in phones if (n := try_normalize_phone(p, region))})
    addresses = sorted({a.strip().lower() for a in emails if a and a.strip()})
    for table, column, values, matched_on in (
        (Phone, Phone.e164, e164s, "phone"),
        (Email, Email.address, addresses, "email"),
    ):
        if not values:
            continue
        rows = await session.execute(
            select(
                table.contact_id,
                table.company_id,
                column,
                Contact.responsible_id,
                Company.responsible_id,
            )
            .outerjoin(Contact, Contact.id == table.contact_id)
            .outerjoin(Company, Company.id == table.company_id)
            .where(
                column.in_(values),
                or_(
                    and_(table.contact_id.is_not(None), Contact.merged_into_id.is_(None)),
                    and_(table.company_id.is_not(None), Company.merged_into_id.is_(None)),
                ),
            )
        )
        for contact_id, company_id, value, contact_resp, company_resp in rows:
            if contact_id is not None:
                found.add(DuplicateRef("contact", contact_id, matched_on, value, contact_resp))
            else:
                assert company_id is not None  # one owner, by the check constraint
                found.add(DuplicateRef("company", company_id, matched_on, value, company_resp))
    pairs = [(c, e.strip()) for c, e in messengers if e and e.strip()]
    if pairs:
        messenger_rows = await session.execute(
            select(
                MessengerId.contact_id,
                MessengerId.channel,
                MessengerId.external_id,
                Contact.responsible_id,
            )
            .join(Contact, Contact.id == MessengerId.contact_id)
            .where(
                Contact.merged_into_id.is_(None),
                or_(
                    *(
                        and_(MessengerId.channel == c, MessengerId.external_id == e)
                        for c, e in pairs
                    )
                ),
            )
        )
        for owner, channel, external_id, responsible in messenger_rows:
            found.add(
                DuplicateRef("contact", owner, "messenger", f"{channel}:{external_id}", responsible)
            )
    if inn and inn.strip():
        inn_rows = await session.execute(
            select(LegalEntity.company_id, Requisites.inn, Company.responsible_id)
            .join(LegalEntity, LegalEntity.id == Requisites.legal_entity_id)
            .join(Company, Company.id == LegalEntity.company_id)
            .where(
                Requisites.inn == inn.strip(),
                Requisites.retired_at.is_(None),
                Company.merged_into_id.is_(None),
            )
        )
        for company_id, inn_value, responsible in inn_rows:
            found.add(DuplicateRef("company", company_id, "inn", str(inn_value), responsible))
    if exclude is not None:
        found = {d for d in found if (d.type, d.id) != tuple(exclude)}
    return sorted(found)


def duplicate_error(
    duplicates: Sequence[DuplicateRef], actor: Actor, rules: CrmRules
) -> DuplicateClient:
    """The 409 refusing a write that would duplicate ``duplicates``. It names a record only to
    a reader who may see it; anyone else learns that a duplicate exists and on which field."""
    shown = [d.shown_to(actor, rules) for d in duplicates]
    first = shown[0]
    owner = (
        f"{first['type']} {first['id']}"
        if first["id"] is not None
        else f"a {first['type']} of another manager"
    )
    return DuplicateClient(
        f"{first['matched_on']} {first['value']} already belongs to {owner}",
        details={"duplicates": shown},
    )


async def duplicates_of(
    session: AsyncSession,
    *,
    kind: ClientType,
    phones: Sequence[str] = (),
    emails: Sequence[str] = (),
    messengers: Sequence[tuple[str, str]] = (),
    inns: Sequence[str | None] = (),
    exclude: int | None = None,
) -> list[DuplicateRef]:
    """The duplicates of a ``kind`` record with these phones, e-mails and messenger ids (only
    records of the same kind count: a company's switchboard number on a person's card is
    normal) or INNs (always a company's), other than ``exclude``, sorted."""
    found: set[DuplicateRef] = set()
    excluded = (kind, exclude) if exclude is not None else None
    if phones or emails or messengers:
        refs = await find_duplicates(
            session, phones=phones, emails=emails, messengers=messengers, exclude=excluded
        )
        found.update(d for d in refs if d.type == kind)
    for inn in sorted({i for i in inns if i}):
        found.update(await find_duplicates(session, inn=inn, exclude=excluded))
    return sorted(found)
