"""The deal kanban's read side: one pipeline's stages with the count and sum of the deals a
user may read in each, and a stage's deals a page at a time (newest in the stage first), so a
pipeline of thousands of open deals shows at once and loads the rest on demand."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.deals.pipelines import configured_stage_codes, stages_of
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task, TaskStatus


@dataclass(frozen=True)
class Column:
    """A stage of the board and what it holds (``total``: the sum of the amounts, RUB)."""

    stage: PipelineStage
    count: int
    total: Decimal


async def columns(
    session: AsyncSession,
    pipeline: Pipeline,
    *,
    actor: Actor,
    rules: CrmRules,
    responsible_id: int | None = None,
) -> list[Column]:
    """The pipeline's configured stages in order, each with the count and summed amount of the
    deals ``actor`` may read (of ``responsible_id`` when given), in one grouped query."""
    codes = configured_stage_codes(rules, pipeline.code)
    stages = [s for s in await stages_of(session, pipeline.id) if not codes or s.code in codes]
    stmt = cast(
        "Select[Any]",
        select(Deal.stage_id, func.count(), func.sum(Deal.amount)).where(
            Deal.pipeline_id == pipeline.id
        ),
    )
    stmt = access.scope(stmt, Deal.responsible_id, actor, rules)
    if responsible_id is not None:
        stmt = stmt.where(Deal.responsible_id == responsible_id)
    totals: dict[int, tuple[int, Decimal]] = {
        stage_id: (int(count), Decimal(total or 0))
        for stage_id, count, total in await session.execute(stmt.group_by(Deal.stage_id))
    }
    return [Column(s, *totals.get(s.id, (0, Decimal(0)))) for s in stages]


async def cards(
    session: AsyncSession,
    stage_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    responsible_id: int | None = None,
    limit: int = 50,
    after: tuple[datetime, int] | None = None,
) -> list[Deal]:
    """The deals of one stage ``actor`` may read, the most recently moved in first; ``after``
    (``stage_changed_at``, ``id``) of the last one shown gives the next page, unaffected by
    cards moved meanwhile."""
    stmt = access.scope(
        select(Deal).where(Deal.stage_id == stage_id), Deal.responsible_id, actor, rules
    )
    if responsible_id is not None:
        stmt = stmt.where(Deal.responsible_id == responsible_id)
    if after is not None:  # the next page: the cards after the last one shown
        moved, last_id = after
        stmt = stmt.where(
            or_(
                Deal.stage_changed_at < moved,
                and_(Deal.stage_changed_at == moved, Deal.id < last_id),
            )
        )
    stmt = stmt.order_by(Deal.stage_changed_at.desc(), Deal.id.desc())
    return list(await session.scalars(stmt.limit(limit)))


async def next_tasks(session: AsyncSession, deal_ids: Iterable[int]) -> dict[int, Task]:
    """Each deal's next open task: the earliest due (one without a date after those with)."""
    ids = sorted(set(deal_ids))
    if not ids:
        return {}
    rows = await session.scalars(
        select(Task)
        .where(Task.deal_id.in_(ids), Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at.asc().nulls_last(), Task.id)
    )
    out: dict[int, Task] = {}
    for task in rows:
        if task.deal_id is not None:
            out.setdefault(task.deal_id, task)
    return out
