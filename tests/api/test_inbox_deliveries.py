"""Webhook deliveries stored before they are processed: what a crash left stored is processed
when the server starts, one bad delivery holds up nobody, a status report that comes before
its message is stored is applied once the message is there."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from contact_center import db, inbox_queue
from contact_center.app import create_app
from contact_center.config import DatabaseSettings, Settings
from contact_center.inbox_queue import delivery_key
from contact_center.keys import INBOX, SCHEDULER, SESSIONS
from crm_core.conversations.model import Delivery, Message
from crm_core.db import utcnow, write_lock
from crm_core.leads.model import Lead
from crm_core.users import service as users
from tests.fakes.graph_api import FakeGraphApi
from tests.helpers import until
from tests.inbox_support import TOKEN, signed, wa_channel, wa_status, wa_text

HOOK = "/webhooks/whatsapp/wa-main"


def _stored(body: bytes, channel: str = "wa-main") -> Delivery:
    """A delivery as the webhook stores it before answering."""
    now = utcnow()
    return Delivery(
        channel=channel,
        kind="whatsapp",
        key=delivery_key(body),
        method="POST",
        headers=signed(body),
        query={},
        body=body,
        received_at=now,
        next_at=now,
        attempts=0,
    )


async def _stored_when(client: Any, count: int) -> list[str]:
    """The stored messages' provider ids once there are ``count`` of them (5 s at most)."""

    async def stored() -> list[str] | None:
        async with client.app[SESSIONS]() as session:
            ids = list(await session.scalars(select(Message.provider_message_id)))
        return ids if len(ids) >= count else None

    return list(await until(stored, timeout=5, interval=0.05))


async def _scalar(session: Any, statement: Any) -> Any:
    value = await session.scalar(statement)
    await session.rollback()  # a fresh snapshot for the next poll
    return value


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings],
    database_url: str,
    aiohttp_client_factory: Callable[..., Any],
) -> Callable[..., Awaitable[Any]]:
    """A server with the WhatsApp channel ``wa-main`` (its Graph API at ``api``) on the test's
    database, its scheduler idle; ``env``: more settings."""

    async def make(api: str = "http://127.0.0.1:9", **env: str) -> Any:
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_CHANNELS=json.dumps([wa_channel(api)]),
            CC_SCHEDULER_INTERVAL_S="3600",
            **env,
        )
        return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))

    return make


async def test_a_delivery_stored_before_a_crash_is_processed_at_start(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
) -> None:
    body = wa_text("wamid.crash.1", "Добрый день, есть ли доставка?", wa_id="79161110000")
    engine = db.create_engine(DatabaseSettings(url=database_url))
    async with db.sessionmaker(engine)() as session:
        session.add(_stored(body))  # stored, answered 200, then kill -9 before processing
        await session.commit()
    await engine.dispose()

    client = await make_client()
    for _ in range(100):
        async with client.app[SESSIONS]() as session:
            messages = (await session.scalars(select(Message))).all()
            left = (await session.scalars(select(Delivery))).all()
        if messages and not left:
            break
        await asyncio.sleep(0.05)
    assert [m.provider_message_id for m in messages] == ["wamid.crash.1"]
    assert left == []
    async with client.app[SESSIONS]() as session:
        lead = await session.scalar(select(Lead))
    assert lead is not None and lead.tracking == {"channel": "wa-main"}
    # Meta delivers it again after the crash: still one message.
    again = await client.post(HOOK, data=body, headers=signed(body))
    assert again.status == 200
    async with client.app[SESSIONS]() as session:
        assert len((await session.scalars(select(Message))).all()) == 1


async def test_a_bad_delivery_is_kept_with_its_error_and_holds_up_nobody(
    make_client: Callable[..., Awaitable[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await make_client()
    queue = client.app[INBOX].deliveries
    await queue.stop()  # the test runs the worker itself
    caplog.set_level(logging.ERROR, logger="contact_center.inbox_service")
    orphan = wa_text("wamid.orphan", "канал убрали из настроек")
    good = wa_text("wamid.good", "а этот канал есть", wa_id="79162220000")
    async with client.app[SESSIONS]() as session:
        session.add(_stored(orphan, channel="wa-gone"))
        session.add(_stored(good))
        await session.commit()
    assert await queue.run_once() == 2
    async with client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(Message.provider_message_id))).all()
        kept = (await session.scalars(select(Delivery))).all()
    assert stored == ["wamid.good"]
    assert [(k.channel, k.attempts, k.error) for k in kept] == [("wa-gone", 1, "канал не настроен")]
    assert kept[0].next_at is not None and kept[0].next_at > utcnow()
    assert any("wa-gone" in r.getMessage() and "kept" in r.getMessage() for r in caplog.records)


async def test_a_status_that_comes_before_its_message_is_applied_once_it_is_stored(
    make_client: Callable[..., Awaitable[Any]],
) -> None:
    async with FakeGraphApi(token=TOKEN) as graph:
        client = await make_client(graph.url)
        async with client.app[SESSIONS]() as session:
            await users.create_user(
                session, login="ivan", role="manager", password="password1", scrypt_n=1024
            )
            await session.commit()
        token = await client.post(
            "/api/v1/auth/token", json={"login": "ivan", "password": "password1"}
        )
        auth = {"Authorization": f"Bearer {(await token.json())['token']}"}
        body = wa_text("wamid.q", "Есть в наличии?")
        assert (await client.post(HOOK, data=body, headers=signed(body))).status == 200
        conv = (await (await client.get("/api/v1/conversations", headers=auth)).json())["items"][0]
        url = f"/api/v1/conversations/{conv['id']}/messages"
        reply = await (await client.post(url, json={"text": "Да."}, headers=auth)).json()
        # The provider's "delivered" for the id it will give our reply comes first.
        early = wa_status("wamid.fake.1", "delivered")
        assert (await client.post(HOOK, data=early, headers=signed(early))).status == 200
        async with client.app[SESSIONS]() as session:
            waiting = (await session.scalars(select(Delivery))).all()
        assert [w.error for w in waiting] == ["статус delivered до сообщения"]
        await client.app[SCHEDULER].run_once()  # sent: the reply gets wamid.fake.1
        async with client.app[SESSIONS]() as session:
            await session.execute(update(Delivery).values(next_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
        assert await client.app[INBOX].deliveries.run_once() == 1
        messages = (await (await client.get(url, headers=auth)).json())["items"]
        assert next(m for m in messages if m["id"] == reply["id"])["status"] == "delivered"
        async with client.app[SESSIONS]() as session:
            assert (await session.scalars(select(Delivery))).all() == []


async def test_deliveries_go_on_after_the_database_drops_the_queues_connections(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
) -> None:
    """The queue keeps a connection between its batches (no pre-ping each time): one the
    server closed meanwhile (a restart, an idle timeout) is replaced, the webhook still 200."""
    client = await make_client()
    first = wa_text("wamid.before", "первое", wa_id="79163330000")
    assert (await client.post(HOOK, data=first, headers=signed(first))).status == 200
    if database_url.startswith("postgresql"):
        async with client.app[SESSIONS]() as session:
            await session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    second = wa_text("wamid.after", "второе", wa_id="79163330000")
    assert (await client.post(HOOK, data=second, headers=signed(second))).status == 200
    assert sorted(await _stored_when(client, 2)) == ["wamid.after", "wamid.before"]


async def _refuse_inserts(session: Any, table: str, pg: bool) -> None:
    """A trigger that makes the database refuse every new row of ``table`` (a fault, in the
    database itself)."""
    if pg:
        await session.execute(
            text(
                "CREATE OR REPLACE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'refused'; END $$ LANGUAGE plpgsql"
            )
        )
        await session.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
    else:
        await session.execute(
            text(
                f"CREATE TRIGGER refuse BEFORE INSERT ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        )
    await session.commit()


async def test_a_delivery_is_processed_before_it_is_answered(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
) -> None:
    """The worker keeps up: the message is in the CRM when the provider gets its 200, and no
    delivery row is written for it (its transaction is its storing): the webhooks succeed
    with the queue's table refusing every row."""
    client = await make_client()
    async with client.app[SESSIONS]() as session:
        await _refuse_inserts(session, "webhook_deliveries", database_url.startswith("postgresql"))
    for n in range(3):
        body = wa_text(f"wamid.now.{n}", f"сразу {n}", wa_id="79164440000")
        assert (await client.post(HOOK, data=body, headers=signed(body))).status == 200
        async with client.app[SESSIONS]() as session:
            stored = (await session.scalars(select(Message.provider_message_id))).all()
        assert sorted(stored) == [f"wamid.now.{i}" for i in range(n + 1)]
    assert client.app[INBOX].deliveries.processed == 3


async def test_a_delivery_that_fails_at_once_is_stored_for_the_worker(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
) -> None:
    """The database refuses the message (a trigger stands in for any failure): the transaction
    that processed it at once is rolled back, the delivery is stored (the webhook still 200),
    and the worker stores the message once the database takes it."""
    client = await make_client()
    pg = database_url.startswith("postgresql")
    async with client.app[SESSIONS]() as session:
        await _refuse_inserts(session, "conversation_messages", pg)
    body = wa_text("wamid.refused", "не сохранится сразу", wa_id="79165550000")
    assert (await client.post(HOOK, data=body, headers=signed(body))).status == 200
    queue = client.app[INBOX].deliveries
    for _ in range(100):  # the worker tries it too, then keeps it with its error
        async with client.app[SESSIONS]() as session:
            kept = (await session.scalars(select(Delivery))).all()
        if kept and kept[0].attempts:
            break
        await asyncio.sleep(0.05)
    assert [(k.key, k.attempts) for k in kept] == [(delivery_key(body), 1)]
    await queue.stop()  # the test takes it (the worker's own sweep could come first)
    async with client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Message))).all() == []
        await session.execute(
            text("DROP TRIGGER refuse ON conversation_messages" if pg else "DROP TRIGGER refuse")
        )
        await session.execute(update(Delivery).values(next_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    assert await queue.run_once() == 1
    async with client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(Message.provider_message_id))).all()
        assert (await session.scalars(select(Delivery))).all() == []
    assert stored == ["wamid.refused"]


@pytest.mark.parametrize("limit", ["count", "time", "count before the time"])
async def test_a_burst_is_stored_and_answered_then_processed_in_batches(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
    limit: str,
) -> None:
    """From ``inbox.direct_below`` deliveries waiting on, or once one has waited
    ``inbox.direct_wait_s``, they are stored first (answered at once, the worker behind):
    every message still stored once. The count stores them while the first one's time runs
    (it used to wait for that time to end)."""
    below, wait = {"count": ("4", "0"), "time": ("1000", "0.05")}.get(limit, ("4", "5"))
    client = await make_client(CC_INBOX_DIRECT_BELOW=below, CC_INBOX_DIRECT_WAIT_S=wait)
    queue = client.app[INBOX].deliveries
    bodies = [wa_text(f"wamid.burst.{n}", f"поток {n}", wa_id=f"7916666{n:04d}") for n in range(40)]
    async with client.app[SESSIONS]() as blocker:
        # The worker's first batch waits for this lock, so the others pile up behind it.
        if database_url.startswith("postgresql"):
            await blocker.execute(text("LOCK TABLE conversations IN EXCLUSIVE MODE"))
        else:
            await write_lock(blocker, "conversations")  # SQLite: its storing waits too

        def post(body: bytes) -> asyncio.Future[Any]:
            return asyncio.ensure_future(client.post(HOOK, data=body, headers=signed(body)))

        posts = [post(bodies[0])]  # the worker takes it, and waits
        await asyncio.sleep(0.3)
        posts.append(post(bodies[1]))  # its time starts: alone, it waits
        await asyncio.sleep(0.3)
        posts += [post(body) for body in bodies[2:]]
        await asyncio.sleep(0.3)
        if database_url.startswith("postgresql"):
            # Stored while the worker is held (SQLite's storing waits for the lock).
            await until(lambda: queue.stored_first, timeout=4)
        await blocker.commit()
    answers = await asyncio.gather(*posts)
    assert [a.status for a in answers] == [200] * 40
    stored = await _stored_when(client, 40)
    assert sorted(stored) == sorted(f"wamid.burst.{n}" for n in range(40))
    assert 0 < queue.stored_first < 40  # some stored first, some processed at once


async def test_a_stored_delivery_and_one_arriving_are_processed_in_one_batch(
    make_client: Callable[..., Awaitable[Any]],
) -> None:
    """The worker takes the deliveries waiting in memory with the stored ones due, in one
    transaction (it used to take two: the stored batch, then the one processed at once). A
    message's created_at is its batch's time."""
    # The arriving one is not stored while the worker works.
    client = await make_client(CC_INBOX_DIRECT_WAIT_S="5")
    queue = client.app[INBOX].deliveries
    await queue.stop()  # the webhook starts it again: the stored one is due at its start
    left = wa_text("wamid.left", "Оставлено до перезапуска", wa_id="79163330000")
    async with client.app[SESSIONS]() as session:
        session.add(_stored(left))
        await session.commit()
    arriving = wa_text("wamid.arriving", "Пришло сейчас", wa_id="79164440000")
    response = await client.post(HOOK, data=arriving, headers=signed(arriving))
    assert response.status == 200
    async with client.app[SESSIONS]() as session:
        made = {m.provider_message_id: m.created_at for m in await session.scalars(select(Message))}
        assert (await session.scalars(select(Delivery))).all() == []
    assert set(made) == {"wamid.left", "wamid.arriving"}
    assert len(set(made.values())) == 1, made
    health = await (await client.get("/healthz")).json()
    # The arriving one never went through the table.
    assert health["channels"]["deliveries"] == {
        "processed": 2,
        "batches": 1,
        "stored_first": 0,
        "failed": 0,
        "waiting": 0,
    }


async def test_a_stored_delivery_due_is_taken_while_deliveries_keep_coming(
    make_client: Callable[..., Awaitable[Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A steady stream processed at once (the worker woken every few milliseconds) does not
    starve the stored deliveries due — a retry, another instance's leftover: they are looked
    for every ``SWEEP_S`` (they used to wait for the stream to pause that long)."""
    monkeypatch.setattr(inbox_queue, "SWEEP_S", 0.5)
    client = await make_client()
    first = wa_text("wamid.stream.first", "начало", wa_id="79167770000")
    assert (await client.post(HOOK, data=first, headers=signed(first))).status == 200
    left = wa_text("wamid.stream.left", "оставлено", wa_id="79167771111")
    async with client.app[SESSIONS]() as session:
        session.add(_stored(left))  # due now; nothing tells the running worker about it
        await session.commit()
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    n = 0
    while loop.time() < end:
        n += 1
        body = wa_text(f"wamid.stream.{n}", f"поток {n}", wa_id="79167770000")
        assert (await client.post(HOOK, data=body, headers=signed(body))).status == 200
        async with client.app[SESSIONS]() as session:
            taken = await session.scalar(
                select(Message.id).where(Message.provider_message_id == "wamid.stream.left")
            )
        if taken is not None:
            break
        await asyncio.sleep(0.02)
    assert taken is not None, "the stored delivery waited for the stream to stop"
    assert loop.time() < end


async def test_a_batch_cut_short_by_a_stop_is_answered_5xx_and_its_redelivery_stored_once(
    make_client: Callable[..., Awaitable[Any]],
    database_url: str,
) -> None:
    """The server stops while the worker processes a delivery it never stored (direct): the
    batch is rolled back, the webhook answered 5xx (the provider delivers it again), nothing
    of it stays behind (no message, no stored delivery, no parsed form held); the redelivery
    after the restart stores the message once."""
    client = await make_client()
    queue = client.app[INBOX].deliveries
    body = wa_text("wamid.cut", "оборвалось", wa_id="79168880000")
    pg = database_url.startswith("postgresql")
    async with client.app[SESSIONS]() as blocker:
        if pg:
            await blocker.execute(text("LOCK TABLE conversations IN EXCLUSIVE MODE"))
        else:
            await write_lock(blocker, "conversations")
        answer = asyncio.ensure_future(client.post(HOOK, data=body, headers=signed(body)))
        if pg:  # the worker has taken it and waits for the lock
            async with client.app[SESSIONS]() as probe:
                waiting = text("SELECT count(*) FROM pg_locks WHERE NOT granted")
                await until(lambda: _scalar(probe, waiting), timeout=10)
        else:
            await asyncio.sleep(0.5)
        # Taken: neither waiting in memory nor stored first, and not answered.
        assert not queue._incoming and not queue.stored_first and not answer.done()
        await queue.stop()
        assert (await asyncio.wait_for(answer, 10)).status == 503
        assert queue.parsed == {}
        await blocker.rollback()
    async with client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Message))).all() == []
        assert (await session.scalars(select(Delivery))).all() == []
    again = await client.post(HOOK, data=body, headers=signed(body))  # the queue starts again
    assert again.status == 200
    assert await _stored_when(client, 1) == ["wamid.cut"]
