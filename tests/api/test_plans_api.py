"""Plans API: the head sets, managers read their own; plan-vs-fact; the "today" list."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contact_center.keys import SESSIONS
from crm_core.access import SYSTEM
from crm_core.activities import service as activities
from crm_core.activities.schemas import ActivityInput
from tests.crm_core.tasks.world import T0, api_world, manual_clock_client

DAY = "2026-03-02"  # T0's day in Moscow (a Monday)


@pytest.fixture
async def app(settings: Any, aiohttp_client_factory: Any) -> tuple[Any, Any]:
    return await manual_clock_client(settings, aiohttp_client_factory)


async def test_who_sets_plans(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    body = {"calls": 40, "meetings": 2, "proposals": 3, "note": "выставка"}
    for who, status in (("adm", 200), ("boss", 200), ("ivan", 403), ("anna", 403)):
        resp = await client.put(f"/api/v1/plans/{w['ivan']}/{DAY}", json=body, headers=h[who])
        assert resp.status == status, await resp.text()
        if status == 200:
            plan = await resp.json()
            assert plan["calls"] == 40 and plan["set_by_id"] == w[who] and plan["day"] == DAY
    resp = await client.put(f"/api/v1/plans/{w['ivan']}/{DAY}", json=body)
    assert resp.status == 401


async def test_plan_input_validation(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    resp = await client.put(
        f"/api/v1/plans/{w['ivan']}/{DAY}", json={"calls": -1}, headers=h["boss"]
    )
    assert resp.status == 422 and "calls" in (await resp.json())["details"]["fields"]
    resp = await client.put(f"/api/v1/plans/{w['ivan']}/2026-13-01", json={}, headers=h["boss"])
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "day"
    resp = await client.put(f"/api/v1/plans/999999/{DAY}", json={}, headers=h["boss"])
    assert resp.status == 404


async def test_who_reads_plans(app: tuple[Any, Any]) -> None:
    """``own``: ivan's day; ``other``: anna's day."""
    client, _ = app
    w, h = await api_world(client)
    for who, own, other in (
        ("adm", 200, 200),
        ("boss", 200, 200),
        ("ivan", 200, 403),
        ("anna", 403, 200),
    ):
        resp = await client.get(f"/api/v1/plans/{w['ivan']}/{DAY}", headers=h[who])
        assert resp.status == own, who
        resp = await client.get(f"/api/v1/plans/{w['anna']}/{DAY}", headers=h[who])
        assert resp.status == other, who
        resp = await client.get(f"/api/v1/plans?user_id={w['ivan']}", headers=h[who])
        assert resp.status == own, who
        resp = await client.get(f"/api/v1/me/today?user_id={w['anna']}", headers=h[who])
        assert resp.status == other, who


async def test_plan_vs_fact_day_and_week(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    await client.put(
        f"/api/v1/plans/{w['ivan']}/{DAY}", json={"calls": 3, "meetings": 1}, headers=h["boss"]
    )
    async with client.app[SESSIONS]() as s:
        for i, kind in enumerate(("call", "call", "meeting")):
            await activities.record_activity(
                s,
                ActivityInput(
                    kind=kind,
                    counted=kind == "call",
                    user_id=w["ivan"],
                    occurred_at=T0 + timedelta(hours=i),
                ),
                actor=SYSTEM,
            )
        await s.commit()
    day = await (await client.get(f"/api/v1/plans/{w['ivan']}/{DAY}", headers=h["ivan"])).json()
    assert day["plan"] == {"calls": 3, "meetings": 1, "proposals": 0}
    assert day["fact"] == {"calls": 2, "meetings": 1, "proposals": 0}
    # Default: this week, every manager for the head, only himself for a manager.
    week = await (await client.get("/api/v1/plans", headers=h["boss"])).json()
    assert (week["start"], week["end"], week["timezone"]) == (DAY, "2026-03-08", "Europe/Moscow")
    assert {t["user_id"] for t in week["totals"]} == {w["ivan"], w["anna"]}
    assert len(week["days"]) == 14
    mine = await (await client.get("/api/v1/plans?week_of=2026-03-04", headers=h["anna"])).json()
    assert [t["user_id"] for t in mine["totals"]] == [w["anna"]]
    ranged = await (
        await client.get(f"/api/v1/plans?from={DAY}&to={DAY}", headers=h["ivan"])
    ).json()
    assert ranged["totals"][0]["fact"]["calls"] == 2
    bad = await client.get(f"/api/v1/plans?from={DAY}&to=2026-03-01", headers=h["ivan"])
    assert bad.status == 422


async def test_my_today(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    for who in ("adm", "boss", "ivan", "anna"):
        overdue = {"title": f"просрочено {who}", "due_at": (T0 - timedelta(hours=1)).isoformat()}
        callback = {
            "title": f"перезвонить {who}",
            "kind": "call_back",
            "due_at": (T0 + timedelta(hours=1)).isoformat(),
        }
        for body in (overdue, callback):
            resp = await client.post("/api/v1/tasks", json=body, headers=h[who])
            assert resp.status == 201
    for who in ("adm", "boss", "ivan", "anna"):
        body = await (await client.get("/api/v1/me/today", headers=h[who])).json()
        assert body["day"] == DAY and body["timezone"] == "Europe/Moscow"
        assert [t["title"] for t in body["overdue"]] == [f"просрочено {who}"]
        assert body["overdue"][0]["overdue"] is True
        assert [t["title"] for t in body["callbacks"]] == [f"перезвонить {who}"]
        assert body["due_today"] == [] and body["invoices_overdue"] == []
        assert body["plan"]["user_id"] == w[who]
    assert (await client.get("/api/v1/me/today")).status == 401
