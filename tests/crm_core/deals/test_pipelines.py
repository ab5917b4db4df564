"""Pipelines mirrored from the configuration, on both databases."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.deals.pipelines import list_pipelines, sync_pipelines
from crm_core.rules import DEFAULT_PIPELINE, CrmRules, PipelineDef, StageDef


async def rows(session: AsyncSession) -> list[tuple[str, str, str, str, int, str]]:
    result = await session.execute(
        select(
            Pipeline.code,
            PipelineStage.code,
            PipelineStage.name_ru,
            PipelineStage.name_en,
            PipelineStage.sort,
            PipelineStage.kind,
        )
        .join(PipelineStage, PipelineStage.pipeline_id == Pipeline.id)
        .order_by(Pipeline.code, PipelineStage.id)
    )
    return [(*row,) for row in result]


async def test_sync_creates_the_default_pipeline_and_is_idempotent(session: AsyncSession) -> None:
    rules = CrmRules()
    first = await sync_pipelines(session, rules)
    await session.commit()
    assert first.created[0] == "sales" and len(first.created) == 1 + len(DEFAULT_PIPELINE.stages)
    before = await rows(session)
    ids = list(await session.scalars(select(PipelineStage.id).order_by(PipelineStage.id)))
    again = await sync_pipelines(session, rules)
    await session.commit()
    assert not again.changed
    assert await rows(session) == before
    assert list(await session.scalars(select(PipelineStage.id).order_by(PipelineStage.id))) == ids
    [sales] = await list_pipelines(session, rules)
    assert (sales.code, sales.name_ru, sales.name_en, sales.is_default) == (
        "sales",
        "Продажи",
        "Sales",
        True,
    )
    assert [s.code for s in sales.stages][:3] == ["contact", "needs", "proposal_sent"]
    assert sales.stages[0].name_ru == "Контакт установлен"
    assert sales.stages[0].name_en == "Contact established"
    assert [s.kind for s in sales.stages][-2:] == ["won", "lost"]


async def test_a_changed_configuration_updates_by_code_and_deletes_nothing(
    session: AsyncSession,
) -> None:
    await sync_pipelines(session, CrmRules())
    await session.commit()
    contact = await session.scalar(select(PipelineStage).where(PipelineStage.code == "contact"))
    assert contact is not None
    contact_id = contact.id
    pipeline_id = contact.pipeline_id
    session.add(Deal(title="stays", pipeline_id=pipeline_id, stage_id=contact_id))
    await session.commit()
    rules = CrmRules(
        pipelines=(
            PipelineDef(
                code="sales",
                name_ru="Продажи опт",
                name_en="Wholesale",
                stages=(
                    StageDef("first_call", "Первый звонок", "First call"),
                    StageDef("needs", "Потребности", "Needs"),
                    StageDef("won", "Успех", "Won", "won"),
                    StageDef("lost", "Провал", "Lost", "lost"),
                ),
            ),
            PipelineDef(
                code="tenders",
                name_ru="Тендеры",
                name_en="Tenders",
                is_default=True,
                stages=(
                    StageDef("found", "Найден", "Found"),
                    StageDef("won", "Выигран", "Won", "won"),
                ),
            ),
        )
    )
    report = await sync_pipelines(session, rules)
    await session.commit()
    assert "sales.first_call" in report.created and "tenders" in report.created
    assert "sales" in report.updated and "sales.needs" in report.updated
    assert not (await sync_pipelines(session, rules)).changed
    # The dropped stage is kept with its deal; it is shown as no longer configured.
    kept = await session.get(PipelineStage, contact_id)
    assert kept is not None and kept.code == "contact"
    listed = {p.code: p for p in await list_pipelines(session, rules)}
    assert listed["tenders"].is_default and not listed["sales"].is_default
    assert listed["sales"].name_ru == "Продажи опт"
    stages = {s.code: s for s in listed["sales"].stages}
    assert not stages["contact"].is_active and stages["first_call"].is_active
    assert stages["needs"].name_en == "Needs" and stages["needs"].sort == 1
    # A pipeline dropped from the configuration is deactivated, not deleted.
    report = await sync_pipelines(session, CrmRules(pipelines=rules.pipelines[1:]))
    assert report.deactivated == ["sales"]
    assert [p.code for p in await list_pipelines(session, rules)] == ["tenders"]
    assert len(await list_pipelines(session, rules, include_inactive=True)) == 2
