"""What a call means for the CRM: who is calling (the card summary of the screen-pop), where
the call came from (the DID's source), and what a finished call leaves behind (the call log
row, the timeline activity, a lead for a new caller, a call-back task for a missed call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import false, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import Activity
from crm_core.activities.schemas import ActivityInput
from crm_core.calls import service as calls
from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact
from crm_core.deals.model import Deal, PipelineStage, StageKind
from crm_core.events import DomainEvent
from crm_core.leads import service as leads
from crm_core.leads.model import Lead
from crm_core.leads.schemas import LeadInput
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


async def _names(session: AsyncSession, model: Any, ids: set[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    column = model.display_name if model is User else model.name
    rows = await session.execute(select(model.id, column).where(model.id.in_(wanted)))
    return {row[0]: row[1] for row in rows}


async def card_summary_for_number(
    session: AsyncSession, number: str | None, *, rules: CrmRules, region: str = "RU"
) -> dict[str, Any] | None:
    """The screen-pop's client card summary for a calling number, or None for a new caller."""
    if not number or not number.startswith("+"):
        return None
    match = await clients.find_client_by_phone(session, number, region=region, rules=rules)
    if match is None:
        return None
    record: Any = None
    kind = "lead"
    if match.contact_id is not None:
        record, kind = await session.get(Contact, match.contact_id), "contact"
    elif match.company_id is not None:
        record, kind = await session.get(Company, match.company_id), "company"
    elif match.lead_id is not None:
        record = await session.get(Lead, match.lead_id)
    company = await session.get(Company, match.company_id) if match.company_id else None
    card = company if company is not None and kind == "contact" else record
    users = await _names(session, User, {match.responsible_id})
    regions = await _names(session, Region, {getattr(card, "region_id", None)})
    sources = await _names(session, Source, {getattr(card, "source_id", None)})
    deals = [
        {"id": r[0], "title": r[1], "amount": _money(r[2]), "stage": r[3]}
        for r in await session.execute(
            select(Deal.id, Deal.title, Deal.amount, PipelineStage.name_ru)
            .join(PipelineStage, PipelineStage.id == Deal.stage_id)
            .where(_client_filter(Deal, match), PipelineStage.kind == StageKind.OPEN.value)
            .order_by(Deal.updated_at.desc())
            .limit(5)
        )
    ]
    recent = await session.execute(
        select(Activity.kind, Activity.subject, Activity.occurred_at, Activity.direction)
        .where(_client_filter(Activity, match))
        .order_by(Activity.occurred_at.desc())
        .limit(5)
    )
    open_tasks = await session.execute(
        select(Task.id, Task.title, Task.due_at)
        .where(_client_filter(Task, match), Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at)
        .limit(5)
    )
    potential = _money(getattr(card, "potential_amount", None))
    return {
        "type": kind,
        "id": record.id if record is not None else None,
        "contact_id": match.contact_id,
        "company_id": match.company_id,
        "lead_id": match.lead_id,
        "name": match.name,
        "company": company.name if company is not None else None,
        "client_type": getattr(card, "client_type", None),
        "potential": f"{potential} ₽" if potential else None,
        "purchase_mode": getattr(card, "purchase_mode", None),
        "responsible_id": match.responsible_id,
        "responsible": users.get(match.responsible_id) if match.responsible_id else None,
        "region": regions.get(getattr(card, "region_id", None) or -1),
        "source": sources.get(getattr(card, "source_id", None) or -1),
        "deals": deals,
        "activities": [
            {"kind": r[0], "subject": r[1], "occurred_at": r[2].isoformat(), "direction": r[3]}
            for r in recent
        ],
        "tasks": [
            {"id": r[0], "title": r[1], "due_at": r[2].isoformat() if r[2] else None}
            for r in open_tasks
        ],
        # The card page of the web UI is still to come; until then the card's API document.
        "url": f"/api/v1/{kind}s/{record.id}" if record is not None else None,
        "matched_on": match.matched_on,
    }


def _client_filter(model: Any, match: clients.ClientMatch) -> Any:
    """Rows of ``model`` linked to the matched contact, company or lead (the links it has)."""
    conditions = [
        getattr(model, column) == value
        for column, value in (
            ("contact_id", match.contact_id),
            ("company_id", match.company_id),
            ("lead_id", match.lead_id),
        )
        if value is not None and hasattr(model, column)
    ]
    return or_(*conditions) if conditions else false()


async def tracking_for_did(session: AsyncSession, did: str | None) -> dict[str, Any] | None:
    """The source a call to ``did`` carries: a static tracking number's source, if configured.

    Dynamic number pools (call tracking by visitor session) refine this later.
    """
    if not did:
        return None
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
) -> CallOutcome:
    """Store the call and what it means for the CRM, once per call (idempotent)."""
    existing = await calls.get_call(session, facts.pbx, facts.call_id)
    if existing is not None:
        return CallOutcome(call_id=existing.id, created=False)
    manager = await calls.extension_owner(session, facts.pbx, facts.extension)
    if manager is None and facts.rang:
        manager = await calls.extension_owner(session, facts.pbx, facts.rang[0])
    number = facts.outside_number
    match = (
        await clients.find_client_by_phone(session, number, region=region, rules=rules)
        if number and number.startswith("+")
        else None
    )
    if tracking is None and facts.direction == "inbound":
        tracking = await tracking_for_did(session, facts.did)
    events: list[DomainEvent] = []
    responsible = (match.responsible_id if match else None) or (manager.id if manager else None)
    call, _ = await calls.store_call(
        session,
        facts,
        user_id=manager.id if manager else None,
        contact_id=match.contact_id if match else None,
        company_id=match.company_id if match else None,
        lead_id=match.lead_id if match else None,
        source_id=tracking.get("source_id") if tracking else None,
        tracking=tracking,
    )
    outcome = CallOutcome(call_id=call.id, created=True, events=events)
    if facts.direction == "internal":
        return outcome
    if match is None and facts.direction == "inbound" and number and number.startswith("+"):
        # A new caller becomes a lead with the call's source, for the manager who took the
        # call (or whose phone rang); region routing refines the responsible later.
        lead, lead_events = await leads.create_lead(
            session,
            LeadInput(
                title=f"Звонок с {number}",
                origin="call",
                phones=[number],
                source_id=tracking.get("source_id") if tracking else None,
                responsible_id=responsible,
                tracking=tracking,
            ),
            actor=None,
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
        actor_id=None,
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
                title=f"Перезвонить {number}" + (f" ({match.name})" if match else ""),
                description=_missed_text(facts),
                due_at=due,
                responsible_id=responsible,
                contact_id=match.contact_id if match else None,
                company_id=match.company_id if match else None,
                lead_id=match.lead_id if match else None,
                origin_key=missed_call_key(number),
            ),
            actor=None,
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
