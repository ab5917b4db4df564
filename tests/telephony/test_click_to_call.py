"""Click-to-call recorded as what it is (issue 14, findings 5 and 6), over a real TCP AMI session
with the fake PBX: the server originates, the fake plays the events Asterisk 22 sends for it.

* an unanswered click-to-call is an outbound call to the client from its first event: the
  pop-up names the client, the record keeps his number, and "the manager did not pick up"
  is told from "the client did not answer / was busy"; neither is a missed inbound call;
* a queue retry ringing the same extension again does not pop a second pop-up.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS, TELEPHONY
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.tasks.model import Task
from crm_core.users import service as users
from tests.ami._pbx_script import Chan, Script
from tests.fakes.ami_server import AmiSession, FakeAmiServer, encode
from tests.helpers import until

CLIENT = "+74997654321"


@pytest.fixture
async def fake_pbx() -> Any:
    async with FakeAmiServer() as server:
        yield server


@pytest.fixture
async def live(
    make_settings: Any, database_url: str, fake_pbx: FakeAmiServer, aiohttp_client_factory: Any
) -> Any:
    pbx = [
        {
            "name": "main",
            "host": "127.0.0.1",
            "port": fake_pbx.port,
            "username": "cc",
            "secret": "s3cret",
            "trunks": ["provider"],
            "extension_pattern": "^\\d{3}$",
        }
    ]
    settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=json.dumps(pbx))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="ivan",
            role="manager",
            password="password1",
            extensions=("101",),
            scrypt_n=1024,
        )
        await session.commit()
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    return client


async def _token(client: Any) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"login": "ivan", "password": "password1"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _messages_until_ended(ws: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            seen.append(data)
            if data["type"] == "call.ended":
                return seen


def _session(server: FakeAmiServer) -> AmiSession:
    return server.logged_in_sessions()[-1]


def _bytes(script: Script) -> bytes:
    return b"".join(encode(frame.headers) for frame in script.frames)


def _click_to_call(number: str, outcome: str) -> Script:
    """What Asterisk 22 sends for an ``Originate`` of ``PJSIP/101`` to ``number@internal``:
    the manager's leg rings first (showing the Originate's caller ID, the client's number);
    ``outcome`` is ``manager_no_answer``, ``client_no_answer`` or ``client_busy``."""
    s = Script(start=time.time())
    manager = s.channel("101", cid="101", cidname="Ivan Petrov", context="internal")
    s.varset(manager, "CLICK2CALL", number)
    s.dial_begin(None, manager, "101")
    manager.cid, manager.cidname = number, number
    s.state(manager, 5)
    s.wait(2.0)
    if outcome == "manager_no_answer":
        s.dial_end(None, manager, "NOANSWER")
        s.hangup(manager, cause=19)
        return s
    s.state(manager, 6)
    trunk = s.channel("provider", linked_to=manager, context="from-provider")
    s.dial_begin(manager, trunk, f"{number}@provider")
    s.wait(3.0)
    status, cause = ("BUSY", 17) if outcome == "client_busy" else ("NOANSWER", 19)
    s.dial_end(manager, trunk, status)
    s.varset(manager, "DIALSTATUS", status)
    s.hangup(trunk, cause=cause)
    s.hangup(manager, cause=16)
    return s


@pytest.mark.parametrize(
    ("outcome", "disposition", "unanswered_by", "subject"),
    [
        ("manager_no_answer", "missed", "manager", "менеджер не взял трубку"),
        ("client_no_answer", "missed", "client", "клиент не ответил"),
        ("client_busy", "busy", "client", "занято"),
    ],
)
async def test_an_unanswered_click_to_call_is_an_outbound_call_to_the_client(
    live: Any,
    fake_pbx: FakeAmiServer,
    outcome: str,
    disposition: str,
    unanswered_by: str,
    subject: str,
) -> None:
    headers = await _token(live)
    ws = await live.ws_connect("/ws", headers=headers)
    resp = await live.post("/api/v1/calls", json={"to": "8 (499) 765-43-21"}, headers=headers)
    assert resp.status == 202, await resp.text()
    (originate,) = fake_pbx.actions_named("Originate")
    assert f"CLICK2CALL={CLIENT}" in originate["Variable"]

    await _session(fake_pbx).send(_bytes(_click_to_call(CLIENT, outcome)))
    seen = await _messages_until_ended(ws)
    (ringing,) = [m for m in seen if m["type"] == "call.ringing"]
    # The manager's own phone rings for his call to the client: the pop-up shows the client.
    assert ringing["caller"] == CLIENT and ringing["direction"] == "outbound"
    assert ringing["caller_name"] is None and ringing["extension"] == "101"
    ended = seen[-1]
    assert ended["direction"] == "outbound" and ended["caller"] == CLIENT
    await ws.close()

    async def stored() -> Call | None:
        async with live.app[SESSIONS]() as session:
            return await session.scalar(select(Call).where(Call.call_id == ringing["call_id"]))

    call = await until(stored)
    assert (call.direction, call.caller, call.callee) == ("outbound", "101", CLIENT)
    assert (call.disposition, call.unanswered_by) == (disposition, unanswered_by)
    async with live.app[SESSIONS]() as session:
        # Not a missed inbound call: no call-back task, not in the manager's missed calls.
        assert await session.scalar(select(func.count()).select_from(Task)) == 0
        activity = await session.scalar(select(Activity).where(Activity.kind == "call"))
        assert activity is not None and activity.subject == f"Исходящий звонок, {subject}"
    api = await (await live.get(f"/api/v1/calls/{call.id}", headers=headers)).json()
    assert api["unanswered_by"] == unanswered_by and api["callee"] == CLIENT
    today = await (await live.get("/today", headers=headers)).text()
    assert "Пропущенные" not in today or CLIENT[-4:] not in today


def _queue_retry() -> tuple[Script, str]:
    """An inbound call to queue ``sales`` ringing 101, no answer, then 101 again (the queue's
    retry): two ringing legs of one extension, the second answered."""
    s = Script(start=time.time())
    caller = s.channel(
        "provider", state=4, cid="+79161234567", context="from-provider", exten="+74951112233"
    )
    s.emit("QueueCallerJoin", caller, Queue="sales", Position="1", Count="1")
    legs: list[Chan] = []
    for attempt in range(2):
        leg = s.channel("101", linked_to=caller, cid="+79161234567")
        s.dial_begin(caller, leg, "PJSIP/101")
        s.state(leg, 5)
        s.wait(3.0)
        legs.append(leg)
        if attempt == 0:
            s.dial_end(caller, leg, "NOANSWER")
            s.hangup(leg, cause=19)
            s.wait(2.0)
    s.state(legs[1], 6)
    s.dial_end(caller, legs[1], "ANSWER")
    s.emit("QueueCallerLeave", caller, Queue="sales", Count="0")
    s.enter("b-1", caller)
    s.enter("b-1", legs[1])
    s.wait(5.0)
    s.hangup(legs[1])
    s.hangup(caller)
    return s, caller.lid


async def test_a_queue_retry_updates_the_pop_up_never_repeats_it(
    live: Any, fake_pbx: FakeAmiServer
) -> None:
    ws = await live.ws_connect("/ws", headers=await _token(live))
    script, call_id = _queue_retry()
    await _session(fake_pbx).send(_bytes(script))
    seen = await _messages_until_ended(ws)
    ringing = [m for m in seen if m["type"] == "call.ringing"]
    assert [(m["call_id"], m["extension"]) for m in ringing] == [(call_id, "101")]
    assert ringing[0]["direction"] == "inbound" and ringing[0]["caller"] == "+79161234567"
    assert [m["type"] for m in seen if m.get("call_id") == call_id] == [
        "call.ringing",
        "call.answered",
        "call.ended",
    ]
    assert live.app[TELEPHONY].repeated_rings == 1
    await ws.close()
