"""Website requests → leads → qualified → deals → won, per region or per source."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.deals.model import Deal, PipelineStage, StageKind
from crm_core.distribution.model import WebRequest
from crm_core.distribution.schemas import StatsRow
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


async def web_request_funnel(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    group_by: Literal["region", "source"],
    qualified_stages: Sequence[str],
) -> list[StatsRow]:
    """One row per region (or source) of the non-spam requests received in ``[start, end)``,
    largest first. A lead counts as qualified once converted or in one of
    ``qualified_stages``; a deal as won in a stage of kind ``won``. Each lead and deal counts
    once per group however many requests joined it. One query."""
    key_model: type[Region] | type[Source]
    if group_by == "region":
        key_model, key_column, key_of = Region, Region.code, WebRequest.region_id
    else:
        key_model, key_column, key_of = Source, Source.name, WebRequest.source_id
    qualified = or_(Lead.converted_at.is_not(None), Lead.stage.in_(list(qualified_stages)))
    won = PipelineStage.kind == StageKind.WON.value
    stmt = (
        select(
            key_of.label("id"),
            key_column.label("key"),
            func.count(WebRequest.id).label("requests"),
            func.count(Lead.id.distinct()).label("leads"),
            func.count(case((qualified, Lead.id)).distinct()).label("qualified"),
            func.count(Deal.id.distinct()).label("deals"),
            func.count(case((won, Deal.id)).distinct()).label("won"),
        )
        .select_from(WebRequest)
        .outerjoin(key_model, key_model.id == key_of)
        .outerjoin(Lead, Lead.id == WebRequest.lead_id)
        .outerjoin(Deal, Deal.id == Lead.deal_id)
        .outerjoin(PipelineStage, PipelineStage.id == Deal.stage_id)
        .where(
            and_(
                WebRequest.is_spam.is_(False),
                WebRequest.created_at >= start,
                WebRequest.created_at < end,
            )
        )
        .group_by(key_of, key_column)
        .order_by(func.count(WebRequest.id).desc(), key_of)
    )
    return [
        StatsRow(
            key=r.key,
            id=r.id,
            requests=r.requests,
            leads=r.leads,
            qualified=r.qualified,
            deals=r.deals,
            won=r.won,
            lead_rate=_rate(r.leads, r.requests),
            qualified_rate=_rate(r.qualified, r.leads),
            deal_rate=_rate(r.deals, r.qualified),
            won_rate=_rate(r.won, r.deals),
            overall_rate=_rate(r.won, r.requests),
        )
        for r in await session.execute(stmt)
    ]
