"""Several server instances on one PostgreSQL and one Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from contact_center.app import create_app
from contact_center.bus import RedisEventBus
from contact_center.config import Settings
from contact_center.keys import BUS, SESSIONS
from crm_core.users import service as users
from tests.helpers import until


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
