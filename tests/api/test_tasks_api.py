"""The tasks API: who may do what, reminders delivered by the app's scheduler, bulk tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contact_center.keys import BUS, SCHEDULER
from crm_core.events import DomainEvent
from crm_core.tasks.events import TaskDue
from tests.crm_core.tasks.world import T0, api_world, manual_clock_client
from tests.helpers import until

HOUR = timedelta(hours=1)


@pytest.fixture
async def app(settings: Any, aiohttp_client_factory: Any) -> tuple[Any, Any]:
    return await manual_clock_client(settings, aiohttp_client_factory)


def listen(client: Any, *names: str) -> list[DomainEvent]:
    seen: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        seen.append(event)

    client.app[BUS].subscribe(handler, name="test", events=names)
    return seen


async def test_create_read_change_and_close_a_task(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    events = listen(client, "task.created", "task.status_changed")
    body = {
        "kind": "call_back",
        "title": "Перезвонить",
        "due_at": (T0 + HOUR).isoformat(),
        "company_id": w["ivan_co"],
    }
    resp = await client.post("/api/v1/tasks", json=body, headers=h["ivan"])
    assert resp.status == 201, await resp.text()
    task = await resp.json()
    assert task["responsible_id"] == w["ivan"] and task["status"] == "open"
    assert task["overdue"] is False
    tid = task["id"]
    resp = await client.patch(
        f"/api/v1/tasks/{tid}", json={"due_at": (T0 - HOUR).isoformat()}, headers=h["ivan"]
    )
    assert resp.status == 200 and (await resp.json())["overdue"] is True
    resp = await client.post(f"/api/v1/tasks/{tid}/complete", headers=h["ivan"])
    assert resp.status == 200 and (await resp.json())["status"] == "done"
    resp = await client.post(f"/api/v1/tasks/{tid}/complete", headers=h["ivan"])
    assert resp.status == 409 and (await resp.json())["error"] == "task-status-conflict"
    resp = await client.post(f"/api/v1/tasks/{tid}/reopen", headers=h["ivan"])
    assert resp.status == 200 and (await resp.json())["status"] == "open"
    resp = await client.post(f"/api/v1/tasks/{tid}/cancel", headers=h["ivan"])
    assert (await resp.json())["status"] == "cancelled"
    await until(lambda: len(events) == 4)
    assert [e.name for e in events] == ["task.created"] + ["task.status_changed"] * 3


async def test_task_permissions(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    for who, read, write in (
        ("adm", 200, 200),
        ("boss", 200, 200),
        ("ivan", 200, 200),
        ("anna", 404, 404),
    ):
        resp = await client.post(
            "/api/v1/tasks", json={"title": who, "company_id": w["ivan_co"]}, headers=h["ivan"]
        )
        tid = (await resp.json())["id"]
        assert (await client.get(f"/api/v1/tasks/{tid}", headers=h[who])).status == read
        resp = await client.patch(f"/api/v1/tasks/{tid}", json={"title": "x"}, headers=h[who])
        assert resp.status == write, who
        for action in ("complete", "reopen", "cancel"):
            resp = await client.post(f"/api/v1/tasks/{tid}/{action}", headers=h[who])
            assert resp.status == write, (who, action)
        listing = await (await client.get("/api/v1/tasks?status=cancelled", headers=h[who])).json()
        # Each round cancels one more task of ivan's client; anna sees none of them.
        assert listing["total"] == {"adm": 1, "boss": 2, "ivan": 3, "anna": 0}[who]
        assert (await client.get(f"/api/v1/tasks/{tid}")).status == 401


async def test_who_may_create_tasks_for_whom(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)

    async def create(who: str, **body: Any) -> int:
        resp = await client.post("/api/v1/tasks", json={"title": "t", **body}, headers=h[who])
        return resp.status

    assert await create("ivan", company_id=w["ivan_co"]) == 201
    assert await create("anna", company_id=w["ivan_co"]) == 422  # not hers: no such company
    assert await create("ivan", responsible_id=w["anna"]) == 403
    assert await create("boss", responsible_id=w["anna"], company_id=w["ivan_co"]) == 201
    assert await create("adm", responsible_id=w["ivan"]) == 201
    resp = await client.post("/api/v1/tasks", json={"title": ""}, headers=h["ivan"])
    assert resp.status == 422 and "title" in (await resp.json())["details"]["fields"]
    resp = await client.post(
        "/api/v1/tasks", json={"title": "t", "due_at": "2026-03-02T10:00:00"}, headers=h["ivan"]
    )
    assert resp.status == 422 and "due_at" in (await resp.json())["details"]["fields"]
    assert (await client.get("/api/v1/tasks/abc", headers=h["adm"])).status == 404
    assert (await client.get("/api/v1/tasks/999999", headers=h["adm"])).status == 404


async def test_reminders_fire_at_the_right_time_and_follow_the_task(app: tuple[Any, Any]) -> None:
    client, clock = app
    w, h = await api_world(client)
    scheduler = client.app[SCHEDULER]
    due = listen(client, "task.due")
    body = {"title": "Позвонить", "due_at": (T0 + 2 * HOUR).isoformat()}
    tid = (await (await client.post("/api/v1/tasks", json=body, headers=h["ivan"])).json())["id"]
    body2 = {"title": "Встреча", "kind": "meeting", "due_at": (T0 + 2 * HOUR).isoformat()}
    t2 = (await (await client.post("/api/v1/tasks", json=body2, headers=h["ivan"])).json())["id"]
    # Rescheduled to later: nothing at the old time.
    resp = await client.patch(
        f"/api/v1/tasks/{tid}", json={"due_at": (T0 + 3 * HOUR).isoformat()}, headers=h["ivan"]
    )
    assert resp.status == 200
    await client.post(f"/api/v1/tasks/{t2}/complete", headers=h["ivan"])  # cancels its reminder
    clock.advance(2 * HOUR)
    await scheduler.run_once()
    clock.advance(HOUR - timedelta(seconds=1))
    await scheduler.run_once()
    assert due == []
    clock.advance(timedelta(seconds=1))
    assert await scheduler.run_once() == 1
    await until(lambda: due)
    [event] = due
    assert isinstance(event, TaskDue)
    assert event.task_id == tid and event.audience == (f"user:{w['ivan']}",)
    health = await (await client.get("/healthz")).json()
    assert health["scheduler"]["done"] == 1


async def test_bulk_tasks_by_role(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    for who, created in (("adm", 2), ("boss", 2), ("ivan", 1), ("anna", 0)):
        body: dict[str, Any] = {
            "filter": {"entity": "company", "client_type": "tender_bidder"},
            "task": {"kind": "call_back", "title": "Обзвон", "due_at": (T0 + HOUR).isoformat()},
            "assign": "responsible",
        }
        if who in ("adm", "boss"):
            body["assign"] = w["anna"]  # including the orphan company, assigned to anna
        resp = await client.post("/api/v1/tasks/bulk", json=body, headers=h[who])
        assert resp.status == 201, await resp.text()
        result = await resp.json()
        assert result["created"] == created, who
        listing = await (
            await client.get(f"/api/v1/tasks?bulk_id={result['bulk_id']}", headers=h["adm"])
        ).json()
        assert listing["total"] == created


async def test_bulk_refusals(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    task = {"title": "Обзвон"}
    resp = await client.post(
        "/api/v1/tasks/bulk",
        json={"filter": {"responsible_id": w["anna"]}, "task": task},
        headers=h["ivan"],
    )
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/tasks/bulk",
        json={"filter": {}, "task": task, "assign": w["anna"]},
        headers=h["ivan"],
    )
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/tasks/bulk",
        json={"filter": {"entity": "deal"}, "task": task},
        headers=h["boss"],
    )
    assert resp.status == 422 and "filter.entity" in (await resp.json())["details"]["fields"]
    resp = await client.post("/api/v1/tasks/bulk", json={"filter": {}, "task": task})
    assert resp.status == 401


async def test_kinds_have_russian_and_english_names(app: tuple[Any, Any]) -> None:
    client, _ = app
    _, h = await api_world(client)
    body = await (await client.get("/api/v1/task-kinds", headers=h["ivan"])).json()
    call_back = next(k for k in body["kinds"] if k["code"] == "call_back")
    assert call_back == {"code": "call_back", "name_ru": "Перезвонить", "name_en": "Call back"}
    assert {s["code"] for s in body["statuses"]} == {"open", "done", "cancelled"}
    assert (await client.get("/api/v1/task-kinds")).status == 401


def test_query_literals_match_the_enums() -> None:
    import typing

    from contact_center.api.activities import ActivityQuery
    from contact_center.api.tasks import TaskQuery
    from crm_core.activities.model import ActivityKind
    from crm_core.tasks.model import TaskKind, TaskStatus

    def args(model: Any, field: str) -> set[str]:
        literal = typing.get_args(model.model_fields[field].annotation)[0]
        return set(typing.get_args(literal))

    assert args(TaskQuery, "kind") == {k.value for k in TaskKind}
    assert args(TaskQuery, "status") == {s.value for s in TaskStatus}
    assert args(ActivityQuery, "kind") == {k.value for k in ActivityKind}
