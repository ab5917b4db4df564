"""Converting a lead on both databases: what it creates, what it finds instead of creating a
duplicate, the gate of the converted stage, and that a failure leaves nothing behind."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact, ContactCompany, LegalEntity, Phone
from crm_core.clients.schemas import (
    CompanyInput,
    ContactInput,
    LegalEntityInput,
    RequisitesInput,
)
from crm_core.deals.errors import UnknownPipeline
from crm_core.deals.model import Deal, DealStageChange, Pipeline, PipelineStage
from crm_core.leads import service as leads
from crm_core.leads.errors import (
    DuplicateNotAccessible,
    LeadAlreadyConverted,
    LeadGateMissingFields,
    NothingToConvert,
)
from crm_core.leads.model import Lead, LeadStageChange
from crm_core.leads.schemas import ConvertInput, LeadInput
from crm_core.rules import CrmRules, CustomFieldDef
from crm_core.validation import InvalidInn
from tests.crm_core.deals.world import INN, T0, Team, full_card


async def qualified_lead(session: AsyncSession, team: Team, rules: CrmRules, **over: Any) -> int:
    lead, _ = await leads.create_lead(
        session,
        LeadInput(**full_card(team, **over), stage="qualified"),
        actor=team.ivan,
        rules=rules,
        now=T0,
    )
    await session.commit()
    return lead.id


async def count(session: AsyncSession, model: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_conversion_creates_contact_company_and_deal(
    session: AsyncSession, team: Team
) -> None:
    rules = CrmRules(
        custom_fields=(
            CustomFieldDef("segment", "enum", options=("A", "B")),
            CustomFieldDef("founded", "date", applies_to=("lead", "company")),
        )
    )
    lid = await qualified_lead(
        session,
        team,
        rules,
        inn=INN,
        emails=["petr@romashka.ru"],
        needs_products="Салфетки",
        decision_maker_name="Пётр Петров",
        custom={"segment": "A", "founded": "2001-02-03"},
    )
    result, events = await leads.convert_lead(
        session,
        lid,
        ConvertInput(create_deal=True, deal_amount=Decimal("99000.50")),
        actor=team.ivan,
        rules=rules,
        now=T0,
    )
    await session.commit()
    contact, company, deal, lead = result.contact, result.company, result.deal, result.lead
    assert contact is not None and company is not None and deal is not None
    assert result.contact_created and result.company_created and result.linked == []
    # The card carries over.
    for record in (contact, company):
        assert record.source_id == team.expo and record.region_id == team.moscow
        assert record.client_type == "wholesaler" and record.responsible_id == team.ivan.id
        assert record.potential_amount == Decimal("150000.00")
    assert contact.name == "Пётр Петров" and contact.custom == {"segment": "A"}
    assert company.custom == {"segment": "A", "founded": "2001-02-03"}
    phones = set(await session.scalars(select(Phone.e164).where(Phone.contact_id == contact.id)))
    assert phones == {"+74951234567"}
    # The person's number stays on the person, not on the company.
    assert await session.scalar(select(func.count()).where(Phone.company_id == company.id)) == 0
    link = await session.scalar(select(ContactCompany))
    assert link is not None and (link.contact_id, link.company_id) == (contact.id, company.id)
    assert link.is_decision_maker  # the lead named him as the decision maker it reached
    entity = await session.scalar(select(LegalEntity).where(LegalEntity.company_id == company.id))
    assert entity is not None and deal.legal_entity_id == entity.id
    assert await clients.find_duplicates(session, inn=INN) != []
    # The deal: default pipeline, first stage, source and responsible from the lead.
    stage = await session.get(PipelineStage, deal.stage_id)
    pipeline = await session.get(Pipeline, deal.pipeline_id)
    assert stage is not None and pipeline is not None
    assert (pipeline.code, stage.code) == ("sales", "contact")
    assert deal.source_id == team.expo and deal.responsible_id == team.ivan.id
    assert deal.amount == Decimal("99000.50") and deal.products == "Салфетки"
    assert deal.title == "ООО Ромашка"
    assert (deal.company_id, deal.contact_id) == (company.id, contact.id)
    # The lead keeps its links and sits in the converted stage.
    assert (lead.contact_id, lead.company_id, lead.deal_id) == (contact.id, company.id, deal.id)
    assert lead.converted_at == T0 and lead.stage == "converted"
    history = await leads.lead_history(session, lid, actor=team.ivan, rules=rules)
    assert [h.to_stage for h in history] == ["qualified", "converted"]
    assert [e.name for e in events] == [
        "client.created",
        "client.created",
        "deal.created",
        "lead.stage_changed",
        "lead.converted",
    ]


async def test_conversion_links_existing_clients_instead_of_duplicating(
    session: AsyncSession, team: Team
) -> None:
    rules = CrmRules(managers_read_all=True)
    existing_contact, _ = await clients.create_contact(
        session,
        ContactInput(name="Петров П.", phones=["+7 495 1234567"]),
        actor=team.ivan,
        rules=rules,
    )
    existing_company, _ = await clients.create_company(
        session,
        CompanyInput(
            name="Ромашка (группа)",
            legal_entities=[
                LegalEntityInput(
                    name="ООО Ромашка", requisites=[RequisitesInput(full_name="ООО", inn=INN)]
                )
            ],
        ),
        actor=team.head,
        rules=rules,
    )
    await session.commit()
    contact_id, company_id = existing_contact.id, existing_company.id
    # The same number written another way, the same INN.
    lid = await qualified_lead(session, team, rules, phones=["8 (495) 123-45-67"], inn=INN)
    result, events = await leads.convert_lead(
        session, lid, ConvertInput(create_deal=True), actor=team.ivan, rules=rules
    )
    await session.commit()
    assert not result.contact_created and not result.company_created
    assert result.contact is not None and result.contact.id == contact_id
    assert result.company is not None and result.company.id == company_id
    assert {(d.type, d.matched_on) for d in result.linked} == {
        ("contact", "phone"),
        ("company", "inn"),
    }
    assert await count(session, Contact) == 1 and await count(session, Company) == 1
    # Ivan's contact gains the lead's card where it was empty; the head's company (Ivan may
    # read it, not change it) is linked as it is.
    assert result.contact.client_type == "wholesaler" and result.contact.source_id == team.expo
    assert result.contact.responsible_id == team.ivan.id
    assert result.company.client_type is None and result.company.responsible_id == team.head.id
    assert result.lead.contact_id == contact_id and result.lead.company_id == company_id
    assert result.deal is not None and result.deal.company_id == company_id
    assert "client.updated" in [e.name for e in events]
    assert "client.created" not in [e.name for e in events]


async def test_a_duplicate_of_another_manager_is_not_taken_over(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    await clients.create_contact(
        session, ContactInput(name="Анин", phones=["+74951234567"]), actor=team.anna, rules=rules
    )
    await session.commit()
    lid = await qualified_lead(session, team, rules)
    with pytest.raises(DuplicateNotAccessible) as info:
        await leads.convert_lead(session, lid, ConvertInput(), actor=team.ivan, rules=rules)
    assert info.value.details["duplicates"][0]["matched_on"] == "phone"
    await session.rollback()
    # The head converts it: linked to Anna's contact.
    result, _ = await leads.convert_lead(session, lid, ConvertInput(), actor=team.head, rules=rules)
    assert result.contact is not None and result.contact.responsible_id == team.anna.id


async def test_conversion_passes_the_gate_of_the_converted_stage(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lead, _ = await leads.create_lead(
        session,
        LeadInput(contact_name="Пётр", phones=["+74951234567"]),
        actor=team.ivan,
        rules=rules,
    )
    await session.commit()
    lid = lead.id
    with pytest.raises(LeadGateMissingFields) as info:
        await leads.convert_lead(session, lid, ConvertInput(), actor=team.ivan, rules=rules)
    assert info.value.details == {
        "stage": "converted",
        "missing": ["source", "client_type", "potential", "region", "decision_maker"],
    }
    await session.rollback()
    assert await count(session, Contact) == 0


async def test_a_converted_lead_is_final(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await qualified_lead(session, team, rules)
    await leads.convert_lead(session, lid, ConvertInput(), actor=team.ivan, rules=rules)
    await session.commit()
    for attempt in (
        leads.convert_lead(session, lid, ConvertInput(), actor=team.ivan, rules=rules),
        leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules),
        leads.delete_lead(session, lid, actor=team.ivan, rules=rules),
    ):
        with pytest.raises(LeadAlreadyConverted):
            await attempt


async def test_conversion_links_chosen_records(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    company, _ = await clients.create_company(
        session, CompanyInput(name="Выбранная"), actor=team.ivan, rules=rules
    )
    await session.commit()
    company_id = company.id
    lid = await qualified_lead(session, team, rules, company_name=None)
    result, _ = await leads.convert_lead(
        session, lid, ConvertInput(company_id=company_id), actor=team.ivan, rules=rules
    )
    assert result.company is not None and result.company.id == company_id
    assert result.contact_created and not result.company_created
    assert await count(session, Company) == 1


async def test_a_lead_with_no_client_cannot_convert(session: AsyncSession, team: Team) -> None:
    rules = CrmRules(lead_gate={})
    lead, _ = await leads.create_lead(session, LeadInput(), actor=team.ivan, rules=rules)
    with pytest.raises(NothingToConvert):
        await leads.convert_lead(session, lead.id, ConvertInput(), actor=team.ivan, rules=rules)


async def test_a_failure_half_way_leaves_nothing_behind(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await qualified_lead(session, team, rules)
    # An INN that bypassed validation (an old import): the company step fails after the
    # contact was already written.
    await session.execute(update(Lead).where(Lead.id == lid).values(inn="7707083894"))
    await session.commit()
    with pytest.raises(InvalidInn):
        await leads.convert_lead(
            session, lid, ConvertInput(create_deal=True), actor=team.ivan, rules=rules
        )
    await session.rollback()
    for model in (Contact, Company, Deal, DealStageChange, ContactCompany):
        assert await count(session, model) == 0, model
    lead = await session.get(Lead, lid)
    assert lead is not None and lead.stage == "qualified" and lead.contact_id is None
    assert await count(session, LeadStageChange) == 1
    # A wrong pipeline is refused before anything is written.
    await session.execute(update(Lead).where(Lead.id == lid).values(inn=None))
    await session.commit()
    with pytest.raises(UnknownPipeline):
        await leads.convert_lead(
            session,
            lid,
            ConvertInput(create_deal=True, pipeline="nope"),
            actor=team.ivan,
            rules=rules,
        )
    assert await count(session, Contact) == 0
