"""Several server instances on one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.bus import RedisEventBus
from contact_center.config import Settings
from contact_center.keys import BUS, SESSIONS
from crm_core.conversations.model import Conversation, Message
from crm_core.leads.model import Lead
from crm_core.users import service as users
from tests.fakes.graph_api import FakeGraphApi
from tests.helpers import until
from tests.inbox_support import TOKEN, manager_on_duty, signed, wa_channel, wa_text


async def test_event_published_on_one_instance_reaches_the_other(
    make_settings: Callable[..., Settings],
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    redis_client: Any,
    aiohttp_client_factory: Any,
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_REDIS_URL=redis_url, CC_REDIS_PREFIX=redis_prefix
    )
    one = await aiohttp_client_factory(
        create_app(settings, instance_id="one", announce=lambda _t: None)
    )
    two = await aiohttp_client_factory(
        create_app(settings, instance_id="two", announce=lambda _t: None)
    )
    bus_one, bus_two = one.app[BUS], two.app[BUS]
    assert isinstance(bus_one, RedisEventBus) and isinstance(bus_two, RedisEventBus)
    await bus_one.wait_connected()
    await bus_two.wait_connected()

    seen_on_two: list[Any] = []

    async def on_two(event: Any) -> None:
        seen_on_two.append(event)

    bus_two.subscribe(on_two, name="test", events=["user.created"])

    # The first instance creates a user through its API; the second hears about it.
    async with one.app[SESSIONS]() as session:
        await users.create_user(
            session, login="boss", role="admin", password="password1", scrypt_n=1024
        )
        await session.commit()
    token = (
        await (
            await one.post("/api/v1/auth/token", json={"login": "boss", "password": "password1"})
        ).json()
    )["token"]
    resp = await one.post(
        "/api/v1/users",
        headers={"Authorization": f"Bearer {token}"},
        json={"login": "anna", "role": "manager", "password": "password1", "extensions": ["102"]},
    )
    assert resp.status == 201
    await until(lambda: seen_on_two)
    assert [(e.login, e.extensions) for e in seen_on_two] == [("anna", ("102",))]

    # The token issued by one instance is honoured by the other (shared database).
    me = await two.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 200 and (await me.json())["login"] == "boss"
    health = await (await two.get("/healthz")).json()
    assert health["redis"]["status"] == "ok" and health["bus"]["mode"] == "redis"


async def test_an_inbox_on_two_instances_stores_each_message_once_and_counts_every_one(
    make_settings: Callable[..., Settings],
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    aiohttp_client_factory: Any,
) -> None:
    """Meta's deliveries of one client land on both instances in turn (and some twice): one
    conversation, one lead, every message once and counted unread, each frame on the manager's
    socket on the OTHER instance (over Redis) once, in order."""
    async with FakeGraphApi(token=TOKEN) as graph:
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_REDIS_URL=redis_url,
            CC_REDIS_PREFIX=redis_prefix,
            CC_CHANNELS=json.dumps([wa_channel(graph.url)]),
        )
        one = await aiohttp_client_factory(
            create_app(settings, instance_id="one", announce=lambda _t: None)
        )
        two = await aiohttp_client_factory(
            create_app(settings, instance_id="two", announce=lambda _t: None)
        )
        for app in (one, two):
            await app.app[BUS].wait_connected()
        async with one.app[SESSIONS]() as session:
            ivan_id = await manager_on_duty(session)
            await session.commit()
        token = (
            await (
                await two.post(
                    "/api/v1/auth/token", json={"login": "ivan", "password": "password1"}
                )
            ).json()
        )["token"]
        ws = await two.ws_connect("/ws", headers={"Authorization": f"Bearer {token}"})
        assert (await ws.receive_json(timeout=5))["type"] == "hello"

        bodies = [wa_text(f"wamid.two.{i}", f"сообщение {i}") for i in range(12)]

        async def deliver(client: Any, body: bytes) -> None:
            resp = await client.post("/webhooks/whatsapp/wa-main", data=body, headers=signed(body))
            assert resp.status == 200

        # At once, to both: each instance's worker takes its own deliveries.
        await asyncio.gather(
            *(deliver(one if i % 2 else two, body) for i, body in enumerate(bodies)),
            *(deliver(two if i % 2 else one, body) for i, body in enumerate(bodies[::3])),
        )
        texts: list[str] = []
        while len(texts) < len(bodies):
            frame = await ws.receive_json(timeout=10)
            if frame["type"] == "message.new":
                texts.append(frame["text"])
        assert sorted(texts, key=lambda t: int(t.split()[-1])) == [
            f"сообщение {i}" for i in range(12)
        ]
        with contextlib.suppress(TimeoutError):
            while True:  # nothing more: no message twice
                frame = await ws.receive_json(timeout=1)
                assert frame["type"] != "message.new", frame
        await ws.close()
        async with one.app[SESSIONS]() as session:
            convs = (await session.scalars(select(Conversation))).all()
            assert len(convs) == 1 and convs[0].unread == 12 and convs[0].assignee_id == ivan_id
            assert await session.scalar(select(func.count()).select_from(Message)) == 12
            assert await session.scalar(select(func.count()).select_from(Lead)) == 1
