"""Use cases of the lead funnel: create, change, move through the configured stages behind the
gate, convert into a contact, a company and a deal, list and search.

The gate (:mod:`crm_core.leads.gate`) runs on every path that changes a lead's stage: a move,
a patch that carries a stage, a creation in a later stage, and the conversion. Every stage
change is recorded in ``lead_stage_changes``.

Every function takes the caller's session and flushes; the caller commits and publishes the
returned events after the commit. On an error the caller rolls back, which undoes everything the
call flushed (a conversion that fails half-way leaves nothing behind).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access, listing
from crm_core.access import Actor
from crm_core.clients import service as clients
from crm_core.clients.errors import InvalidReference
from crm_core.clients.model import (
    Company,
    Contact,
    Email,
    LegalEntity,
    Phone,
    Requisites,
    fold_name,
)
from crm_core.clients.schemas import (
    CARD_FIELDS,
    CompanyInput,
    ContactInput,
    LegalEntityInput,
    RequisitesInput,
)
from crm_core.db import contains, insert_objects, is_postgresql, matching, utcnow
from crm_core.deals import service as deals
from crm_core.deals.model import Deal
from crm_core.deals.pipelines import first_stage, get_pipeline
from crm_core.deals.schemas import DealInput, to_kopecks
from crm_core.errors import NotFound
from crm_core.events import DomainEvent
from crm_core.leads import gate
from crm_core.leads.errors import (
    ConversionRequired,
    DuplicateNotAccessible,
    InvalidLeadInput,
    JunkReasonRequired,
    LeadAlreadyConverted,
    LeadNotFound,
    NothingToConvert,
    UnknownLeadStage,
)
from crm_core.leads.events import (
    LeadConverted,
    LeadCreated,
    LeadDeleted,
    LeadStageChanged,
    LeadUpdated,
    lead_audience,
)
from crm_core.leads.model import Lead, LeadStageChange
from crm_core.leads.schemas import (
    ConvertInput,
    DuplicateOut,
    LeadInput,
    LeadOut,
    LeadPatch,
)
from crm_core.phones import digits_of, digits_reversed, try_normalize_phone
from crm_core.rules import CrmRules, StageDef
from crm_core.validation import validate_client_type, validate_custom_fields, validate_inn

# Patch fields copied as they are (after the checks).
_PLAIN = (
    "title",
    "comment",
    "tracking",
    "client_type",
    "potential_amount",
    "purchase_mode",
    "target_fit",
    "interest",
    "decision_maker_reached",
    "decision_maker_name",
    "needs_products",
    "current_suppliers",
    "conditions",
    "current_need",
    "region_id",
    "source_id",
    "responsible_id",
)


# ---------------------------------------------------------------- small helpers


def _stage(rules: CrmRules, code: str) -> StageDef:
    sdef = gate.stage_def(rules, code)
    if sdef is None:
        raise UnknownLeadStage(
            f"stage: no lead stage {code!r}",
            details={"field": "stage", "value": code, "allowed": rules.lead_stage_codes()},
        )
    return sdef


def converted_stage(rules: CrmRules) -> StageDef:
    """The stage a converted lead ends in: the first one of kind ``won``."""
    sdef = next((s for s in rules.lead_stages if s.kind == "won"), None)
    if sdef is None:
        raise UnknownLeadStage(
            "crm.lead_stages has no stage of kind won to convert into",
            details={"field": "stage", "allowed": rules.lead_stage_codes()},
        )
    return sdef


def _is_converted(lead: Lead, rules: CrmRules) -> bool:
    sdef = gate.stage_def(rules, lead.stage)
    return lead.converted_at is not None or (sdef is not None and sdef.kind == "won")


def _clean_text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None


def _clean_inn(value: str | None) -> str | None:
    value = _clean_text(value)
    return validate_inn(value, field="inn") if value is not None else None


def _clean_custom(values: dict[str, Any], rules: CrmRules) -> dict[str, Any]:
    return validate_custom_fields(values, rules, applies_to="lead") if values else {}


async def _contacts_of(
    session: AsyncSession, lead_ids: Iterable[int]
) -> dict[int, tuple[list[str], list[str]]]:
    """(phones, e-mails) of each lead, in the order they were added."""
    ids = list(set(lead_ids))
    out: dict[int, tuple[list[str], list[str]]] = {i: ([], []) for i in ids}
    if not ids:
        return out
    for lead_id, number in await session.execute(
        select(Phone.lead_id, Phone.e164).where(Phone.lead_id.in_(ids)).order_by(Phone.id)
    ):
        if lead_id is not None:  # selected among ids
            out[lead_id][0].append(number)
    for lead_id, address in await session.execute(
        select(Email.lead_id, Email.address).where(Email.lead_id.in_(ids)).order_by(Email.id)
    ):
        if lead_id is not None:
            out[lead_id][1].append(address)
    return out


async def _replace_contacts(
    session: AsyncSession,
    lead_id: int,
    *,
    phones: Sequence[str] | None = None,
    emails: Sequence[str] | None = None,
) -> None:
    if phones is not None:
        await session.execute(delete(Phone).where(Phone.lead_id == lead_id))
        session.add_all(
            Phone(lead_id=lead_id, e164=n, digits_rev=digits_reversed(n)) for n in phones
        )
    if emails is not None:
        await session.execute(delete(Email).where(Email.lead_id == lead_id))
        session.add_all(Email(lead_id=lead_id, address=a) for a in emails)


async def _facts(session: AsyncSession, lead: Lead) -> gate.LeadFacts:
    phones, emails = (await _contacts_of(session, [lead.id]))[lead.id]
    return gate.LeadFacts.of(lead, phones=len(phones), emails=len(emails))


# ---------------------------------------------------------------- stage moves


def _check_move(
    rules: CrmRules,
    lead: Lead,
    target: str,
    reason: str | None,
    facts: gate.LeadFacts,
    *,
    converting: bool = False,
) -> StageDef:
    """Refuse a move the rules forbid; the gate's refusal names the missing requirements."""
    sdef = _stage(rules, target)
    current = lead.stage  # None while the lead is being created
    if current is not None and _is_converted(lead, rules):
        raise LeadAlreadyConverted(
            f"lead {lead.id} is converted; its stage no longer changes",
            details={"lead_id": lead.id, "stage": lead.stage},
        )
    if sdef.kind == "lost":
        if reason not in rules.junk_reasons:
            raise JunkReasonRequired(
                f"reason: moving a lead to {target} needs one of {', '.join(rules.junk_reasons)}"
                + (f" (got {reason!r})" if reason else ""),
                details={
                    "field": "reason",
                    "value": reason,
                    "stage": target,
                    "allowed": list(rules.junk_reasons),
                },
            )
        return sdef
    if not gate.is_backward(rules, current, target):
        gate.check(facts, rules, target)
    if sdef.kind == "won" and not converting:
        raise ConversionRequired(
            f"a lead enters {target} by conversion: POST /api/v1/leads/{{id}}/convert",
            details={"field": "stage", "value": target},
        )
    return sdef


def _record_move(
    session: AsyncSession,
    lead: Lead,
    sdef: StageDef,
    reason: str | None,
    *,
    actor: Actor,
    now: datetime,
) -> LeadStageChanged:
    previous = lead.stage
    lead.stage = sdef.code
    lead.stage_changed_at = now
    lead.junk_reason = reason if sdef.kind == "lost" else None
    lead.updated_at = now
    session.add(
        LeadStageChange(
            lead_id=lead.id,
            from_stage=previous,
            to_stage=sdef.code,
            user_id=actor.id,
            at=now,
            reason=reason,
        )
    )
    return LeadStageChanged(
        lead_id=lead.id,
        from_stage=previous,
        to_stage=sdef.code,
        reason=reason,
        responsible_id=lead.responsible_id,
        actor_id=actor.id,
        audience=lead_audience(lead.responsible_id),
        occurred_at=now,
    )


# ---------------------------------------------------------------- use cases


async def create_lead(
    session: AsyncSession,
    data: LeadInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Lead, list[DomainEvent]]:
    """Create a lead by hand, or from a call, a website request, a message or an import (those
    by :data:`~crm_core.access.SYSTEM`). It starts in the first stage, or in ``data.stage`` if
    its gate is met (a junk stage needs a reason; the converted stage only by conversion)."""
    created, events = await create_leads(session, [data], actor=actor, rules=rules, now=now)
    return created[0], events


async def create_leads(
    session: AsyncSession,
    items: Sequence[LeadInput],
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
    detached: bool = False,
) -> tuple[list[Lead], list[DomainEvent]]:
    """:func:`create_lead` for many leads at once (the inbox's batch of new senders): each is
    checked as one, and they are written together — two flushes, not two a lead.

    ``detached`` (a caller that only needs the leads' ids and fields): on PostgreSQL the
    leads, their numbers, addresses and first stage are written by one statement of arrays
    each and stay out of the session (no unit of work for objects nobody changes after)."""
    now = now or utcnow()
    # The references every lead checks, read in one query for all of them.
    refs = await deals.active_references(
        session,
        sources=(i.source_id for i in items),
        regions=(i.region_id for i in items),
        users=(access.responsible_for_new(actor, i.responsible_id) for i in items),
    )
    built: list[tuple[Lead, list[str], list[str]]] = []
    for data in items:
        target = data.stage or rules.lead_stages[0].code
        responsible_id = access.responsible_for_new(actor, data.responsible_id)
        validate_client_type(data.client_type, rules)
        refs.check(
            source_id=data.source_id, region_id=data.region_id, responsible_id=responsible_id
        )
        custom = _clean_custom(data.custom, rules)
        phones = clients.normalize_phones(data.phones, region=rules.default_region)
        emails = clients.normalize_emails(data.emails)
        values = {name: getattr(data, name) for name in CARD_FIELDS}
        values["responsible_id"] = responsible_id
        values["potential_amount"] = to_kopecks(data.potential_amount)
        lead = Lead(
            title=data.title.strip(),
            origin=data.origin,
            contact_name=_clean_text(data.contact_name),
            company_name=_clean_text(data.company_name),
            inn=_clean_inn(data.inn),
            comment=data.comment,
            tracking=data.tracking,
            custom={k: v for k, v in custom.items() if v is not None} or None,
            created_by_id=actor.id,
            created_at=now,
            updated_at=now,
            stage_changed_at=now,
            **values,
        )
        facts = gate.LeadFacts.of(lead, phones=len(phones), emails=len(emails))
        sdef = _check_move(rules, lead, target, data.reason, facts)
        lead.stage = sdef.code
        lead.junk_reason = data.reason if sdef.kind == "lost" else None
        built.append((lead, phones, emails))
    fast = detached and is_postgresql(session)
    if not fast:
        session.add_all(lead for lead, _, _ in built)
        await session.flush()
    # The numbers, addresses and first stage of each lead (by its index: in the fast path
    # the lead has no id until the statement that writes them all).
    new_phones: list[tuple[int, Phone]] = []
    new_emails: list[tuple[int, Email]] = []
    changes: list[tuple[int, LeadStageChange]] = []
    for index, (lead, phones, emails) in enumerate(built):
        # A new lead has no numbers or addresses yet: nothing to replace.
        new_phones.extend(
            (index, Phone(lead_id=lead.id, e164=n, digits_rev=digits_reversed(n))) for n in phones
        )
        new_emails.extend((index, Email(lead_id=lead.id, address=a)) for a in emails)
        changes.append(
            (
                index,
                LeadStageChange(
                    lead_id=lead.id,
                    from_stage=None,
                    to_stage=lead.stage,
                    user_id=actor.id,
                    at=now,
                    reason=lead.junk_reason,
                ),
            )
        )
    if fast:
        await insert_objects(
            session,
            [lead for lead, _, _ in built],
            [
                (Phone, "lead_id", new_phones),
                (Email, "lead_id", new_emails),
                (LeadStageChange, "lead_id", changes),
            ],
        )
    else:
        session.add_all([c for _, c in (*new_phones, *new_emails, *changes)])
        await session.flush()
    events: list[DomainEvent] = [
        LeadCreated(
            lead_id=lead.id,
            origin=lead.origin,
            stage=lead.stage,
            title=lead.title,
            responsible_id=lead.responsible_id,
            actor_id=actor.id,
            audience=lead_audience(lead.responsible_id),
            occurred_at=now,
        )
        for lead, _, _ in built
    ]
    return [lead for lead, _, _ in built], events


async def get_lead(
    session: AsyncSession,
    lead_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
) -> Lead:
    """A lead ``actor`` may read (or change, with ``write``): 404 when there is none or he may
    not read it, 403 when he may only read it."""
    missing = LeadNotFound(f"no lead {lead_id}", details={"lead_id": lead_id})
    lead = await session.get(Lead, lead_id)
    if lead is None:
        raise missing
    access.check(
        actor, lead.responsible_id, rules, write=write, what=f"lead {lead_id}", missing=missing
    )
    return lead


async def update_lead(
    session: AsyncSession,
    lead_id: int,
    patch: LeadPatch,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Lead, list[DomainEvent]]:
    """Change the fields sent. A ``stage`` in the patch moves the lead after the other changes
    are applied, so one request can fill the card and pass the gate. Handing the lead to
    another manager is for the head and admins."""
    now = now or utcnow()
    lead = await get_lead(session, lead_id, actor=actor, rules=rules, write=True)
    sent = patch.model_fields_set
    if "title" in sent and patch.title is None:
        raise InvalidLeadInput("title: cannot be null", details={"field": "title", "value": None})
    if "responsible_id" in sent:
        access.check_handover(actor, lead.responsible_id, patch.responsible_id)
    if "client_type" in sent:
        validate_client_type(patch.client_type, rules)
    await deals.check_references(
        session,
        source_id=patch.source_id if "source_id" in sent else None,
        region_id=patch.region_id if "region_id" in sent else None,
        responsible_id=patch.responsible_id if "responsible_id" in sent else None,
    )
    changed: list[str] = []
    values: dict[str, Any] = {name: getattr(patch, name) for name in _PLAIN if name in sent}
    if "title" in values:
        values["title"] = values["title"].strip()
    for name in ("contact_name", "company_name"):
        if name in sent:
            values[name] = _clean_text(getattr(patch, name))
    if "inn" in sent:
        values["inn"] = _clean_inn(patch.inn)
    for name, value in values.items():
        if getattr(lead, name) != value:
            setattr(lead, name, value)
            changed.append(name)
    if "custom" in sent and patch.custom is not None:
        checked = _clean_custom(patch.custom, rules)
        merged = dict(lead.custom or {})
        for key, value in checked.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if merged != (lead.custom or {}):
            lead.custom = merged or None
            changed.extend(f"custom.{k}" for k in checked)
    phones = emails = None
    if "phones" in sent:
        phones = clients.normalize_phones(patch.phones or [], region=rules.default_region)
    if "emails" in sent:
        emails = clients.normalize_emails(patch.emails or [])
    if phones is not None or emails is not None:
        current_phones, current_emails = (await _contacts_of(session, [lead.id]))[lead.id]
        if phones is not None and phones != current_phones:
            changed.append("phones")
        if emails is not None and emails != current_emails:
            changed.append("emails")
        await _replace_contacts(session, lead.id, phones=phones, emails=emails)
    await session.flush()
    events: list[DomainEvent] = []
    if changed:
        lead.updated_at = now
        events.append(
            LeadUpdated(
                lead_id=lead.id,
                fields=tuple(changed),
                responsible_id=lead.responsible_id,
                actor_id=actor.id,
                audience=lead_audience(lead.responsible_id),
                occurred_at=now,
            )
        )
    if "stage" in sent and patch.stage is not None and patch.stage != lead.stage:
        sdef = _check_move(rules, lead, patch.stage, patch.reason, await _facts(session, lead))
        events.append(_record_move(session, lead, sdef, patch.reason, actor=actor, now=now))
    await session.flush()
    return lead, events


async def move_lead(
    session: AsyncSession,
    lead_id: int,
    stage: str,
    *,
    reason: str | None = None,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Lead, list[DomainEvent]]:
    """Move a lead to ``stage``. Forward, the gate must be met (422
    ``lead-gate-missing-fields`` naming exactly what is missing); back along the funnel no gate
    applies; junk needs a reason from ``crm.junk_reasons``; the converted stage is entered by
    :func:`convert_lead` only. Moving to the current stage changes nothing."""
    now = now or utcnow()
    lead = await get_lead(session, lead_id, actor=actor, rules=rules, write=True)
    if stage == lead.stage:
        _stage(rules, stage)
        return lead, []
    sdef = _check_move(rules, lead, stage, reason, await _facts(session, lead))
    event = _record_move(session, lead, sdef, reason, actor=actor, now=now)
    await session.flush()
    return lead, [event]


async def delete_lead(
    session: AsyncSession, lead_id: int, *, actor: Actor, rules: CrmRules
) -> list[DomainEvent]:
    """Delete a lead that was not converted (a converted one is the history of its client)."""
    lead = await get_lead(session, lead_id, actor=actor, rules=rules, write=True)
    if _is_converted(lead, rules):
        raise LeadAlreadyConverted(
            f"lead {lead.id} is converted and is kept as history",
            details={"lead_id": lead.id, "stage": lead.stage},
        )
    event = LeadDeleted(
        lead_id=lead.id,
        responsible_id=lead.responsible_id,
        actor_id=actor.id,
        audience=lead_audience(lead.responsible_id),
    )
    await session.delete(lead)
    await session.flush()
    return [event]


# ---------------------------------------------------------------- conversion


@dataclass
class Conversion:
    """What a conversion did: the records the lead now links to, which of them it created, and
    the existing clients it was linked to instead of creating duplicates."""

    lead: Lead
    contact: Contact | None
    company: Company | None
    deal: Deal | None
    contact_created: bool = False
    company_created: bool = False
    linked: list[clients.DuplicateRef] = field(default_factory=list)


def _custom_for(lead: Lead, rules: CrmRules, kind: str) -> dict[str, Any]:
    out = {}
    for name, value in (lead.custom or {}).items():
        spec = rules.custom_field(name)
        if spec is not None and kind in spec.applies_to and value is not None:
            out[name] = value
    return out


def _card_of(lead: Lead) -> dict[str, Any]:
    return {name: getattr(lead, name) for name in CARD_FIELDS}


async def _use_existing(
    session: AsyncSession,
    record: Contact | Company,
    kind: clients.ClientType,
    lead: Lead,
    matched: Sequence[clients.DuplicateRef],
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> list[DomainEvent]:
    """Link to an existing client found by de-duplication: fill its empty card fields from the
    lead when ``actor`` may change it, link as it is when he may only read it, refuse when he
    may not even see it (naming no record: only what matched)."""
    if access.can_write(actor, record.responsible_id):
        return await clients.complete_card(
            session,
            kind,
            record.id,
            _card_of(lead),
            custom=_custom_for(lead, rules, kind),
            actor=actor,
            rules=rules,
            now=now,
        )
    if access.can_read(actor, record.responsible_id, rules):
        return []
    raise DuplicateNotAccessible(
        f"the lead's {kind} already exists at another manager; "
        "ask the head of sales to hand it over",
        details={"duplicates": [d.shown_to(actor, rules) for d in matched]},
    )


async def _pick_existing(
    session: AsyncSession,
    kind: clients.ClientType,
    refs: Sequence[clients.DuplicateRef],
    rules: CrmRules,
) -> tuple[Any, list[clients.DuplicateRef]]:
    """The existing client of ``kind`` to link: the INN match first, then the lowest id."""
    mine = [d for d in refs if d.type == kind]
    if not mine:
        return None, []
    mine.sort(key=lambda d: (d.matched_on != "inn", d.id))
    chosen = mine[0].id
    # De-duplication looks at every client; what the actor may do with it is decided after.
    load = clients.get_contact if kind == "contact" else clients.get_company
    record = await load(session, chosen, actor=access.SYSTEM, rules=rules)
    return record, [d for d in mine if d.id == chosen]


async def _chosen(
    session: AsyncSession, kind: str, record_id: int, actor: Actor, rules: CrmRules
) -> Any:
    load = clients.get_contact if kind == "contact" else clients.get_company
    try:
        return await load(session, record_id, actor=actor, rules=rules)
    except NotFound:
        field_name = f"{kind}_id"
        raise InvalidReference(
            f"{field_name}: no {kind} {record_id}",
            details={"field": field_name, "value": record_id},
        ) from None


async def convert_lead(
    session: AsyncSession,
    lead_id: int,
    options: ConvertInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Conversion, list[DomainEvent]]:
    """Convert a lead, in the caller's one transaction: pass the gate of the converted stage,
    find or create the contact and the company (de-duplicated by phone, e-mail and INN; the
    card fields and source carry over), link them, optionally open a deal in a pipeline (source
    and responsible from the lead), record the links on the lead and move it to the converted
    stage."""
    now = now or utcnow()
    lead = await get_lead(session, lead_id, actor=actor, rules=rules, write=True)
    target = converted_stage(rules)
    facts = await _facts(session, lead)
    sdef = _check_move(rules, lead, target.code, None, facts, converting=True)
    events: list[DomainEvent] = []
    pipeline = None
    if options.create_deal:
        # Checked before anything is written, so a wrong pipeline costs nothing.
        pipeline = await get_pipeline(session, options.pipeline)
        await first_stage(session, pipeline, rules)
    contact_given = company_given = None
    if options.contact_id is not None:
        contact_given = await _chosen(session, "contact", options.contact_id, actor, rules)
    if options.company_id is not None:
        company_given = await _chosen(session, "company", options.company_id, actor, rules)
    phones, emails = (await _contacts_of(session, [lead.id]))[lead.id]
    refs = await clients.find_duplicates(
        session, phones=phones, emails=emails, inn=lead.inn, region=rules.default_region
    )
    result = Conversion(lead=lead, contact=contact_given, company=company_given, deal=None)
    card = _card_of(lead)
    card["responsible_id"] = lead.responsible_id

    if result.contact is None:
        existing, matched = await _pick_existing(session, "contact", refs, rules)
        if existing is not None:
            events += await _use_existing(
                session, existing, "contact", lead, matched, actor=actor, rules=rules, now=now
            )
            result.contact, result.linked = existing, result.linked + matched
        elif lead.contact_name:
            contact, contact_events = await clients.create_contact(
                session,
                ContactInput(
                    name=lead.contact_name,
                    phones=phones,
                    emails=emails,
                    custom=_custom_for(lead, rules, "contact"),
                    **card,
                ),
                actor=actor,
                rules=rules,
            )
            result.contact, result.contact_created = contact, True
            events += contact_events

    if result.company is None:
        existing, matched = await _pick_existing(session, "company", refs, rules)
        if existing is not None:
            events += await _use_existing(
                session, existing, "company", lead, matched, actor=actor, rules=rules, now=now
            )
            result.company, result.linked = existing, result.linked + matched
        elif lead.company_name:
            # A person's numbers stay on the person; the company gets them only when the lead
            # is the company itself.
            own = result.contact is None
            company, company_events = await clients.create_company(
                session,
                CompanyInput(
                    name=lead.company_name,
                    phones=phones if own else [],
                    emails=emails if own else [],
                    legal_entities=(
                        [
                            LegalEntityInput(
                                name=lead.company_name,
                                requisites=[
                                    RequisitesInput(full_name=lead.company_name, inn=lead.inn)
                                ],
                            )
                        ]
                        if lead.inn
                        else []
                    ),
                    custom=_custom_for(lead, rules, "company"),
                    **card,
                ),
                actor=actor,
                rules=rules,
            )
            result.company, result.company_created = company, True
            events += company_events

    if result.contact is None and result.company is None:
        raise NothingToConvert(
            f"lead {lead.id} names no contact and no company, and none was chosen or found",
            details={"lead_id": lead.id, "fields": ["contact_name", "company_name"]},
        )
    if result.contact is not None and result.company is not None:
        is_dm = bool(
            lead.decision_maker_reached
            and lead.decision_maker_name
            and fold_name(lead.decision_maker_name) == fold_name(result.contact.name)
        )
        await clients.link_contact_company(
            session,
            result.contact.id,
            result.company.id,
            actor=actor,
            rules=rules,
            is_decision_maker=is_dm,
        )

    if pipeline is not None:
        legal_entity_id = None
        if result.company is not None and lead.inn:
            legal_entity_id = await session.scalar(
                select(LegalEntity.id)
                .join(Requisites, Requisites.legal_entity_id == LegalEntity.id)
                .where(
                    LegalEntity.company_id == result.company.id,
                    Requisites.inn == lead.inn,
                    Requisites.retired_at.is_(None),
                )
                .order_by(LegalEntity.id)
                .limit(1)
            )
        title = (
            options.deal_title
            or lead.title
            or lead.company_name
            or lead.contact_name
            or f"Lead {lead.id}"
        )
        deal, deal_events = await deals.create_deal(
            session,
            DealInput(
                title=title[:300],
                pipeline=pipeline.code,
                amount=options.deal_amount,
                margin=options.deal_margin,
                products=lead.needs_products,
                responsible_id=lead.responsible_id,
                source_id=lead.source_id,
                company_id=result.company.id if result.company else None,
                contact_id=result.contact.id if result.contact else None,
                legal_entity_id=legal_entity_id,
            ),
            actor=actor,
            rules=rules,
            now=now,
        )
        result.deal = deal
        events += deal_events

    lead.contact_id = result.contact.id if result.contact else None
    lead.company_id = result.company.id if result.company else None
    lead.deal_id = result.deal.id if result.deal else None
    lead.converted_at = now
    events.append(_record_move(session, lead, sdef, None, actor=actor, now=now))
    events.append(
        LeadConverted(
            lead_id=lead.id,
            contact_id=lead.contact_id,
            company_id=lead.company_id,
            deal_id=lead.deal_id,
            contact_created=result.contact_created,
            company_created=result.company_created,
            responsible_id=lead.responsible_id,
            actor_id=actor.id,
            audience=lead_audience(lead.responsible_id),
            occurred_at=now,
        )
    )
    await session.flush()
    return result, events


# ---------------------------------------------------------------- listing, views, history


@dataclass(frozen=True)
class LeadFilter:
    """Filters of a lead listing; None means "any"."""

    stage: str | None = None
    origin: str | None = None
    source_id: int | None = None
    region_id: int | None = None
    responsible_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    q: str | None = None  # a name, a phone in any format or its last digits, an e-mail, an INN
    client_type: str | None = None
    purchase_mode: str | None = None  # the potential: one_off or regular


def _search(q: str, region: str) -> Any:
    """What ``q`` matches: the name, else (digits, an e-mail) any of the name, a phone, an
    e-mail or the INN, as one ``id IN (... UNION ...)`` (:func:`crm_core.db.matching`)."""
    text = q.strip()
    folded = fold_name(text)
    by_name = contains(Lead.name_search, folded) if folded else None
    ids: list[Any] = []
    if "@" in text:
        ids.append(select(Email.lead_id).where(Email.address == text.lower()))
    digits = digits_of(text)
    if digits and not text.strip("+()- .0123456789"):
        phone: list[Any] = []
        e164 = try_normalize_phone(text, region) if len(digits) >= 7 else None
        if e164 is not None:
            phone.append(Phone.e164 == e164)
        if len(digits) >= 4:
            phone.append(clients.digits_rev_prefix(digits[-10:]))
        if phone:
            ids.append(select(Phone.lead_id).where(Phone.lead_id.is_not(None), or_(*phone)))
        if len(digits) in (10, 12) and digits == text:
            ids.append(select(Lead.id).where(Lead.inn == text))
    return matching(Lead.id, by_name, ids)


LEAD_SORTS = {
    "created_at": Lead.created_at,
    "title": Lead.title,
    "stage": Lead.stage,
    "stage_changed_at": Lead.stage_changed_at,
    "potential": Lead.potential_amount,
}


async def list_leads(
    session: AsyncSession,
    flt: LeadFilter,
    *,
    actor: Actor,
    rules: CrmRules,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    count_cap: int | None = None,
) -> tuple[list[Lead], int]:
    """Leads ``actor`` may read matching ``flt``, newest first (or by ``sort``: a key of
    :data:`LEAD_SORTS`), with the total count (at most ``count_cap + 1``)."""
    stmt = access.scope(select(Lead), Lead.responsible_id, actor, rules)
    for name in (
        "stage",
        "origin",
        "source_id",
        "region_id",
        "responsible_id",
        "client_type",
        "purchase_mode",
    ):
        value = getattr(flt, name)
        if value is not None:
            stmt = stmt.where(getattr(Lead, name) == value)
    if flt.created_from is not None:
        stmt = stmt.where(Lead.created_at >= flt.created_from)
    if flt.created_to is not None:
        stmt = stmt.where(Lead.created_at < flt.created_to)
    if flt.q and flt.q.strip():
        stmt = stmt.where(_search(flt.q, rules.default_region))
    total = await listing.total(session, stmt, count_cap)
    stmt = listing.order(stmt, LEAD_SORTS, sort, (Lead.created_at.desc(), Lead.id.desc()), Lead.id)
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), total


async def describe(
    session: AsyncSession,
    leads: Sequence[Lead],
    rules: CrmRules,
    *,
    actor: Actor,
    with_duplicates: bool = False,
) -> list[LeadOut]:
    """The API view of leads ``actor`` has loaded: phones, e-mails, what each later stage
    still needs and (for a single lead) the clients that already have its phones, e-mails or
    INN (without the ids of those ``actor`` may not read)."""
    contacts = await _contacts_of(session, (lead.id for lead in leads))
    out = []
    for lead in leads:
        phones, emails = contacts[lead.id]
        facts = gate.LeadFacts.of(lead, phones=len(phones), emails=len(emails))
        gates = {} if _is_converted(lead, rules) else gate.open_gates(facts, rules, lead.stage)
        duplicates = None
        if with_duplicates:
            refs = await clients.find_duplicates(
                session, phones=phones, emails=emails, inn=lead.inn, region=rules.default_region
            )
            duplicates = [DuplicateOut(**r.shown_to(actor, rules)) for r in refs]
        out.append(
            LeadOut.of(lead, phones=phones, emails=emails, gate=gates, duplicates=duplicates)
        )
    return out


async def lead_history(
    session: AsyncSession, lead_id: int, *, actor: Actor, rules: CrmRules
) -> list[LeadStageChange]:
    """The lead's stage changes, oldest first (the first row is its creation)."""
    await get_lead(session, lead_id, actor=actor, rules=rules)
    return list(
        await session.scalars(
            select(LeadStageChange)
            .where(LeadStageChange.lead_id == lead_id)
            .order_by(LeadStageChange.at, LeadStageChange.id)
        )
    )
