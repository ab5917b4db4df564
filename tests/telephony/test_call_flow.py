"""Real captures through the fold and the telephony service into the CRM and onto the bus."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ami.frames import FrameParser
from contact_center import db, tracking_service
from contact_center.bus import EventBus
from contact_center.config import Settings
from contact_center.pbx import PbxLink
from contact_center.telephony import Telephony
from crm_core.activities.model import Activity
from crm_core.calls.events import CallAnswered, CallEnded, CallRinging
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.clock import ManualClock
from crm_core.events import DomainEvent
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.tasks.model import Task
from crm_core.users import service as users
from tests.helpers import until

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
PBX = '[{"name": "main", "username": "u", "secret": "s", "trunks": ["provider"]}]'


async def _setup(make_settings: Any, database_url: str) -> tuple[Telephony, Any, list[DomainEvent]]:
    settings: Settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=PBX)
    engine = db.create_engine(settings.database)
    sessions: async_sessionmaker[AsyncSession] = db.sessionmaker(engine)
    bus = EventBus()
    seen: list[DomainEvent] = []

    async def collect(event: DomainEvent) -> None:
        seen.append(event)

    bus.subscribe(collect, name="test")
    await bus.start()
    clock = ManualClock(datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    tracker, _ = await tracking_service.open_service(
        settings, sessions=sessions, redis=None, clock=clock
    )
    tel = Telephony(
        settings=settings,
        sessions=sessions,
        bus=bus,
        rules=settings.crm.rules(),
        clock=clock,
        tracker=tracker,
    )
    await tel.start()
    return tel, (engine, sessions, bus), seen


async def _teardown(tel: Telephony, ctx: Any) -> None:
    engine, _, bus = ctx
    await tel.close()
    await bus.close()
    await engine.dispose()


def _replay(tel: Telephony, trace: str, replace: tuple[bytes, bytes] | None = None) -> None:
    data = (FIXTURES / f"{trace}.ami").read_bytes()
    if replace:
        data = data.replace(*replace)
    # The PBX link's fold, as the server runs it (a fresh one: each capture is whole calls).
    link = PbxLink(
        tel.settings.pbx[0], settings=tel.settings, telephony=tel, clock=tel.clock, lease=None
    )
    for frame in FrameParser().feed(data):
        link.feed(frame)


async def _known_client(sessions: Any, phone: str, owner_id: int | None) -> tuple[int, int]:
    async with sessions() as s:
        company = Company(name="ООО «Ромашка»", client_type="wholesaler", responsible_id=owner_id)
        contact = Contact(name="Сергей Ковалёв", responsible_id=owner_id)
        s.add_all([company, contact])
        await s.flush()
        s.add(ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True))
        s.add(Phone(contact_id=contact.id, e164=phone, digits_rev=digits_reversed(phone)))
        await s.commit()
        return contact.id, company.id


async def test_answered_call_of_a_known_client(make_settings: Any, database_url: str) -> None:
    tel, ctx, seen = await _setup(make_settings, database_url)
    _, sessions, _ = ctx
    try:
        async with sessions() as s:
            ivan, _ = await users.create_user(
                s,
                login="ivan",
                role="manager",
                password="password1",
                extensions=["101"],
                scrypt_n=1024,
            )
            await s.commit()
        contact_id, company_id = await _known_client(sessions, "+74951234567", ivan.id)
        _replay(tel, "a_inbound_queue_answered")
        await tel.drain()
        await until(lambda: any(e.name == "call.ended" for e in seen))

        ringing = [e for e in seen if isinstance(e, CallRinging)]
        assert ringing and ringing[0].audience == ("ext:101", "role:head")
        pop = ringing[0]
        assert pop.caller == "+74951234567" and pop.did == "+74951112233"
        assert pop.client is not None and pop.client["name"] == "Сергей Ковалёв"
        assert pop.client["company"] == "ООО «Ромашка»"
        assert pop.client["url"] == f"/clients/contact/{contact_id}"
        assert pop.client["responsible_id"] == ivan.id and pop.client["client_type"] == "wholesaler"
        assert [e.name for e in seen if e.name.startswith("call.")][-1] == "call.ended"

        async with sessions() as s:
            call = await s.scalar(select(Call))
            assert call is not None
            assert (call.user_id, call.contact_id, call.company_id) == (
                ivan.id,
                contact_id,
                company_id,
            )
            assert call.disposition == "answered" and call.counted is (call.talk_seconds >= 60)
            activity = await s.scalar(select(Activity))
            assert activity is not None and activity.kind == "call"
            assert activity.external_id == f"call:main:{call.call_id}"
            assert activity.contact_id == contact_id and activity.user_id == ivan.id
            assert (await s.scalar(select(Task))) is None
            assert (await s.scalar(select(Lead))) is None  # a known client is no new lead
    finally:
        await _teardown(tel, ctx)


async def test_missed_call_creates_a_callback_task_closed_by_a_later_answer(
    make_settings: Any, database_url: str
) -> None:
    tel, ctx, seen = await _setup(make_settings, database_url)
    _, sessions, _ = ctx
    try:
        async with sessions() as s:
            await users.create_user(
                s,
                login="ivan",
                role="manager",
                password="password1",
                extensions=["101"],
                scrypt_n=1024,
            )
            await s.commit()
        _replay(tel, "b_inbound_missed")  # +79161234567, nobody answered
        await tel.drain()
        async with sessions() as s:
            task = await s.scalar(select(Task))
            assert task is not None and task.kind == "call_back" and task.status == "open"
            assert task.origin_key == "missed-call:+79161234567"
            assert "+7 (916) 123-45-67" in task.title  # the number as people write it
            call = await s.scalar(select(Call))
            assert call is not None and call.disposition == "missed"
            # The unknown caller became a lead, and the task and call point at it.
            lead = await s.scalar(select(Lead))
            assert lead is not None and lead.origin == "call" and lead.stage == "new"
            assert call.lead_id == lead.id and task.lead_id == lead.id
            phone = await s.scalar(select(Phone).where(Phone.lead_id == lead.id))
            assert phone is not None and phone.e164 == "+79161234567"
        assert any(e.name == "task.created" for e in seen)
        # Replaying the same capture (a reconnect replay) stores nothing twice.
        _replay(tel, "b_inbound_missed")
        await tel.drain()
        async with sessions() as s:
            assert len((await s.scalars(select(Call))).all()) == 1
            assert len((await s.scalars(select(Task))).all()) == 1
            assert len((await s.scalars(select(Activity))).all()) == 1
            assert len((await s.scalars(select(Lead))).all()) == 1
        # The same number calls again and is answered: the call-back task is done.
        _replay(tel, "c_inbound_short_answered", (b"74957654321", b"79161234567"))
        await tel.drain()
        async with sessions() as s:
            task = await s.scalar(select(Task))
            assert task is not None and task.status == "done" and task.completed_at is not None
            assert len((await s.scalars(select(Call))).all()) == 2
    finally:
        await _teardown(tel, ctx)


async def test_caller_is_identified_when_the_call_comes_in_and_again_after_a_long_wait(
    make_settings: Any, database_url: str, monkeypatch: Any
) -> None:
    """The card is looked up as the trunk channel appears (before the greeting and queue); a
    phone ringing long after that gets a fresh lookup, so edits made meanwhile show."""
    from ami import fold
    from contact_center import telephony

    tel, ctx, seen = await _setup(make_settings, database_url)
    _, sessions, _ = ctx
    try:
        caller, did = "+74951234567", "+74951112233"
        await tel.handle("main", fold.CallStarted("c1", caller, did, 1.0))
        info = tel._live[("main", "c1")]
        assert info.looked_up == (caller, did) and info.client is None  # not a client yet
        await _known_client(sessions, caller, owner_id=None)

        # Rung right away: the pop-up shows what the lookup found when the call came in.
        await tel.handle("main", fold.CallRinging("c1", caller, did, "101", 2.0))
        await until(lambda: any(e.name == "call.ringing" for e in seen))
        assert [e.client for e in seen if isinstance(e, CallRinging)] == [None]

        # Rung after a long queue wait: looked up again.
        monkeypatch.setattr(telephony, "PREFETCH_FRESH_S", 0.0)
        await tel.handle("main", fold.CallRinging("c1", caller, did, "102", 300.0))
        await until(lambda: len([e for e in seen if e.name == "call.ringing"]) == 2)
        pops = [e for e in seen if isinstance(e, CallRinging)]
        assert pops[-1].client is not None and pops[-1].client["name"] == "Сергей Ковалёв"
    finally:
        await _teardown(tel, ctx)


async def test_the_head_watches_every_call_and_each_event_names_the_client(
    make_settings: Any, database_url: str
) -> None:
    """The head of sales (no extension) sees who is on a call: ringing, answer and end reach
    role:head; answer and end carry the client's number (the call feed showed the extension
    for answered calls and nothing for a missed one)."""
    tel, ctx, seen = await _setup(make_settings, database_url)
    try:
        for trace in ("a_inbound_queue_answered", "b_inbound_missed", "d_outbound_answered"):
            seen.clear()
            _replay(tel, trace)
            await tel.drain()
            await until(lambda: any(e.name == "call.ended" for e in seen))
            expected = json.loads((FIXTURES / f"{trace}.expected.jsonl").read_text())
            client = (
                expected["caller"] if expected["direction"] == "inbound" else expected["callee"]
            )
            calls = [e for e in seen if e.name.startswith("call.")]
            assert calls and all("role:head" in e.audience for e in calls), trace
            for event in calls:
                if isinstance(event, CallAnswered | CallEnded):
                    assert event.caller == client, (trace, event)
    finally:
        await _teardown(tel, ctx)


async def test_finished_calls_waiting_together_are_stored_in_one_transaction(
    make_settings: Any, database_url: str
) -> None:
    """Calls that end while the call log is busy are written together (one BEGIN and COMMIT
    for them all), each with its whole outcome, in order."""
    tel, ctx, seen = await _setup(make_settings, database_url)
    engine, sessions, _ = ctx
    batches: list[int] = []

    def executed(conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO CALLS"):
            conn.info["calls"] = conn.info.get("calls", 0) + 1

    def committed(conn: Any) -> None:
        if calls := conn.info.pop("calls", 0):
            batches.append(calls)

    event.listen(engine.sync_engine, "after_cursor_execute", executed)
    event.listen(engine.sync_engine, "commit", committed)
    try:
        callers = [f"+7495765{i:04d}" for i in range(5)]
        for i, caller in enumerate(callers):
            # Five calls of the capture, each its own (ids, times, caller), ending together.
            data = (
                (FIXTURES / "c_inbound_short_answered.ami")
                .read_bytes()
                .replace(b"1795722921.", f"17957229{30 + i}.".encode())
                .replace(b"+74957654321", caller.encode())
            )
            link = PbxLink(
                tel.settings.pbx[0],
                settings=tel.settings,
                telephony=tel,
                clock=tel.clock,
                lease=None,
            )
            for frame in FrameParser().feed(data):
                link.feed(frame)
        await tel.drain()
        async with sessions() as s:
            stored = (await s.scalars(select(Call.caller).order_by(Call.id))).all()
            leads = (await s.scalars(select(Lead.id))).all()
            activities = (await s.scalars(select(Activity.id))).all()
        assert stored == callers
        assert len(leads) == 5 and len(activities) == 5
        assert batches == [5]
        ended = [e for e in seen if isinstance(e, CallEnded)]
        assert [e.caller for e in ended] == callers
        assert tel.failures == 0 and tel.calls_waiting == 0
    finally:
        event.remove(engine.sync_engine, "after_cursor_execute", executed)
        event.remove(engine.sync_engine, "commit", committed)
        await _teardown(tel, ctx)
