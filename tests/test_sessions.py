"""A session ends everywhere at once: signing out, revoking a token, changing the password or
deactivating the user closes the /ws sockets those tokens opened, on every instance, and a
password change or deactivation revokes the API tokens too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from contact_center.app import create_app
from contact_center.bus import RedisEventBus
from contact_center.config import Settings
from contact_center.keys import BUS, SESSIONS
from crm_core.users import service as users

PASSWORD = "password1"


async def _user(client: Any, login: str, role: str = "manager") -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session, login=login, role=role, password=PASSWORD, extensions=(), scrypt_n=1024
        )
        await session.commit()


async def _token(client: Any, login: str, password: str = PASSWORD) -> str:
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": password})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


def _origin(client: Any) -> str:
    return str(client.make_url("/")).rstrip("/")


class Browser:
    """A browser of its own (its own cookies) on the test server."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.origin = _origin(client)
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def sign_in(self, login: str, password: str = PASSWORD) -> None:
        resp = await self.http.post(
            f"{self.origin}/login",
            data={"login": login, "password": password},
            headers={"Origin": self.origin},
            allow_redirects=False,
        )
        assert resp.status == 303, await resp.text()

    async def post(self, path: str, **kwargs: Any) -> aiohttp.ClientResponse:
        headers = {"Origin": self.origin, **kwargs.pop("headers", {})}
        return await self.http.post(
            f"{self.origin}{path}", headers=headers, allow_redirects=False, **kwargs
        )

    async def socket(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(f"{self.origin}/ws", headers={"Origin": self.origin})
        assert (await ws.receive_json(timeout=2))["type"] == "hello"
        return ws


@pytest.fixture
async def browsers(client: Any) -> AsyncIterator[Callable[[], Browser]]:
    made: list[Browser] = []

    def make() -> Browser:
        made.append(Browser(client))
        return made[-1]

    yield make
    for b in made:
        await b.http.close()


async def _closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = 3.0) -> bool:
    """True once the server has closed the socket (within ``timeout``)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                msg = await ws.receive()
                if msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSED,
                    aiohttp.WSMsgType.CLOSING,
                ):
                    return True
    except TimeoutError:
        return False


async def _still_open(ws: aiohttp.ClientWebSocketResponse) -> bool:
    await ws.send_str("ping")
    msg = await ws.receive(timeout=2)
    return msg.type == aiohttp.WSMsgType.TEXT and "pong" in msg.data


async def test_signing_out_closes_that_sessions_sockets_only(
    client: Any, browsers: Callable[[], Browser]
) -> None:
    await _user(client, "ivan")
    office, home = browsers(), browsers()
    await office.sign_in("ivan")
    await home.sign_in("ivan")
    office_ws, home_ws = await office.socket(), await home.socket()

    resp = await office.post("/logout")
    assert resp.status == 303
    assert await _closed(office_ws)
    assert await _still_open(home_ws)  # another session of the same user goes on
    await home_ws.close()


async def test_revoking_an_api_token_closes_the_socket_it_opened(client: Any) -> None:
    await _user(client, "ivan")
    keep, drop = await _token(client, "ivan"), await _token(client, "ivan")
    ws_keep = await client.ws_connect(f"/ws?token={keep}")
    ws_drop = await client.ws_connect("/ws", headers={"Authorization": f"Bearer {drop}"})
    for ws in (ws_keep, ws_drop):
        assert (await ws.receive_json(timeout=2))["type"] == "hello"
    tokens = await (
        await client.get("/api/v1/auth/tokens", headers={"Authorization": f"Bearer {keep}"})
    ).json()
    drop_id = max(t["id"] for t in tokens)
    resp = await client.delete(
        f"/api/v1/auth/tokens/{drop_id}", headers={"Authorization": f"Bearer {keep}"}
    )
    assert resp.status == 204
    assert await _closed(ws_drop)
    assert await _still_open(ws_keep)
    await ws_keep.close()


async def test_a_password_change_revokes_api_tokens_and_closes_every_socket(
    client: Any, browsers: Callable[[], Browser]
) -> None:
    await _user(client, "ivan")
    token = await _token(client, "ivan")
    web = browsers()
    await web.sign_in("ivan")
    web_ws = await web.socket()
    api_ws = await client.ws_connect(f"/ws?token={token}")
    assert (await api_ws.receive_json(timeout=2))["type"] == "hello"

    resp = await client.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "password2"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status == 204
    assert await _closed(web_ws) and await _closed(api_ws)
    # The API token taken with the old password is dead too.
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status == 401
    assert (await client.get(f"/ws?token={token}")).status == 401
    await _token(client, "ivan", "password2")


async def test_deactivating_a_user_revokes_his_tokens_and_closes_his_sockets(
    client: Any, browsers: Callable[[], Browser]
) -> None:
    await _user(client, "root", "admin")
    await _user(client, "ivan")
    admin = {"Authorization": f"Bearer {await _token(client, 'root')}"}
    token = await _token(client, "ivan")
    web = browsers()
    await web.sign_in("ivan")
    web_ws = await web.socket()
    ivan_id = (await (await client.get("/api/v1/me", headers=_bearer(token))).json())["id"]

    resp = await client.patch(f"/api/v1/users/{ivan_id}", json={"is_active": False}, headers=admin)
    assert resp.status == 200 and (await resp.json())["is_active"] is False
    assert await _closed(web_ws)
    assert (await client.get("/api/v1/me", headers=_bearer(token))).status == 401
    bad = await client.post("/api/v1/auth/token", json={"login": "ivan", "password": PASSWORD})
    assert bad.status == 401
    # Reactivated, he signs in again; the old token stays revoked.
    resp = await client.patch(f"/api/v1/users/{ivan_id}", json={"is_active": True}, headers=admin)
    assert resp.status == 200
    assert (await client.get("/api/v1/me", headers=_bearer(token))).status == 401
    await _token(client, "ivan")
    # An admin cannot lock himself out; other users may not deactivate anyone.
    root_id = (await (await client.get("/api/v1/me", headers=admin)).json())["id"]
    resp = await client.patch(f"/api/v1/users/{root_id}", json={"is_active": False}, headers=admin)
    assert resp.status == 422
    resp = await client.patch(
        f"/api/v1/users/{root_id}",
        json={"is_active": False},
        headers=_bearer(await _token(client, "ivan")),
    )
    assert resp.status == 403


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_revocation_closes_sockets_on_every_instance(
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
    for c in (one, two):
        bus = c.app[BUS]
        assert isinstance(bus, RedisEventBus)
        await bus.wait_connected()
    await _user(one, "ivan")
    token = await _token(one, "ivan")
    # The socket is on the second instance; the password changes through the first.
    ws = await two.ws_connect(f"/ws?token={token}")
    assert (await ws.receive_json(timeout=2))["type"] == "hello"
    resp = await one.post(
        "/api/v1/me/password",
        json={"current_password": PASSWORD, "new_password": "password2"},
        headers=_bearer(token),
    )
    assert resp.status == 204
    assert await _closed(ws)
