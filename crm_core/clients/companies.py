"""Use cases of companies: create (with legal entities and requisites; refusing or merging
into a duplicate), change, delete, and the groups of a head organisation and its members.

Every function takes the caller's session and flushes; the caller commits and publishes the
returned events after the commit (:mod:`crm_core.clients.events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select
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
    normalize_emails,
    normalize_phones,
)
from crm_core.clients.duplicates import duplicate_error, duplicates_of
from crm_core.clients.errors import CompanyGroupCycle, InvalidReference
from crm_core.clients.legal import add_entity_rows, requisites_values
from crm_core.clients.model import Company, Email, LegalEntity, Phone, Requisites
from crm_core.clients.records import (
    SaveResult,
    get_company,
    refuse_legal_hold,
    refuse_with_history,
)
from crm_core.clients.schemas import CARD_FIELDS, CompanyInput, CompanyPatch
from crm_core.db import utcnow
from crm_core.errors import NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules


async def create_company(
    session: AsyncSession,
    data: CompanyInput,
    *,
    actor: Actor,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> tuple[Company, list[DomainEvent]]:
    """Create a company with its legal entities and requisites (checksums verified), refusing
    (``DuplicateClient``, 409) when a phone, e-mail or INN (of live requisites) already
    belongs to another company, or with ``on_duplicate="merge"`` adding the input to it."""
    result, out = await save_company(
        session, data, actor=actor, rules=rules, on_duplicate=on_duplicate
    )
    company: Company = result.client
    return company, out


async def save_company(
    session: AsyncSession,
    data: CompanyInput,
    *,
    actor: Actor,
    rules: CrmRules,
    on_duplicate: OnDuplicate = "refuse",
) -> tuple[SaveResult, list[DomainEvent]]:
    """:func:`create_company` telling whether it created or merged (``client.created``, or
    ``client.updated`` naming the fields sent)."""
    phones = normalize_phones(data.phones, region=rules.default_region)
    emails = normalize_emails(data.emails)
    custom = await check_card(session, data.model_dump(), rules, applies_to="company") or {}
    entities = [
        (
            le,
            [
                requisites_values(r, f"legal_entities.{i}.requisites.{j}.")
                for j, r in enumerate(le.requisites)
            ],
        )
        for i, le in enumerate(data.legal_entities)
    ]
    if data.head_id is not None:
        await _check_head(session, data.head_id, actor, rules)
    inns = [r["inn"] for _, reqs in entities for r in reqs]
    duplicates = await duplicates_of(
        session, kind="company", phones=phones, emails=emails, inns=inns
    )
    if duplicates:
        if on_duplicate != "merge":
            raise duplicate_error(duplicates, actor, rules)
        # De-duplication looks at every company; what the actor may do with it comes next.
        target = await get_company(session, duplicates[0].id, actor=access.SYSTEM, rules=rules)
        if not access.can_write(actor, target.responsible_id):
            shown = access.can_read(actor, target.responsible_id, rules)
            what = f"company {target.id}" if shown else "the company"
            raise PermissionDenied(
                f"{what} (a duplicate) belongs to another manager",
                details={"duplicates": [d.shown_to(actor, rules) for d in duplicates]},
            )
        values = card_values(data) | {
            "website": data.website,
            "comment": data.comment,
            "head_id": data.head_id if data.head_id != target.id else None,
        }
        values["responsible_id"] = None
        if values["head_id"] is not None:
            await _check_no_cycle(session, target.id, values["head_id"])
        fill_empty(target, values)
        merge_custom(target, custom)
        await _add_parts(session, target.id, phones, emails)
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
            await add_entity_rows(session, target.id, le.name, reqs, created_by_id=actor.id)
        target.updated_at = utcnow()
        await session.flush()
        event = events.updated(
            "company", target.id, changed_fields(data), target.responsible_id, actor.id
        )
        return SaveResult(target, False, tuple(duplicates)), [event]
    values = card_values(data)
    values["responsible_id"] = access.responsible_for_new(actor, data.responsible_id)
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
    await _add_parts(session, company.id, phones, emails)
    for le, reqs in entities:
        await add_entity_rows(session, company.id, le.name, reqs, created_by_id=actor.id)
    await session.flush()
    created = events.created("company", company.id, company.name, company.responsible_id, actor.id)
    return SaveResult(company, True), [created]


async def _check_head(session: AsyncSession, head_id: int, actor: Actor, rules: CrmRules) -> None:
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


async def _add_parts(
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


async def update_company(
    session: AsyncSession,
    company_id: int,
    patch: CompanyPatch,
    *,
    actor: Actor,
    rules: CrmRules,
) -> tuple[Company, list[DomainEvent]]:
    """Change the fields present in ``patch``; phones and e-mails given replace the sets and
    are checked for duplicates; a new head organisation may not be one of its own members."""
    company = await get_company(session, company_id, actor=actor, rules=rules, write=True)
    given = patch.model_fields_set
    values = {k: getattr(patch, k) for k in given}
    check_name(given, patch.name)
    custom = await check_card(session, values, rules, applies_to="company")
    check_handover(actor, company.responsible_id, patch)
    if "head_id" in given and patch.head_id is not None and patch.head_id != company.head_id:
        await _check_head(session, patch.head_id, actor, rules)
        await _check_no_cycle(session, company_id, patch.head_id)
    phones = (
        normalize_phones(patch.phones, region=rules.default_region)
        if patch.phones is not None
        else None
    )
    emails = normalize_emails(patch.emails) if patch.emails is not None else None
    duplicates = await duplicates_of(
        session, kind="company", phones=phones or (), emails=emails or (), exclude=company_id
    )
    if duplicates:
        raise duplicate_error(duplicates, actor, rules)
    for key in (*CARD_FIELDS, "website", "comment", "head_id"):
        if key in given:
            setattr(company, key, values[key])
    if "name" in given and patch.name is not None:
        company.name = patch.name.strip()
    if custom is not None:
        company.custom = apply_custom(company.custom, custom)
    if phones is not None:
        await session.execute(
            delete(Phone).where(Phone.company_id == company_id, Phone.e164.not_in(phones))
        )
    if emails is not None:
        await session.execute(
            delete(Email).where(Email.company_id == company_id, Email.address.not_in(emails))
        )
    await _add_parts(session, company_id, phones or (), emails or ())
    company.updated_at = utcnow()
    await session.flush()
    event = events.updated(
        "company", company.id, changed_fields(patch), company.responsible_id, actor.id
    )
    return company, [event]


async def delete_company(
    session: AsyncSession, company_id: int, *, actor: Actor, rules: CrmRules
) -> None:
    """Delete a company without history (head and admin only); one with deals, activities,
    calls, invoices, tasks, leads or member companies is refused (merge it instead)."""
    company = await get_company(session, company_id, actor=actor, rules=rules)
    if not access.is_privileged(actor):
        raise PermissionDenied("only the head of sales or an admin deletes clients")
    refuse_legal_hold(company, "company")
    await refuse_with_history(session, "companies", [company_id])
    entities = list(
        await session.scalars(select(LegalEntity.id).where(LegalEntity.company_id == company_id))
    )
    await refuse_with_history(session, "legal_entities", entities, owner=company_id)
    await session.delete(company)
    await session.flush()


async def group_company_ids(session: AsyncSession, company_id: int) -> list[int]:
    """``company_id`` and every member company under it, recursively (live ones), sorted:
    what a head organisation's activities, deals and reports roll up over. A query helper:
    the caller has checked access to ``company_id`` or scopes what it selects with it."""
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


@dataclass(frozen=True)
class CompanyGroup:
    """A company, the head organisation at the top of its group, and its members."""

    company_id: int
    top_head_id: int
    company_ids: list[int]


async def company_group(
    session: AsyncSession, company_id: int, *, actor: Actor, rules: CrmRules
) -> CompanyGroup:
    """The group of a company ``actor`` may read: what reports roll up over."""
    await get_company(session, company_id, actor=actor, rules=rules)
    return CompanyGroup(
        company_id=company_id,
        top_head_id=await top_head_id(session, company_id),
        company_ids=await group_company_ids(session, company_id),
    )
