"""Webhook deliveries stored before they are processed: what a crash left stored is processed
when the server starts, one bad delivery holds up nobody, a status report that comes before
its message is stored is applied once the message is there."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from contact_center import db
from contact_center.app import create_app
from contact_center.config import DatabaseSettings, Settings
from contact_center.inbox_queue import delivery_key
from contact_center.keys import INBOX, SCHEDULER, SESSIONS
from crm_core.conversations.model import Delivery, Message
from crm_core.db import utcnow
from crm_core.leads.model import Lead
from crm_core.users import service as users
from tests.fakes.graph_api import FakeGraphApi
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


def _settings(make_settings: Callable[..., Settings], database_url: str, api: str) -> Settings:
    return make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([wa_channel(api)]),
        CC_SCHEDULER_INTERVAL_S="3600",
    )


async def test_a_delivery_stored_before_a_crash_is_processed_at_start(
    make_settings: Callable[..., Settings],
    database_url: str,
    aiohttp_client_factory: Callable[..., Any],
) -> None:
    body = wa_text("wamid.crash.1", "Добрый день, есть ли доставка?", wa_id="79161110000")
    engine = db.create_engine(DatabaseSettings(url=database_url))
    async with db.sessionmaker(engine)() as session:
        session.add(_stored(body))  # stored, answered 200, then kill -9 before processing
        await session.commit()
    await engine.dispose()

    client = await aiohttp_client_factory(
        create_app(
            _settings(make_settings, database_url, "http://127.0.0.1:9"), announce=lambda _t: None
        )
    )
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
    make_settings: Callable[..., Settings],
    database_url: str,
    aiohttp_client_factory: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await aiohttp_client_factory(
        create_app(
            _settings(make_settings, database_url, "http://127.0.0.1:9"), announce=lambda _t: None
        )
    )
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
    make_settings: Callable[..., Settings],
    database_url: str,
    aiohttp_client_factory: Callable[..., Any],
) -> None:
    async with FakeGraphApi(token=TOKEN) as graph:
        client = await aiohttp_client_factory(
            create_app(_settings(make_settings, database_url, graph.url), announce=lambda _t: None)
        )
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
    make_settings: Callable[..., Settings],
    database_url: str,
    aiohttp_client_factory: Callable[..., Any],
) -> None:
    """The queue keeps a connection between its batches (no pre-ping each time): one the
    server closed meanwhile (a restart, an idle timeout) is replaced, the webhook still 200."""
    client = await aiohttp_client_factory(
        create_app(
            _settings(make_settings, database_url, "http://127.0.0.1:9"), announce=lambda _t: None
        )
    )
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
    for _ in range(100):
        async with client.app[SESSIONS]() as session:
            stored = (await session.scalars(select(Message.provider_message_id))).all()
        if len(stored) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(stored) == ["wamid.after", "wamid.before"]
