"""Use cases of deals: create, change, move through the pipeline's stages (every move recorded
for the funnel reports), list, and the time each deal spent in each stage.

Every function takes the caller's session and flushes; the caller commits and publishes the
returned events after the commit. On an error the caller rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access, listing
from crm_core.access import Actor
from crm_core.clients import service as clients
from crm_core.clients.errors import InvalidReference
from crm_core.clients.model import LegalEntity
from crm_core.db import contains, is_postgresql, utcnow
from crm_core.deals.errors import (
    DealNotFound,
    InvalidDealInput,
    LegalEntityMismatch,
    LostReasonRequired,
)
from crm_core.deals.events import (
    DealCreated,
    DealDeleted,
    DealStageChanged,
    DealUpdated,
    funnel_audience,
)
from crm_core.deals.model import Deal, DealStageChange, Pipeline, PipelineStage, StageKind
from crm_core.deals.pipelines import first_stage, get_pipeline, load_stages, resolve_stage
from crm_core.deals.schemas import MILESTONES, DealInput, DealOut, DealPatch, DealStageChangeOut
from crm_core.errors import NotFound
from crm_core.events import DomainEvent
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.users.model import User

_PLAIN_FIELDS = ("title", "amount", "margin", "products", *MILESTONES)


# ---------------------------------------------------------------- shared checks


async def check_references(
    session: AsyncSession,
    *,
    source_id: int | None = None,
    region_id: int | None = None,
    responsible_id: int | None = None,
) -> None:
    """The source and region exist and are active, the responsible user exists and is active
    (422 ``invalid-reference`` naming the field otherwise). None is not checked."""
    refs = await active_references(
        session, sources=(source_id,), regions=(region_id,), users=(responsible_id,)
    )
    refs.check(source_id=source_id, region_id=region_id, responsible_id=responsible_id)


@dataclass(frozen=True)
class ActiveReferences:
    """Which of some ids are active sources, regions and users (:func:`active_references`)."""

    sources: frozenset[int]
    regions: frozenset[int]
    users: frozenset[int]

    def check(
        self,
        *,
        source_id: int | None = None,
        region_id: int | None = None,
        responsible_id: int | None = None,
    ) -> None:
        """:func:`check_references` of one record against what was read."""
        for key, what, ref_id, active in (
            ("source_id", "source", source_id, self.sources),
            ("region_id", "region", region_id, self.regions),
        ):
            if ref_id is not None and ref_id not in active:
                raise InvalidReference(
                    f"{key}: no active {what} {ref_id}", details={"field": key, "value": ref_id}
                )
        if responsible_id is not None and responsible_id not in self.users:
            raise InvalidReference(
                f"responsible_id: no active user {responsible_id}",
                details={"field": "responsible_id", "value": responsible_id},
            )


async def active_references(
    session: AsyncSession,
    *,
    sources: Iterable[int | None] = (),
    regions: Iterable[int | None] = (),
    users: Iterable[int | None] = (),
) -> ActiveReferences:
    """The active ones of these sources, regions and users, read in one query (through the
    session, so what it holds unflushed counts): many records checked at once (the inbox's
    batch of new leads) without an ORM load of each kind."""
    wanted = {
        "sources": sorted({i for i in sources if i is not None}),
        "regions": sorted({i for i in regions if i is not None}),
        "users": sorted({i for i in users if i is not None}),
    }
    found: dict[str, set[int]] = {"s": set(), "r": set(), "u": set()}
    if any(wanted.values()):
        if is_postgresql(session):  # the same SQL for any number of ids
            rows = await session.execute(_ACTIVE, wanted)
        else:
            rows = await session.execute(
                union_all(
                    *(
                        select(literal(kind), model.id).where(
                            model.id.in_(wanted[name]), model.is_active.is_(True)
                        )
                        for kind, name, model in (
                            ("s", "sources", Source),
                            ("r", "regions", Region),
                            ("u", "users", User),
                        )
                    )
                )
            )
        for kind, row_id in rows:
            found[kind].add(int(row_id))
    return ActiveReferences(frozenset(found["s"]), frozenset(found["r"]), frozenset(found["u"]))


_ACTIVE = text(
    "SELECT 's', id FROM sources WHERE id = ANY(CAST(:sources AS INTEGER[])) AND is_active "
    "UNION ALL SELECT 'r', id FROM regions WHERE id = ANY(CAST(:regions AS INTEGER[])) "
    "AND is_active "
    "UNION ALL SELECT 'u', id FROM users WHERE id = ANY(CAST(:users AS INTEGER[])) AND is_active"
)


async def _check_clients(
    session: AsyncSession,
    actor: Actor,
    rules: CrmRules,
    *,
    company_id: int | None,
    contact_id: int | None,
    legal_entity_id: int | None,
) -> int | None:
    """The linked records exist, are live and readable by ``actor``; the legal entity belongs
    to the company. Returns the company id (the legal entity's when none was given)."""
    if legal_entity_id is not None:
        entity = await session.get(LegalEntity, legal_entity_id)
        if entity is None:
            raise InvalidReference(
                f"legal_entity_id: no legal entity {legal_entity_id}",
                details={"field": "legal_entity_id", "value": legal_entity_id},
            )
        if company_id is None:
            company_id = entity.company_id
        elif entity.company_id != company_id:
            raise LegalEntityMismatch(
                f"legal_entity_id: legal entity {legal_entity_id} belongs to company "
                f"{entity.company_id}, not {company_id}",
                details={
                    "field": "legal_entity_id",
                    "value": legal_entity_id,
                    "company_id": company_id,
                },
            )
    for key, ref_id, load in (
        ("company_id", company_id, clients.get_company),
        ("contact_id", contact_id, clients.get_contact),
    ):
        if ref_id is None:
            continue
        try:
            await load(session, ref_id, actor=actor, rules=rules)
        except NotFound:
            raise InvalidReference(
                f"{key}: no {key[:-3]} {ref_id}", details={"field": key, "value": ref_id}
            ) from None
    return company_id


# ---------------------------------------------------------------- loading


async def get_deal(
    session: AsyncSession,
    deal_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    write: bool = False,
) -> Deal:
    """A deal ``actor`` may read (or change, with ``write``): 404 when there is none or he may
    not read it, 403 when he may only read it."""
    missing = DealNotFound(f"no deal {deal_id}", details={"deal_id": deal_id})
    deal = await session.get(Deal, deal_id)
    if deal is None:
        raise missing
    access.check(
        actor, deal.responsible_id, rules, write=write, what=f"deal {deal_id}", missing=missing
    )
    return deal


async def describe(
    session: AsyncSession, deals: Sequence[Deal], *, with_history: bool = False
) -> list[DealOut]:
    """The API view of deals: pipeline code, stage with labels, status (and history)."""
    stages, pipelines = await load_stages(session, (d.stage_id for d in deals))
    histories: dict[int, list[DealStageChangeOut]] = {}
    if with_history:
        for deal in deals:
            histories[deal.id] = await _history(session, deal.id)
    return [
        DealOut.of(
            d,
            stages[d.stage_id],
            pipelines[stages[d.stage_id].pipeline_id],
            histories.get(d.id) if with_history else None,
        )
        for d in deals
    ]


# ---------------------------------------------------------------- moves


@dataclass(frozen=True)
class Move:
    """A stage change to apply: the target and the reason."""

    stage: PipelineStage
    reason: str | None


def _check_lost_reason(stage: PipelineStage, reason: str | None, rules: CrmRules) -> None:
    if stage.kind == StageKind.LOST.value and reason not in rules.lost_reasons:
        raise LostReasonRequired(
            f"reason: moving a deal to {stage.code} needs one of {', '.join(rules.lost_reasons)}"
            + (f" (got {reason!r})" if reason else ""),
            details={
                "field": "reason",
                "value": reason,
                "stage": stage.code,
                "allowed": list(rules.lost_reasons),
            },
        )


def _apply_move(
    session: AsyncSession,
    deal: Deal,
    pipeline: Pipeline,
    move: Move,
    *,
    from_stage: PipelineStage | None,
    actor: Actor,
    now: datetime,
) -> DealStageChanged:
    stage = move.stage
    deal.stage_id = stage.id
    deal.stage_changed_at = now
    if stage.kind == StageKind.OPEN.value:
        deal.closed_at = None  # reopened
        deal.lost_reason = None
    else:
        deal.closed_at = now
        deal.lost_reason = move.reason if stage.kind == StageKind.LOST.value else None
    session.add(
        DealStageChange(
            deal_id=deal.id,
            from_stage_id=from_stage.id if from_stage else None,
            to_stage_id=stage.id,
            user_id=actor.id,
            at=now,
            reason=move.reason,
        )
    )
    return DealStageChanged(
        deal_id=deal.id,
        pipeline=pipeline.code,
        from_stage=from_stage.code if from_stage else None,
        to_stage=stage.code,
        kind=stage.kind,
        reason=move.reason,
        responsible_id=deal.responsible_id,
        actor_id=actor.id,
        audience=funnel_audience(deal.responsible_id),
        occurred_at=now,
    )


# ---------------------------------------------------------------- use cases


async def create_deal(
    session: AsyncSession,
    data: DealInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Deal, list[DomainEvent]]:
    """Create a deal in a pipeline (the default one unless named) at its first stage (or the
    stage given; a lost stage needs a reason). The creation is the first history row."""
    now = now or utcnow()
    pipeline = await get_pipeline(session, data.pipeline)
    if data.stage is None:
        stage = await first_stage(session, pipeline, rules)
    else:
        stage = await resolve_stage(session, pipeline, data.stage)
    _check_lost_reason(stage, data.reason, rules)
    responsible_id = access.responsible_for_new(actor, data.responsible_id)
    await check_references(session, source_id=data.source_id, responsible_id=responsible_id)
    company_id = await _check_clients(
        session,
        actor,
        rules,
        company_id=data.company_id,
        contact_id=data.contact_id,
        legal_entity_id=data.legal_entity_id,
    )
    deal = Deal(
        title=data.title.strip(),
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        amount=data.amount,
        margin=data.margin,
        products=data.products,
        responsible_id=responsible_id,
        source_id=data.source_id,
        company_id=company_id,
        contact_id=data.contact_id,
        legal_entity_id=data.legal_entity_id,
        created_by_id=actor.id,
        created_at=now,
        updated_at=now,
        **{m: _utc(getattr(data, m)) for m in MILESTONES},
    )
    session.add(deal)
    await session.flush()
    _apply_move(
        session, deal, pipeline, Move(stage, data.reason), from_stage=None, actor=actor, now=now
    )
    await session.flush()
    created = DealCreated(
        deal_id=deal.id,
        title=deal.title,
        pipeline=pipeline.code,
        stage=stage.code,
        amount=deal.amount,
        responsible_id=deal.responsible_id,
        actor_id=actor.id,
        audience=funnel_audience(deal.responsible_id),
        occurred_at=now,
    )
    return deal, [created]


async def move_deal(
    session: AsyncSession,
    deal_id: int,
    stage: str | int,
    *,
    reason: str | None = None,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Deal, list[DomainEvent]]:
    """Move a deal to another stage of its own pipeline (by code or id). A lost stage needs a
    reason from ``crm.lost_reasons``; won and lost close the deal, an open stage reopens it.
    Moving to the stage the deal is in changes nothing."""
    now = now or utcnow()
    deal = await get_deal(session, deal_id, actor=actor, rules=rules, write=True)
    event = await _move(session, deal, stage, reason, actor=actor, rules=rules, now=now)
    await session.flush()
    return deal, [event] if event else []


async def _move(
    session: AsyncSession,
    deal: Deal,
    stage: str | int,
    reason: str | None,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> DealStageChanged | None:
    pipeline = await session.get(Pipeline, deal.pipeline_id)
    assert pipeline is not None  # a foreign key
    target = await resolve_stage(session, pipeline, stage)
    if target.id == deal.stage_id:
        return None
    _check_lost_reason(target, reason, rules)
    current = await session.get(PipelineStage, deal.stage_id)
    deal.updated_at = now
    return _apply_move(
        session, deal, pipeline, Move(target, reason), from_stage=current, actor=actor, now=now
    )


async def _change_pipeline(
    session: AsyncSession,
    deal: Deal,
    code: str,
    stage: str | int | None,
    reason: str | None,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> DealStageChanged | None:
    """Move the deal into pipeline ``code`` (its ``stage``, else its first stage); the stage
    history keeps the step from the old pipeline's stage."""
    pipeline = await get_pipeline(session, code)
    if pipeline.id == deal.pipeline_id:
        if stage is None:
            return None
        return await _move(session, deal, stage, reason, actor=actor, rules=rules, now=now)
    if stage is None:
        target = await first_stage(session, pipeline, rules)
    else:
        target = await resolve_stage(session, pipeline, stage)
    _check_lost_reason(target, reason, rules)
    current = await session.get(PipelineStage, deal.stage_id)
    deal.pipeline_id = pipeline.id
    deal.updated_at = now
    return _apply_move(
        session, deal, pipeline, Move(target, reason), from_stage=current, actor=actor, now=now
    )


async def update_deal(
    session: AsyncSession,
    deal_id: int,
    patch: DealPatch,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Deal, list[DomainEvent]]:
    """Change the fields sent (milestones too); a ``stage`` moves the deal like
    :func:`move_deal`. Handing the deal to another manager is for the head and admins."""
    now = now or utcnow()
    deal = await get_deal(session, deal_id, actor=actor, rules=rules, write=True)
    sent = patch.model_fields_set
    changed: list[str] = []
    if "title" in sent and patch.title is None:
        raise InvalidDealInput("title: cannot be null", details={"field": "title", "value": None})
    if "responsible_id" in sent:
        access.check_handover(actor, deal.responsible_id, patch.responsible_id)
        await check_references(session, responsible_id=patch.responsible_id)
    if "source_id" in sent:
        await check_references(session, source_id=patch.source_id)
    if sent & {"company_id", "contact_id", "legal_entity_id"}:
        company_id = patch.company_id if "company_id" in sent else deal.company_id
        legal_entity_id = (
            patch.legal_entity_id if "legal_entity_id" in sent else deal.legal_entity_id
        )
        company_id = await _check_clients(
            session,
            actor,
            rules,
            company_id=company_id,
            contact_id=patch.contact_id if "contact_id" in sent else None,
            legal_entity_id=legal_entity_id,
        )
        values: dict[str, Any] = {"company_id": company_id, "legal_entity_id": legal_entity_id}
        if "contact_id" in sent:
            values["contact_id"] = patch.contact_id
        changed += _set(deal, values)
    plain = {name: getattr(patch, name) for name in _PLAIN_FIELDS if name in sent}
    for name in MILESTONES:
        if name in plain:
            plain[name] = _utc(plain[name])
    if "title" in plain:
        plain["title"] = plain["title"].strip()
    for name in ("responsible_id", "source_id"):
        if name in sent:
            plain[name] = getattr(patch, name)
    changed += _set(deal, plain)
    events: list[DomainEvent] = []
    if "pipeline" in sent and patch.pipeline is not None:
        moved = await _change_pipeline(
            session,
            deal,
            patch.pipeline,
            patch.stage,
            patch.reason,
            actor=actor,
            rules=rules,
            now=now,
        )
        if moved is not None:
            changed.append("pipeline")
            events.append(moved)
    elif "stage" in sent and patch.stage is not None:
        moved = await _move(
            session, deal, patch.stage, patch.reason, actor=actor, rules=rules, now=now
        )
        if moved is not None:
            events.append(moved)
    if changed:
        deal.updated_at = now
        events.insert(
            0,
            DealUpdated(
                deal_id=deal.id,
                fields=tuple(changed),
                responsible_id=deal.responsible_id,
                actor_id=actor.id,
                audience=funnel_audience(deal.responsible_id),
                occurred_at=now,
            ),
        )
    await session.flush()
    return deal, events


def _utc(moment: datetime | None) -> datetime | None:
    # Stored as UTC anyway; converting now makes the answer the same before and after a reload.
    return moment.astimezone(UTC) if moment is not None else None


def _set(target: Any, values: Mapping[str, Any]) -> list[str]:
    changed = []
    for name, value in values.items():
        if getattr(target, name) != value:
            setattr(target, name, value)
            changed.append(name)
    return changed


async def delete_deal(
    session: AsyncSession, deal_id: int, *, actor: Actor, rules: CrmRules
) -> list[DomainEvent]:
    """Delete a deal and its stage history (invoices, tasks and activities keep existing,
    unlinked)."""
    deal = await get_deal(session, deal_id, actor=actor, rules=rules, write=True)
    event = DealDeleted(
        deal_id=deal.id,
        responsible_id=deal.responsible_id,
        actor_id=actor.id,
        audience=funnel_audience(deal.responsible_id),
    )
    await session.delete(deal)
    await session.flush()
    return [event]


# ---------------------------------------------------------------- listing and history


@dataclass(frozen=True)
class DealFilter:
    """Filters of a deal listing; None means "any"."""

    pipeline: str | None = None  # code
    stage: str | int | None = None  # code (in any pipeline, or in ``pipeline``) or id
    status: str | None = None  # open, won, lost
    responsible_id: int | None = None
    source_id: int | None = None
    company_id: int | None = None
    contact_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    closed_from: datetime | None = None
    closed_to: datetime | None = None
    q: str | None = None  # in the title


async def list_deals(
    session: AsyncSession,
    flt: DealFilter,
    *,
    actor: Actor,
    rules: CrmRules,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    count_cap: int | None = None,
) -> tuple[list[Deal], int]:
    """Deals ``actor`` may read matching ``flt``, newest first, with the total count."""
    stmt = select(Deal).join(PipelineStage, PipelineStage.id == Deal.stage_id)
    stmt = access.scope(stmt, Deal.responsible_id, actor, rules)
    if flt.pipeline is not None:
        stmt = stmt.join(Pipeline, Pipeline.id == Deal.pipeline_id).where(
            Pipeline.code == flt.pipeline
        )
    if flt.stage is not None:
        if isinstance(flt.stage, int) or str(flt.stage).isdigit():
            stmt = stmt.where(Deal.stage_id == int(flt.stage))
        else:
            stmt = stmt.where(PipelineStage.code == flt.stage)
    if flt.status is not None:
        stmt = stmt.where(PipelineStage.kind == flt.status)
    for name in ("responsible_id", "source_id", "company_id", "contact_id"):
        value = getattr(flt, name)
        if value is not None:
            stmt = stmt.where(getattr(Deal, name) == value)
    clauses: list[ColumnElement[bool]] = []
    if flt.created_from is not None:
        clauses.append(Deal.created_at >= flt.created_from)
    if flt.created_to is not None:
        clauses.append(Deal.created_at < flt.created_to)
    if flt.closed_from is not None:
        clauses.append(Deal.closed_at >= flt.closed_from)
    if flt.closed_to is not None:
        clauses.append(Deal.closed_at < flt.closed_to)
    if flt.q and flt.q.strip():
        # SQLite's lower() folds ASCII only; the second clause still finds a Cyrillic title
        # typed in its own case there.
        clauses.append(
            or_(
                contains(func.lower(Deal.title), flt.q.strip().lower()),
                contains(Deal.title, flt.q.strip()),
            )
        )
    if clauses:
        stmt = stmt.where(*clauses)
    total = await listing.total(session, stmt, count_cap)
    sorts = {
        "created_at": Deal.created_at,
        "title": Deal.title,
        "amount": Deal.amount,
        "stage": PipelineStage.sort,
        "stage_changed_at": Deal.stage_changed_at,
        "closed_at": Deal.closed_at,
    }
    stmt = listing.order(stmt, sorts, sort, (Deal.created_at.desc(), Deal.id.desc()), Deal.id)
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), total


async def _history(session: AsyncSession, deal_id: int) -> list[DealStageChangeOut]:
    rows = list(
        await session.scalars(
            select(DealStageChange)
            .where(DealStageChange.deal_id == deal_id)
            .order_by(DealStageChange.at, DealStageChange.id)
        )
    )
    ids = {r.to_stage_id for r in rows} | {r.from_stage_id for r in rows if r.from_stage_id}
    stages, _ = await load_stages(session, ids)
    return [
        DealStageChangeOut(
            id=r.id,
            from_stage_id=r.from_stage_id,
            from_stage=stages[r.from_stage_id].code if r.from_stage_id else None,
            to_stage_id=r.to_stage_id,
            to_stage=stages[r.to_stage_id].code,
            user_id=r.user_id,
            at=r.at,
            reason=r.reason,
        )
        for r in rows
    ]


async def deal_history(
    session: AsyncSession, deal_id: int, *, actor: Actor, rules: CrmRules
) -> list[DealStageChangeOut]:
    """The deal's stage changes, oldest first (the first row is its creation)."""
    await get_deal(session, deal_id, actor=actor, rules=rules)
    return await _history(session, deal_id)


# ---------------------------------------------------------------- funnel analytics


@dataclass(frozen=True)
class StageSpan:
    """A stretch of time a deal spent in one stage. ``left_at`` None: it is still there
    (``seconds`` then runs to ``now`` when given, else is None)."""

    deal_id: int
    stage_id: int
    entered_at: datetime
    left_at: datetime | None
    seconds: float | None


def spans_from_history(
    rows: Iterable[tuple[int, int, datetime]], *, now: datetime | None = None
) -> list[StageSpan]:
    """Time in stage from history rows ``(deal_id, to_stage_id, at)`` in order of time: each
    stage lasts until the deal's next move."""
    by_deal: dict[int, list[tuple[int, datetime]]] = {}
    for deal_id, stage_id, at in rows:
        by_deal.setdefault(deal_id, []).append((stage_id, at))
    spans: list[StageSpan] = []
    for deal_id, moves in by_deal.items():
        for i, (stage_id, entered) in enumerate(moves):
            left = moves[i + 1][1] if i + 1 < len(moves) else None
            end = left or now
            spans.append(
                StageSpan(
                    deal_id=deal_id,
                    stage_id=stage_id,
                    entered_at=entered,
                    left_at=left,
                    seconds=(end - entered).total_seconds() if end is not None else None,
                )
            )
    return spans


async def stage_durations(
    session: AsyncSession, deal_ids: Iterable[int] | None = None, *, now: datetime | None = None
) -> list[StageSpan]:
    """For funnel reports: every stretch each deal (all, or ``deal_ids``) spent in a stage,
    from the stage history. A deal's current stage runs until ``now`` (open end if None)."""
    stmt = select(DealStageChange.deal_id, DealStageChange.to_stage_id, DealStageChange.at)
    if deal_ids is not None:
        stmt = stmt.where(DealStageChange.deal_id.in_(list(deal_ids)))
    rows = await session.execute(
        stmt.order_by(DealStageChange.deal_id, DealStageChange.at, DealStageChange.id)
    )
    return spans_from_history(((r[0], r[1], r[2]) for r in rows), now=now)
