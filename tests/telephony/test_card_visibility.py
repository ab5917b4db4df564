"""What a pop-up shows of a client card its manager may not read (issue 15, finding 4).

A manager sees the cards he is responsible for (all of them, read-only, with
``crm.managers_read_all``); heads and admins see every card. When a phone rings with a caller
whose card its owner may not read, the pop-up names the caller, his company and his manager
only: no deals, tasks, activities or recordings, no link to the card (Bitrix24's rule). Over a
real AMI session (the simulated PBX), inbound calls and click-to-call alike.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from ami.simulator import SimulatedPbx
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.db import utcnow
from crm_core.deals.model import Deal, PipelineStage
from crm_core.phones import digits_reversed
from crm_core.recordings.model import Recording, RecordingState
from crm_core.tasks.model import Task
from crm_core.users import service as users
from tests.helpers import until
from tests.telephony.conftest import pbx_setting

PHONE = "+74951234567"  # Anna's client
DID = "74950000001"
RESTRICTED = {"name", "company", "responsible", "restricted"}


async def _live(
    make_settings: Any,
    database_url: str,
    pbx: SimulatedPbx,
    aiohttp_client_factory: Any,
    **env: str,
) -> Any:
    """The server following the simulated PBX; managers Ivan (101) and Anna (102), the head
    Boss (103); Anna's client with a deal, a task and a recorded call on his card."""
    settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=pbx_setting(pbx), **env)
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as s:
        ids: dict[str, int] = {}
        for login, role, ext in (
            ("ivan", "manager", "101"),
            ("anna", "manager", "102"),
            ("boss", "head", "103"),
        ):
            user, _ = await users.create_user(
                s, login=login, role=role, password="password1", extensions=[ext], scrypt_n=1024
            )
            ids[login] = user.id
        anna = ids["anna"]
        company = Company(name="ООО «Ромашка»", client_type="wholesaler", responsible_id=anna)
        contact = Contact(name="Сергей Ковалёв", responsible_id=anna)
        s.add_all([company, contact])
        await s.flush()
        s.add(ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True))
        s.add(Phone(contact_id=contact.id, e164=PHONE, digits_rev=digits_reversed(PHONE)))
        stage = await s.scalar(select(PipelineStage).where(PipelineStage.kind == "open"))
        assert stage is not None
        s.add(
            Deal(
                title="Поставка на склад",
                pipeline_id=stage.pipeline_id,
                stage_id=stage.id,
                amount=Decimal("250000.00"),
                company_id=company.id,
                responsible_id=anna,
            )
        )
        s.add(Task(kind="call_back", title="Перезвонить Ковалёву", contact_id=contact.id))
        earlier = Activity(
            kind="call",
            direction="inbound",
            subject="Входящий звонок, 300 с",
            occurred_at=utcnow() - timedelta(days=1),
            contact_id=contact.id,
            company_id=company.id,
            user_id=anna,
            external_id="call:main:earlier",
        )
        s.add(earlier)
        await s.flush()
        recording = Recording(
            pbx="main",
            call_ref="earlier",
            activity_id=earlier.id,
            filename="earlier.wav",
            state=RecordingState.STORED.value,
            ended_at=earlier.occurred_at,
        )
        s.add(recording)
        await s.commit()
        ids.update(
            contact=contact.id, company=company.id, earlier=earlier.id, recording=recording.id
        )
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    client.ids = ids
    return client


@pytest.fixture
async def live(
    make_settings: Any, database_url: str, pbx: SimulatedPbx, aiohttp_client_factory: Any
) -> Any:
    return await _live(make_settings, database_url, pbx, aiohttp_client_factory)


async def _token(client: Any, login: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _socket(client: Any, login: str) -> Any:
    ws = await client.ws_connect("/ws", headers=await _token(client, login))
    assert (await _next(ws, "hello"))["type"] == "hello"
    return ws


async def _next(ws: Any, kind: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] == kind:
                return data


def _assert_restricted(card: dict[str, Any] | None) -> None:
    assert card is not None
    assert card == {
        "name": "Сергей Ковалёв",
        "company": "ООО «Ромашка»",
        "responsible": "anna",
        "restricted": True,
    }


def _assert_whole(card: dict[str, Any] | None, live: Any) -> None:
    assert card is not None and "restricted" not in card
    assert card["url"] == f"/clients/contact/{live.ids['contact']}"
    assert [d["title"] for d in card["deals"]] == ["Поставка на склад"]
    assert [t["title"] for t in card["tasks"]] == ["Перезвонить Ковалёву"]
    heard = [a["recording"]["id"] for a in card["activities"] if a["recording"]]
    assert heard == [live.ids["recording"]]


async def test_click_to_call_to_another_managers_client_pops_only_who_it_is(
    live: Any, pbx: SimulatedPbx
) -> None:
    ivan = await _token(live, "ivan")
    ws = await _socket(live, "ivan")
    resp = await live.post("/api/v1/calls", json={"to": PHONE}, headers=ivan)
    assert resp.status == 202, await resp.text()
    ringing = await _next(ws, "call.ringing")
    assert ringing["extension"] == "101" and ringing["caller"] == PHONE
    _assert_restricted(ringing["client"])
    await _next(ws, "call.ended")

    # Afterwards the client's timeline shows Ivan his own call only: not Anna's earlier call
    # and its recording, which he may not hear either.
    async def logged() -> Call | None:
        async with live.app[SESSIONS]() as s:
            return await s.scalar(select(Call).where(Call.call_id == ringing["call_id"]))

    call = await until(logged, timeout=10)
    assert call.user_id == live.ids["ivan"] and call.contact_id == live.ids["contact"]
    timeline = await (
        await live.get(f"/api/v1/activities?contact_id={live.ids['contact']}", headers=ivan)
    ).json()
    assert [a["external_id"] for a in timeline["items"]] == [f"call:main:{call.call_id}"]
    assert timeline["items"][0]["user_id"] == live.ids["ivan"]
    by_company = await (
        await live.get(f"/api/v1/activities?company_id={live.ids['company']}", headers=ivan)
    ).json()
    assert live.ids["earlier"] not in [a["id"] for a in by_company["items"]]
    heard = await live.get(f"/api/v1/recordings/{live.ids['recording']}", headers=ivan)
    assert heard.status == 404  # another manager's recording: as if there were none
    card = await live.get(f"/api/v1/contacts/{live.ids['contact']}", headers=ivan)
    assert card.status == 404
    await ws.close()

    # Anna calling her own client sees the whole card.
    anna = await _token(live, "anna")
    card = await live.get(f"/api/v1/contacts/{live.ids['contact']}", headers=anna)
    assert card.status == 200
    ws = await _socket(live, "anna")
    resp = await live.post("/api/v1/calls", json={"to": PHONE}, headers=anna)
    assert resp.status == 202, await resp.text()
    ringing = await _next(ws, "call.ringing")
    assert ringing["extension"] == "102"
    _assert_whole(ringing["client"], live)
    await ws.close()


async def test_an_inbound_call_pops_the_card_as_the_ringing_phones_owner_may_see_it(
    live: Any, pbx: SimulatedPbx
) -> None:
    for login, extension in (("ivan", "101"), ("boss", "103"), ("anna", "102")):
        ws = await _socket(live, login)
        pbx.play("c_inbound_short_answered", outside=PHONE, did=DID, extension=extension)
        ringing = await _next(ws, "call.ringing")
        assert ringing["extension"] == extension and ringing["caller"] == PHONE
        if login == "ivan":
            _assert_restricted(ringing["client"])
        else:  # the head sees every card, Anna her own
            _assert_whole(ringing["client"], live)
        await _next(ws, "call.ended")
        await ws.close()


async def test_managers_who_may_read_every_card_see_it_whole(
    make_settings: Any, database_url: str, pbx: SimulatedPbx, aiohttp_client_factory: Any
) -> None:
    live = await _live(
        make_settings, database_url, pbx, aiohttp_client_factory, CC_CRM_MANAGERS_READ_ALL="true"
    )
    ws = await _socket(live, "ivan")
    pbx.play("c_inbound_short_answered", outside=PHONE, did=DID, extension="101")
    ringing = await _next(ws, "call.ringing")
    _assert_whole(ringing["client"], live)
    await ws.close()
