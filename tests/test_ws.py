"""The /ws push channel: authentication and audience filtering."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from contact_center.keys import BUS, SESSIONS
from contact_center.ws import HUB
from crm_core.calls.events import CallRinging
from crm_core.users import service as users


async def _user(client: Any, login: str, role: str, exts: tuple[str, ...] = ()) -> str:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session, login=login, role=role, password="password1", extensions=exts, scrypt_n=1024
        )
        await session.commit()
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return (await resp.json())["token"]


async def _next(ws: Any, timeout: float = 2.0) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), timeout)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_ringing_goes_only_to_the_extension_that_rings(client: Any) -> None:
    t101 = await _user(client, "ivan", "manager", ("101",))
    t102 = await _user(client, "anna", "manager", ("102",))
    thead = await _user(client, "boss", "head")
    ws101 = await client.ws_connect("/ws", headers={"Authorization": f"Bearer {t101}"})
    ws102 = await client.ws_connect(f"/ws?token={t102}")
    wshead = await client.ws_connect("/ws", headers={"Authorization": f"Bearer {thead}"})
    for ws in (ws101, ws102, wshead):
        assert (await _next(ws))["type"] == "hello"

    bus = client.app[BUS]
    await bus.publish(
        CallRinging(
            call_id="1795722921.5",
            caller="+74957654321",
            did="+74950000001",
            extension="101",
            client=None,
            tracking={"source": "exhibition"},
            audience=("ext:101",),
        )
    )
    pop = await _next(ws101)
    assert pop["type"] == "call.ringing"
    assert {k: pop[k] for k in ("call_id", "caller", "did", "extension", "client", "tracking")} == {
        "call_id": "1795722921.5",
        "caller": "+74957654321",
        "did": "+74950000001",
        "extension": "101",
        "client": None,
        "tracking": {"source": "exhibition"},
    }
    assert "audience" not in pop
    await bus.publish(CallRinging(call_id="x", extension="102", audience=("ext:102", "role:head")))
    assert (await _next(ws102))["call_id"] == "x"
    assert (await _next(wshead))["call_id"] == "x"
    with pytest.raises(TimeoutError):
        await _next(ws101, timeout=0.3)  # the first call's pop was not for 102 or head either
    for ws in (ws101, ws102, wshead):
        await ws.close()


async def test_ws_needs_authentication(client: Any) -> None:
    resp = await client.get("/ws")
    assert resp.status == 401
    resp = await client.get("/ws?token=forged")
    assert resp.status == 401


async def test_ws_with_the_web_session_cookie(client: Any) -> None:
    await _user(client, "petr", "manager", ("103",))
    resp = await client.post(
        "/login", data={"login": "petr", "password": "password1"}, allow_redirects=False
    )
    assert resp.status == 303
    ws = await client.ws_connect("/ws")
    assert (await _next(ws))["type"] == "hello"
    await client.app[BUS].publish(CallRinging(call_id="c", audience=("ext:103",)))
    assert (await _next(ws))["call_id"] == "c"
    health = await (await client.get("/healthz")).json()
    assert health["ws"]["connections"] == 1
    await ws.close()


async def test_an_event_meeting_several_keys_of_a_socket_comes_once(client: Any) -> None:
    """The hub finds sockets by audience key: a head whose role and own id are both in the
    audience gets the event once; a closed socket leaves nothing behind in the index."""
    thead = await _user(client, "boss", "head", ("105",))
    tother = await _user(client, "ivan", "manager", ("101",))
    wshead = await client.ws_connect(f"/ws?token={thead}")
    wsother = await client.ws_connect(f"/ws?token={tother}")
    head_id = (await _next(wshead))["user_id"]
    assert (await _next(wsother))["type"] == "hello"
    bus = client.app[BUS]
    await bus.publish(
        CallRinging(call_id="twice", extension="105", audience=("ext:105", "role:head", "all"))
    )
    assert (await _next(wshead))["call_id"] == "twice"
    assert (await _next(wsother))["call_id"] == "twice"  # "all"
    await bus.publish(CallRinging(call_id="next", extension="105", audience=(f"user:{head_id}",)))
    assert (await _next(wshead))["call_id"] == "next"  # not a second "twice" before it
    with pytest.raises(TimeoutError):
        await _next(wsother, timeout=0.3)
    await wshead.close()
    await wsother.close()
    hub = client.app[HUB]
    for _ in range(50):
        if not hub.clients:
            break
        await asyncio.sleep(0.02)
    assert not hub.clients
    assert hub._by_key == {}
