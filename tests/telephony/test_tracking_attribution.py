"""Calls to tracking numbers over a real AMI session (the simulated PBX on loopback): a pool
number is attributed to the visitor session holding it at ring time, a static number to its
source; the screen-pop, the stored call and the new lead carry it."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from ami.simulator import SimulatedPbx
from contact_center import demo_tracking
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS, TRACKER
from crm_core.calls.model import Call
from crm_core.db import utcnow
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.users import service as users
from tests.distribution.world import add_rule
from tests.helpers import until
from tests.telephony.conftest import pbx_setting


@pytest.fixture
async def live(
    make_settings: Any, database_url: str, pbx: SimulatedPbx, aiohttp_client_factory: Any
) -> Any:
    return await start_live(make_settings, database_url, pbx, aiohttp_client_factory)


async def start_live(
    make_settings: Any,
    database_url: str,
    pbx: SimulatedPbx,
    aiohttp_client_factory: Any,
    **env: str,
) -> Any:
    """The server following the simulated PBX, the demo's tracking and Ivan (101)."""
    settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=pbx_setting(pbx), **env)
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="ivan",
            role="manager",
            password="password1",
            extensions=["101"],
            scrypt_n=1024,
        )
        await demo_tracking.seed(session)
        await session.commit()
    client.app[TRACKER].invalidate()
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    return client


async def _ringing(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            data = json.loads(msg.data)
            if data["type"] == "call.ringing":
                return data


async def _stored(live: Any, call_id: str) -> tuple[Call, Lead | None]:
    async def find() -> tuple[Call, Lead | None] | None:
        async with live.app[SESSIONS]() as session:
            call = await session.scalar(select(Call).where(Call.call_id == call_id))
            if call is None or call.lead_id is None:
                return None
            return call, await session.get(Lead, call.lead_id)

    return await until(find, timeout=10)


async def _source_id(live: Any, code: str) -> int:
    async with live.app[SESSIONS]() as session:
        return int(await session.scalar(select(Source.id).where(Source.code == code)))


async def test_pool_number_call_carries_the_session_and_static_its_source(
    live: Any, pbx: SimulatedPbx
) -> None:
    resp = await live.post("/api/v1/auth/token", json={"login": "ivan", "password": "password1"})
    ws = await live.ws_connect(
        "/ws", headers={"Authorization": f"Bearer {(await resp.json())['token']}"}
    )
    # Two visitors hold the two numbers of the Yandex Direct × St Petersburg pool.
    sessions = []
    for campaign in ("spring", "autumn"):
        resp = await live.post(
            "/api/v1/tracking/session",
            json={
                "site": "demo",
                "page": f"https://shop.example/promo?utm_source=yandex&utm_campaign={campaign}",
                "landing_page": "https://shop.example/promo",
                "referrer": "https://yandex.ru/",
                "utm": {"utm_source": "yandex", "utm_campaign": campaign},
                "region": "RU-SPE",
            },
        )
        sessions.append(await resp.json())
    held = sessions[1]
    assert held["number"] in demo_tracking.POOLS["yandex-spb"][-1]

    await pbx.play("c_inbound_short_answered", outside="79161112233", did=held["number"][1:])
    ringing = await _ringing(ws)
    tracking = ringing["tracking"]
    assert tracking["visitor_id"] == held["visitor_id"]
    assert (tracking["source"], tracking["campaign"]) == ("Яндекс Директ", "autumn")
    assert (tracking["region"], tracking["site"], tracking["did"]) == (
        "RU-SPE",
        "demo",
        held["number"],
    )
    assert tracking["utm"] == {"utm_source": "yandex", "utm_campaign": "autumn"}
    assert tracking["landing_page"] == "https://shop.example/promo"
    assert tracking["referrer"] == "https://yandex.ru/"
    assert tracking["low_confidence"] is False

    yandex = await _source_id(live, "yandex_direct")
    call, lead = await _stored(live, ringing["call_id"])
    assert call.source_id == yandex
    assert call.tracking is not None and call.tracking["visitor_id"] == held["visitor_id"]
    assert lead is not None and lead.source_id == yandex
    assert lead.tracking is not None and lead.tracking["region"] == "RU-SPE"

    await pbx.play("c_inbound_short_answered", outside="79161112244", did="74950000001")
    ringing = await _ringing(ws)
    tracking = ringing["tracking"]
    assert (tracking["source"], tracking["visitor_id"]) == ("Выставка «ПродЭкспо-2026»", None)
    assert tracking["number_kind"] == "static"
    call, lead = await _stored(live, ringing["call_id"])
    assert call.source_id == await _source_id(live, "expo_2026")
    await ws.close()


async def test_after_the_lease_store_forgets_the_history_attributes(
    live: Any, pbx: SimulatedPbx
) -> None:
    """The embedded server restarted (a fresh memory store): the session history answers."""
    from routing.number_leases import MemoryLeaseStore

    resp = await live.post(
        "/api/v1/tracking/session",
        json={"site": "demo", "utm": {"gclid": "abc"}, "region": "RU-SPE"},
    )
    held = await resp.json()
    service = live.app[TRACKER]
    await service.writer.flush()
    service.store = MemoryLeaseStore()
    async with live.app[SESSIONS]() as session:
        found = await service.attribute_call(session, held["number"], utcnow())
    assert found is not None
    assert (found["visitor_id"], found["channel"]) == (held["visitor_id"], "google_ads")
    assert found["source"] == "Google Ads"


# A DID no tracking number is, mapped to St Petersburg by distribution.did_regions.
SPB_LINE = "+74990000777"


async def test_the_dialplan_and_the_lead_agree_on_the_calls_region(
    make_settings: Any, database_url: str, pbx: SimulatedPbx, aiohttp_client_factory: Any
) -> None:
    """The call's region is one notion: tracking (the session holding a pool number), else
    distribution.did_regions, else distribution.default_region. The dialplan sends the call
    to that region's manager; the new caller's lead gets the same region and manager."""
    live = await start_live(
        make_settings,
        database_url,
        pbx,
        aiohttp_client_factory,
        CC_DISTRIBUTION_DID_REGIONS=json.dumps({"8 499 000-07-77": "RU-SPE"}),
        CC_DISTRIBUTION_DEFAULT_REGION="RU-MOW",
    )
    async with live.app[SESSIONS]() as session:
        staff = {}
        for login, ext in (("anna", "102"), ("petr", "103")):
            user, _ = await users.create_user(
                session,
                login=login,
                role="manager",
                password="password1",
                extensions=[ext],
                scrypt_n=1024,
            )
            staff[login] = user.id
        regions = {r.code: r.id for r in await session.scalars(select(Region))}
        await session.commit()
        await add_rule(session, regions["RU-SPE"], "fixed", staff["anna"])
        await add_rule(session, regions["RU-MOW"], "fixed", staff["petr"])
    resp = await live.post(
        "/api/v1/tracking/session",
        json={"site": "demo", "utm": {"utm_source": "yandex"}, "region": "RU-SPE"},
    )
    held = await resp.json()
    assert held["number"] in demo_tracking.POOLS["yandex-spb"][-1]

    for caller, did, region, manager, ext in (
        ("79161110001", held["number"], "RU-SPE", "anna", "102"),  # tracking
        ("79161110002", SPB_LINE, "RU-SPE", "anna", "102"),  # did_regions
        ("79161110003", "+74990000888", "RU-MOW", "petr", "103"),  # default_region
    ):
        resp = await live.get(
            "/api/v1/routing/dial", params={"caller": caller, "did": did[1:], "format": "json"}
        )
        answer = await resp.json()
        assert (answer["extension"], answer["region_id"]) == (ext, regions[region]), did
        # The PBX rings the extension the dialplan named.
        await pbx.play("c_inbound_short_answered", outside=caller, did=did[1:], extension=ext)
        call = await until(functools.partial(_call_from, live, "+" + caller), timeout=10)
        call, lead = await _stored(live, call.call_id)
        assert lead is not None
        assert (lead.region_id, lead.responsible_id) == (regions[region], staff[manager]), did
        assert call.tracking is not None and call.tracking["region"] == region


async def _call_from(live: Any, caller: str) -> Call | None:
    async with live.app[SESSIONS]() as session:
        return await session.scalar(select(Call).where(Call.caller == caller))
