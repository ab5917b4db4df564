"""``UnnestInsert`` (PostgreSQL's many-row INSERT of arrays) stores a row as the ORM does: the
same values read back, JSON ``None`` included; a conflicting row is skipped and not returned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from crm_core.conversations.model import Message
from crm_core.db import UnnestInsert, is_postgresql

COLUMNS = (
    "conversation_id",
    "channel",
    "direction",
    "author_kind",
    "kind",
    "text",
    "status",
    "provider_message_id",
    "attachments",
    "payload",
    "sent_at",
    "attempts",
    "created_at",
)


def _values(pid: str, **changes: Any) -> dict[str, Any]:
    at = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)
    values: dict[str, Any] = {
        "conversation_id": 0,
        "channel": "wa",
        "direction": "inbound",
        "author_kind": "client",
        "kind": "text",
        "text": "Привет «мир» \\ 'кавычки'",
        "status": "received",
        "provider_message_id": pid,
        "attachments": [{"ref": "m1", "caption": "фото"}],
        "payload": None,
        "sent_at": at,
        "attempts": 0,
        "created_at": at,
    }
    values.update(changes)
    return values


def _read(m: Message) -> tuple[Any, ...]:
    return tuple(getattr(m, c) for c in COLUMNS if c not in {"provider_message_id"})


@pytest.fixture
async def session(postgres_url: str) -> AsyncIterator[Any]:
    """PostgreSQL's own statement: this test runs there only (SQLite takes the ORM's insert)."""
    from contact_center import db
    from contact_center.config import DatabaseSettings

    engine = db.create_engine(DatabaseSettings(url=postgres_url))
    async with db.sessionmaker(engine)() as s:
        yield s
    await engine.dispose()


async def test_unnest_rows_read_back_as_the_orms(session: Any) -> None:
    assert is_postgresql(session)
    from crm_core.conversations.model import Conversation

    now = datetime.now(UTC)
    conv = Conversation(
        channel="wa",
        channel_kind="whatsapp",
        identity_kind="wa_id",
        identity_value="79160000000",
        thread_key="",
        status="open",
        unread=0,
        preview="",
        created_at=now,
        updated_at=now,
    )
    session.add(conv)
    await session.flush()
    session.add(Message(**_values("orm", conversation_id=conv.id)))
    await session.flush()
    unnest = UnnestInsert.of(
        Message.__table__,
        COLUMNS,
        conflict="ON CONFLICT (channel, provider_message_id) DO NOTHING",
        returning=("id", "provider_message_id"),
    )
    rows = [
        _values("arr", conversation_id=conv.id),
        _values("orm", conversation_id=conv.id),  # stored already: skipped
        _values("arr2", conversation_id=conv.id, text=None, payload={"a": [1, None]}),
    ]
    result = await session.execute(unnest.statement, unnest.params(rows))
    assert sorted(r.provider_message_id for r in result) == ["arr", "arr2"]
    assert (
        UnnestInsert.of(
            Message.__table__,
            COLUMNS,
            conflict="ON CONFLICT (channel, provider_message_id) DO NOTHING",
            returning=("id", "provider_message_id"),
        )
        is unnest
    )  # built once
    session.expunge_all()
    stored = {m.provider_message_id: m for m in (await session.scalars(select(Message))).all()}
    assert _read(stored["arr"]) == _read(stored["orm"])
    assert stored["arr2"].text is None and stored["arr2"].payload == {"a": [1, None]}
    # JSON None as the ORM stores it (JSON null, or SQL NULL): the same for both rows.
    nulls = set(
        await session.scalars(select(Message.provider_message_id).where(Message.payload.is_(None)))
    )
    assert ("arr" in nulls) == ("orm" in nulls)


async def test_insert_objects_writes_what_a_flush_writes(session: Any) -> None:
    """Leads and their numbers written by ``insert_objects`` read back as the flush's: Python
    defaults filled, money in kopecks, JSON documents, the ids in the order given."""
    from decimal import Decimal

    from crm_core.clients.model import Phone
    from crm_core.db import insert_objects
    from crm_core.leads.model import Lead

    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

    def lead(title: str) -> Lead:
        return Lead(
            title=title,
            stage="new",
            origin="message",
            contact_name="Пётр Иванов",
            potential_amount=Decimal("1234.56"),
            tracking={"source": "ad", "utm": {"campaign": "зима"}},
            stage_changed_at=now,
            created_at=now,
            updated_at=now,
        )

    flushed = lead("flush")
    session.add(flushed)
    await session.flush()
    arrays = [lead(f"arr{i}") for i in range(5)]
    await insert_objects(session, arrays)
    assert [a.id for a in arrays] == sorted(a.id for a in arrays)
    assert all(a not in session for a in arrays)
    phones = [Phone(lead_id=a.id, e164=f"+7916000000{i}") for i, a in enumerate(arrays)]
    await insert_objects(session, phones)
    session.expunge_all()
    stored = {x.title: x for x in (await session.scalars(select(Lead))).all()}
    columns = [c.key for c in Lead.__mapper__.column_attrs if c.key not in {"id", "title"}]
    for i, obj in enumerate(arrays):
        assert stored[f"arr{i}"].id == obj.id
        for key in columns:
            assert getattr(stored[f"arr{i}"], key) == getattr(stored["flush"], key), key
    assert stored["arr0"].potential_amount == Decimal("1234.56")
    assert stored["arr0"].name_search == stored["flush"].name_search != ""
    read = {p.lead_id: p for p in (await session.scalars(select(Phone))).all()}
    for i, obj in enumerate(arrays):
        assert read[obj.id].e164 == f"+7916000000{i}"
        assert read[obj.id].last10 == f"916000000{i}"
        assert read[obj.id].digits_rev == f"7916000000{i}"[::-1]
        assert read[obj.id].kind == "work"  # its Python default


async def test_insert_objects_writes_children_with_their_parents_ids(session: Any) -> None:
    """Leads with their numbers and first stage in one statement: each child joined to its
    own parent (not to a neighbour), a parent without children, a kind of child with none."""
    from crm_core.clients.model import Email, Phone
    from crm_core.db import insert_objects
    from crm_core.leads.model import Lead, LeadStageChange

    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    parents = [Lead(title=f"p{i}", stage="new", created_at=now, updated_at=now) for i in range(4)]
    phones = [
        (0, Phone(e164="+79160000001")),
        (2, Phone(e164="+79160000021")),
        (2, Phone(e164="+79160000022")),
    ]
    changes = [(i, LeadStageChange(to_stage="new", at=now)) for i in (3, 1, 0, 2)]
    await insert_objects(
        session,
        parents,
        [(Phone, "lead_id", phones), (Email, "lead_id", []), (LeadStageChange, "lead_id", changes)],
    )
    assert [p.id for p in parents] == sorted(p.id for p in parents)
    assert [c.lead_id for _, c in phones] == [parents[0].id, parents[2].id, parents[2].id]
    session.expunge_all()
    titles = {i: t for i, t in await session.execute(select(Lead.id, Lead.title))}
    assert [titles[p.id] for p in parents] == ["p0", "p1", "p2", "p3"]
    numbers = (await session.execute(select(Phone.lead_id, Phone.e164, Phone.last10))).all()
    assert sorted((titles[lead], e164, last10) for lead, e164, last10 in numbers) == [
        ("p0", "+79160000001", "9160000001"),
        ("p2", "+79160000021", "9160000021"),
        ("p2", "+79160000022", "9160000022"),
    ]
    stages = (await session.scalars(select(LeadStageChange.lead_id))).all()
    assert sorted(titles[lead] for lead in stages) == ["p0", "p1", "p2", "p3"]
    assert (await session.scalars(select(Email))).all() == []


def test_named_parameters_become_asyncpgs_positional_ones() -> None:
    from sqlalchemy import text

    from crm_core.db import _positional

    sql, names = _positional(
        text(
            "SELECT x::int FROM t WHERE a = ANY(CAST(:ids AS INTEGER[])) AND b = :b OR c = :ids"
        ).text
    )
    assert sql == "SELECT x::int FROM t WHERE a = ANY(CAST($1 AS INTEGER[])) AND b = $2 OR c = $1"
    assert names == ("ids", "b")


async def test_fetch_pg_runs_in_the_sessions_transaction(session: Any) -> None:
    """The first statement of a transaction goes through the session (which begins it); the
    next ones on the driver's connection: both are rolled back with the transaction."""
    from sqlalchemy import func, text

    from crm_core.conversations.model import Conversation
    from crm_core.db import fetch_pg

    insert = text(
        "INSERT INTO conversations (channel, channel_kind, identity_kind, identity_value, "
        "thread_key, name, status, unread, preview, created_at, updated_at) SELECT 'wa', "
        "'whatsapp', 'wa_id', v, '', '', 'open', 0, '', now(), now() "
        "FROM unnest(CAST(:values AS VARCHAR[])) AS v RETURNING id, identity_value"
    )
    first = await fetch_pg(session, insert, {"values": ["79160000001"]})
    second = await fetch_pg(session, insert, {"values": ["79160000002", "79160000003"]})
    assert [r[1] for r in first] == ["79160000001"]
    assert sorted(r["identity_value"] for r in second) == ["79160000002", "79160000003"]
    assert await session.scalar(select(func.count()).select_from(Conversation)) == 3
    await session.rollback()
    assert await session.scalar(select(func.count()).select_from(Conversation)) == 0


async def test_fetch_pg_on_a_session_bound_to_a_connection_is_in_its_transaction(
    postgres_url: str,
) -> None:
    """A session on a connection of its own (the inbox worker's): the statements run on that
    connection in the session's transaction — rolled back with it, kept by its commit."""
    from sqlalchemy import func, text
    from sqlalchemy.ext.asyncio import AsyncSession

    from contact_center import db
    from contact_center.config import DatabaseSettings
    from crm_core.conversations.model import Conversation
    from crm_core.db import fetch_pg

    insert = text(
        "INSERT INTO conversations (channel, channel_kind, identity_kind, identity_value, "
        "thread_key, name, status, unread, preview, created_at, updated_at) SELECT 'wa', "
        "'whatsapp', 'wa_id', v, '', '', 'open', 0, '', now(), now() "
        "FROM unnest(CAST(:values AS VARCHAR[])) AS v RETURNING id"
    )
    count = select(func.count()).select_from(Conversation)
    engine = db.create_engine(DatabaseSettings(url=postgres_url))
    try:
        async with engine.connect() as conn:
            session = AsyncSession(bind=conn)
            await fetch_pg(session, insert, {"values": ["79160000001"]})
            await fetch_pg(session, insert, {"values": ["79160000002"]})
            assert await session.scalar(count) == 2
            await session.rollback()
            assert await session.scalar(count) == 0
            await fetch_pg(session, insert, {"values": ["79160000003"]})
            await fetch_pg(session, insert, {"values": ["79160000004"]})
            await session.commit()
            await session.close()
        async with engine.connect() as other:
            assert await other.scalar(count) == 2
    finally:
        await engine.dispose()


async def test_fetch_pg_on_a_lost_connection_says_so_and_drops_it(session: Any) -> None:
    """A connection the server closed is invalidated (the pool will not hand it out again) and
    the failure is a ConnectionError, which the callers take for the database being away."""
    from sqlalchemy import text

    from crm_core.db import fetch_pg

    await session.execute(text("SELECT 1"))  # the transaction begins
    conn = await session.connection()
    raw = (await conn.get_raw_connection()).driver_connection
    pid = raw.get_server_pid()
    async with session.bind.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    with pytest.raises(ConnectionError):
        await fetch_pg(session, text("SELECT CAST(:n AS INTEGER)"), {"n": 1})
    assert conn.invalidated


async def test_a_transient_object_of_a_row_holds_what_the_orm_loads(session: Any) -> None:
    """``transient`` (no ``__init__``, no attribute events) gives an object whose every column
    reads as the ORM's loaded one; it can be changed, is in no session, and a column its class
    does not map is refused."""
    from sqlalchemy import inspect as sa_inspect
    from sqlalchemy import text

    from crm_core.conversations.model import Conversation
    from crm_core.db import fetch_pg, transient

    await session.execute(text("SELECT 1"))  # the transaction begins: fetch_pg on the driver
    rows = await fetch_pg(
        session,
        text(
            "INSERT INTO conversations (channel, channel_kind, identity_kind, identity_value, "
            "thread_key, name, status, unread, preview, created_at, updated_at) VALUES ('wa', "
            "'whatsapp', 'wa_id', '79160000009', '', 'Анна', 'open', 2, 'Привет', now(), now()) "
            "RETURNING *"
        ),
        {},
    )
    conv = transient(Conversation, rows[0])
    loaded = await session.get(Conversation, conv.id)
    assert loaded is not None and loaded is not conv
    for attr in sa_inspect(Conversation).column_attrs:
        assert getattr(conv, attr.key) == getattr(loaded, attr.key), attr.key
    assert sa_inspect(conv).transient
    conv.unread += 1
    assert conv.unread == 3 and loaded.unread == 2
    with pytest.raises(KeyError):
        transient(Conversation, {**dict(rows[0]), "no_such_column": 1})
    await session.rollback()
