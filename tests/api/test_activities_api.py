"""The timeline API: who may list, read, record and change activities."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contact_center.keys import BUS, SESSIONS
from crm_core.access import SYSTEM
from crm_core.activities import service as activities
from crm_core.activities.schemas import ActivityInput
from tests.crm_core.tasks.world import T0, World, api_world, manual_clock_client
from tests.helpers import until

MIN = timedelta(minutes=1)


@pytest.fixture
async def app(settings: Any, aiohttp_client_factory: Any) -> tuple[Any, Any]:
    return await manual_clock_client(settings, aiohttp_client_factory)


async def _calls(client: Any, w: World) -> dict[str, int]:
    """A counted call of ivan's with his client, one of anna's with the member company."""
    out = {}
    async with client.app[SESSIONS]() as s:
        for name, user, company, i in (
            ("ivan", w["ivan"], w["ivan_co"], 1),
            ("member", w["anna"], w["member"], 2),
        ):
            data = ActivityInput(
                kind="call",
                counted=True,
                user_id=user,
                company_id=company,
                occurred_at=T0 + i * MIN,
                external_id=f"call:main:{i}",
            )
            out[name] = (await activities.record_activity(s, data, actor=SYSTEM)).id
        await s.commit()
    return out


async def test_company_timeline_by_role(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    ids = await _calls(client, w)
    for who, expected in (
        ("adm", ["member", "ivan"]),
        ("boss", ["member", "ivan"]),
        ("ivan", ["ivan"]),
        ("anna", ["member"]),
    ):
        resp = await client.get(f"/api/v1/activities?company_id={w['ivan_co']}", headers=h[who])
        assert resp.status == 200
        body = await resp.json()
        assert [a["id"] for a in body["items"]] == [ids[n] for n in expected], who
        assert body["total"] == len(expected) and body["limit"] == 50


async def test_timeline_query_validation_and_range(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    ids = await _calls(client, w)
    frm = (T0 + 2 * MIN).isoformat().replace("+00:00", "Z")
    resp = await client.get(f"/api/v1/activities?from={frm}&kind=call", headers=h["adm"])
    assert [a["id"] for a in (await resp.json())["items"]] == [ids["member"]]
    bad = await client.get("/api/v1/activities?kind=fax", headers=h["adm"])
    assert bad.status == 422 and "kind" in (await bad.json())["details"]["fields"]
    assert (await client.get("/api/v1/activities")).status == 401


async def test_record_a_meeting_by_role(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    body = {
        "kind": "meeting",
        "subject": "Встреча на объекте",
        "company_id": w["ivan_co"],
        "occurred_at": T0.isoformat(),
        "duration_s": 3600,
    }
    for who, status in (("adm", 201), ("boss", 201), ("ivan", 201), ("anna", 422)):
        resp = await client.post("/api/v1/activities", json=body, headers=h[who])
        assert resp.status == status, (who, await resp.text())
        if status == 201:
            activity = await resp.json()
            assert activity["user_id"] == w[who] and activity["created_by_id"] == w[who]
    recorded: list[Any] = []

    async def collect(event: Any) -> None:
        recorded.append(event)

    client.app[BUS].subscribe(collect, name="test", events=["activity.recorded"])
    body["user_id"] = w["ivan"]
    resp = await client.post("/api/v1/activities", json=body, headers=h["boss"])
    activity = await resp.json()
    assert activity["user_id"] == w["ivan"]
    await until(lambda: recorded)
    assert recorded[0].activity_id == activity["id"]
    assert recorded[0].audience == (f"user:{w['ivan']}",)


async def test_hand_records_refusals(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    call = {"kind": "call", "company_id": w["ivan_co"]}
    resp = await client.post("/api/v1/activities", json=call, headers=h["ivan"])
    assert resp.status == 422 and "kind" in (await resp.json())["details"]["fields"]
    for_anna = {"kind": "note", "user_id": w["anna"]}
    assert (await client.post("/api/v1/activities", json=for_anna, headers=h["ivan"])).status == 403
    counted = {"kind": "note", "counted": True}
    assert (await client.post("/api/v1/activities", json=counted, headers=h["ivan"])).status == 422


async def test_read_change_delete_by_role(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    ids = await _calls(client, w)
    for who, read, write in (
        ("adm", 200, 200),
        ("boss", 200, 200),
        ("ivan", 200, 200),
        ("anna", 404, 404),
    ):
        note = {"kind": "note", "subject": "draft", "company_id": w["ivan_co"]}
        resp = await client.post("/api/v1/activities", json=note, headers=h["ivan"])
        nid = (await resp.json())["id"]
        assert (await client.get(f"/api/v1/activities/{nid}", headers=h[who])).status == read
        resp = await client.patch(
            f"/api/v1/activities/{nid}", json={"subject": "final"}, headers=h[who]
        )
        assert resp.status == write, who
        # What the telephony wrote cannot be edited by anyone who sees it.
        resp = await client.patch(
            f"/api/v1/activities/{ids['ivan']}", json={"subject": "x"}, headers=h[who]
        )
        assert resp.status == (409 if read == 200 else 404), who
        resp = await client.delete(f"/api/v1/activities/{nid}", headers=h[who])
        assert resp.status == (204 if write == 200 else 404), who


async def test_activity_kinds(app: tuple[Any, Any]) -> None:
    client, _ = app
    _, h = await api_world(client)
    kinds = await (await client.get("/api/v1/activity-kinds", headers=h["anna"])).json()
    assert {"code": "meeting", "name_ru": "Встреча", "name_en": "Meeting"} in kinds
    assert (await client.get("/api/v1/activity-kinds")).status == 401
