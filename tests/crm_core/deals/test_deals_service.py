"""Deals on both databases: creation, stage moves with their history, the lost reason,
closing and reopening, the pipeline boundary, time in stage, listing and permissions."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients import service as clients
from crm_core.clients.errors import InvalidReference
from crm_core.clients.model import LegalEntity
from crm_core.clients.schemas import CompanyInput, LegalEntityInput
from crm_core.deals import service as deals
from crm_core.deals.errors import (
    DealNotFound,
    LegalEntityMismatch,
    LostReasonRequired,
    StageNotInPipeline,
    UnknownPipeline,
)
from crm_core.deals.events import DealStageChanged, DealUpdated
from crm_core.deals.model import PipelineStage
from crm_core.deals.pipelines import sync_pipelines
from crm_core.deals.schemas import DealInput, DealPatch
from crm_core.errors import PermissionDenied
from crm_core.rules import DEFAULT_PIPELINE, CrmRules, PipelineDef, StageDef
from crm_core.users.model import User
from tests.crm_core.deals.world import T0, Team

H = timedelta(hours=1)
TWO = CrmRules(
    pipelines=(
        DEFAULT_PIPELINE,
        PipelineDef(
            code="tenders",
            name_ru="Тендеры",
            name_en="Tenders",
            stages=(
                StageDef("found", "Найден", "Found"),
                StageDef("won", "Выигран", "Won", "won"),
                StageDef("lost", "Проигран", "Lost", "lost"),
            ),
        ),
    )
)


async def new_deal(
    session: AsyncSession, team: Team, rules: CrmRules, actor: User | None = None, **data: Any
) -> int:
    deal, _ = await deals.create_deal(
        session,
        DealInput(**{"title": "Поставка", **data}),
        actor=actor or team.ivan,
        rules=rules,
        now=T0,
    )
    await session.commit()
    return deal.id


async def history(session: AsyncSession, deal_id: int, team: Team, rules: CrmRules) -> list[Any]:
    rows = await deals.deal_history(session, deal_id, actor=team.admin, rules=rules)
    return [(r.from_stage, r.to_stage, r.user_id, r.at, r.reason) for r in rows]


async def test_create_in_the_default_pipeline_first_stage(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    deal, events = await deals.create_deal(
        session,
        DealInput(title=" Салфетки ", amount="1500.50", margin="300", source_id=team.expo),
        actor=team.ivan,
        rules=rules,
        now=T0,
    )
    await session.commit()
    [view] = await deals.describe(session, [deal], with_history=True)
    assert view.title == "Салфетки" and view.pipeline == "sales"
    assert (view.stage.code, view.stage.name_ru, view.status) == (
        "contact",
        "Контакт установлен",
        "open",
    )
    assert view.amount == Decimal("1500.50") and view.margin == Decimal("300.00")
    assert view.model_dump(mode="json")["amount"] == "1500.50"
    assert view.responsible_id == team.ivan.id and view.source_id == team.expo
    assert view.history is not None and [(h.from_stage, h.to_stage) for h in view.history] == [
        (None, "contact")
    ]
    [event] = events
    assert event.name == "deal.created"
    assert event.audience == (f"user:{team.ivan.id}", "role:head")


async def test_every_move_is_recorded_and_lost_needs_a_reason(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    did = await new_deal(session, team, rules)
    deal, [event] = await deals.move_deal(
        session, did, "proposal_sent", actor=team.ivan, rules=rules, now=T0 + H
    )
    assert isinstance(event, DealStageChanged)
    assert event.name == "deal.stage_changed"
    assert (event.from_stage, event.to_stage, event.kind) == ("contact", "proposal_sent", "open")
    assert event.audience == (f"user:{team.ivan.id}", "role:head")
    for reason in (None, "weather"):
        with pytest.raises(LostReasonRequired) as info:
            await deals.move_deal(session, did, "lost", reason=reason, actor=team.ivan, rules=rules)
        assert info.value.error_id == "deal-lost-reason-required"
        assert info.value.details["allowed"] == list(rules.lost_reasons)
    deal, _ = await deals.move_deal(
        session, did, "lost", reason="price", actor=team.head, rules=rules, now=T0 + 2 * H
    )
    await session.commit()
    assert deal.closed_at == T0 + 2 * H and deal.lost_reason == "price"
    # Reopening clears the close; winning closes again.
    deal, _ = await deals.move_deal(
        session, did, "needs", actor=team.ivan, rules=rules, now=T0 + 3 * H
    )
    assert deal.closed_at is None and deal.lost_reason is None
    deal, _ = await deals.move_deal(
        session, did, "won", actor=team.ivan, rules=rules, now=T0 + 4 * H
    )
    await session.commit()
    assert deal.closed_at == T0 + 4 * H and deal.stage_changed_at == T0 + 4 * H
    ivan, boss = team.ivan.id, team.head.id
    assert await history(session, did, team, rules) == [
        (None, "contact", ivan, T0, None),
        ("contact", "proposal_sent", ivan, T0 + H, None),
        ("proposal_sent", "lost", boss, T0 + 2 * H, "price"),
        ("lost", "needs", ivan, T0 + 3 * H, None),
        ("needs", "won", ivan, T0 + 4 * H, None),
    ]
    # The stage it is in: nothing happens.
    _, events = await deals.move_deal(session, did, "won", actor=team.ivan, rules=rules)
    assert events == []


async def test_time_in_stage_from_the_history(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    did = await new_deal(session, team, rules)
    other = await new_deal(session, team, rules)
    await deals.move_deal(session, did, "needs", actor=team.ivan, rules=rules, now=T0 + 2 * H)
    await deals.move_deal(session, did, "invoice", actor=team.ivan, rules=rules, now=T0 + 5 * H)
    await session.commit()
    spans = await deals.stage_durations(session, [did], now=T0 + 6 * H)
    stages = {s.id: s.code for s in await _stages(session)}
    assert [(stages[s.stage_id], s.seconds) for s in spans] == [
        ("contact", 2 * 3600.0),
        ("needs", 3 * 3600.0),
        ("invoice", 3600.0),
    ]
    assert spans[-1].left_at is None
    everyone = await deals.stage_durations(session)
    assert {s.deal_id for s in everyone} == {did, other}
    assert [s.seconds for s in everyone if s.deal_id == other] == [None]  # still there, no "now"


async def _stages(session: AsyncSession) -> list[PipelineStage]:
    return list(await session.scalars(select(PipelineStage)))


async def test_a_deal_never_leaves_its_pipeline(session: AsyncSession, team: Team) -> None:
    await sync_pipelines(session, TWO)
    await session.commit()
    did = await new_deal(session, team, TWO)
    tender = await new_deal(session, team, TWO, pipeline="tenders")
    tender_deal = await deals.get_deal(session, tender, actor=team.ivan, rules=TWO)
    [tender_view] = await deals.describe(session, [tender_deal])
    assert (tender_view.pipeline, tender_view.stage.code) == ("tenders", "found")
    with pytest.raises(StageNotInPipeline) as info:
        await deals.move_deal(session, did, tender_view.stage.id, actor=team.ivan, rules=TWO)
    assert info.value.details["pipeline"] == "sales"
    with pytest.raises(StageNotInPipeline):
        await deals.move_deal(session, did, "found", actor=team.ivan, rules=TWO)
    with pytest.raises(StageNotInPipeline):
        await deals.update_deal(
            session, tender, DealPatch(stage="proposal_sent"), actor=team.ivan, rules=TWO
        )
    # "won" exists in both: each deal moves within its own pipeline.
    deal, _ = await deals.move_deal(session, tender, "won", actor=team.ivan, rules=TWO)
    [view] = await deals.describe(session, [deal])
    assert (view.pipeline, view.stage.code, view.status) == ("tenders", "won", "won")
    with pytest.raises(UnknownPipeline):
        await deals.create_deal(
            session, DealInput(title="x", pipeline="nope"), actor=team.ivan, rules=TWO
        )


async def test_update_fields_milestones_and_stage(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    did = await new_deal(session, team, rules)
    deal, events = await deals.update_deal(
        session,
        did,
        DealPatch(
            amount="10.00",
            meeting_at=T0 + H,
            samples_sent_at=T0,
            stage="lost",
            reason="no_budget",
            products="Бумага",
        ),
        actor=team.ivan,
        rules=rules,
        now=T0 + 2 * H,
    )
    await session.commit()
    assert deal.meeting_at == T0 + H and deal.samples_sent_at == T0
    assert deal.amount == Decimal("10.00") and deal.lost_reason == "no_budget"
    assert [e.name for e in events] == ["deal.updated", "deal.stage_changed"]
    assert isinstance(events[0], DealUpdated)
    assert set(events[0].fields) == {"amount", "meeting_at", "samples_sent_at", "products"}
    deal, _ = await deals.update_deal(
        session, did, DealPatch(stage="needs"), actor=team.ivan, rules=rules
    )
    assert deal.closed_at is None and deal.lost_reason is None
    with pytest.raises(LostReasonRequired):
        await deals.update_deal(session, did, DealPatch(stage="lost"), actor=team.ivan, rules=rules)


async def test_links_are_checked(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    mine, _ = await clients.create_company(
        session,
        CompanyInput(name="Моя", legal_entities=[LegalEntityInput(name="ООО Моя")]),
        actor=team.ivan,
        rules=rules,
    )
    hers, _ = await clients.create_company(
        session,
        CompanyInput(name="Её", legal_entities=[LegalEntityInput(name="ООО Её")]),
        actor=team.anna,
        rules=rules,
    )
    await session.commit()
    entities = {e.company_id: e.id for e in await session.scalars(select(LegalEntity))}
    with pytest.raises(InvalidReference) as info:
        await deals.create_deal(
            session, DealInput(title="x", company_id=hers.id), actor=team.ivan, rules=rules
        )
    assert info.value.details == {"field": "company_id", "value": hers.id}
    with pytest.raises(LegalEntityMismatch):
        await deals.create_deal(
            session,
            DealInput(title="x", company_id=mine.id, legal_entity_id=entities[hers.id]),
            actor=team.head,
            rules=rules,
        )
    # A legal entity alone brings its company.
    deal, _ = await deals.create_deal(
        session,
        DealInput(title="x", legal_entity_id=entities[mine.id]),
        actor=team.ivan,
        rules=rules,
    )
    assert deal.company_id == mine.id
    with pytest.raises(InvalidReference):
        await deals.create_deal(
            session, DealInput(title="x", source_id=999), actor=team.ivan, rules=rules
        )


async def test_who_may_see_and_change_a_deal(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    did = await new_deal(session, team, rules)
    for who in (team.admin, team.head, team.ivan):
        assert (await deals.get_deal(session, did, actor=who, rules=rules)).id == did
    with pytest.raises(DealNotFound):
        await deals.get_deal(session, did, actor=team.anna, rules=rules)
    with pytest.raises(DealNotFound):
        await deals.move_deal(session, did, "needs", actor=team.anna, rules=rules)
    shared = CrmRules(managers_read_all=True)
    assert await deals.get_deal(session, did, actor=team.anna, rules=shared)
    with pytest.raises(PermissionDenied):
        await deals.move_deal(session, did, "needs", actor=team.anna, rules=shared)
    with pytest.raises(PermissionDenied):
        await deals.create_deal(
            session, DealInput(title="x", responsible_id=team.anna.id), actor=team.ivan, rules=rules
        )
    with pytest.raises(PermissionDenied):
        await deals.update_deal(
            session, did, DealPatch(responsible_id=team.anna.id), actor=team.ivan, rules=rules
        )
    deal, _ = await deals.update_deal(
        session, did, DealPatch(responsible_id=team.anna.id), actor=team.head, rules=rules
    )
    assert deal.responsible_id == team.anna.id


async def test_listing_filters(session: AsyncSession, team: Team) -> None:
    await sync_pipelines(session, TWO)
    await session.commit()
    a = await new_deal(session, team, TWO, title="Alpha", source_id=team.expo)
    b = await new_deal(session, team, TWO, title="Бета", pipeline="tenders")
    c = await new_deal(session, team, TWO, actor=team.anna, title="Gamma")
    await deals.move_deal(session, a, "won", actor=team.ivan, rules=TWO, now=T0 + H)
    await deals.move_deal(
        session, c, "lost", reason="price", actor=team.anna, rules=TWO, now=T0 + 3 * H
    )
    await session.commit()

    async def ids(actor: User = team.admin, **flt: Any) -> list[int]:
        rows, total = await deals.list_deals(
            session, deals.DealFilter(**flt), actor=actor, rules=TWO
        )
        assert total == len(rows)
        return [r.id for r in rows]

    assert await ids() == [c, b, a]
    assert await ids(actor=team.ivan) == [b, a]
    assert await ids(actor=team.anna) == [c]
    assert await ids(status="open") == [b]
    assert await ids(status="won") == [a]
    assert await ids(status="lost") == [c]
    assert await ids(pipeline="tenders") == [b]
    assert await ids(stage="won") == [a]
    assert await ids(source_id=team.expo) == [a]
    assert await ids(responsible_id=team.anna.id) == [c]
    assert await ids(closed_from=T0 + 2 * H) == [c]
    assert await ids(closed_to=T0 + 2 * H) == [a]
    assert await ids(q="alp") == [a]
    assert await ids(q="Бета") == [b]
    assert await ids(created_from=T0 + H) == []


async def test_delete(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    did = await new_deal(session, team, rules)
    with pytest.raises(DealNotFound):
        await deals.delete_deal(session, did, actor=team.anna, rules=rules)
    [event] = await deals.delete_deal(session, did, actor=team.head, rules=rules)
    await session.commit()
    assert event.name == "deal.deleted"
    assert await deals.stage_durations(session) == []


async def test_a_deal_moves_into_another_pipeline_with_its_history(
    session: AsyncSession, team: Team
) -> None:
    await sync_pipelines(session, TWO)
    await session.commit()
    did = await new_deal(session, team, TWO)
    await deals.move_deal(session, did, "proposal_sent", actor=team.ivan, rules=TWO, now=T0 + H)
    deal, events = await deals.update_deal(
        session, did, DealPatch(pipeline="tenders"), actor=team.ivan, rules=TWO, now=T0 + 2 * H
    )
    await session.commit()
    [view] = await deals.describe(session, [deal])
    assert (view.pipeline, view.stage.code, view.status) == ("tenders", "found", "open")
    moved = [e for e in events if isinstance(e, DealStageChanged)]
    assert [(e.pipeline, e.from_stage, e.to_stage) for e in moved] == [
        ("tenders", "proposal_sent", "found")
    ]
    assert any(isinstance(e, DealUpdated) and "pipeline" in e.fields for e in events)
    assert [h[:2] for h in await history(session, did, team, TWO)] == [
        (None, "contact"),
        ("contact", "proposal_sent"),
        ("proposal_sent", "found"),
    ]
    # straight to a stage of the new pipeline; a lost one still needs its reason
    with pytest.raises(LostReasonRequired):
        await deals.update_deal(
            session, did, DealPatch(pipeline="sales", stage="lost"), actor=team.ivan, rules=TWO
        )
    with pytest.raises(StageNotInPipeline):
        await deals.update_deal(
            session, did, DealPatch(pipeline="sales", stage="found"), actor=team.ivan, rules=TWO
        )
    with pytest.raises(UnknownPipeline):
        await deals.update_deal(
            session, did, DealPatch(pipeline="nope"), actor=team.ivan, rules=TWO
        )
    deal, _ = await deals.update_deal(
        session, did, DealPatch(pipeline="sales", stage="invoice"), actor=team.ivan, rules=TWO
    )
    [view] = await deals.describe(session, [deal])
    assert (view.pipeline, view.stage.code) == ("sales", "invoice")
    with pytest.raises(DealNotFound):  # another manager's deal
        await deals.update_deal(
            session, did, DealPatch(pipeline="tenders"), actor=team.anna, rules=TWO
        )
