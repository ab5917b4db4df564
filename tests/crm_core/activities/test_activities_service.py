"""The client timeline: idempotent writes from adapters, hand-recorded meetings and notes,
the group timeline and who sees what."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contact_center import db
from crm_core.access import SYSTEM
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import Activity
from crm_core.activities.schemas import ActivityInput, ActivityPatch
from crm_core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.rules import CrmRules
from tests.crm_core.tasks.world import T0, World, build_world

RULES = CrmRules()
MIN = timedelta(minutes=1)


def call(w: World, **kw: object) -> ActivityInput:
    data = {
        "kind": "call",
        "direction": "inbound",
        "occurred_at": T0,
        "duration_s": 95.0,
        "talk_s": 80.0,
        "counted": True,
        "user_id": w["ivan"],
        "contact_id": w["contact"],
        "external_id": "call:main:1700000000.1",
    }
    data.update(kw)
    return ActivityInput.model_validate(data)


async def test_record_is_idempotent_by_external_id(session: AsyncSession) -> None:
    w = await build_world(session)
    first = await activities.record_activity(session, call(w), actor=SYSTEM)
    again = await activities.record_activity(
        session, call(w, talk_s=81.0, company_id=w["ivan_co"]), actor=SYSTEM
    )
    await session.commit()
    assert again.id == first.id
    count = await session.scalar(select(func.count()).select_from(Activity))
    assert count == 1
    assert again.talk_s == 81.0 and again.company_id == w["ivan_co"]
    assert again.counted is True and again.kind == "call"


async def test_many_new_entries_are_stored_once_each(session: AsyncSession) -> None:
    """``record_new_activities`` (the inbox batch's on SQLite, any writer's on both): each entry
    stored with its links and an event; an entry whose external id is stored already is left
    as it was, without an event."""
    w = await build_world(session)

    def message(n: int, body: str) -> ActivityInput:
        return ActivityInput(
            kind="message",
            direction="inbound",
            subject="WhatsApp: входящее сообщение",
            body=body,
            occurred_at=T0,
            user_id=w["ivan"],
            contact_id=w["contact"],
            external_id=f"message:{n}",
        )

    first = await activities.record_new_activities(
        session, [message(1, "первое"), message(2, "второе")], actor=SYSTEM, now=T0
    )
    again = await activities.record_new_activities(
        session, [message(2, "заменено?"), message(3, "третье")], actor=SYSTEM, now=T0 + MIN
    )
    await session.commit()
    assert [e.external_id for e in first] == ["message:1", "message:2"]
    assert [e.external_id for e in again] == ["message:3"]
    assert all(e.audience == (f"user:{w['ivan']}",) and e.kind == "message" for e in first)
    stored = {a.external_id: a for a in (await session.scalars(select(Activity))).all()}
    assert {e.activity_id for e in (*first, *again)} == {a.id for a in stored.values()}
    assert stored["message:2"].body == "второе" and stored["message:2"].created_at == T0
    assert (
        stored["message:3"].contact_id == w["contact"] and stored["message:3"].user_id == w["ivan"]
    )


async def test_a_new_call_entry_is_one_statement(session: AsyncSession) -> None:
    """Every stored call writes one (the call log's hot path): the insert returns the entry
    itself, no second round trip to load it."""
    w = await build_world(session)
    statements: list[str] = []

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    engine = (await session.connection()).engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        entry = await activities.record_activity(session, call(w), actor=SYSTEM)
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len(statements) == 1, statements
    assert entry.id is not None and entry.external_id == "call:main:1700000000.1"
    assert (entry.kind, entry.talk_s, entry.contact_id) == ("call", 80.0, w["contact"])
    assert entry.occurred_at == T0


async def test_a_rewrite_keeps_fields_it_does_not_set(session: AsyncSession) -> None:
    w = await build_world(session)
    await activities.record_activity(session, call(w, subject="first"), actor=SYSTEM)
    partial = ActivityInput(kind="call", external_id="call:main:1700000000.1", outcome="answered")
    again = await activities.record_activity(session, partial, actor=SYSTEM)
    assert again.subject == "first" and again.outcome == "answered"
    assert again.contact_id == w["contact"] and again.talk_s == 80.0


async def test_two_writers_of_one_call_make_one_activity(engine: AsyncEngine) -> None:
    sessions = db.sessionmaker(engine)
    async with sessions() as s:
        w = await build_world(s)
    for _ in range(2):
        async with sessions() as s:
            await activities.record_activity(s, call(w), actor=SYSTEM)
            await s.commit()
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Activity)) == 1


def test_counted_is_for_calls_only() -> None:
    with pytest.raises(ValidationError, match="calls only"):
        ActivityInput(kind="meeting", counted=True)


async def test_links_are_completed_from_the_deal(session: AsyncSession) -> None:
    w = await build_world(session)
    data = ActivityInput(kind="meeting", deal_id=w["deal"], occurred_at=T0)
    activity = await activities.add_activity(
        session, data, actor=w.user("ivan"), rules=RULES, now=T0
    )
    assert activity.company_id == w["ivan_co"] and activity.contact_id == w["contact"]
    assert activity.user_id == w["ivan"] and activity.created_by_id == w["ivan"]


async def test_event_of_an_activity(session: AsyncSession) -> None:
    w = await build_world(session)
    activity = await activities.record_activity(session, call(w), actor=SYSTEM)
    event = ActivityRecorded.of(activity)
    assert event.audience == (f"user:{w['ivan']}",)
    again = DomainEvent.from_dict(event.to_dict())
    assert again == event


async def test_by_hand_only_meetings_notes_and_emails(session: AsyncSession) -> None:
    w = await build_world(session)
    with pytest.raises(InvalidInput) as err:
        await activities.add_activity(
            session, ActivityInput(kind="call"), actor=w.user("ivan"), rules=RULES, now=T0
        )
    assert err.value.details["field"] == "kind"


async def test_who_may_record_by_hand(session: AsyncSession) -> None:
    w = await build_world(session)
    note = ActivityInput(kind="note", company_id=w["ivan_co"], subject="x")
    # A manager records about his own clients, for himself.
    await activities.add_activity(session, note, actor=w.user("ivan"), rules=RULES, now=T0)
    with pytest.raises(InvalidInput) as err:  # another manager's client does not even exist
        await activities.add_activity(session, note, actor=w.user("anna"), rules=RULES, now=T0)
    assert err.value.details == {"field": "company_id", "value": w["ivan_co"]}
    shared = CrmRules(managers_read_all=True)
    with pytest.raises(PermissionDenied):  # readable is not writable
        await activities.add_activity(session, note, actor=w.user("anna"), rules=shared, now=T0)
    for_other = note.model_copy(update={"user_id": w["anna"]})
    with pytest.raises(PermissionDenied) as denied:
        await activities.add_activity(session, for_other, actor=w.user("ivan"), rules=RULES, now=T0)
    assert denied.value.details == {"field": "user_id"}
    # Head and admin record for anyone about anyone's client.
    by_head = await activities.add_activity(
        session, for_other, actor=w.user("boss"), rules=RULES, now=T0
    )
    assert by_head.user_id == w["anna"]
    with pytest.raises(InvalidInput):
        await activities.add_activity(
            session,
            ActivityInput(kind="note", company_id=999_999),
            actor=w.user("adm"),
            rules=RULES,
            now=T0,
        )


async def _timeline(session: AsyncSession, w: World) -> dict[str, int]:
    ids: dict[str, int] = {}
    for name, kw in {
        "ivan_call": {"company_id": w["ivan_co"], "external_id": "c1"},
        "member_call": {"company_id": w["member"], "user_id": w["anna"], "external_id": "c2"},
        "anna_call": {"company_id": w["anna_co"], "user_id": w["anna"], "external_id": "c3"},
        "ivan_at_anna": {"company_id": w["anna_co"], "user_id": w["ivan"], "external_id": "c4"},
    }.items():
        offset = len(ids)
        activity = await activities.record_activity(
            session, call(w, occurred_at=T0 + offset * MIN, contact_id=None, **kw), actor=SYSTEM
        )
        ids[name] = activity.id
    note = await activities.record_activity(
        session,
        ActivityInput(
            kind="note", company_id=w["ivan_co"], user_id=w["anna"], occurred_at=T0 - MIN
        ),
        actor=SYSTEM,
    )
    ids["anna_note_on_ivan_co"] = note.id
    await session.commit()
    return ids


async def test_a_company_timeline_includes_its_group_newest_first(session: AsyncSession) -> None:
    w = await build_world(session)
    ids = await _timeline(session, w)
    rows, total = await activities.list_activities(
        session, actor=w.user("boss"), rules=RULES, company_id=w["ivan_co"]
    )
    assert [a.id for a in rows] == [
        ids["member_call"],
        ids["ivan_call"],
        ids["anna_note_on_ivan_co"],
    ]
    assert total == 3
    # A member company's own timeline is just its own.
    rows, _ = await activities.list_activities(
        session, actor=w.user("boss"), rules=RULES, company_id=w["member"]
    )
    assert [a.id for a in rows] == [ids["member_call"]]


async def test_a_manager_sees_his_activities_and_those_about_his_clients(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    ids = await _timeline(session, w)
    rows, total = await activities.list_activities(session, actor=w.user("ivan"), rules=RULES)
    assert {a.id for a in rows} == {
        ids["ivan_call"],
        ids["ivan_at_anna"],
        ids["anna_note_on_ivan_co"],
    }
    assert total == 3
    rows, _ = await activities.list_activities(session, actor=w.user("anna"), rules=RULES)
    assert {a.id for a in rows} == {
        ids["member_call"],
        ids["anna_call"],
        ids["ivan_at_anna"],
        ids["anna_note_on_ivan_co"],
    }
    rows, total = await activities.list_activities(
        session, actor=w.user("anna"), rules=CrmRules(managers_read_all=True)
    )
    assert total == 5
    with pytest.raises(NotFound):
        await activities.get_activity(session, ids["ivan_call"], actor=w.user("anna"), rules=RULES)
    got = await activities.get_activity(
        session, ids["ivan_at_anna"], actor=w.user("anna"), rules=RULES
    )
    assert got.user_id == w["ivan"]


async def test_timeline_filters(session: AsyncSession) -> None:
    w = await build_world(session)
    ids = await _timeline(session, w)
    adm = w.user("adm")
    rows, _ = await activities.list_activities(session, actor=adm, rules=RULES, kind="note")
    assert [a.id for a in rows] == [ids["anna_note_on_ivan_co"]]
    rows, _ = await activities.list_activities(
        session, actor=adm, rules=RULES, user_id=w["ivan"], since=T0 + MIN, until=T0 + 10 * MIN
    )
    assert [a.id for a in rows] == [ids["ivan_at_anna"]]
    rows, total = await activities.list_activities(session, actor=adm, rules=RULES, limit=2)
    assert len(rows) == 2 and total == 5
    rows, _ = await activities.list_activities(
        session, actor=adm, rules=RULES, since=T0 + MIN, until=T0
    )
    assert rows == []


async def test_a_timeline_without_its_total(session: AsyncSession) -> None:
    """A card reads its timeline with ``count=False``: the same rows, the same access, and
    the number of rows returned in place of the total it does not show."""
    w = await build_world(session)
    await _timeline(session, w)
    for user in ("adm", "ivan", "anna"):
        counted, total = await activities.list_activities(
            session, actor=w.user(user), rules=RULES, limit=2
        )
        rows, returned = await activities.list_activities(
            session, actor=w.user(user), rules=RULES, limit=2, count=False
        )
        assert [a.id for a in rows] == [a.id for a in counted]
        assert returned == len(rows) <= total
    _, total = await activities.list_activities(session, actor=w.user("adm"), rules=RULES)
    assert total == 5
    _, returned = await activities.list_activities(
        session, actor=w.user("adm"), rules=RULES, limit=2, count=False
    )
    assert returned == 2


async def test_only_hand_recorded_activities_change(session: AsyncSession) -> None:
    w = await build_world(session)
    ids = await _timeline(session, w)
    note = await activities.add_activity(
        session,
        ActivityInput(kind="note", company_id=w["ivan_co"], subject="draft"),
        actor=w.user("ivan"),
        rules=RULES,
        now=T0,
    )
    changed = await activities.update_activity(
        session, note.id, ActivityPatch(subject="final"), actor=w.user("ivan"), rules=RULES
    )
    assert changed.subject == "final"
    with pytest.raises(InvalidInput):
        await activities.update_activity(
            session, note.id, ActivityPatch(subject=None), actor=w.user("ivan"), rules=RULES
        )
    with pytest.raises(Conflict):
        await activities.update_activity(
            session, ids["ivan_call"], ActivityPatch(subject="x"), actor=w.user("adm"), rules=RULES
        )
    with pytest.raises(NotFound):
        await activities.delete_activity(session, note.id, actor=w.user("anna"), rules=RULES)
    await activities.delete_activity(session, note.id, actor=w.user("ivan"), rules=RULES)
    assert await session.get(Activity, note.id) is None
