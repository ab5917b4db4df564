"""Access is checked by default: every service function that reads or writes a client
(contact, company, legal entity, requisites, link), a lead or a deal takes an actor and refuses
another manager's records.

The table below names each such function with a call on Ivan's records made by Anna: with the
default rules she may not read them (404, or the 422 of an unusable reference); with
``crm.managers_read_all`` she may read them, not change them (403). A public function that
takes an actor and is missing from the table fails :func:`test_the_table_names_every_function`,
so the table cannot silently go stale.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import SYSTEM
from crm_core.audit.model import AuditEntry
from crm_core.clients import (
    companies,
    contacts,
    legal,
    links,
    lookup,
    merge,
    records,
    search,
)
from crm_core.clients.errors import DuplicateClient, InvalidReference
from crm_core.clients.events import ClientCreated
from crm_core.clients.model import Company, Contact, ContactCompany, LegalEntity, Phone, Requisites
from crm_core.clients.schemas import (
    CompanyInput,
    CompanyLinkInput,
    CompanyPatch,
    ContactInput,
    ContactPatch,
    LegalEntityInput,
    LegalEntityPatch,
    RequisitesInput,
)
from crm_core.deals import service as deals
from crm_core.deals.schemas import DealInput, DealPatch
from crm_core.errors import NotFound, PermissionDenied
from crm_core.leads import service as leads
from crm_core.leads.schemas import ConvertInput, LeadInput, LeadPatch
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules
from tests.crm_core.deals.world import INN, T0, Team, make_team

OWN_ONLY = CrmRules()
READ_ALL = CrmRules(managers_read_all=True)
PHONE = "+74951234567"
SBER = RequisitesInput(full_name="ПАО Сбербанк", inn=INN)

# Every module whose public functions read or write clients, leads or deals.
MODULES = [
    companies,
    contacts,
    legal,
    links,
    lookup,
    merge,
    records,
    search,
    leads,
    deals,
    importlib.import_module("crm_core.clients.cards"),
    importlib.import_module("crm_core.clients.checks"),
    importlib.import_module("crm_core.clients.duplicates"),
]

# Public coroutines of those modules that take no actor, and why that is right.
WITHOUT_ACTOR = {
    "crm_core.clients.cards.contact_cards": "renders contacts loaded by a checked use case",
    "crm_core.clients.cards.company_cards": "renders companies loaded by a checked use case",
    "crm_core.clients.checks.check_card": "validates an input's regions, sources and users",
    "crm_core.clients.duplicates.find_duplicates": "de-duplication sees every client; "
    "a person sees them through DuplicateRef.shown_to",
    "crm_core.clients.duplicates.duplicates_of": "the same, for one kind of card",
    "crm_core.clients.companies.group_company_ids": "ids for a query its caller scopes",
    "crm_core.clients.companies.top_head_id": "an id for a use case that checked access",
    "crm_core.clients.legal.add_entity_rows": "rows of a card its caller is writing",
    "crm_core.clients.records.refuse_with_history": "a check inside delete use cases",
    "crm_core.deals.service.check_references": "validates sources, regions and users",
    "crm_core.deals.service.active_references": "which sources, regions and users are active",
    "crm_core.deals.service.describe": "renders deals loaded by a checked use case",
    "crm_core.deals.service.stage_durations": "funnel statistics for the reports",
}


@dataclass
class World:
    """Ivan's records (contact C with company K, legal entity, requisites, a lead, a deal, a
    second contact and company to merge) and some of Anna's own."""

    team: Team
    actor: Any  # who makes the calls of the table: Anna, or the head to check a call works
    contact: int
    contact2: int
    company: int
    company2: int
    entity: int
    requisites: int
    lead: int
    deal: int
    annas_contact: int
    annas_company: int
    annas_lead: int


async def build_world(session: AsyncSession) -> World:
    team = await make_team(session)
    ivan, anna = team.ivan.id, team.anna.id
    contact = Contact(name="Сергей", responsible_id=ivan)
    contact2 = Contact(name="Сергей (дубль)", responsible_id=ivan)
    company = Company(name="Ромашка", responsible_id=ivan)
    company2 = Company(name="Ромашка (дубль)", responsible_id=ivan)
    annas_contact = Contact(name="Мария", responsible_id=anna)
    annas_company = Company(name="Балтика", responsible_id=anna)
    session.add_all([contact, contact2, company, company2, annas_contact, annas_company])
    await session.flush()
    entity = LegalEntity(company_id=company.id, name="ООО Ромашка")
    session.add(entity)
    await session.flush()
    requisites = Requisites(legal_entity_id=entity.id, full_name="ООО Ромашка", inn=INN)
    session.add_all(
        [
            requisites,
            Phone(contact_id=contact.id, e164=PHONE, digits_rev=digits_reversed(PHONE)),
            ContactCompany(contact_id=contact.id, company_id=company.id),
        ]
    )
    await session.flush()
    lead, _ = await leads.create_lead(
        session, LeadInput(contact_name="Лид"), actor=team.ivan, rules=OWN_ONLY, now=T0
    )
    annas_lead, _ = await leads.create_lead(
        session, LeadInput(contact_name="Её лид", phones=[PHONE]), actor=team.anna, rules=OWN_ONLY
    )
    deal, _ = await deals.create_deal(
        session,
        DealInput(title="Поставка", company_id=company.id, contact_id=contact.id),
        actor=team.ivan,
        rules=OWN_ONLY,
        now=T0,
    )
    await session.commit()
    return World(
        team,
        team.anna,
        contact.id,
        contact2.id,
        company.id,
        company2.id,
        entity.id,
        requisites.id,
        lead.id,
        deal.id,
        annas_contact.id,
        annas_company.id,
        annas_lead.id,
    )


Call = Callable[[AsyncSession, World, CrmRules], Awaitable[Any]]
# What Anna gets: an error class, or a check of the result (a record hidden or shown).
Expect = type[Exception] | Callable[[Any, World], bool]


def allowed(result: Any, w: World) -> bool:
    return True


@dataclass(frozen=True)
class Case:
    function: Callable[..., Any]
    call: Call
    own_only: Expect  # crm.managers_read_all off: Ivan's records are not Anna's to see
    read_all: Expect  # on: she may read them, not change them

    @property
    def name(self) -> str:
        return f"{self.function.__module__}.{self.function.__name__}"


def _a(w: World, rules: CrmRules) -> dict[str, Any]:
    return {"actor": w.actor, "rules": rules}


def ids_of(result: Any) -> set[int]:
    rows, _ = result
    return {r.id for r in rows}


TABLE = [
    # ------------------------------------------------------------ contacts
    Case(
        records.get_contact,
        lambda s, w, r: records.get_contact(s, w.contact, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        contacts.create_contact,
        lambda s, w, r: contacts.create_contact(
            s,
            ContactInput(name="X", companies=[CompanyLinkInput(company_id=w.company)]),
            **_a(w, r),
        ),
        InvalidReference,  # her contact may not link his company: "no company"
        allowed,
    ),
    Case(
        contacts.save_contact,
        lambda s, w, r: contacts.save_contact(
            s, ContactInput(name="X", phones=[PHONE]), on_duplicate="merge", **_a(w, r)
        ),
        PermissionDenied,  # his contact has the number: she may not merge into it
        PermissionDenied,
    ),
    Case(
        contacts.update_contact,
        lambda s, w, r: contacts.update_contact(s, w.contact, ContactPatch(name="X"), **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        contacts.delete_contact,
        lambda s, w, r: contacts.delete_contact(s, w.contact, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        merge.merge_contacts,
        lambda s, w, r: merge.merge_contacts(s, w.contact2, w.contact, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        records.complete_card,
        lambda s, w, r: records.complete_card(
            s, "contact", w.contact, {"comment": "x"}, **_a(w, r)
        ),
        NotFound,
        PermissionDenied,
    ),
    # ------------------------------------------------------------ companies
    Case(
        records.get_company,
        lambda s, w, r: records.get_company(s, w.company, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        companies.create_company,
        lambda s, w, r: companies.create_company(
            s, CompanyInput(name="X", head_id=w.company), **_a(w, r)
        ),
        InvalidReference,  # his company as her head organisation: "no company"
        allowed,
    ),
    Case(
        companies.save_company,
        lambda s, w, r: companies.save_company(
            s,
            CompanyInput(name="X", legal_entities=[LegalEntityInput(name="X", requisites=[SBER])]),
            on_duplicate="merge",
            **_a(w, r),
        ),
        PermissionDenied,  # his company has the INN: she may not merge into it
        PermissionDenied,
    ),
    Case(
        companies.update_company,
        lambda s, w, r: companies.update_company(s, w.company, CompanyPatch(name="X"), **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        companies.delete_company,
        lambda s, w, r: companies.delete_company(s, w.company, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        companies.company_group,
        lambda s, w, r: companies.company_group(s, w.company, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        merge.merge_companies,
        lambda s, w, r: merge.merge_companies(s, w.company2, w.company, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    # ------------------------------------------------------------ links
    Case(
        links.link_contact_company,
        lambda s, w, r: links.link_contact_company(s, w.contact, w.company2, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        links.add_link,
        lambda s, w, r: links.add_link(s, w.contact, w.company2, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        links.get_link,
        lambda s, w, r: links.get_link(s, w.contact, w.company, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        links.update_link,
        lambda s, w, r: links.update_link(
            s, w.contact, w.company, is_decision_maker=True, **_a(w, r)
        ),
        NotFound,
        PermissionDenied,
    ),
    Case(
        links.unlink_contact_company,
        lambda s, w, r: links.unlink_contact_company(s, w.contact, w.company, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    # ------------------------------------------------------------ legal entities, requisites
    Case(
        legal.get_legal_entity,
        lambda s, w, r: legal.get_legal_entity(s, w.entity, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        legal.add_legal_entity,
        lambda s, w, r: legal.add_legal_entity(
            s, w.company, LegalEntityInput(name="X"), **_a(w, r)
        ),
        NotFound,
        PermissionDenied,
    ),
    Case(
        legal.update_legal_entity,
        lambda s, w, r: legal.update_legal_entity(
            s, w.entity, LegalEntityPatch(name="X"), **_a(w, r)
        ),
        NotFound,
        PermissionDenied,
    ),
    Case(
        legal.get_requisites,
        lambda s, w, r: legal.get_requisites(s, w.requisites, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        legal.requisites_history,
        lambda s, w, r: legal.requisites_history(s, w.entity, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        legal.add_requisites,
        lambda s, w, r: legal.add_requisites(
            s, w.entity, RequisitesInput(full_name="X"), **_a(w, r)
        ),
        NotFound,
        PermissionDenied,
    ),
    Case(
        legal.change_requisites,
        lambda s, w, r: legal.change_requisites(s, w.requisites, SBER, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        legal.retire_requisites,
        lambda s, w, r: legal.retire_requisites(s, w.requisites, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    # ------------------------------------------------------------ listings and the lookup
    Case(
        search.list_contacts,
        lambda s, w, r: search.list_contacts(s, search.ClientFilter(), **_a(w, r)),
        lambda result, w: w.contact not in ids_of(result),
        lambda result, w: w.contact in ids_of(result),
    ),
    Case(
        search.list_companies,
        lambda s, w, r: search.list_companies(s, search.ClientFilter(), **_a(w, r)),
        lambda result, w: w.company not in ids_of(result),
        lambda result, w: w.company in ids_of(result),
    ),
    Case(
        lookup.find_client_by_phone,
        lambda s, w, r: lookup.find_client_by_phone(s, PHONE, **_a(w, r)),
        # His contact has the number; for her it is her own lead's.
        lambda match, w: match is not None and match.contact_id is None,
        lambda match, w: match is not None and match.contact_id == w.contact,
    ),
    Case(
        lookup.find_clients_by_phones,
        lambda s, w, r: lookup.find_clients_by_phones(s, [PHONE], **_a(w, r)),
        # As one number alone: his contact is not hers to find; her own lead is.
        lambda found, w: PHONE in found and found[PHONE].contact_id is None,
        lambda found, w: PHONE in found and found[PHONE].contact_id == w.contact,
    ),
    # ------------------------------------------------------------ leads
    Case(
        leads.create_leads,
        lambda s, w, r: leads.create_leads(
            s, [LeadInput(contact_name="Б"), LeadInput(responsible_id=w.team.ivan.id)], **_a(w, r)
        ),
        PermissionDenied,  # the batch is refused whole: one lead of his, made by her
        PermissionDenied,
    ),
    Case(
        leads.get_lead,
        lambda s, w, r: leads.get_lead(s, w.lead, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        leads.create_lead,
        lambda s, w, r: leads.create_lead(s, LeadInput(responsible_id=w.team.ivan.id), **_a(w, r)),
        PermissionDenied,  # a lead of his, made by her
        PermissionDenied,
    ),
    Case(
        leads.update_lead,
        lambda s, w, r: leads.update_lead(s, w.lead, LeadPatch(title="X"), **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        leads.move_lead,
        lambda s, w, r: leads.move_lead(s, w.lead, "junk", reason="spam", **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        leads.delete_lead,
        lambda s, w, r: leads.delete_lead(s, w.lead, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        leads.convert_lead,
        lambda s, w, r: leads.convert_lead(s, w.lead, ConvertInput(), **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        leads.lead_history,
        lambda s, w, r: leads.lead_history(s, w.lead, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        leads.list_leads,
        lambda s, w, r: leads.list_leads(s, leads.LeadFilter(), **_a(w, r)),
        lambda result, w: w.lead not in ids_of(result),
        lambda result, w: w.lead in ids_of(result),
    ),
    Case(
        leads.describe,
        lambda s, w, r: _describe_annas_lead(s, w, r),
        # Her lead has his contact's number: the match is shown without its id...
        lambda out, w: [(d.type, d.id) for d in out.duplicates] == [("contact", None)],
        # ... unless she may read it.
        lambda out, w: [(d.type, d.id) for d in out.duplicates] == [("contact", w.contact)],
    ),
    # ------------------------------------------------------------ deals
    Case(
        deals.get_deal,
        lambda s, w, r: deals.get_deal(s, w.deal, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        deals.create_deal,
        lambda s, w, r: deals.create_deal(
            s, DealInput(title="X", company_id=w.company), now=T0, **_a(w, r)
        ),
        InvalidReference,  # his company on her deal: "no company"
        allowed,
    ),
    Case(
        deals.update_deal,
        lambda s, w, r: deals.update_deal(s, w.deal, DealPatch(title="X"), **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        deals.move_deal,
        lambda s, w, r: deals.move_deal(s, w.deal, "won", **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        deals.delete_deal,
        lambda s, w, r: deals.delete_deal(s, w.deal, **_a(w, r)),
        NotFound,
        PermissionDenied,
    ),
    Case(
        deals.deal_history,
        lambda s, w, r: deals.deal_history(s, w.deal, **_a(w, r)),
        NotFound,
        allowed,
    ),
    Case(
        deals.list_deals,
        lambda s, w, r: deals.list_deals(s, deals.DealFilter(), **_a(w, r)),
        lambda result, w: w.deal not in ids_of(result),
        lambda result, w: w.deal in ids_of(result),
    ),
]


async def _describe_annas_lead(session: AsyncSession, w: World, rules: CrmRules) -> Any:
    lead = await leads.get_lead(session, w.annas_lead, actor=w.team.anna, rules=rules)
    [out] = await leads.describe(session, [lead], rules, actor=w.actor, with_duplicates=True)
    return out


def public_coroutines() -> dict[str, Callable[..., Any]]:
    """Every public coroutine function defined in :data:`MODULES`, by dotted name."""
    found: dict[str, Callable[..., Any]] = {}
    for module in MODULES:
        for name, obj in vars(module).items():
            if (
                not name.startswith("_")
                and inspect.iscoroutinefunction(obj)
                and obj.__module__ == module.__name__
            ):
                found[f"{module.__name__}.{name}"] = obj
    return found


def test_the_table_names_every_function() -> None:
    functions = public_coroutines()
    with_actor = {n for n, f in functions.items() if "actor" in inspect.signature(f).parameters}
    tabled = [case.name for case in TABLE]
    assert len(tabled) == len(set(tabled)), "a function is in the table twice"
    assert sorted(with_actor - set(tabled)) == [], "public functions taking an actor, untested"
    assert sorted(set(tabled) - with_actor) == [], "tabled functions that take no actor"
    without = set(functions) - with_actor
    assert sorted(without - set(WITHOUT_ACTOR)) == [], "public functions taking no actor"
    assert sorted(set(WITHOUT_ACTOR) - without) == [], "stale entries of WITHOUT_ACTOR"


def test_no_service_function_lets_the_actor_be_none() -> None:
    """Everywhere in crm_core: "nobody" is not an actor (the server is SYSTEM)."""
    import crm_core

    offenders = []
    for info in pkgutil.walk_packages(crm_core.__path__, "crm_core."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, function in vars(module).items():
            if not inspect.isfunction(function) or function.__module__ != module.__name__:
                continue
            parameter = inspect.signature(function).parameters.get("actor")
            if parameter is None:
                continue
            if parameter.default is not inspect.Parameter.empty or "None" in str(
                parameter.annotation
            ):
                offenders.append(f"{info.name}.{name}")
    assert offenders == []


async def _check(
    call: Call, expect: Expect | None, session: AsyncSession, w: World, rules: CrmRules
) -> None:
    """Make the call and compare what happened with ``expect`` (None: anything but a
    refusal), then roll back."""
    try:
        try:
            outcome: Any = await call(session, w, rules)
        except Exception as exc:
            outcome = exc
        if expect is None:
            refused = isinstance(outcome, NotFound | PermissionDenied)
            assert not refused, f"{w.actor.login} refused: {outcome!r}"
        elif isinstance(expect, type):
            assert isinstance(outcome, expect), f"expected {expect.__name__}, got {outcome!r}"
        else:
            assert not isinstance(outcome, Exception), f"refused: {outcome!r}"
            assert expect(outcome, w), f"unexpected: {outcome!r}"
    finally:
        await session.rollback()


@pytest.mark.parametrize("case", TABLE, ids=lambda case: case.name.removeprefix("crm_core."))
async def test_another_managers_records_are_refused(session: AsyncSession, case: Case) -> None:
    w = await build_world(session)
    await _check(case.call, case.own_only, session, w, OWN_ONLY)
    await _check(case.call, case.read_all, session, w, READ_ALL)
    # The head is not refused: the table's calls are refusals of Anna, not broken calls.
    await _check(case.call, None, session, World(**{**vars(w), "actor": w.team.head}), OWN_ONLY)


# ---------------------------------------------------------------- the system actor


async def test_the_system_may_do_everything_and_is_nobody(session: AsyncSession) -> None:
    w = await build_world(session)
    assert access.is_privileged(SYSTEM) and SYSTEM.id is None
    contact, events = await contacts.create_contact(
        session, ContactInput(name="С сайта", phones=["+74990000000"]), actor=SYSTEM, rules=OWN_ONLY
    )
    assert contact.created_by_id is None and contact.responsible_id is None
    assert isinstance(events[0], ClientCreated)
    assert events[0].actor_id is None
    assert (await records.get_contact(session, w.contact, actor=SYSTEM, rules=OWN_ONLY)).id
    await merge.merge_contacts(session, w.contact, w.contact2, actor=SYSTEM, rules=OWN_ONLY)
    audit = await session.scalar(select(AuditEntry).where(AuditEntry.action == "contact.merge"))
    assert audit is not None and audit.user_id is None
    lead, _ = await leads.create_lead(
        session, LeadInput(responsible_id=w.team.anna.id), actor=SYSTEM, rules=OWN_ONLY
    )
    assert lead.created_by_id is None and lead.responsible_id == w.team.anna.id
    match = await lookup.find_client_by_phone(session, PHONE, actor=SYSTEM, rules=OWN_ONLY)
    assert match is not None and match.contact_id == w.contact
    with pytest.raises(DuplicateClient) as refused:
        await contacts.create_contact(
            session, ContactInput(name="X", phones=[PHONE]), actor=SYSTEM, rules=OWN_ONLY
        )
    assert refused.value.details["duplicates"][0]["id"] == w.contact
