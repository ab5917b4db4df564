"""Drill: ``kill -9`` of a real ``contact-center serve`` process while WhatsApp webhook
deliveries pour in: every delivery the server answered 200 is processed after the restart,
and Meta's redelivery of all of them (those answered and those cut off) stores each message
exactly once.

``stored``: the server stores each delivery first and answers it then (``inbox.direct_below``
0, ``inbox.ack_wait_s`` 0), so the kill lands between storing and processing for many of
them: they wait in ``webhook_deliveries`` and the restarted server's worker takes them first.
``direct``: a delivery is processed in the transaction that stores it and answered after its
commit: at the kill, each answered one is a message already (or a stored delivery, where
processing fell back to storing)."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select

from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.conversations.model import Delivery, Message
from tests.helpers import free_port
from tests.inbox_support import signed, wa_channel, wa_text
from tests.services import OwnPostgres, own_postgres, postgres_cluster_template  # noqa: F401
from tests.test_cli import _env
from tests.test_drill_kill9 import _healthy, _serve, _tail

MESSAGES = 300
HOOK = "/webhooks/whatsapp/wa-main"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mode", ["stored", "direct"])
async def test_kill_9_while_deliveries_arrive_each_message_stored_once_after_restart(
    own_postgres: OwnPostgres,  # noqa: F811
    tmp_path: Path,
    mode: str,
) -> None:
    url = own_postgres.url("cc")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = _env(
        tmp_path,
        CC_DATABASE_URL=url,
        CC_SERVER_PORT=str(port),
        CC_CHANNELS=json.dumps([wa_channel("http://127.0.0.1:9")]),
        CC_INBOX_ACK_WAIT_S="0",
        CC_INBOX_BATCH="20",
        CC_INBOX_DIRECT_BELOW="16" if mode == "direct" else "0",
    )
    bodies = [
        wa_text(f"wamid.drill.{i}", f"Сообщение {i}", wa_id=f"7916{i:07d}") for i in range(MESSAGES)
    ]
    first = await _serve(env, tmp_path, "first")
    answered: set[int] = set()
    second: asyncio.subprocess.Process | None = None
    engine = db.create_engine(DatabaseSettings(url=url))
    try:
        await _healthy(base, first, tmp_path / "first.log")

        async def deliver(http: aiohttp.ClientSession, i: int) -> None:
            try:
                async with http.post(base + HOOK, data=bodies[i], headers=signed(bodies[i])) as r:
                    if r.status == 200:
                        answered.add(i)
            except (aiohttp.ClientError, ConnectionError):
                pass  # the server was killed: Meta delivers it again later

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as http:
            sending = [asyncio.create_task(deliver(http, i)) for i in range(MESSAGES)]
            while len(answered) < MESSAGES // 3:  # noqa: ASYNC110 - polls what the tasks answered
                await asyncio.sleep(0.01)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await asyncio.gather(*sending)
        async with db.sessionmaker(engine)() as session:
            kept = list(await session.scalars(select(Delivery.body)))
            stored_ids = set(await session.scalars(select(Message.provider_message_id)))
        assert answered and len(answered) < MESSAGES
        if mode == "stored":
            # Killed mid-stream: answered deliveries not yet processed wait in the table.
            assert kept, "the kill landed after everything was processed"
            assert len(stored_ids) < len(answered)
        else:
            # Answered after its commit: each answered delivery is a message, or stored.
            waiting_ids = {
                json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
                for body in kept
            }
            assert {f"wamid.drill.{i}" for i in answered} <= stored_ids | waiting_ids

        second = await _serve(env, tmp_path, "second")
        await _healthy(base, second, tmp_path / "second.log")
        for _ in range(300):  # the worker takes what the first one left
            async with db.sessionmaker(engine)() as session:
                waiting = await session.scalar(select(func.count()).select_from(Delivery))
            if waiting == 0:
                break
            await asyncio.sleep(0.1)
        assert waiting == 0, _tail(tmp_path / "second.log")
        async with db.sessionmaker(engine)() as session:
            ids = set(await session.scalars(select(Message.provider_message_id)))
        assert {f"wamid.drill.{i}" for i in answered} <= ids  # nothing answered is lost

        # Meta redelivers everything (it never got some answers): each message once.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as http:
            await asyncio.gather(*(deliver(http, i) for i in range(MESSAGES)))
        for _ in range(300):
            async with db.sessionmaker(engine)() as session:
                waiting = await session.scalar(select(func.count()).select_from(Delivery))
            if waiting == 0:
                break
            await asyncio.sleep(0.1)
        async with db.sessionmaker(engine)() as session:
            rows = (
                await session.execute(
                    select(Message.provider_message_id, func.count()).group_by(
                        Message.provider_message_id
                    )
                )
            ).all()
        counts = dict(rows)
        assert set(counts) == {f"wamid.drill.{i}" for i in range(MESSAGES)}
        assert set(counts.values()) == {1}
    finally:
        for proc in (first, second):
            if proc is not None and proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                await proc.wait()
        await engine.dispose()
