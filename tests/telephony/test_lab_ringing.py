"""A phone that rings while the AMI link is down pops its card once the link is back.

On the lab's real Asterisk 22.10.1 (``tests/fixtures/lab/README.md``) a call came in during a
cut and 101 was still ringing when the link logged in again: the resync's ``Status`` listed
101's leg ``Ringing``, the call was answered 7 s later, and ivan's screen never showed who was
calling (``call.answered`` and ``call.ended`` came, no ``call.ringing``). Here the fake AMI
server answers the reconnect's ``Status`` and ``QueueStatus`` with what that PBX answered 8 s
into such a ringing, then plays the rest of the call as the PBX sent it.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from contact_center.keys import PBX
from crm_core.clock import ManualClock
from tests.fakes.ami_server import FakeAmiServer, event_frames, headers_of
from tests.helpers import until
from tests.telephony.conftest import pbx_config, server_with_ivan

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "lab"
META = json.loads((LAB / "ringing.meta.json").read_text(encoding="utf-8"))
CALL = META["plan"]["calls"][0]["id"]


async def _next(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] == kind:
                return data


@pytest.fixture
async def fake_pbx() -> Any:
    async with FakeAmiServer() as server:
        yield server


async def test_a_phone_ringing_when_the_link_comes_back_pops_the_card(
    make_settings: Any, database_url: str, fake_pbx: FakeAmiServer, aiohttp_client_factory: Any
) -> None:
    clock = ManualClock(datetime.fromtimestamp(META["status_epoch"], UTC))
    client = await server_with_ivan(
        make_settings,
        aiohttp_client_factory,
        pbx_config(fake_pbx.port),
        clock,
        CC_DATABASE_URL=database_url,
    )
    resp = await client.post("/api/v1/auth/token", json={"login": "ivan", "password": "password1"})
    headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    made = await client.post(
        "/api/v1/contacts",
        json={"name": "Пётр Сидоров", "phones": ["+79161234567"]},
        headers=headers,
    )
    assert made.status == 201, await made.text()
    link = client.app[PBX]["main"]
    await until(lambda: link.link is not None and link.link.connected, timeout=10)
    ws = await client.ws_connect("/ws", headers=headers)
    await _next(ws, "hello")

    # The link drops; meanwhile the call comes in and 101 rings. The link logs in again.
    fake_pbx.lists["status"] = (LAB / "ringing_status.ami").read_bytes()
    fake_pbx.lists["queuestatus"] = (LAB / "ringing_queuestatus.ami").read_bytes()
    await fake_pbx.logged_in_sessions()[-1].drop()
    await until(lambda: len(fake_pbx.logged_in_sessions()) == 2, timeout=15)

    ringing = await _next(ws, "call.ringing")
    assert (ringing["call_id"], ringing["extension"]) == (CALL, "101")
    assert (ringing["caller"], ringing["did"], ringing["direction"]) == (
        "+79161234567",
        "+74951112233",
        "inbound",
    )
    assert ringing["client"] is not None and ringing["client"]["name"] == "Пётр Сидоров"

    # The rest of the call as the PBX sent it (the capture ends before the hangup): 101
    # answers, and the pop-up turns into "answered".
    later = [
        f
        for f in event_frames((LAB / "ringing.ami").read_bytes())
        if float(headers_of(f)["Timestamp"]) > META["queuestatus_epoch"]
    ]
    await fake_pbx.logged_in_sessions()[-1].send_frames(later)
    answered = await _next(ws, "call.answered")
    assert (answered["call_id"], answered["extension"]) == (CALL, "101")
    await ws.close()
