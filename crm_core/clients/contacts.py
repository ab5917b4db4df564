"""Use cases of contacts: create (refusing or merging into a duplicate), change, delete.

Every function takes the caller's session and flushes; the caller commits and publishes the
returned events after the commit (:mod:`crm_core.clients.events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients import events
from crm_core.clients.checks import (
    OnDuplicate,
    apply_custom,
    card_values,
    changed_fields,
    check_card,
    check_handover,
    check_name,
    fill_empty,
    merge_custom,
    messenger_pairs,
    normalize_emails,
    normalize_phones,
)
from crm_core.clients.duplicates import DuplicateRef, duplicate_error, duplicates_of
from crm_core.clients.errors import InvalidReference
from crm_core.clients.links import link_contact_company
from crm_core.clients.model import Contact, Email, MessengerId, Phone
from crm_core.clients.records import (
    SaveResult,
    get_company,
    get_contact,
    refuse_legal_hold,
    refuse_with_history,
)
from crm_core.clients.schemas import CARD_FIELDS, ContactInput, ContactPatch
from crm_core.db import utcnow
from crm_core.errors import NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules


async def _readable_companies(
    session: AsyncSession,
    company_ids: Iterable[int],
    *,
    actor: Actor,
    rules: CrmRules,
    field: str,
) -> None:
    """Every company an input links to exists and ``actor`` may read it (422 naming the
    position otherwise, so ids of others' companies do not leak)."""
    for i, company_id in enumerate(company_ids):
        try:
            await get_company(session, company_id, actor=actor, rules=rules)
        except NotFound:
            raise InvalidReference(
                f"{field}.{i}.company_id: no company {company_id}",
                details={"field": f"{field}.{i}.company_id", "value": company_id},
            ) from None


async def create_contact(
    session: AsyncSession,
    data: ContactInput,
    *,
    actor: Actor,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> tuple[Contact, list[DomainEvent]]:
    """Create a contact, refusing (``DuplicateClient``, 409) when one of its phones, e-mails
    or messenger ids already belongs to another contact, or, with ``on_duplicate="merge"``,
    adding the input to that contact instead and returning it.

    Only contacts count as duplicates of a contact: a company's switchboard number on a
    person's card is normal.
    """
    result, out = await save_contact(
        session, data, actor=actor, rules=rules, on_duplicate=on_duplicate
    )
    contact: Contact = result.client
    return contact, out


async def save_contact(
    session: AsyncSession,
    data: ContactInput,
    *,
    actor: Actor,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> tuple[SaveResult, list[DomainEvent]]:
    """:func:`create_contact` telling whether it created or merged (``client.created``, or
    ``client.updated`` naming the fields sent)."""
    phones = normalize_phones(data.phones, region=rules.default_region)
    emails = normalize_emails(data.emails)
    messengers = messenger_pairs(data.messengers)
    custom = await check_card(session, data.model_dump(), rules, applies_to="contact") or {}
    await _readable_companies(
        session, (c.company_id for c in data.companies), actor=actor, rules=rules, field="companies"
    )
    duplicates = await duplicates_of(
        session, kind="contact", phones=phones, emails=emails, messengers=messengers
    )
    if duplicates:
        if on_duplicate != "merge":
            raise duplicate_error(duplicates, actor, rules)
        # De-duplication looks at every contact; what the actor may do with it comes next.
        target = await get_contact(session, duplicates[0].id, actor=access.SYSTEM, rules=rules)
        if not access.can_write(actor, target.responsible_id):
            shown = access.can_read(actor, target.responsible_id, rules)
            what = f"contact {target.id}" if shown else "the contact"
            raise PermissionDenied(
                f"{what} (a duplicate) belongs to another manager",
                details={"duplicates": [d.shown_to(actor, rules) for d in duplicates]},
            )
        values = card_values(data) | {"position": data.position, "comment": data.comment}
        values["responsible_id"] = None  # the existing record keeps its manager
        fill_empty(target, values)
        merge_custom(target, custom)
        await _add_parts(
            session, target.id, phones, emails, messengers, actor, rules, skip_taken=True
        )
        for link in data.companies:
            await link_contact_company(
                session,
                target.id,
                link.company_id,
                actor=actor,
                rules=rules,
                position=link.position,
                is_decision_maker=link.is_decision_maker,
            )
        target.updated_at = utcnow()
        await session.flush()
        event = events.updated(
            "contact", target.id, changed_fields(data), target.responsible_id, actor.id
        )
        return SaveResult(target, False, tuple(duplicates)), [event]
    values = card_values(data)
    values["responsible_id"] = access.responsible_for_new(actor, data.responsible_id)
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
    await _add_parts(session, contact.id, phones, emails, messengers, actor, rules)
    for link in data.companies:
        await link_contact_company(
            session,
            contact.id,
            link.company_id,
            actor=actor,
            rules=rules,
            position=link.position,
            is_decision_maker=link.is_decision_maker,
        )
    await session.flush()
    created = events.created("contact", contact.id, contact.name, contact.responsible_id, actor.id)
    return SaveResult(contact, True), [created]


async def _add_parts(
    session: AsyncSession,
    contact_id: int,
    phones: Sequence[str],
    emails: Sequence[str],
    messengers: Sequence[tuple[str, str]],
    actor: Actor,
    rules: CrmRules,
    *,
    skip_taken: bool = False,
) -> None:
    """Add the phones, e-mails and messenger ids the contact does not have yet. A messenger id
    another contact took meanwhile is a duplicate (409), or skipped with ``skip_taken``."""
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
        taken = (
            await session.execute(
                select(MessengerId.contact_id, Contact.responsible_id)
                .join(Contact, Contact.id == MessengerId.contact_id)
                .where(MessengerId.channel == channel, MessengerId.external_id == external_id)
            )
        ).first()
        if taken is None:
            session.add(
                MessengerId(contact_id=contact_id, channel=channel, external_id=external_id)
            )
        elif taken[0] != contact_id and not skip_taken:
            ref = DuplicateRef(
                "contact", taken[0], "messenger", f"{channel}:{external_id}", taken[1]
            )
            raise duplicate_error([ref], actor, rules)
    await session.flush()


async def update_contact(
    session: AsyncSession,
    contact_id: int,
    patch: ContactPatch,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[Contact, list[DomainEvent]]:
    """Change the fields present in ``patch``; phones, e-mails and messenger ids given replace
    the sets and are checked for duplicates among the other contacts."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules, write=True)
    given = patch.model_fields_set
    values = {k: getattr(patch, k) for k in given}
    check_name(given, patch.name)
    custom = await check_card(session, values, rules, applies_to="contact")
    check_handover(actor, contact.responsible_id, patch)
    phones = (
        normalize_phones(patch.phones, region=rules.default_region)
        if patch.phones is not None
        else None
    )
    emails = normalize_emails(patch.emails) if patch.emails is not None else None
    messengers = messenger_pairs(patch.messengers) if patch.messengers is not None else None
    duplicates = await duplicates_of(
        session,
        kind="contact",
        phones=phones or (),
        emails=emails or (),
        messengers=messengers or (),
        exclude=contact_id,
    )
    if duplicates:
        raise duplicate_error(duplicates, actor, rules)
    for key in (*CARD_FIELDS, "position", "comment"):
        if key in given:
            setattr(contact, key, values[key])
    if "name" in given and patch.name is not None:
        contact.name = patch.name.strip()
    if custom is not None:
        contact.custom = apply_custom(contact.custom, custom)
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
    await _add_parts(
        session, contact_id, phones or (), emails or (), messengers or (), actor, rules
    )
    contact.updated_at = utcnow()
    await session.flush()
    event = events.updated(
        "contact", contact.id, changed_fields(patch), contact.responsible_id, actor.id
    )
    return contact, [event]


async def delete_contact(
    session: AsyncSession, contact_id: int, *, actor: Actor, rules: CrmRules
) -> None:
    """Delete a contact without history (head and admin only); one with deals, activities,
    calls, tasks or leads is refused (merge it instead)."""
    contact = await get_contact(session, contact_id, actor=actor, rules=rules)
    if not access.is_privileged(actor):
        raise PermissionDenied("only the head of sales or an admin deletes clients")
    refuse_legal_hold(contact, "contact")
    await refuse_with_history(session, "contacts", [contact_id])
    await session.delete(contact)
    await session.flush()
