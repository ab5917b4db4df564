"""What a call means for the CRM: who is calling (the card summary of the screen-pop), where
the call came from (the DID's source), and what a finished call leaves behind (the call log
row, the timeline activity, a lead for a new caller, a call-back task for a missed call)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Integer, String, and_, bindparam, false, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center import recordings_service
from contact_center.tracking_service import display_number
from crm_core import access
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import Activity
from crm_core.activities.schemas import ActivityInput
from crm_core.calls import service as calls
from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact
from crm_core.db import Money, utcnow
from crm_core.deals.model import Deal, PipelineStage, StageKind
from crm_core.distribution import service as distribution
from crm_core.events import DomainEvent
from crm_core.leads import service as leads
from crm_core.leads.model import Lead
from crm_core.leads.schemas import LeadInput
from crm_core.recordings.model import Recording, RecordingState
from crm_core.reference.model import Region, Source, SourceKind
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import Task, TaskKind, TaskStatus
from crm_core.tasks.schemas import TaskInput
from crm_core.users.model import User

MISSED = frozenset({"missed", "abandoned"})


@dataclass
class CallOutcome:
    """What recording a finished call did; ``events`` are published after the commit."""

    call_id: int
    created: bool
    events: list[DomainEvent] = field(default_factory=list)
    lead_id: int | None = None
    task_id: int | None = None
    activity_id: int | None = None


def missed_call_key(number: str) -> str:
    return f"missed-call:{number}"


def _money(amount: Decimal | None) -> str | None:
    if amount is None:
        return None
    return f"{amount:,.0f}".replace(",", " ")


async def card_summary_for_number(
    session: AsyncSession, number: str | None, *, rules: CrmRules, region: str = "RU"
) -> dict[str, Any] | None:
    """The screen-pop's client card summary for a calling number, or None for a new caller.

    Three queries whatever the card holds (who is calling; the card with its names; deals,
    activities and tasks in one UNION): the pop-up waits on each round trip, and on a busy
    event loop every await is a chance to queue behind other work.
    """
    if not number or not number.startswith("+"):
        return None
    match = await clients.find_client_by_phone(
        session, number, actor=access.SYSTEM, rules=rules, region=region
    )
    if match is None:
        return None
    kind, record_id = _card_record(match)
    # A contact of a company is described by the company's card (type, potential, region).
    card_kind = "company" if match.company_id is not None and kind != "lead" else kind
    card_id = match.company_id if card_kind == "company" else record_id
    links = {name: getattr(match, name) for name in _LINKS}
    # Core execution of statements built once per shape: no ORM result machinery, and their
    # cache keys are computed once (the pop-up is the latency-critical path).
    conn = await session.connection()
    head_stmt = _card_head(
        card_kind, match.responsible_id is not None, match.company_id is not None
    )
    params = {"card_id": card_id, "responsible_id": match.responsible_id, **links}
    head = (await conn.execute(head_stmt, params)).first()
    sections: dict[str, list[Any]] = {"deal": [], "activity": [], "task": []}
    present = tuple(value is not None for value in links.values())
    for row in await conn.execute(_card_lists(present), links):
        sections[row.section].append(row)
    potential = _money(head.potential_amount) if head is not None else None
    return {
        "type": kind,
        "id": record_id,
        "contact_id": match.contact_id,
        "company_id": match.company_id,
        "lead_id": match.lead_id,
        "name": match.name,
        "company": head.company if head is not None else None,
        "client_type": head.client_type if head is not None else None,
        "potential": f"{potential} ₽" if potential else None,
        "purchase_mode": head.purchase_mode if head is not None else None,
        "responsible_id": match.responsible_id,
        "responsible": head.responsible if head is not None else None,
        "region": head.region if head is not None else None,
        "source": head.source if head is not None else None,
        "deals": [
            {"id": r.id, "title": r.title, "amount": _money(r.amount), "stage": r.extra}
            for r in sections["deal"]
        ],
        "activities": [
            {
                "kind": r.extra,
                "subject": r.title,
                "occurred_at": r.at.isoformat(),
                "direction": r.direction,
                "recording": (
                    {"id": r.recording_id, "url": f"/api/v1/recordings/{r.recording_id}"}
                    if r.recording_id
                    else None
                ),
            }
            for r in sections["activity"]
        ],
        "tasks": [
            {"id": r.id, "title": r.title, "due_at": r.at.isoformat() if r.at else None}
            for r in sections["task"]
        ],
        "url": f"/clients/{kind}/{record_id}",
        "matched_on": match.matched_on,
    }


_MODELS: dict[str, Any] = {"contact": Contact, "company": Company, "lead": Lead}
_LINKS = ("contact_id", "company_id", "lead_id")  # a card's links, the parameters of its lists


def _card_record(match: clients.ClientMatch) -> tuple[str, int]:
    """The record a match points at: its contact, else its company, else its lead."""
    if match.contact_id is not None:
        return "contact", match.contact_id
    if match.company_id is not None:
        return "company", match.company_id
    assert match.lead_id is not None
    return "lead", match.lead_id


@functools.cache
def _card_head(card_kind: str, with_responsible: bool, with_company: bool) -> Any:
    """The card's own fields with the names of its region, source, responsible and company
    (parameters ``card_id``, ``responsible_id``, ``company_id``)."""
    card: Any = _MODELS[card_kind]

    def name_of(model: Any, column: Any, param: str, present: bool) -> Any:
        if not present:
            return literal(None, String()).label(None)
        return select(column).where(model.id == bindparam(param)).scalar_subquery()

    return (
        select(
            card.client_type,
            card.potential_amount,
            card.purchase_mode,
            Region.name.label("region"),
            Source.name.label("source"),
            name_of(User, User.display_name, "responsible_id", with_responsible).label(
                "responsible"
            ),
            name_of(Company, Company.name, "company_id", with_company).label("company"),
        )
        .select_from(card)
        .outerjoin(Region, Region.id == card.region_id)
        .outerjoin(Source, Source.id == card.source_id)
        .where(card.id == bindparam("card_id"))
    )


@functools.cache
def _card_lists(present: tuple[bool, ...]) -> Any:
    """Open deals, last activities and open tasks of the card (five each), as one UNION ALL of
    rows ``(section, id, title, amount, extra, at, direction, recording_id)``; ``present``
    says which of the parameters ``contact_id``, ``company_id``, ``lead_id`` the card has."""
    no_amount = literal(None, Money()).label("amount")
    no_text = literal(None, String()).label("direction")
    no_recording = literal(None, Integer()).label("recording_id")
    deals = (
        select(
            literal("deal").label("section"),
            Deal.id,
            Deal.title.label("title"),
            Deal.amount.label("amount"),
            PipelineStage.name_ru.label("extra"),
            Deal.updated_at.label("at"),
            no_text,
            no_recording,
        )
        .join(PipelineStage, PipelineStage.id == Deal.stage_id)
        .where(_client_filter(Deal, present), PipelineStage.kind == StageKind.OPEN.value)
        .order_by(Deal.updated_at.desc())
        .limit(5)
    )
    recent = (
        select(
            literal("activity"),
            Activity.id,
            Activity.subject,
            no_amount,
            Activity.kind,
            Activity.occurred_at,
            Activity.direction,
            Recording.id,
        )
        .outerjoin(
            Recording,
            and_(
                Recording.activity_id == Activity.id,
                Recording.state == RecordingState.STORED.value,
            ),
        )
        .where(_client_filter(Activity, present))
        .order_by(Activity.occurred_at.desc())
        .limit(5)
    )
    open_tasks = (
        select(
            literal("task"),
            Task.id,
            Task.title,
            no_amount,
            literal(None, String()),
            Task.due_at,
            no_text,
            no_recording,
        )
        .where(_client_filter(Task, present), Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at)
        .limit(5)
    )
    parts = [select(*q.subquery().c) for q in (deals, recent, open_tasks)]
    union = union_all(*parts).subquery()
    return select(union)


def _client_filter(model: Any, present: tuple[bool, ...]) -> Any:
    """Rows of ``model`` linked to the matched contact, company or lead (the links it has;
    parameters of the same names)."""
    conditions = [
        getattr(model, column) == bindparam(column)
        for column, there in zip(_LINKS, present, strict=True)
        if there and hasattr(model, column)
    ]
    return or_(*conditions) if conditions else false()


class CallRegionLike(Protocol):
    @property
    def code(self) -> str | None: ...  # the region's code

    @property
    def id(self) -> int | None: ...

    @property
    def origin(self) -> str | None: ...  # tracking | did | default


class CallAttributor(Protocol):
    """Call tracking as the CRM sees it (``contact_center.tracking_service.TrackingService``)."""

    async def attribute_call(
        self, session: AsyncSession, did: str, at: datetime
    ) -> dict[str, Any] | None: ...

    async def call_region(
        self, did: str | None, attribution: dict[str, Any] | None
    ) -> CallRegionLike: ...


async def tracking_for_did(
    session: AsyncSession,
    did: str | None,
    *,
    tracker: CallAttributor | None = None,
    at: datetime | None = None,
) -> dict[str, Any] | None:
    """What a call to ``did`` ringing at ``at`` carries: ``did``, ``source_id``, ``source``,
    ``campaign``, ``region`` (code), ``region_id`` and, from call tracking, ``visitor_id``,
    ``site``, ``utm``, ``landing_page``, ``referrer``, ``low_confidence``.

    With ``tracker`` (see :mod:`contact_center.tracking_service`): a pool number is attributed
    to the visitor session that held it at ring time, a static number (a tracking number, or
    a source of kind ``tracking_number`` with the DID as its code) to its source, both from
    memory; the region is the call's region, the one the dialplan routed by (tracking, else
    ``distribution.did_regions``, else ``distribution.default_region``). A DID tracking does
    not know gives a region-only dict when a region applies, else None.

    Without ``tracker`` (tools and tests without a server) the source is looked up in the
    database and the region is only what tracking says.
    """
    if not did:
        return None
    if tracker is not None:
        found = await tracker.attribute_call(session, did, at or utcnow())
        region = await tracker.call_region(did, found)
        if found is None and region.code is None:
            return None
        # A DID tracking does not know carries no source, only the region.
        tracking = found or {"did": did, "source_id": None, "source": None, "campaign": None}
        return {
            **tracking,
            "region": region.code,
            "region_id": region.id,
            "region_from": region.origin,
        }
    source = await session.scalar(
        select(Source).where(Source.kind == SourceKind.TRACKING_NUMBER.value, Source.code == did)
    )
    if source is None:
        return None
    parent = await session.get(Source, source.parent_id) if source.parent_id else None
    return {
        "did": did,
        "source_id": source.id,
        "source": (parent or source).name,
        "campaign": source.utm.get("utm_campaign") if source.utm else None,
        "region": None,
    }


async def record_finished_call(
    session: AsyncSession,
    facts: calls.CallFacts,
    *,
    rules: CrmRules,
    now: datetime,
    callback_due_minutes: int,
    region: str = "RU",
    tracking: dict[str, Any] | None = None,
    recordings: bool = False,
    tracker: CallAttributor | None = None,
) -> CallOutcome:
    """Store the call and what it means for the CRM, once per call (idempotent). With
    ``recordings``, a call with a MixMonitor file also gets its recording job, in the same
    transaction.

    A new inbound caller's lead gets the call's region (with ``tracker``, the region the
    dialplan routed the call by) and that region's manager; the manager whose phone the
    dialplan chose keeps it when the region's rule has him on duty."""
    # A call stored already (a replay after a reconnect) is found by store_call below, before
    # anything is written: one query less for every new call.
    manager = await calls.extension_owner(session, facts.pbx, facts.extension)
    if manager is None and facts.rang:
        manager = await calls.extension_owner(session, facts.pbx, facts.rang[0])
    number = facts.outside_number
    match = (
        await clients.find_client_by_phone(
            session, number, actor=access.SYSTEM, rules=rules, region=region
        )
        if number and number.startswith("+")
        else None
    )
    if tracking is None and facts.direction == "inbound":
        tracking = await tracking_for_did(session, facts.did, tracker=tracker, at=facts.started_at)
    events: list[DomainEvent] = []
    responsible = (match.responsible_id if match else None) or (manager.id if manager else None)
    call, created = await calls.store_call(
        session,
        facts,
        user_id=manager.id if manager else None,
        contact_id=match.contact_id if match else None,
        company_id=match.company_id if match else None,
        lead_id=match.lead_id if match else None,
        source_id=tracking.get("source_id") if tracking else None,
        tracking=tracking,
    )
    if not created:
        return CallOutcome(call_id=call.id, created=False)
    outcome = CallOutcome(call_id=call.id, created=True, events=events)
    if recordings and facts.recording:
        await recordings_service.schedule_for_call(
            session,
            pbx=facts.pbx,
            call_ref=facts.call_id,
            call_pk=call.id,
            filename=facts.recording,
            ended_at=facts.ended_at,
        )
    if facts.direction == "internal":
        return outcome
    if match is None and facts.direction == "inbound" and number and number.startswith("+"):
        # A new caller becomes a lead with the call's source, for the manager his region
        # distributes to; failing that (the manual queue), the one who took the call (or
        # whose phone rang).
        if tracker is not None:
            region_id = (await tracker.call_region(facts.did, tracking)).id
        else:
            region_id = await distribution.region_of_tracking(session, tracking)
        assignment = await distribution.distribute(
            session,
            region_id,
            None,
            now,
            "call",
            rules=rules,
            taken_by=manager.id if manager else None,
        )
        responsible = assignment.user_id or responsible
        lead, lead_events = await leads.create_lead(
            session,
            LeadInput(
                title=f"Звонок с {display_number(number)}",
                origin="call",
                phones=[number],
                source_id=tracking.get("source_id") if tracking else None,
                region_id=region_id,
                responsible_id=responsible,
                tracking=tracking,
            ),
            actor=access.SYSTEM,
            rules=rules,
            now=now,
        )
        call.lead_id = lead.id
        outcome.lead_id = lead.id
        events.extend(lead_events)
        match = clients.ClientMatch(
            contact_id=None,
            company_id=None,
            lead_id=lead.id,
            responsible_id=responsible,
            name=lead.title,
            matched_on="new",
        )
    activity = await activities.record_activity(
        session,
        ActivityInput(
            kind="call",
            direction=facts.direction,
            subject=_subject(facts),
            occurred_at=facts.started_at,
            duration_s=(facts.ended_at - facts.started_at).total_seconds(),
            talk_s=facts.talk_seconds,
            counted=facts.counted,
            outcome=facts.disposition,
            user_id=manager.id if manager else None,
            contact_id=match.contact_id if match else None,
            company_id=match.company_id if match else None,
            lead_id=match.lead_id if match else None,
            external_id=f"call:{facts.pbx}:{facts.call_id}",
            payload={
                "call_pk": call.id,
                "number": number,
                "did": facts.did,
                "recording": facts.recording,
                "queue": facts.queue,
            },
        ),
        actor=access.SYSTEM,
        now=now,
    )
    outcome.activity_id = activity.id
    events.append(ActivityRecorded.of(activity))
    if number is None:
        return outcome
    if facts.disposition == "answered":
        await tasks.close_tasks_by_origin(session, missed_call_key(number), at=now)
    elif facts.direction == "inbound" and facts.disposition in MISSED:
        due = now + timedelta(minutes=callback_due_minutes)
        task, task_events = await tasks.create_task(
            session,
            TaskInput(
                kind=TaskKind.CALL_BACK,
                title=f"Перезвонить {display_number(number)}"
                + (f" ({match.name})" if match else ""),
                description=_missed_text(facts),
                due_at=due,
                responsible_id=responsible,
                contact_id=match.contact_id if match else None,
                company_id=match.company_id if match else None,
                lead_id=match.lead_id if match else None,
                origin_key=missed_call_key(number),
            ),
            actor=access.SYSTEM,
            rules=rules,
            now=now,
        )
        outcome.task_id = task.id
        events.extend(task_events)
    return outcome


def _subject(facts: calls.CallFacts) -> str:
    arrow = {"inbound": "Входящий", "outbound": "Исходящий"}.get(facts.direction, "Звонок")
    what = {
        "answered": f"{round(facts.talk_seconds)} с",
        "missed": "пропущен",
        "abandoned": "не дождался ответа",
        "busy": "занято",
        "failed": "не удался",
    }.get(facts.disposition, facts.disposition)
    return f"{arrow} звонок, {what}"


def _missed_text(facts: calls.CallFacts) -> str:
    parts = [f"Пропущенный звонок {facts.started_at:%d.%m.%Y %H:%M} UTC"]
    if facts.did:
        parts.append(f"на номер {facts.did}")
    if facts.queue:
        parts.append(f"(очередь {facts.queue})")
    return " ".join(parts)
