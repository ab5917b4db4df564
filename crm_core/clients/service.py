"""Use cases of the client cards: contacts, companies (head organisations and members), legal
entities with requisites kept as history, duplicate detection and the screen-pop lookup.

Every function takes the caller's session and flushes; the caller commits (and emits the
events of :mod:`crm_core.clients.events` after the commit).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from sqlalchemy import and_, bindparam, delete, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm_core import access
from crm_core.clients.errors import (
    ClientHasHistory,
    ClientMerged,
    CompanyGroupCycle,
    CompanyNotFound,
    ContactNotFound,
    DuplicateClient,
    InvalidReference,
    LegalEntityNotFound,
    LinkExists,
    LinkNotFound,
    RequisitesNotFound,
    RequisitesRetired,
)
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
    CardInput,
    CompanyContactOut,
    CompanyInput,
    CompanyOut,
    CompanyPatch,
    ContactInput,
    ContactLinkOut,
    ContactOut,
    ContactPatch,
    LegalEntityInput,
    LegalEntityOut,
    LegalEntityPatch,
    MessengerInput,
    MessengerOut,
    RequisitesInput,
    RequisitesOut,
)
from crm_core.db import Base, utcnow
from crm_core.errors import NotFound, PermissionDenied
from crm_core.leads.model import Lead
from crm_core.phones import InvalidPhone, digits_of, digits_reversed, normalize_phone
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.users.model import User
from crm_core.validation import (
    normalize_email,
    validate_client_type,
    validate_custom_fields,
    validate_requisites,
)

ClientType = Literal["contact", "company"]
OnDuplicate = Literal["refuse", "merge"]

# Rows that are part of a card itself (deleted with it), as opposed to its history.
_CARD_PARTS = frozenset(
    {"phones", "emails", "messenger_ids", "contact_companies", "legal_entities", "requisites"}
)


# ---------------------------------------------------------------- results


@dataclass(frozen=True, order=True)
class DuplicateRef:
    """An existing client that already has a phone, e-mail, messenger id or INN."""

    type: ClientType
    id: int
    matched_on: str  # "phone" | "email" | "messenger" | "inn"
    value: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClientMatch:
    """Who is calling: the screen-pop's answer for a number."""

    contact_id: int | None
    company_id: int | None
    lead_id: int | None
    responsible_id: int | None
    name: str
    matched_on: str  # "e164": the exact number; "last_digits": its last 10 digits
    phone: str | None = None  # the stored number that matched


@dataclass(frozen=True)
class SaveResult:
    """What :func:`save_contact` / :func:`save_company` did: created a record, or merged the
    input into an existing duplicate (``created`` False)."""

    client: Any  # Contact | Company
    created: bool
    duplicates: tuple[DuplicateRef, ...] = ()


# ---------------------------------------------------------------- normalisation


def normalize_phones(raw: Iterable[str], *, region: str = "RU", field: str = "phones") -> list[str]:
    """E.164 of every number, in order, without repeats; an invalid one is refused naming its
    position (``phones.1``)."""
    out: list[str] = []
    for i, number in enumerate(raw):
        try:
            e164 = normalize_phone(number, region)
        except InvalidPhone as exc:
            raise InvalidPhone(
                exc.message, details={"field": f"{field}.{i}", "value": number}
            ) from None
        if e164 not in out:
            out.append(e164)
    return out


def normalize_emails(raw: Iterable[str], *, field: str = "emails") -> list[str]:
    """Lower-cased addresses, in order, without repeats."""
    out: list[str] = []
    for i, address in enumerate(raw):
        value = normalize_email(address, field=f"{field}.{i}")
        if value not in out:
            out.append(value)
    return out


def _messenger_pairs(items: Iterable[MessengerInput]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in items:
        pair = (m.channel, m.external_id.strip())
        if pair not in out:
            out.append(pair)
    return out


# ---------------------------------------------------------------- duplicates


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
    5)`` leaves that record out (for updates)."""
    found: set[DuplicateRef] = set()
    e164s = sorted({n for p in phones if (n := _try_phone(p, region))})
    addresses = sorted({a.strip().lower() for a in emails if a and a.strip()})
    for table, column, values, matched_on in (
        (Phone, Phone.e164, e164s, "phone"),
        (Email, Email.address, addresses, "email"),
    ):
        if not values:
            continue
        rows = await session.execute(
            select(table.contact_id, table.company_id, column)
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
        for contact_id, company_id, value in rows:
            if contact_id is not None:
                found.add(DuplicateRef("contact", contact_id, matched_on, value))
            else:
                assert company_id is not None  # one owner, by the check constraint
                found.add(DuplicateRef("company", company_id, matched_on, value))
    pairs = [(c, e.strip()) for c, e in messengers if e and e.strip()]
    if pairs:
        messenger_rows = await session.execute(
            select(MessengerId.contact_id, MessengerId.channel, MessengerId.external_id)
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
        for owner, channel, external_id in messenger_rows:
            found.add(DuplicateRef("contact", owner, "messenger", f"{channel}:{external_id}"))
    if inn and inn.strip():
        inn_rows = await session.execute(
            select(LegalEntity.company_id, Requisites.inn)
            .join(LegalEntity, LegalEntity.id == Requisites.legal_entity_id)
            .join(Company, Company.id == LegalEntity.company_id)
            .where(
                Requisites.inn == inn.strip(),
                Requisites.retired_at.is_(None),
                Company.merged_into_id.is_(None),
            )
        )
        for company_id, inn_value in inn_rows:
            found.add(DuplicateRef("company", company_id, "inn", str(inn_value)))
    if exclude is not None:
        found = {d for d in found if (d.type, d.id) != tuple(exclude)}
    return sorted(found)


def _try_phone(raw: str, region: str) -> str | None:
    try:
        return normalize_phone(raw, region)
    except InvalidPhone:
        return None


def _refuse(duplicates: Sequence[DuplicateRef]) -> DuplicateClient:
    first = duplicates[0]
    return DuplicateClient(
        f"{first.matched_on} {first.value} already belongs to {first.type} {first.id}",
        details={"duplicates": [d.as_dict() for d in duplicates]},
    )


# ---------------------------------------------------------------- card checks


async def _check_card(
    session: AsyncSession,
    values: Mapping[str, Any],
    rules: CrmRules,
    *,
    applies_to: str,
) -> dict[str, Any] | None:
    """Validate the card fields present in ``values``; return the validated custom fields."""
    if "client_type" in values:
        validate_client_type(values["client_type"], rules)
    for key, model, what in (("region_id", Region, "region"), ("source_id", Source, "source")):
        ref_id = values.get(key)
        if ref_id is None:
            continue
        active = await session.scalar(select(model.is_active).where(model.id == ref_id))
        if not active:
            raise InvalidReference(
                f"{key}: no active {what} {ref_id}", details={"field": key, "value": ref_id}
            )
    user_id = values.get("responsible_id")
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is None or not user.is_active:
            raise InvalidReference(
                f"responsible_id: no active user {user_id}",
                details={"field": "responsible_id", "value": user_id},
            )
    custom = values.get("custom")
    if custom is None:
        return None
    return validate_custom_fields(custom, rules, applies_to=applies_to)


def _responsible(actor: User, requested: int | None) -> int:
    """A manager creates and keeps clients for himself; head and admin assign anyone."""
    if requested is None:
        return actor.id
    if requested != actor.id and not access.is_privileged(actor):
        raise PermissionDenied(
            "a manager may only make himself responsible",
            details={"field": "responsible_id", "value": requested},
        )
    return requested


def _check_handover(actor: User, current: int | None, patch: ContactPatch | CompanyPatch) -> None:
    """Only the head of sales or an admin hands a client to another manager (or to nobody)."""
    if "responsible_id" not in patch.model_fields_set or patch.responsible_id == current:
        return
    if not access.is_privileged(actor):
        raise PermissionDenied(
            "only the head of sales or an admin changes the responsible manager",
            details={"field": "responsible_id", "value": patch.responsible_id},
        )


def _card_values(data: CardInput) -> dict[str, Any]:
    return {name: getattr(data, name) for name in CARD_FIELDS}


def fill_empty(target: Any, values: Mapping[str, Any]) -> list[str]:
    """Set each attribute of ``target`` that is empty (None or "") to the value given, when that
    value is not empty; return the names filled. Merges use it so the survivor keeps its own
    data and gains what only the other record knew."""
    filled: list[str] = []
    for name, value in values.items():
        if value is None or value == "":
            continue
        current = getattr(target, name)
        if current is None or current == "":
            setattr(target, name, value)
            filled.append(name)
    return filled


def merge_custom(target: Any, values: Mapping[str, Any] | None) -> list[str]:
    """Add the custom fields ``target`` lacks; return their names as ``custom.<name>``."""
    if not values:
        return []
    current = dict(target.custom or {})
    added = [k for k, v in values.items() if v is not None and current.get(k) is None]
    if added:
        current.update({k: values[k] for k in added})
        target.custom = current
    return [f"custom.{k}" for k in added]


# ---------------------------------------------------------------- loading


async def _get_client(
    session: AsyncSession,
    model: type[Contact] | type[Company],
    not_found: type[ContactNotFound] | type[CompanyNotFound],
    client_id: int,
    *,
    actor: User | None,
    rules: CrmRules | None,
    write: bool,
    include_merged: bool,
) -> Any:
    kind = "contact" if model is Contact else "company"
    client = await session.get(model, client_id)
    if client is None:
        raise not_found(f"no {kind} {client_id}", details={f"{kind}_id": client_id})
    if actor is not None:
        _ensure(actor, client.responsible_id, rules, write, f"{kind} {client_id}")
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
    actor: User | None = None,
    rules: CrmRules | None = None,
    write: bool = False,
    include_merged: bool = False,
) -> Contact:
    """A live contact; with ``actor``, one he may read (or change, with ``write``)."""
    contact: Contact = await _get_client(
        session,
        Contact,
        ContactNotFound,
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
    actor: User | None = None,
    rules: CrmRules | None = None,
    write: bool = False,
    include_merged: bool = False,
) -> Company:
    """A live company; with ``actor``, one he may read (or change, with ``write``)."""
    company: Company = await _get_client(
        session,
        Company,
        CompanyNotFound,
        company_id,
        actor=actor,
        rules=rules,
        write=write,
        include_merged=include_merged,
    )
    return company


def _ensure(
    actor: User, responsible_id: int | None, rules: CrmRules | None, write: bool, what: str
) -> None:
    rules = rules or CrmRules()
    if write:
        access.ensure_write(actor, responsible_id, rules, what)
    else:
        access.ensure_read(actor, responsible_id, rules, what)


async def _companies_for_links(
    session: AsyncSession, company_ids: Iterable[int], actor: User, rules: CrmRules, field: str
) -> None:
    for i, company_id in enumerate(company_ids):
        try:
            await get_company(session, company_id, actor=actor, rules=rules)
        except NotFound:
            raise InvalidReference(
                f"{field}.{i}.company_id: no company {company_id}",
                details={"field": f"{field}.{i}.company_id", "value": company_id},
            ) from None


# ---------------------------------------------------------------- contacts


async def create_contact(
    session: AsyncSession,
    data: ContactInput,
    *,
    actor: User,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> Contact:
    """Create a contact, refusing (``DuplicateClient``, 409) when one of its phones, e-mails
    or messenger ids already belongs to another contact, or, with ``on_duplicate="merge"``,
    adding the input to that contact instead and returning it.

    Only contacts count as duplicates of a contact: a company's switchboard number on a
    person's card is normal.
    """
    result = await save_contact(session, data, actor=actor, rules=rules, on_duplicate=on_duplicate)
    contact: Contact = result.client
    return contact


async def save_contact(
    session: AsyncSession,
    data: ContactInput,
    *,
    actor: User,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> SaveResult:
    """:func:`create_contact` telling whether it created or merged (for the events)."""
    phones = normalize_phones(data.phones, region=rules.default_region)
    emails = normalize_emails(data.emails)
    messengers = _messenger_pairs(data.messengers)
    custom = await _check_card(session, data.model_dump(), rules, applies_to="contact") or {}
    await _companies_for_links(
        session, (c.company_id for c in data.companies), actor, rules, "companies"
    )
    duplicates = [
        d
        for d in await find_duplicates(session, phones=phones, emails=emails, messengers=messengers)
        if d.type == "contact"
    ]
    if duplicates:
        if on_duplicate != "merge":
            raise _refuse(duplicates)
        target = await get_contact(session, duplicates[0].id)
        if not access.can_write(actor, target.responsible_id):
            raise PermissionDenied(
                f"contact {target.id} (a duplicate) belongs to another manager",
                details={"duplicates": [d.as_dict() for d in duplicates]},
            )
        values = _card_values(data) | {"position": data.position, "comment": data.comment}
        values["responsible_id"] = None  # the existing record keeps its manager
        fill_empty(target, values)
        merge_custom(target, custom)
        await _add_contact_parts(session, target.id, phones, emails, messengers, skip_taken=True)
        for link in data.companies:
            await link_contact_company(
                session,
                target.id,
                link.company_id,
                position=link.position,
                is_decision_maker=link.is_decision_maker,
            )
        target.updated_at = utcnow()
        await session.flush()
        return SaveResult(target, False, tuple(duplicates))
    values = _card_values(data)
    values["responsible_id"] = _responsible(actor, data.responsible_id)
    contact = Contact(
        name=data.name.strip(),
        position=data.position,
        comment=data.comment,
        custom=custom or None,
        created_by_id=actor.id,
        **values,
    )
    session.add(contact)
    await session.flush()
    await _add_contact_parts(session, contact.id, phones, emails, messengers)
    for link in data.companies:
        await link_contact_company(
            session,
            contact.id,
            link.company_id,
            position=link.position,
            is_decision_maker=link.is_decision_maker,
        )
    await session.flush()
    return SaveResult(contact, True)


async def _add_contact_parts(
    session: AsyncSession,
    contact_id: int,
    phones: Sequence[str],
    emails: Sequence[str],
    messengers: Sequence[tuple[str, str]],
    *,
    skip_taken: bool = False,
) -> None:
    have_phones = set(
        await session.scalars(select(Phone.e164).where(Phone.contact_id == contact_id))
    )
    have_emails = set(
        await session.scalars(select(Email.address).where(Email.contact_id == contact_id))
    )
    for e164 in phones:
        if e164 not in have_phones:
            session.add(Phone(contact_id=contact_id, e164=e164, digits_rev=digits_reversed(e164)))
    for address in emails:
        if address not in have_emails:
            session.add(Email(contact_id=contact_id, address=address))
    for channel, external_id in messengers:
        owner = await session.scalar(
            select(MessengerId.contact_id).where(
                MessengerId.channel == channel, MessengerId.external_id == external_id
            )
        )
        if owner is None:
            session.add(
                MessengerId(contact_id=contact_id, channel=channel, external_id=external_id)
            )
        elif owner != contact_id and not skip_taken:
            raise DuplicateClient(
                f"{channel} id {external_id} belongs to contact {owner}",
                details={
                    "duplicates": [
                        DuplicateRef(
                            "contact", owner, "messenger", f"{channel}:{external_id}"
                        ).as_dict()
                    ]
                },
            )
    await session.flush()


async def update_contact(
    session: AsyncSession,
    contact_id: int,
    patch: ContactPatch,
    *,
    actor: User,
    rules: CrmRules,
) -> Contact:
    """Change the fields present in ``patch``; phones, e-mails and messenger ids given replace
    the sets and are checked for duplicates among the other contacts."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules, write=True)
    given = patch.model_fields_set
    values = {k: getattr(patch, k) for k in given}
    if "name" in given and not (patch.name or "").strip():
        raise InvalidReference("name: required", details={"field": "name", "value": patch.name})
    custom = await _check_card(session, values, rules, applies_to="contact")
    _check_handover(actor, contact.responsible_id, patch)
    phones = (
        normalize_phones(patch.phones, region=rules.default_region)
        if patch.phones is not None
        else None
    )
    emails = normalize_emails(patch.emails) if patch.emails is not None else None
    messengers = _messenger_pairs(patch.messengers) if patch.messengers is not None else None
    duplicates = [
        d
        for d in await find_duplicates(
            session,
            phones=phones or (),
            emails=emails or (),
            messengers=messengers or (),
            exclude=("contact", contact_id),
        )
        if d.type == "contact"
    ]
    if duplicates:
        raise _refuse(duplicates)
    for key in (*CARD_FIELDS, "position", "comment"):
        if key in given:
            setattr(contact, key, values[key])
    if "name" in given and patch.name is not None:
        contact.name = patch.name.strip()
    if custom is not None:
        contact.custom = _apply_custom(contact.custom, custom)
    if phones is not None:
        await session.execute(
            delete(Phone).where(Phone.contact_id == contact_id, Phone.e164.not_in(phones))
        )
    if emails is not None:
        await session.execute(
            delete(Email).where(Email.contact_id == contact_id, Email.address.not_in(emails))
        )
    if messengers is not None:
        keep = [and_(MessengerId.channel == c, MessengerId.external_id == e) for c, e in messengers]
        stmt = delete(MessengerId).where(MessengerId.contact_id == contact_id)
        if keep:
            stmt = stmt.where(~or_(*keep))
        await session.execute(stmt)
    await _add_contact_parts(session, contact_id, phones or (), emails or (), messengers or ())
    contact.updated_at = utcnow()
    await session.flush()
    return contact


def _apply_custom(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(current or {})
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


async def delete_contact(session: AsyncSession, contact_id: int, *, actor: User) -> None:
    """Delete a contact without history (head and admin only); one with deals, activities,
    calls, tasks or leads is refused (merge it instead)."""
    if not access.is_privileged(actor):
        raise PermissionDenied("only the head of sales or an admin deletes clients")
    contact = await get_contact(session, contact_id)
    _refuse_legal_hold(contact, "contact")
    await _refuse_with_history(session, "contacts", [contact_id])
    await session.delete(contact)
    await session.flush()


def _refuse_legal_hold(record: Contact | Company, kind: str) -> None:
    if record.legal_hold:
        raise ClientHasHistory(
            f"{kind} {record.id} is on legal hold", details={"id": record.id, "legal_hold": True}
        )


async def _refuse_with_history(
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


# ---------------------------------------------------------------- contact-company links


async def link_contact_company(
    session: AsyncSession,
    contact_id: int,
    company_id: int,
    *,
    position: str | None = None,
    is_decision_maker: bool = False,
) -> ContactCompany:
    """Link a contact to a company (idempotent: an existing link gets the position and the
    decision-maker flag given). A company has at most one decision maker: marking this link
    unmarks the others."""
    await get_contact(session, contact_id)
    await get_company(session, company_id)
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


async def add_link(
    session: AsyncSession,
    contact_id: int,
    company_id: int,
    *,
    position: str | None = None,
    is_decision_maker: bool = False,
) -> ContactCompany:
    """Like :func:`link_contact_company` but refusing an existing link (409)."""
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
    return await link_contact_company(
        session, contact_id, company_id, position=position, is_decision_maker=is_decision_maker
    )


async def get_link(session: AsyncSession, contact_id: int, company_id: int) -> ContactCompany:
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
    position: str | None = None,
    set_position: bool = False,
    is_decision_maker: bool | None = None,
) -> ContactCompany:
    """Change a link's position (``set_position``) and/or decision-maker flag."""
    link = await get_link(session, contact_id, company_id)
    if set_position:
        link.position = position
    if is_decision_maker is True:
        await _unmark_decision_makers(session, company_id, except_contact=contact_id)
    if is_decision_maker is not None:
        link.is_decision_maker = is_decision_maker
    await session.flush()
    return link


async def unlink_contact_company(session: AsyncSession, contact_id: int, company_id: int) -> None:
    link = await get_link(session, contact_id, company_id)
    await session.delete(link)
    await session.flush()


# ---------------------------------------------------------------- companies


async def create_company(
    session: AsyncSession,
    data: CompanyInput,
    *,
    actor: User,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> Company:
    """Create a company with its legal entities and requisites (checksums verified), refusing
    (``DuplicateClient``, 409) when a phone, e-mail or INN (of live requisites) already
    belongs to another company, or with ``on_duplicate="merge"`` adding the input to it."""
    result = await save_company(session, data, actor=actor, rules=rules, on_duplicate=on_duplicate)
    company: Company = result.client
    return company


async def save_company(
    session: AsyncSession,
    data: CompanyInput,
    *,
    actor: User,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> SaveResult:
    """:func:`create_company` telling whether it created or merged (for the events)."""
    phones = normalize_phones(data.phones, region=rules.default_region)
    emails = normalize_emails(data.emails)
    custom = await _check_card(session, data.model_dump(), rules, applies_to="company") or {}
    entities = [
        (
            le,
            [
                _requisites_values(r, f"legal_entities.{i}.requisites.{j}.")
                for j, r in enumerate(le.requisites)
            ],
        )
        for i, le in enumerate(data.legal_entities)
    ]
    if data.head_id is not None:
        await _check_head(session, data.head_id, actor, rules)
    duplicates: set[DuplicateRef] = set()
    for d in await find_duplicates(session, phones=phones, emails=emails):
        if d.type == "company":
            duplicates.add(d)
    for inn in sorted({r["inn"] for _, reqs in entities for r in reqs if r["inn"]}):
        duplicates.update(await find_duplicates(session, inn=inn))
    ordered = sorted(duplicates)
    if ordered:
        if on_duplicate != "merge":
            raise _refuse(ordered)
        target = await get_company(session, ordered[0].id)
        if not access.can_write(actor, target.responsible_id):
            raise PermissionDenied(
                f"company {target.id} (a duplicate) belongs to another manager",
                details={"duplicates": [d.as_dict() for d in ordered]},
            )
        values = _card_values(data) | {
            "website": data.website,
            "comment": data.comment,
            "head_id": data.head_id if data.head_id != target.id else None,
        }
        values["responsible_id"] = None
        if values["head_id"] is not None:
            await _check_no_cycle(session, target.id, values["head_id"])
        fill_empty(target, values)
        merge_custom(target, custom)
        await _add_company_parts(session, target.id, phones, emails)
        live_inns = set(
            await session.scalars(
                select(Requisites.inn)
                .join(LegalEntity, LegalEntity.id == Requisites.legal_entity_id)
                .where(LegalEntity.company_id == target.id, Requisites.retired_at.is_(None))
            )
        )
        for le, reqs in entities:
            if any(r["inn"] and r["inn"] in live_inns for r in reqs):
                continue  # that legal entity is already on the card
            await _add_legal_entity(session, target.id, le.name, reqs, actor)
        target.updated_at = utcnow()
        await session.flush()
        return SaveResult(target, False, tuple(ordered))
    values = _card_values(data)
    values["responsible_id"] = _responsible(actor, data.responsible_id)
    company = Company(
        name=data.name.strip(),
        head_id=data.head_id,
        website=data.website,
        comment=data.comment,
        custom=custom or None,
        created_by_id=actor.id,
        **values,
    )
    session.add(company)
    await session.flush()
    await _add_company_parts(session, company.id, phones, emails)
    for le, reqs in entities:
        await _add_legal_entity(session, company.id, le.name, reqs, actor)
    await session.flush()
    return SaveResult(company, True)


async def _check_head(session: AsyncSession, head_id: int, actor: User, rules: CrmRules) -> None:
    try:
        await get_company(session, head_id, actor=actor, rules=rules)
    except NotFound:
        raise InvalidReference(
            f"head_id: no company {head_id}", details={"field": "head_id", "value": head_id}
        ) from None


async def _check_no_cycle(session: AsyncSession, company_id: int, head_id: int) -> None:
    if head_id in await group_company_ids(session, company_id):
        raise CompanyGroupCycle(
            f"company {head_id} is company {company_id} or one of its members",
            details={"field": "head_id", "value": head_id},
        )


async def _add_company_parts(
    session: AsyncSession, company_id: int, phones: Sequence[str], emails: Sequence[str]
) -> None:
    have_phones = set(
        await session.scalars(select(Phone.e164).where(Phone.company_id == company_id))
    )
    have_emails = set(
        await session.scalars(select(Email.address).where(Email.company_id == company_id))
    )
    for e164 in phones:
        if e164 not in have_phones:
            session.add(Phone(company_id=company_id, e164=e164, digits_rev=digits_reversed(e164)))
    for address in emails:
        if address not in have_emails:
            session.add(Email(company_id=company_id, address=address))
    await session.flush()


def _requisites_values(data: RequisitesInput, prefix: str = "") -> dict[str, Any]:
    values = validate_requisites(data.model_dump(), prefix=prefix)
    values["full_name"] = data.full_name.strip()
    return values


async def _add_legal_entity(
    session: AsyncSession,
    company_id: int,
    name: str,
    requisites: Sequence[Mapping[str, Any]],
    actor: User,
) -> LegalEntity:
    entity = LegalEntity(company_id=company_id, name=name.strip())
    session.add(entity)
    await session.flush()
    for values in requisites:
        session.add(Requisites(legal_entity_id=entity.id, created_by_id=actor.id, **values))
    await session.flush()
    return entity


async def update_company(
    session: AsyncSession,
    company_id: int,
    patch: CompanyPatch,
    *,
    actor: User,
    rules: CrmRules,
) -> Company:
    """Change the fields present in ``patch``; phones and e-mails given replace the sets and
    are checked for duplicates; a new head organisation may not be one of its own members."""
    company = await get_company(session, company_id, actor=actor, rules=rules, write=True)
    given = patch.model_fields_set
    values = {k: getattr(patch, k) for k in given}
    if "name" in given and not (patch.name or "").strip():
        raise InvalidReference("name: required", details={"field": "name", "value": patch.name})
    custom = await _check_card(session, values, rules, applies_to="company")
    _check_handover(actor, company.responsible_id, patch)
    if "head_id" in given and patch.head_id is not None and patch.head_id != company.head_id:
        await _check_head(session, patch.head_id, actor, rules)
        await _check_no_cycle(session, company_id, patch.head_id)
    phones = (
        normalize_phones(patch.phones, region=rules.default_region)
        if patch.phones is not None
        else None
    )
    emails = normalize_emails(patch.emails) if patch.emails is not None else None
    duplicates = [
        d
        for d in await find_duplicates(
            session, phones=phones or (), emails=emails or (), exclude=("company", company_id)
        )
        if d.type == "company"
    ]
    if duplicates:
        raise _refuse(duplicates)
    for key in (*CARD_FIELDS, "website", "comment", "head_id"):
        if key in given:
            setattr(company, key, values[key])
    if "name" in given and patch.name is not None:
        company.name = patch.name.strip()
    if custom is not None:
        company.custom = _apply_custom(company.custom, custom)
    if phones is not None:
        await session.execute(
            delete(Phone).where(Phone.company_id == company_id, Phone.e164.not_in(phones))
        )
    if emails is not None:
        await session.execute(
            delete(Email).where(Email.company_id == company_id, Email.address.not_in(emails))
        )
    await _add_company_parts(session, company_id, phones or (), emails or ())
    company.updated_at = utcnow()
    await session.flush()
    return company


async def delete_company(session: AsyncSession, company_id: int, *, actor: User) -> None:
    """Delete a company without history (head and admin only); one with deals, activities,
    calls, invoices, tasks, leads or member companies is refused (merge it instead)."""
    if not access.is_privileged(actor):
        raise PermissionDenied("only the head of sales or an admin deletes clients")
    company = await get_company(session, company_id)
    _refuse_legal_hold(company, "company")
    await _refuse_with_history(session, "companies", [company_id])
    entities = list(
        await session.scalars(select(LegalEntity.id).where(LegalEntity.company_id == company_id))
    )
    await _refuse_with_history(session, "legal_entities", entities, owner=company_id)
    await session.delete(company)
    await session.flush()


async def group_company_ids(session: AsyncSession, company_id: int) -> list[int]:
    """``company_id`` and every member company under it, recursively (live ones), sorted:
    what a head organisation's activities, deals and reports roll up over."""
    members = select(Company.id).where(Company.id == company_id).cte("grp", recursive=True)
    members = members.union(
        select(Company.id).where(Company.head_id == members.c.id, Company.merged_into_id.is_(None))
    )
    ids = set(await session.scalars(select(members.c.id)))
    return sorted(ids)


async def top_head_id(session: AsyncSession, company_id: int) -> int:
    """The head organisation at the top of ``company_id``'s group (itself if it has none)."""
    seen = {company_id}
    current = company_id
    while True:
        head = await session.scalar(select(Company.head_id).where(Company.id == current))
        if head is None or head in seen:
            return current
        seen.add(head)
        current = head


# ---------------------------------------------------------------- legal entities, requisites


async def get_legal_entity(session: AsyncSession, legal_entity_id: int) -> LegalEntity:
    entity = await session.get(LegalEntity, legal_entity_id)
    if entity is None:
        raise LegalEntityNotFound(
            f"no legal entity {legal_entity_id}", details={"legal_entity_id": legal_entity_id}
        )
    return entity


async def get_requisites(session: AsyncSession, requisites_id: int) -> Requisites:
    row = await session.get(Requisites, requisites_id)
    if row is None:
        raise RequisitesNotFound(
            f"no requisites {requisites_id}", details={"requisites_id": requisites_id}
        )
    return row


async def _refuse_foreign_inn(session: AsyncSession, inn: str | None, company_id: int) -> None:
    if not inn:
        return
    duplicates = await find_duplicates(session, inn=inn, exclude=("company", company_id))
    if duplicates:
        raise _refuse(duplicates)


async def add_legal_entity(
    session: AsyncSession, company_id: int, data: LegalEntityInput, *, actor: User
) -> LegalEntity:
    """Add a legal entity (with requisites) to a company; an INN live at another company is a
    duplicate (409)."""
    await get_company(session, company_id)
    reqs = [_requisites_values(r, f"requisites.{j}.") for j, r in enumerate(data.requisites)]
    for values in reqs:
        await _refuse_foreign_inn(session, values["inn"], company_id)
    return await _add_legal_entity(session, company_id, data.name, reqs, actor)


async def update_legal_entity(
    session: AsyncSession, legal_entity_id: int, patch: LegalEntityPatch
) -> LegalEntity:
    """Rename or (de)activate a legal entity; deactivating it retires its live requisites."""
    entity = await get_legal_entity(session, legal_entity_id)
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
    return entity


async def add_requisites(
    session: AsyncSession, legal_entity_id: int, data: RequisitesInput, *, actor: User
) -> Requisites:
    """Add a set of requisites to a legal entity (checksums verified; an INN live at another
    company is a duplicate, 409)."""
    entity = await get_legal_entity(session, legal_entity_id)
    values = _requisites_values(data)
    await _refuse_foreign_inn(session, values["inn"], entity.company_id)
    row = Requisites(legal_entity_id=legal_entity_id, created_by_id=actor.id, **values)
    session.add(row)
    await session.flush()
    return row


async def change_requisites(
    session: AsyncSession, requisites_id: int, data: RequisitesInput, *, actor: User
) -> Requisites:
    """Change requisites without losing history: a new row with the new values, the old one
    retired and pointing to it (``replaced_by_id``). Returns the new row."""
    old = await get_requisites(session, requisites_id)
    if old.retired_at is not None:
        raise RequisitesRetired(
            f"requisites {requisites_id} are retired; change the current ones",
            details={"requisites_id": requisites_id, "replaced_by_id": old.replaced_by_id},
        )
    entity = await get_legal_entity(session, old.legal_entity_id)
    values = _requisites_values(data)
    await _refuse_foreign_inn(session, values["inn"], entity.company_id)
    new = Requisites(legal_entity_id=old.legal_entity_id, created_by_id=actor.id, **values)
    session.add(new)
    await session.flush()
    old.retired_at = utcnow()
    old.replaced_by_id = new.id
    await session.flush()
    return new


async def retire_requisites(session: AsyncSession, requisites_id: int) -> Requisites:
    """Retire a set of requisites (kept in the history)."""
    row = await get_requisites(session, requisites_id)
    if row.retired_at is not None:
        raise RequisitesRetired(
            f"requisites {requisites_id} are already retired",
            details={"requisites_id": requisites_id},
        )
    row.retired_at = utcnow()
    await session.flush()
    return row


async def requisites_history(
    session: AsyncSession, legal_entity_id: int, *, include_retired: bool = True
) -> list[Requisites]:
    """A legal entity's requisites, oldest first (live ones only without ``include_retired``)."""
    await get_legal_entity(session, legal_entity_id)
    stmt = select(Requisites).where(Requisites.legal_entity_id == legal_entity_id)
    if not include_retired:
        stmt = stmt.where(Requisites.retired_at.is_(None))
    return list(await session.scalars(stmt.order_by(Requisites.created_at, Requisites.id)))


# ---------------------------------------------------------------- the screen-pop lookup


def _suffix_range(key: str) -> tuple[str, str | None]:
    """``[key, upper)``: every string of digits starting with ``key``. The upper bound drops
    trailing nines and increments the last digit ("7659" → "766"), so it stays a digit string
    and sorts the same under any collation; all nines have no upper bound."""
    stripped = key.rstrip("9")
    if not stripped:
        return key, None
    return key, stripped[:-1] + str(int(stripped[-1]) + 1)


def digits_rev_prefix(digits: str) -> Any:
    """A ``WHERE`` clause: phones whose number ends with ``digits`` (a btree range)."""
    low, high = _suffix_range(digits[::-1])
    clause = Phone.digits_rev >= low
    if high is not None:
        clause = and_(clause, Phone.digits_rev < high)
    return clause


def _lookup_statements() -> tuple[Any, Any]:
    """The lookup's statements, built once: a statement object reused with bound parameters
    skips SQLAlchemy's per-call construction and cache-key work (half the lookup's time)."""
    linked = aliased(Company)

    def via_link(column: Any) -> Any:
        # The contact's company: where he is the decision maker first, else the oldest link.
        return (
            select(column)
            .select_from(ContactCompany)
            .join(
                linked,
                and_(linked.id == ContactCompany.company_id, linked.merged_into_id.is_(None)),
            )
            .where(ContactCompany.contact_id == Phone.contact_id)
            .order_by(ContactCompany.is_decision_maker.desc(), ContactCompany.id)
            .limit(1)
            .correlate(Phone)
            .scalar_subquery()
        )

    base = (
        select(
            Phone.e164,
            Phone.contact_id,
            Contact.name,
            Contact.responsible_id,
            via_link(linked.id),
            via_link(linked.responsible_id),
            Phone.company_id,
            Company.name,
            Company.responsible_id,
            Phone.lead_id,
            Lead.stage,
            func.coalesce(Lead.contact_name, Lead.company_name, Lead.title),
            Lead.responsible_id,
            Lead.contact_id,
            Lead.company_id,
        )
        .outerjoin(Contact, and_(Contact.id == Phone.contact_id, Contact.merged_into_id.is_(None)))
        .outerjoin(Company, and_(Company.id == Phone.company_id, Company.merged_into_id.is_(None)))
        .outerjoin(Lead, Lead.id == Phone.lead_id)
    )
    exact = base.where(Phone.e164 == bindparam("e164")).limit(50)
    by_last10 = base.where(Phone.last10 == bindparam("last10")).limit(50)
    return exact, by_last10


_BY_E164, _BY_LAST10 = _lookup_statements()


async def find_client_by_phone(
    session: AsyncSession, raw: str, *, region: str = "RU", rules: CrmRules | None = None
) -> ClientMatch | None:
    """Who is calling from ``raw`` (any format): a contact, else a company, else an open lead
    with that number in E.164; failing that, one whose number has the same last 10 digits.
    A contact comes with his company (the one where he is the decision maker first) and the
    contact's responsible (else the company's). None for an unknown number.

    One indexed equality (``phones.last10``) answers both steps.
    """
    open_stages = _open_stages(rules or _DEFAULT_RULES)
    e164 = _try_phone(raw, region)
    digits = digits_of(e164 or raw or "")
    # Core execution: plain rows, none of the ORM's result machinery (a screen-pop path).
    # It does not autoflush, so flush what the session holds, if anything.
    if session.new or session.dirty or session.deleted:
        await session.flush()
    conn = await session.connection()
    if len(digits) < 10:
        if e164 is None:
            return None
        rows = (await conn.execute(_BY_E164, {"e164": e164})).all()
        return _best_match(rows, "e164", open_stages)
    # Every number with the same last 10 digits, the exact one among them: one query.
    rows = (await conn.execute(_BY_LAST10, {"last10": digits[-10:]})).all()
    exact = [r for r in rows if r[0] == e164]
    match = _best_match(exact, "e164", open_stages) if exact else None
    return match or _best_match(rows, "last_digits", open_stages)


_DEFAULT_RULES = CrmRules()


@functools.cache
def _open_stages_of(stages: tuple[Any, ...]) -> frozenset[str]:
    return frozenset(s.code for s in stages if s.kind == "open")


def _open_stages(rules: CrmRules) -> frozenset[str]:
    return _open_stages_of(rules.lead_stages)


def _best_match(
    rows: Sequence[Any], matched_on: str, open_stages: frozenset[str]
) -> ClientMatch | None:
    best: tuple[int, int] | None = None
    found: ClientMatch | None = None
    for r in rows:
        (e164, contact_id, contact_name, contact_resp, link_company, link_resp) = r[:6]
        (company_id, company_name, company_resp) = r[6:9]
        (lead_id, stage, lead_name, lead_resp, lead_contact, lead_company) = r[9:]
        # Rank: a contact, then a company (lowest id first), then the newest open lead.
        if contact_id is not None and contact_name is not None:
            rank = (0, contact_id)
            candidate = ClientMatch(
                contact_id,
                link_company,
                None,
                contact_resp if contact_resp is not None else link_resp,
                contact_name,
                matched_on,
                e164,
            )
        elif company_id is not None and company_name is not None:
            rank = (1, company_id)
            candidate = ClientMatch(
                None, company_id, None, company_resp, company_name, matched_on, e164
            )
        elif lead_id is not None and stage in open_stages:
            rank = (2, -lead_id)
            candidate = ClientMatch(
                lead_contact, lead_company, lead_id, lead_resp, lead_name or e164, matched_on, e164
            )
        else:
            continue
        if best is None or rank < best:
            best, found = rank, candidate
    return found


# ---------------------------------------------------------------- cards (API output)


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
    return LegalEntityOut(
        id=entity.id,
        company_id=entity.company_id,
        name=entity.name,
        is_active=entity.is_active,
        created_at=entity.created_at,
        requisites=[RequisitesOut.model_validate(r) for r in requisites if r.retired_at is None],
    )


# ---------------------------------------------------------------- merge (see merge.py)


async def merge_contacts(
    session: AsyncSession, survivor_id: int, loser_id: int, *, actor: User
) -> Contact:
    """Merge contact ``loser_id`` into ``survivor_id``; see :mod:`crm_core.clients.merge`."""
    from crm_core.clients import merge

    return await merge.merge_contacts(session, survivor_id, loser_id, actor=actor)


async def merge_companies(
    session: AsyncSession, survivor_id: int, loser_id: int, *, actor: User
) -> Company:
    """Merge company ``loser_id`` into ``survivor_id``; see :mod:`crm_core.clients.merge`."""
    from crm_core.clients import merge

    return await merge.merge_companies(session, survivor_id, loser_id, actor=actor)


__all__ = [
    "ClientMatch",
    "DuplicateRef",
    "SaveResult",
    "create_company",
    "create_contact",
    "find_client_by_phone",
    "find_duplicates",
    "group_company_ids",
    "link_contact_company",
    "merge_companies",
    "merge_contacts",
]
