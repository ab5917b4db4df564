"""The whole path over a real TCP AMI session: simulated PBX → AMI link → fold → CRM → /ws."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from ami.simulator import SimulatedPbx
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS
from crm_core.calls.model import Call
from crm_core.users import service as users
from tests.helpers import until
from tests.telephony.conftest import pbx_setting


@pytest.fixture
async def live(
    make_settings: Any, database_url: str, pbx: SimulatedPbx, aiohttp_client_factory: Any
) -> Any:
    settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=pbx_setting(pbx))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as session:
        for login, exts in (("ivan", ("101",)), ("anna", ("102",))):
            await users.create_user(
                session,
                login=login,
                role="manager",
                password="password1",
                extensions=exts,
                scrypt_n=1024,
            )
        await session.commit()
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    return client


async def _token(client: Any, login: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _next(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] == kind:
                return data


async def test_ringing_pops_on_the_managers_socket_and_the_call_is_stored(
    live: Any, pbx: SimulatedPbx
) -> None:
    ws = await live.ws_connect("/ws", headers=await _token(live, "ivan"))
    await _next(ws, "hello")
    health = await (await live.get("/healthz")).json()
    assert health["pbx"]["main"]["status"] == "ok" and health["pbx"]["main"]["state"] == "connected"

    await pbx.play("c_inbound_short_answered", outside="79161112233", did="74950000001")
    ringing = await _next(ws, "call.ringing")
    assert ringing["caller"] == "+79161112233" and ringing["extension"] == "101"
    assert ringing["did"] == "+74950000001" and ringing["client"] is None
    answered = await _next(ws, "call.answered")
    ended = await _next(ws, "call.ended")
    assert answered["call_id"] == ringing["call_id"] == ended["call_id"]
    assert ended["disposition"] == "answered"

    async def stored() -> Call | None:
        async with live.app[SESSIONS]() as session:
            return await session.scalar(select(Call).where(Call.call_id == ringing["call_id"]))

    call = await until(stored)
    assert call.caller == "+79161112233" and call.extension == "101"
    metrics = await (await live.get("/metrics")).text()
    assert 'cc_ami_connected{pbx="main"} 1.0' in metrics
    assert 'cc_ami_events_total{pbx="main"}' in metrics
    health = await (await live.get("/healthz")).json()
    assert health["pbx"]["main"]["resyncs"] >= 1 and health["pbx"]["main"]["events_total"] > 0
    await ws.close()


async def test_click_to_call_originates_and_logs_the_call(live: Any, pbx: SimulatedPbx) -> None:
    headers = await _token(live, "anna")
    resp = await live.post("/api/v1/calls", json={"to": "8 (499) 765-43-21"}, headers=headers)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["extension"] == "102" and body["to"] == "+74997654321" and body["action_id"]

    async def logged() -> dict[str, Any] | None:
        page = await (await live.get("/api/v1/calls", headers=headers)).json()
        return page["items"][0] if page["total"] else None

    call = await until(logged, timeout=10)
    assert call["direction"] == "outbound" and call["callee"] == "+74997654321"
    assert call["extension"] == "102"

    bad = await live.post("/api/v1/calls", json={"to": "12"}, headers=headers)
    assert bad.status == 422
    theirs = await live.post(
        "/api/v1/calls", json={"to": "+74997654321", "from_extension": "101"}, headers=headers
    )
    assert theirs.status == 403


async def test_click_to_call_pops_the_card_looked_up_when_it_was_requested(
    live: Any, pbx: SimulatedPbx
) -> None:
    """The manager's own phone rings first, showing the client: the card was looked up when
    the API was asked, not at that ring."""
    headers = await _token(live, "anna")
    resp = await live.post(
        "/api/v1/contacts",
        json={"name": "Сергей Петров", "phones": ["+74997654321"]},
        headers=headers,
    )
    assert resp.status == 201, await resp.text()
    ws = await live.ws_connect("/ws", headers=headers)
    await _next(ws, "hello")
    resp = await live.post("/api/v1/calls", json={"to": "8 499 765-43-21"}, headers=headers)
    assert resp.status == 202, await resp.text()
    ringing = await _next(ws, "call.ringing")
    assert ringing["extension"] == "102"
    assert ringing["client"] is not None and ringing["client"]["name"] == "Сергей Петров"
    health = await (await live.get("/healthz")).json()
    assert health["telephony"]["prefetch_hits"] == 1
    await ws.close()


async def test_click_to_call_with_the_pbx_down_is_a_clear_503(live: Any, pbx: SimulatedPbx) -> None:
    await pbx.close()
    await until(lambda: not live.app[PBX]["main"].link.connected, timeout=10)
    resp = await live.post(
        "/api/v1/calls", json={"to": "+74997654321"}, headers=await _token(live, "anna")
    )
    assert resp.status == 503
    body = await resp.json()
    assert "not connected" in body["message"]
    health = await (await live.get("/healthz")).json()
    assert health["pbx"]["main"]["status"] == "fail"
