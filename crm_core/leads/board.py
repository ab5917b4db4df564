"""The lead kanban's read side: the funnel's stages with the count and summed potential of the
leads a user may read in each, and a stage's leads a page at a time (newest in the stage
first)."""

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
from crm_core.leads.model import Lead
from crm_core.rules import CrmRules, StageDef
from crm_core.tasks.model import Task, TaskStatus


@dataclass(frozen=True)
class Column:
    """A stage of the board and what it holds (``total``: the summed potential, RUB)."""

    stage: StageDef
    count: int
    total: Decimal


async def columns(
    session: AsyncSession, *, actor: Actor, rules: CrmRules, responsible_id: int | None = None
) -> list[Column]:
    """The configured lead stages in order, each with the count and summed potential of the
    leads ``actor`` may read (of ``responsible_id`` when given), in one grouped query."""
    stmt = cast("Select[Any]", select(Lead.stage, func.count(), func.sum(Lead.potential_amount)))
    stmt = access.scope(stmt, Lead.responsible_id, actor, rules)
    if responsible_id is not None:
        stmt = stmt.where(Lead.responsible_id == responsible_id)
    totals: dict[str, tuple[int, Decimal]] = {
        stage: (int(count), Decimal(total or 0))
        for stage, count, total in await session.execute(stmt.group_by(Lead.stage))
    }
    return [Column(s, *totals.get(s.code, (0, Decimal(0)))) for s in rules.lead_stages]


async def cards(
    session: AsyncSession,
    stage: str,
    *,
    actor: Actor,
    rules: CrmRules,
    responsible_id: int | None = None,
    limit: int = 50,
    after: tuple[datetime, int] | None = None,
) -> list[Lead]:
    """The leads of one stage ``actor`` may read, the most recently moved in first; ``after``
    (``stage_changed_at``, ``id``) of the last one shown gives the next page, unaffected by
    cards moved meanwhile."""
    stmt = access.scope(select(Lead).where(Lead.stage == stage), Lead.responsible_id, actor, rules)
    if responsible_id is not None:
        stmt = stmt.where(Lead.responsible_id == responsible_id)
    if after is not None:  # the next page: the cards after the last one shown
        moved, last_id = after
        stmt = stmt.where(
            or_(
                Lead.stage_changed_at < moved,
                and_(Lead.stage_changed_at == moved, Lead.id < last_id),
            )
        )
    stmt = stmt.order_by(Lead.stage_changed_at.desc(), Lead.id.desc())
    return list(await session.scalars(stmt.limit(limit)))


async def next_tasks(session: AsyncSession, lead_ids: Iterable[int]) -> dict[int, Task]:
    """Each lead's next open task: the earliest due (one without a date after those with)."""
    ids = sorted(set(lead_ids))
    if not ids:
        return {}
    rows = await session.scalars(
        select(Task)
        .where(Task.lead_id.in_(ids), Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at.asc().nulls_last(), Task.id)
    )
    out: dict[int, Task] = {}
    for task in rows:
        if task.lead_id is not None:
            out.setdefault(task.lead_id, task)
    return out
