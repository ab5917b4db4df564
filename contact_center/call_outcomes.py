"""What a finished call leaves in the CRM, step by step, in the caller's transaction and once
per call (a call stored already, as after a reconnect replay, leaves nothing more):

1. store the call in the call log, linked to the manager, the client and the call's source;
2. its recording job, when the call has a MixMonitor file;
3. for an unknown inbound caller, a lead (distributed by the call's region);
4. the call activity on the client's timeline;
5. an answered call closes the call-back tasks of its number; a missed inbound call opens one.

Internal calls stop after the first two steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center import recordings_service
from contact_center.call_attribution import CallAttributor, call_tracking
from contact_center.tracking_service import display_number
from crm_core import access
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import Activity
from crm_core.activities.schemas import ActivityInput
from crm_core.calls import service as calls
from crm_core.calls.events import CallCorrected
from crm_core.calls.model import Call
from crm_core.calls.record import MISSED, CallRecord, billed_talk
from crm_core.clients import service as clients
from crm_core.distribution import service as distribution
from crm_core.events import DomainEvent
from crm_core.leads import service as leads
from crm_core.leads.schemas import LeadInput
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskKind
from crm_core.tasks.schemas import TaskInput
from crm_core.users.model import User


def missed_call_key(number: str) -> str:
    """The origin key of the call-back task for a missed call from ``number``."""
    return f"missed-call:{number}"


@dataclass
class CallOutcome:
    """What recording a finished call did; ``events`` are published after the commit."""

    call_id: int
    created: bool
    events: list[DomainEvent] = field(default_factory=list)
    lead_id: int | None = None
    task_id: int | None = None
    activity_id: int | None = None


@dataclass
class _EndedCall:
    """A finished call on its way through the steps, with what they learnt about it."""

    pbx: str
    record: CallRecord
    now: datetime
    manager: User | None  # who took the call, else whose phone rang first
    match: clients.ClientMatch | None  # who called (or was called)
    tracking: dict[str, Any] | None  # where an inbound call came from
    stored: Call | None = None

    @property
    def e164(self) -> str | None:
        """The client's number when it is a phone number in E.164 (what a card can hold)."""
        number = self.record.outside_number
        return number if number and number.startswith("+") else None

    @property
    def manager_id(self) -> int | None:
        return self.manager.id if self.manager else None

    @property
    def responsible_id(self) -> int | None:
        """Whose the call's follow-up is: the client's manager, else the call's."""
        return (self.match.responsible_id if self.match else None) or self.manager_id

    def client_links(self) -> dict[str, int | None]:
        match = self.match
        return {
            "contact_id": match.contact_id if match else None,
            "company_id": match.company_id if match else None,
            "lead_id": match.lead_id if match else None,
        }


class CallOutcomes:
    """Writes what a finished call means for the CRM (:meth:`record`)."""

    def __init__(
        self,
        *,
        tracker: CallAttributor,
        rules: CrmRules,
        callback_due_minutes: int,
        region: str = "RU",
        recordings: bool = False,
        count_threshold_s: float = 60.0,
    ) -> None:
        self.tracker = tracker
        self.rules = rules
        self.callback_due_minutes = callback_due_minutes
        self.region = region  # the phone region numbers without a country code are read in
        self.recordings = recordings  # schedule the recording job of a call with a file
        self.count_threshold_s = count_threshold_s  # talk that makes a call count

    async def record(
        self,
        session: AsyncSession,
        pbx: str,
        record: CallRecord,
        *,
        now: datetime,
        tracking: dict[str, Any] | None = None,
    ) -> CallOutcome:
        """Store ``record`` of ``pbx`` and what it means for the CRM, once per call
        (idempotent), in ``session``'s transaction (the caller commits). ``tracking`` is what
        the pop-up learnt when the call rang; without it an inbound call is attributed now."""
        call = await self._identify(session, pbx, record, tracking, now)
        stored, created = await self._store_call(session, call)
        if not created:
            return CallOutcome(call_id=stored.id, created=False)
        outcome = CallOutcome(call_id=stored.id, created=True)
        if self.recordings and record.recording:
            await self._schedule_recording(session, call, record.recording)
        if record.direction == "internal":
            return outcome
        if call.match is None and record.direction == "inbound" and call.e164:
            await self._lead_for_new_caller(session, call, outcome)
        await self._record_activity(session, call, outcome)
        # The number as the PBX gave it: a short code's missed call is called back too.
        number = record.outside_number
        if number is None:
            return outcome
        if record.disposition == "answered":
            await self._close_call_back_tasks(session, call, number)
        elif record.direction == "inbound" and record.disposition in MISSED:
            await self._call_back_task(session, call, number, outcome)
        return outcome

    async def correct(
        self,
        session: AsyncSession,
        pbx: str,
        record: CallRecord,
        *,
        now: datetime,
        recording: str | None = None,
    ) -> list[DomainEvent]:
        """Give the stored call of ``record`` (read from the PBX's CDR) the PBX's times where
        it only estimated them (an outage, a restart): its answer and end, whether it was
        answered and by whom, so ``counted`` is right, its queue and the phones that rang;
        its activity follows; an answered call closes the call-back its estimated "missed"
        opened; a recording found in the spool (``recording``) is attached. Returns the
        events to publish after the commit."""
        stored = await calls.get_call(session, pbx, record.call_id)
        if stored is None or not stored.estimated:
            return []
        estimated = set(stored.estimated)
        was_answered = stored.answered_at is not None
        if "started_at" in estimated:
            stored.started_at = record.started_at
        answer_from_cdr = record.answered_at is not None and (
            not was_answered or "answered_at" in estimated
        )
        end_from_cdr = "ended_at" in estimated
        if answer_from_cdr:
            stored.answered_at = record.answered_at
            stored.disposition = "answered"
            if record.extension and (not was_answered or stored.extension is None):
                stored.extension = record.extension
                owner = await calls.extension_owner(session, pbx, record.extension)
                if owner is not None:
                    stored.user_id = owner.id
        if end_from_cdr:
            stored.ended_at = record.ended_at
        started, answered, ended = stored.started_at, stored.answered_at, stored.ended_at
        ended = max(ended, started)
        if answered is not None:
            answered = min(max(answered, started), ended)
            talk = (ended - answered).total_seconds()
            # billsec counts from the CDR's answer: only when that is this call's answer (a
            # click-to-call's CDR answer is the manager's, its live one the client's).
            same_answer = record.answered_at is not None and (
                answer_from_cdr or answered.replace(microsecond=0) == record.answered_at
            )
            if record.billsec is not None and same_answer:
                # The CDR's times are truncated to the second: next to a time the link saw
                # to the microsecond the talk comes out up to a second short or long. The
                # PBX's billsec puts it in the right second; the CDR's time moves with it.
                # A CDR answer may be up to a second later than written: the talk that much
                # shorter; a CDR end only later, the talk only longer.
                talk = billed_talk(talk - 1.0 if answer_from_cdr else talk, record.billsec)
                if end_from_cdr and not answer_from_cdr:
                    ended = stored.ended_at = answered + timedelta(seconds=talk)
                elif answer_from_cdr and not end_from_cdr:
                    answered = stored.answered_at = ended - timedelta(seconds=talk)
            stored.ring_seconds = round((answered - started).total_seconds(), 1)
            stored.talk_seconds = round(talk, 1)
        else:
            stored.ring_seconds = round((ended - started).total_seconds(), 1)
            stored.talk_seconds = 0.0
        stored.counted = stored.talk_seconds >= self.count_threshold_s
        stored.estimated = []
        # What the link did not hear either: the queue the caller waited in before a
        # restart, the phones that rang meanwhile.
        stored.queue = stored.queue or record.queue
        rang = list(stored.rang or [])
        stored.rang = rang + [ext for ext in record.rang if ext not in rang]
        events: list[DomainEvent] = []
        if recording is not None and stored.recording is None and stored.answered_at is not None:
            stored.recording = recording
            if self.recordings:
                await recordings_service.schedule_for_call(
                    session,
                    pbx=pbx,
                    call_ref=stored.call_id,
                    call_pk=stored.id,
                    filename=recording,
                    ended_at=stored.ended_at,
                )
        activity = await session.scalar(
            select(Activity).where(Activity.external_id == f"call:{pbx}:{stored.call_id}")
        )
        if activity is not None:
            fixed = CallRecord(
                **{
                    **{f: getattr(record, f) for f in _RECORD_FIELDS},
                    "direction": stored.direction,
                    "disposition": stored.disposition,
                    "talk_seconds": stored.talk_seconds,
                    "unanswered_by": stored.unanswered_by,
                },
            )
            activity.subject = _subject(fixed)
            activity.occurred_at = stored.started_at
            activity.duration_s = (stored.ended_at - stored.started_at).total_seconds()
            activity.talk_s = stored.talk_seconds
            activity.counted = stored.counted
            activity.outcome = stored.disposition
            if stored.recording is not None:
                activity.payload = {**(activity.payload or {}), "recording": stored.recording}
        number = stored.callee if stored.direction == "outbound" else stored.caller
        if not was_answered and stored.answered_at is not None and number:
            await tasks.close_tasks_by_origin(session, missed_call_key(number), at=now)
        await session.flush()
        # The screens that showed the call's estimated end: its phones, its manager, the head.
        audience = {f"ext:{ext}" for ext in stored.rang or ()} | {"role:head"}
        if stored.extension:
            audience.add(f"ext:{stored.extension}")
        if stored.user_id is not None:
            audience.add(f"user:{stored.user_id}")
        events.append(
            CallCorrected(
                call_id=stored.call_id,
                pbx=pbx,
                extension=stored.extension,
                disposition=stored.disposition,
                talk_seconds=stored.talk_seconds,
                counted=stored.counted,
                occurred_at=now,
                audience=tuple(sorted(audience)),
            )
        )
        return events

    # ---------------------------------------------------------------- the steps

    async def _identify(
        self,
        session: AsyncSession,
        pbx: str,
        record: CallRecord,
        tracking: dict[str, Any] | None,
        now: datetime,
    ) -> _EndedCall:
        """Who took the call, who the client is and where an inbound call came from. A call
        stored already (a replay after a reconnect) is found by the next step, before
        anything is written: one query less for every new call."""
        manager = await calls.extension_owner(session, pbx, record.extension)
        if manager is None and record.rang:
            manager = await calls.extension_owner(session, pbx, record.rang[0])
        call = _EndedCall(pbx, record, now, manager, None, tracking)
        if call.e164:
            call.match = await clients.find_client_by_phone(
                session, call.e164, actor=access.SYSTEM, rules=self.rules, region=self.region
            )
        if tracking is None and record.direction == "inbound":
            call.tracking = await call_tracking(
                self.tracker, session, record.did, record.started_at
            )
        return call

    async def _store_call(self, session: AsyncSession, call: _EndedCall) -> tuple[Call, bool]:
        """The call log row, unless the call is stored already; (row, created)."""
        stored, created = await calls.store_call(
            session,
            call.pbx,
            call.record,
            user_id=call.manager_id,
            **call.client_links(),
            source_id=call.tracking.get("source_id") if call.tracking else None,
            tracking=call.tracking,
        )
        call.stored = stored
        return stored, created

    async def _schedule_recording(
        self, session: AsyncSession, call: _EndedCall, filename: str
    ) -> None:
        """The recording job of the call's MixMonitor file, in the same transaction."""
        assert call.stored is not None
        await recordings_service.schedule_for_call(
            session,
            pbx=call.pbx,
            call_ref=call.record.call_id,
            call_pk=call.stored.id,
            filename=filename,
            ended_at=call.record.ended_at,
        )

    async def _lead_for_new_caller(
        self, session: AsyncSession, call: _EndedCall, outcome: CallOutcome
    ) -> None:
        """A new caller becomes a lead with the call's source and region, for the manager
        his region distributes to; failing that (the manual queue), the one who took the call
        (or whose phone rang). The manager the dialplan chose keeps it when the region's rule
        has him on duty."""
        assert call.stored is not None and call.e164 is not None
        region_id = (await self.tracker.call_region(call.record.did, call.tracking)).id
        assignment = await distribution.distribute(
            session,
            region_id,
            None,
            call.now,
            "call",
            rules=self.rules,
            taken_by=call.manager_id,
        )
        responsible = assignment.user_id or call.responsible_id
        lead, lead_events = await leads.create_lead(
            session,
            LeadInput(
                title=f"Звонок с {display_number(call.e164)}",
                origin="call",
                phones=[call.e164],
                source_id=call.tracking.get("source_id") if call.tracking else None,
                region_id=region_id,
                responsible_id=responsible,
                tracking=call.tracking,
            ),
            actor=access.SYSTEM,
            rules=self.rules,
            now=call.now,
        )
        call.stored.lead_id = lead.id
        call.match = clients.ClientMatch(
            contact_id=None,
            company_id=None,
            lead_id=lead.id,
            responsible_id=responsible,
            name=lead.title,
            matched_on="new",
        )
        outcome.lead_id = lead.id
        outcome.events.extend(lead_events)

    async def _record_activity(
        self, session: AsyncSession, call: _EndedCall, outcome: CallOutcome
    ) -> None:
        """The call on the client's timeline (idempotent by its external id)."""
        assert call.stored is not None
        record = call.record
        activity = await activities.record_activity(
            session,
            ActivityInput(
                kind="call",
                direction=record.direction,
                subject=_subject(record),
                occurred_at=record.started_at,
                duration_s=(record.ended_at - record.started_at).total_seconds(),
                talk_s=record.talk_seconds,
                counted=record.counted,
                outcome=record.disposition,
                user_id=call.manager_id,
                **call.client_links(),
                external_id=f"call:{call.pbx}:{record.call_id}",
                payload={
                    "call_pk": call.stored.id,
                    "number": record.outside_number,
                    "did": record.did,
                    "recording": record.recording,
                    "queue": record.queue,
                },
            ),
            actor=access.SYSTEM,
            now=call.now,
        )
        outcome.activity_id = activity.id
        outcome.events.append(ActivityRecorded.of(activity))

    async def _close_call_back_tasks(
        self, session: AsyncSession, call: _EndedCall, number: str
    ) -> None:
        """An answered call with ``number`` settles the call-backs its missed calls asked."""
        await tasks.close_tasks_by_origin(session, missed_call_key(number), at=call.now)

    async def _call_back_task(
        self, session: AsyncSession, call: _EndedCall, number: str, outcome: CallOutcome
    ) -> None:
        """A missed inbound call from ``number`` asks its client's manager to call back."""
        match = call.match
        task, task_events = await tasks.create_task(
            session,
            TaskInput(
                kind=TaskKind.CALL_BACK,
                title=f"Перезвонить {display_number(number)}"
                + (f" ({match.name})" if match else ""),
                description=_missed_text(call.record),
                due_at=call.now + timedelta(minutes=self.callback_due_minutes),
                responsible_id=call.responsible_id,
                **call.client_links(),
                origin_key=missed_call_key(number),
            ),
            actor=access.SYSTEM,
            rules=self.rules,
            now=call.now,
        )
        outcome.task_id = task.id
        outcome.events.extend(task_events)


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(CallRecord))


def _subject(record: CallRecord) -> str:
    arrow = {"inbound": "Входящий", "outbound": "Исходящий"}.get(record.direction, "Звонок")
    if record.unanswered_by == "manager":
        return f"{arrow} звонок, менеджер не взял трубку"
    if record.unanswered_by == "client" and record.disposition == "missed":
        return f"{arrow} звонок, клиент не ответил"
    what = {
        "answered": f"{round(record.talk_seconds)} с",
        "missed": "пропущен",
        "abandoned": "не дождался ответа",
        "busy": "занято",
        "failed": "не удался",
    }.get(record.disposition, record.disposition)
    return f"{arrow} звонок, {what}"


def _missed_text(record: CallRecord) -> str:
    parts = [f"Пропущенный звонок {record.started_at:%d.%m.%Y %H:%M} UTC"]
    if record.did:
        parts.append(f"на номер {record.did}")
    if record.queue:
        parts.append(f"(очередь {record.queue})")
    return " ".join(parts)
