"""The lead funnel on both databases: creation, the gate on every path, moving back, junk,
history, search and who may see what."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import SYSTEM
from crm_core.clients.model import Phone
from crm_core.errors import PermissionDenied
from crm_core.leads import service as leads
from crm_core.leads.errors import (
    ConversionRequired,
    JunkReasonRequired,
    LeadGateMissingFields,
    LeadNotFound,
    UnknownLeadStage,
)
from crm_core.leads.events import LeadStageChanged
from crm_core.leads.model import Lead, LeadStageChange
from crm_core.leads.schemas import LeadInput, LeadPatch
from crm_core.rules import CrmRules, CustomFieldDef
from crm_core.users.model import User
from crm_core.validation import InvalidInn
from tests.crm_core.deals.world import T0, Team, full_card

IN_WORK = ["name", "contact", "source", "client_type", "potential"]


async def new_lead(
    session: AsyncSession, team: Team, rules: CrmRules, actor: User | None = None, **data: Any
) -> int:
    """A committed lead's id (ids survive the rollbacks after refusals; objects expire)."""
    lead, _ = await leads.create_lead(
        session, LeadInput(**data), actor=actor or team.ivan, rules=rules, now=T0
    )
    await session.commit()
    return lead.id


async def refused(coro: Any) -> dict[str, Any]:
    with pytest.raises(LeadGateMissingFields) as info:
        await coro
    return info.value.details


async def test_create_normalises_and_records_the_first_stage(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lead, events = await leads.create_lead(
        session,
        LeadInput(
            contact_name=" Пётр ",
            phones=["8 (495) 123-45-67", "+7 495 1234567"],
            emails=["Petr@Example.RU"],
            origin="web",
            tracking={"utm_source": "yandex"},
        ),
        actor=team.ivan,
        rules=rules,
        now=T0,
    )
    await session.commit()
    assert lead.stage == "new" and lead.responsible_id == team.ivan.id
    assert lead.contact_name == "Пётр" and lead.stage_changed_at == T0
    [view] = await leads.describe(session, [lead], rules, actor=team.ivan)
    assert view.phones == ["+74951234567"] and view.emails == ["petr@example.ru"]
    assert view.tracking == {"utm_source": "yandex"}
    assert view.gate["in_work"] == ["source", "client_type", "potential"]
    [row] = await leads.lead_history(session, lead.id, actor=team.ivan, rules=rules)
    assert (row.from_stage, row.to_stage, row.user_id, row.at) == (None, "new", team.ivan.id, T0)
    [event] = events
    assert event.name == "lead.created"
    assert event.audience == (f"user:{team.ivan.id}", "role:head")


async def test_create_validates_its_fields(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    with pytest.raises(InvalidInn):
        await leads.create_lead(session, LeadInput(inn="7707083894"), actor=team.ivan, rules=rules)
    with pytest.raises(PermissionDenied):
        await leads.create_lead(
            session, LeadInput(responsible_id=team.anna.id), actor=team.ivan, rules=rules
        )
    lead, _ = await leads.create_lead(
        session, LeadInput(responsible_id=team.anna.id), actor=team.head, rules=rules
    )
    assert lead.responsible_id == team.anna.id
    system, _ = await leads.create_lead(
        session, LeadInput(origin="call"), actor=SYSTEM, rules=rules
    )
    assert system.responsible_id is None and system.created_by_id is None


async def test_the_gate_names_exactly_what_is_missing(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules)
    details = await refused(leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules))
    assert details == {"stage": "in_work", "missing": IN_WORK}
    await session.rollback()
    await leads.update_lead(
        session,
        lid,
        LeadPatch(company_name="Ромашка", emails=["a@b.ru"], potential_amount="100"),
        actor=team.ivan,
        rules=rules,
    )
    await session.commit()
    details = await refused(leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules))
    assert details["missing"] == ["source", "client_type", "potential"]
    await session.rollback()
    # Cumulative: entering "qualified" straight from "new" needs the in_work gate too.
    details = await refused(
        leads.move_lead(session, lid, "qualified", actor=team.ivan, rules=rules)
    )
    assert details == {
        "stage": "qualified",
        "missing": ["source", "client_type", "potential", "region", "decision_maker"],
    }
    await session.rollback()
    stored = await session.get(Lead, lid)
    assert stored is not None and stored.stage == "new"


async def test_a_full_card_passes_and_every_move_is_recorded(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules, **full_card(team))
    lead, events = await leads.move_lead(
        session, lid, "in_work", actor=team.ivan, rules=rules, now=T0 + timedelta(hours=1)
    )
    lead, _ = await leads.move_lead(
        session, lid, "qualified", actor=team.head, rules=rules, now=T0 + timedelta(hours=3)
    )
    await session.commit()
    assert lead.stage == "qualified" and lead.stage_changed_at == T0 + timedelta(hours=3)
    history = await leads.lead_history(session, lid, actor=team.ivan, rules=rules)
    assert [(h.from_stage, h.to_stage, h.user_id) for h in history] == [
        (None, "new", team.ivan.id),
        ("new", "in_work", team.ivan.id),
        ("in_work", "qualified", team.head.id),
    ]
    [event] = events
    assert isinstance(event, LeadStageChanged)
    assert (event.name, event.from_stage, event.to_stage) == (
        "lead.stage_changed",
        "new",
        "in_work",
    )
    assert event.audience == (f"user:{team.ivan.id}", "role:head")
    # The same stage again changes nothing.
    _, events = await leads.move_lead(session, lid, "qualified", actor=team.ivan, rules=rules)
    assert events == []


async def test_moving_back_needs_no_gate_but_forward_again_does(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules, **full_card(team))
    await leads.move_lead(session, lid, "qualified", actor=team.ivan, rules=rules)
    await leads.update_lead(
        session, lid, LeadPatch(source_id=None, region_id=None), actor=team.ivan, rules=rules
    )
    await session.commit()
    lead, _ = await leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules)
    lead, _ = await leads.move_lead(session, lid, "new", actor=team.ivan, rules=rules)
    await session.commit()
    assert lead.stage == "new"
    details = await refused(
        leads.move_lead(session, lid, "qualified", actor=team.ivan, rules=rules)
    )
    assert details["missing"] == ["source", "region"]


async def test_junk_needs_a_configured_reason(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules)
    for reason in (None, "because"):
        with pytest.raises(JunkReasonRequired) as info:
            await leads.move_lead(session, lid, "junk", reason=reason, actor=team.ivan, rules=rules)
        assert info.value.details["field"] == "reason"
        assert info.value.details["allowed"] == list(rules.junk_reasons)
    lead, _ = await leads.move_lead(
        session, lid, "junk", reason="spam", actor=team.ivan, rules=rules
    )
    await session.commit()
    assert (lead.stage, lead.junk_reason) == ("junk", "spam")
    # Reviving a junk lead goes through the gate and forgets the reason.
    details = await refused(leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules))
    assert details["missing"] == IN_WORK
    await session.rollback()
    lead, _ = await leads.move_lead(session, lid, "new", actor=team.ivan, rules=rules)
    assert (lead.stage, lead.junk_reason) == ("new", None)
    history = await leads.lead_history(session, lid, actor=team.ivan, rules=rules)
    assert [(h.to_stage, h.reason) for h in history] == [
        ("new", None),
        ("junk", "spam"),
        ("new", None),
    ]


async def test_a_patch_with_a_stage_passes_the_gate_on_the_changed_card(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules, contact_name="Пётр")
    details = await refused(
        leads.update_lead(
            session,
            lid,
            LeadPatch(phones=["84951234567"], source_id=team.expo, stage="in_work"),
            actor=team.ivan,
            rules=rules,
        )
    )
    assert details == {"stage": "in_work", "missing": ["client_type", "potential"]}
    await session.rollback()
    phones = await session.scalar(select(func.count()).select_from(Phone))
    assert phones == 0  # the refused patch left nothing
    patch = LeadPatch(
        phones=["84951234567"],
        source_id=team.expo,
        client_type="retail",
        potential_amount="5000",
        purchase_mode="one_off",
        stage="in_work",
    )
    lead, events = await leads.update_lead(session, lid, patch, actor=team.ivan, rules=rules)
    await session.commit()
    assert lead.stage == "in_work"
    assert [e.name for e in events] == ["lead.updated", "lead.stage_changed"]


async def test_creating_in_a_later_stage_passes_the_gate_too(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    details = await refused(
        leads.create_lead(
            session, LeadInput(contact_name="x", stage="in_work"), actor=team.ivan, rules=rules
        )
    )
    assert details["missing"] == ["contact", "source", "client_type", "potential"]
    await session.rollback()
    with pytest.raises(JunkReasonRequired):
        await leads.create_lead(session, LeadInput(stage="junk"), actor=team.ivan, rules=rules)
    await session.rollback()
    lead, _ = await leads.create_lead(
        session, LeadInput(**full_card(team), stage="qualified"), actor=team.ivan, rules=rules
    )
    assert lead.stage == "qualified"


async def test_the_converted_stage_is_entered_only_by_conversion(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules, contact_name="x")
    details = await refused(
        leads.move_lead(session, lid, "converted", actor=team.ivan, rules=rules)
    )
    assert details["stage"] == "converted"  # the gate speaks first
    await session.rollback()
    full = await new_lead(session, team, rules, **full_card(team))
    with pytest.raises(ConversionRequired):
        await leads.move_lead(session, full, "converted", actor=team.ivan, rules=rules)
    with pytest.raises(UnknownLeadStage):
        await leads.move_lead(session, full, "won", actor=team.ivan, rules=rules)


async def test_a_custom_field_requirement(session: AsyncSession, team: Team) -> None:
    rules = CrmRules(
        lead_gate={"in_work": ("name", "custom.segment"), "qualified": ("inn", "needs")},
        custom_fields=(CustomFieldDef("segment", "enum", options=("A", "B")),),
    )
    lid = await new_lead(session, team, rules)
    details = await refused(
        leads.move_lead(session, lid, "qualified", actor=team.ivan, rules=rules)
    )
    assert details == {"stage": "qualified", "missing": ["name", "custom.segment", "inn", "needs"]}
    await session.rollback()
    await leads.update_lead(
        session,
        lid,
        LeadPatch(company_name="Ромашка", custom={"segment": "B"}),
        actor=team.ivan,
        rules=rules,
    )
    lead, _ = await leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules)
    assert lead.stage == "in_work"
    # Removing the value closes the gate again.
    await leads.update_lead(
        session, lid, LeadPatch(custom={"segment": None}), actor=team.ivan, rules=rules
    )
    await leads.move_lead(session, lid, "new", actor=team.ivan, rules=rules)
    details = await refused(leads.move_lead(session, lid, "in_work", actor=team.ivan, rules=rules))
    assert details["missing"] == ["custom.segment"]


async def test_who_may_see_and_change_a_lead(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    lid = await new_lead(session, team, rules, contact_name="Ivan's")
    for who in (team.admin, team.head, team.ivan):
        assert (await leads.get_lead(session, lid, actor=who, rules=rules)).id == lid
    with pytest.raises(LeadNotFound):
        await leads.get_lead(session, lid, actor=team.anna, rules=rules)
    with pytest.raises(LeadNotFound):
        await leads.move_lead(session, lid, "junk", reason="spam", actor=team.anna, rules=rules)
    shared = CrmRules(managers_read_all=True)
    assert await leads.get_lead(session, lid, actor=team.anna, rules=shared)
    with pytest.raises(PermissionDenied):
        await leads.move_lead(session, lid, "junk", reason="spam", actor=team.anna, rules=shared)
    with pytest.raises(PermissionDenied):  # a manager hands nothing over
        await leads.update_lead(
            session, lid, LeadPatch(responsible_id=team.anna.id), actor=team.ivan, rules=rules
        )
    lead, _ = await leads.update_lead(
        session, lid, LeadPatch(responsible_id=team.anna.id), actor=team.head, rules=rules
    )
    assert lead.responsible_id == team.anna.id


async def test_listing_filters_and_search(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    a = await new_lead(
        session, team, rules, contact_name="Пётр Иванов", phones=["+74951234567"], origin="call"
    )
    b = await new_lead(
        session,
        team,
        rules,
        company_name="ООО Ёлка",
        emails=["info@elka.ru"],
        region_id=team.spb,
        inn="7707083893",
    )
    c = await new_lead(session, team, rules, actor=team.anna, contact_name="Анна's")

    async def ids(actor: User = team.admin, **flt: Any) -> list[int]:
        rows, total = await leads.list_leads(
            session, leads.LeadFilter(**flt), actor=actor, rules=rules
        )
        assert total == len(rows)
        return [r.id for r in rows]

    assert await ids() == [c, b, a]
    assert await ids(actor=team.ivan) == [b, a]
    assert await ids(actor=team.anna) == [c]
    assert await ids(origin="call") == [a]
    assert await ids(region_id=team.spb) == [b]
    assert await ids(responsible_id=team.anna.id) == [c]
    assert await ids(stage="new", actor=team.ivan) == [b, a]
    assert await ids(q="пётр") == [a]  # Cyrillic, case-insensitive on SQLite too
    assert await ids(q="елка") == [b]  # ё read as е
    assert await ids(q="8 (495) 123-45-67") == [a]
    assert await ids(q="4567") == [a]
    assert await ids(q="INFO@elka.ru") == [b]
    assert await ids(q="7707083893") == [b]
    assert await ids(created_from=T0, created_to=T0 + timedelta(seconds=1)) == [c, b, a]
    assert await ids(created_from=T0 + timedelta(seconds=1)) == []
    assert await ids(q="nothing") == []


async def test_delete(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    lid = await new_lead(session, team, rules, contact_name="x", phones=["+74951234567"])
    with pytest.raises(LeadNotFound):
        await leads.delete_lead(session, lid, actor=team.anna, rules=rules)
    [event] = await leads.delete_lead(session, lid, actor=team.ivan, rules=rules)
    await session.commit()
    assert event.name == "lead.deleted"
    assert await session.scalar(select(func.count()).select_from(LeadStageChange)) == 0
    assert await session.scalar(select(func.count()).select_from(Phone)) == 0


@pytest.mark.parametrize(
    ("field", "inactive"),
    [("source_id", "expo"), ("region_id", "spb"), ("responsible_id", "anna")],
)
async def test_many_leads_check_their_references_as_one_does(
    session: AsyncSession, team: Team, rules: CrmRules, field: str, inactive: str
) -> None:
    """A batch of leads (the inbox's new senders) reads its sources, regions and users at
    once: an inactive one is refused naming the field, as a single lead's is; the active ones
    pass, and nothing is written of a refused batch."""
    from crm_core.clients.errors import InvalidReference
    from crm_core.reference.model import Region, Source

    good = {"source_id": team.site, "region_id": team.moscow, "responsible_id": team.ivan.id}
    created, _ = await leads.create_leads(
        session,
        [LeadInput(title="Первый", **good), LeadInput(title="Второй")],
        actor=SYSTEM,
        rules=rules,
        now=T0,
        detached=True,
    )
    await session.commit()
    assert [lead.title for lead in created] == ["Первый", "Второй"]
    target: Any = {
        "expo": (Source, team.expo),
        "spb": (Region, team.spb),
        "anna": (User, team.anna.id),
    }[inactive]
    row: Any = await session.get(*target)
    row.is_active = False
    await session.commit()
    bad = {**good, field: target[1]}
    with pytest.raises(InvalidReference) as info:
        await leads.create_leads(
            session,
            [LeadInput(title="Третий", **good), LeadInput(title="Четвёртый", **bad)],
            actor=SYSTEM,
            rules=rules,
            now=T0,
            detached=True,
        )
    assert info.value.details == {"field": field, "value": target[1]}
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(Lead)) == 2
