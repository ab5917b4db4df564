"""Pipelines and their stages: the configuration (``crm.pipelines``) mirrored into the database,
where deals and their history point at stage rows.

:func:`sync_pipelines` runs at every start and is idempotent. Pipelines and stages are matched
by code; labels, order, kind and the default flag follow the configuration. Nothing is deleted:
a stage dropped from the configuration keeps its row (deals and history may point at it), and a
dropped pipeline is only marked inactive.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.deals.errors import StageNotInPipeline, UnknownPipeline
from crm_core.deals.model import Pipeline, PipelineStage
from crm_core.deals.schemas import PipelineOut, StageOut
from crm_core.rules import CrmRules, PipelineDef


@dataclass
class SyncReport:
    """What :func:`sync_pipelines` changed (codes; stages as ``pipeline.stage``)."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deactivated)


def _default_code(defs: tuple[PipelineDef, ...]) -> str | None:
    flagged = [p.code for p in defs if p.is_default]
    if flagged:
        return flagged[0]
    return defs[0].code if defs else None


def _assign(row: object, values: dict[str, object]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(row, name) != value:
            setattr(row, name, value)
            changed = True
    return changed


async def sync_pipelines(session: AsyncSession, rules: CrmRules) -> SyncReport:
    """Make the ``pipelines``/``pipeline_stages`` rows match ``rules.pipelines``; flushes, the
    caller commits. Running it again changes nothing."""
    report = SyncReport()
    default = _default_code(rules.pipelines)
    existing = {p.code: p for p in await session.scalars(select(Pipeline))}
    configured = set()
    for position, pdef in enumerate(rules.pipelines):
        configured.add(pdef.code)
        values: dict[str, object] = {
            "name": pdef.name_ru,
            "name_en": pdef.name_en or pdef.name_ru,
            "is_default": pdef.code == default,
            "sort": position,
            "is_active": True,
        }
        pipeline = existing.get(pdef.code)
        if pipeline is None:
            pipeline = Pipeline(code=pdef.code, **values)
            session.add(pipeline)
            await session.flush()
            report.created.append(pdef.code)
        elif _assign(pipeline, values):
            report.updated.append(pdef.code)
        stages = {
            s.code: s
            for s in await session.scalars(
                select(PipelineStage).where(PipelineStage.pipeline_id == pipeline.id)
            )
        }
        for sort, sdef in enumerate(pdef.stages):
            svalues: dict[str, object] = {
                "name_ru": sdef.name_ru,
                "name_en": sdef.name_en or sdef.name_ru,
                "sort": sort,
                "kind": sdef.kind,
            }
            stage = stages.get(sdef.code)
            key = f"{pdef.code}.{sdef.code}"
            if stage is None:
                session.add(PipelineStage(pipeline_id=pipeline.id, code=sdef.code, **svalues))
                report.created.append(key)
            elif _assign(stage, svalues):
                report.updated.append(key)
    for code, pipeline in existing.items():
        if code not in configured and _assign(pipeline, {"is_active": False, "is_default": False}):
            report.deactivated.append(code)
    await session.flush()
    return report


def configured_stage_codes(rules: CrmRules, pipeline_code: str) -> set[str]:
    pdef = next((p for p in rules.pipelines if p.code == pipeline_code), None)
    return {s.code for s in pdef.stages} if pdef else set()


async def list_pipelines(
    session: AsyncSession, rules: CrmRules, *, include_inactive: bool = False
) -> list[PipelineOut]:
    """Pipelines in configured order with their stages in order and their labels."""
    stmt = select(Pipeline).order_by(Pipeline.is_active.desc(), Pipeline.sort, Pipeline.id)
    if not include_inactive:
        stmt = stmt.where(Pipeline.is_active.is_(True))
    pipelines = list(await session.scalars(stmt))
    by_pipeline: dict[int, list[PipelineStage]] = {p.id: [] for p in pipelines}
    if pipelines:
        rows = await session.scalars(
            select(PipelineStage)
            .where(PipelineStage.pipeline_id.in_(by_pipeline))
            .order_by(PipelineStage.sort, PipelineStage.id)
        )
        for stage in rows:
            by_pipeline[stage.pipeline_id].append(stage)
    out = []
    for p in pipelines:
        codes = configured_stage_codes(rules, p.code)
        out.append(
            PipelineOut(
                id=p.id,
                code=p.code,
                name_ru=p.name,
                name_en=p.name_en or p.name,
                is_default=p.is_default,
                is_active=p.is_active,
                stages=[StageOut.of(s, p.is_active and s.code in codes) for s in by_pipeline[p.id]],
            )
        )
    return out


async def get_pipeline(session: AsyncSession, code: str | None) -> Pipeline:
    """The active pipeline ``code``, or the default one for None."""
    if code is None:
        pipeline = await session.scalar(
            select(Pipeline)
            .where(Pipeline.is_active.is_(True))
            .order_by(Pipeline.is_default.desc(), Pipeline.sort, Pipeline.id)
            .limit(1)
        )
    else:
        pipeline = await session.scalar(
            select(Pipeline).where(Pipeline.code == code, Pipeline.is_active.is_(True))
        )
    if pipeline is None:
        allowed = list(
            await session.scalars(
                select(Pipeline.code).where(Pipeline.is_active.is_(True)).order_by(Pipeline.sort)
            )
        )
        raise UnknownPipeline(
            f"pipeline: no active pipeline {code!r}" if code else "no active pipeline",
            details={"field": "pipeline", "value": code, "allowed": allowed},
        )
    return pipeline


async def first_stage(session: AsyncSession, pipeline: Pipeline, rules: CrmRules) -> PipelineStage:
    """Where a new deal starts: the pipeline's first configured open stage."""
    codes = configured_stage_codes(rules, pipeline.code)
    stages = await stages_of(session, pipeline.id)
    for stage in stages:
        if stage.kind == "open" and (not codes or stage.code in codes):
            return stage
    raise StageNotInPipeline(
        f"pipeline {pipeline.code} has no open stage",
        details={"field": "stage", "pipeline": pipeline.code},
    )


async def stages_of(session: AsyncSession, pipeline_id: int) -> list[PipelineStage]:
    return list(
        await session.scalars(
            select(PipelineStage)
            .where(PipelineStage.pipeline_id == pipeline_id)
            .order_by(PipelineStage.sort, PipelineStage.id)
        )
    )


async def resolve_stage(
    session: AsyncSession, pipeline: Pipeline, stage: str | int, *, field: str = "stage"
) -> PipelineStage:
    """The stage of ``pipeline`` named by code or id (a digit string is an id); a stage of
    another pipeline is refused (422 ``deal-stage-not-in-pipeline``)."""
    row: PipelineStage | None
    if isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit()):
        row = await session.get(PipelineStage, int(stage))
    else:
        row = await session.scalar(
            select(PipelineStage).where(
                PipelineStage.pipeline_id == pipeline.id, PipelineStage.code == stage
            )
        )
    if row is None or row.pipeline_id != pipeline.id:
        allowed = [s.code for s in await stages_of(session, pipeline.id)]
        raise StageNotInPipeline(
            f"{field}: {stage!r} is not a stage of pipeline {pipeline.code}",
            details={
                "field": field,
                "value": stage,
                "pipeline": pipeline.code,
                "allowed": allowed,
            },
        )
    return row


async def load_stages(
    session: AsyncSession, stage_ids: Iterable[int]
) -> tuple[dict[int, PipelineStage], dict[int, Pipeline]]:
    """Stages by id and their pipelines by id, in two queries."""
    ids = set(stage_ids)
    if not ids:
        return {}, {}
    stages = {
        s.id: s
        for s in await session.scalars(select(PipelineStage).where(PipelineStage.id.in_(ids)))
    }
    pipeline_ids = {s.pipeline_id for s in stages.values()}
    pipelines = {
        p.id: p
        for p in await session.scalars(select(Pipeline).where(Pipeline.id.in_(pipeline_ids)))
    }
    return stages, pipelines
