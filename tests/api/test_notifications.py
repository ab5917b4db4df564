"""Notifications are stored with what they are about and wait for their user: a reminder that
falls due while the server is down (or nobody is signed in) is in the manager's list and
counted on his next connection, instead of being pushed into an empty room."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from aiohttp import WSMsgType

from contact_center.app import create_app
from contact_center.keys import SCHEDULER
from crm_core.clock import ManualClock
from tests.crm_core.tasks.world import PASSWORD, T0, api_world
from tests.helpers import until

HOUR = timedelta(hours=1)
_READERS: set[asyncio.Task[None]] = set()


def _scheduler_on_demand(settings: Any) -> Any:
    return settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"interval_s": 3600.0})}
    )


async def _ws_messages(client: Any, login: str) -> tuple[Any, list[dict[str, Any]]]:
    """A signed-in browser's socket (cookie session) and the messages it receives."""
    resp = await client.post(
        "/login", data={"login": login, "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 303
    ws = await client.ws_connect("/ws", headers={"Origin": str(client.make_url(""))[:-1]})
    seen: list[dict[str, Any]] = []

    async def read() -> None:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                seen.append(json.loads(msg.data))

    reader = asyncio.get_running_loop().create_task(read())
    _READERS.add(reader)
    reader.add_done_callback(_READERS.discard)
    return ws, seen


async def test_a_reminder_due_while_the_server_was_down_waits_for_its_manager(
    settings: Any, aiohttp_client_factory: Any
) -> None:
    settings = _scheduler_on_demand(settings)
    clock = ManualClock(T0)
    first = await aiohttp_client_factory(
        create_app(settings, announce=lambda _t: None, clock=clock)
    )
    w, h = await api_world(first)
    body = {"title": "Позвонить в «Ромашку»", "due_at": (T0 + 2 * HOUR).isoformat()}
    resp = await first.post("/api/v1/tasks", json=body, headers=h["boss"] | {})
    assert resp.status == 201, await resp.text()
    resp = await first.post(
        "/api/v1/tasks",
        json={**body, "responsible_id": w["ivan"], "title": "Встреча"},
        headers=h["boss"],
    )
    task_id = (await resp.json())["id"]
    await first.close()  # the server is down

    clock.advance(3 * HOUR)  # the reminder fell due meanwhile
    second = await aiohttp_client_factory(
        create_app(settings, announce=lambda _t: None, clock=clock)
    )
    # The scheduler's first tick at start-up runs it, before anybody is connected.
    await until(lambda: second.app[SCHEDULER].done >= 1)

    ws, seen = await _ws_messages(second, "ivan")
    await until(lambda: seen)
    assert seen[0]["type"] == "hello" and seen[0]["unread_notifications"] == 2
    page = await (await second.get("/api/v1/notifications", headers=h["ivan"])).json()
    kinds = {(n["kind"], n["data"].get("title")) for n in page["items"]}
    # Given by the head of sales (assigned), then due (the reminder).
    assert kinds == {("task.assigned", "Встреча"), ("task.due", "Встреча")}
    due = next(n for n in page["items"] if n["kind"] == "task.due")
    assert due["data"]["task_id"] == task_id and due["read_at"] is None
    # The head of sales' own task is no news to him; nothing of ivan's reaches anna.
    anna = await (await second.get("/api/v1/notifications", headers=h["anna"])).json()
    assert anna == {"items": [], "unread": 0}

    # The same reminder run again (a job redelivered) tells nobody twice.
    assert await second.app[SCHEDULER].run_once() == 0
    again = await (await second.get("/api/v1/notifications", headers=h["ivan"])).json()
    assert again["unread"] == 2

    # Anna cannot mark ivan's; ivan marks his read.
    resp = await second.post(
        "/api/v1/notifications/read", json={"ids": [due["id"]]}, headers=h["anna"]
    )
    assert (await resp.json()) == {"marked": 0, "unread": 0}
    resp = await second.post(
        "/api/v1/notifications/read", json={"ids": [due["id"]]}, headers=h["ivan"]
    )
    assert (await resp.json()) == {"marked": 1, "unread": 1}
    resp = await second.post("/api/v1/notifications/read", json={}, headers=h["ivan"])
    assert (await resp.json()) == {"marked": 1, "unread": 0}
    await ws.close()


async def test_a_connected_manager_gets_the_notification_live(
    settings: Any, aiohttp_client_factory: Any
) -> None:
    clock = ManualClock(T0)
    client = await aiohttp_client_factory(
        create_app(_scheduler_on_demand(settings), announce=lambda _t: None, clock=clock)
    )
    w, h = await api_world(client)
    ws, seen = await _ws_messages(client, "ivan")
    await until(lambda: seen)
    body = {"title": "Отправить КП", "due_at": (T0 + HOUR).isoformat(), "responsible_id": w["ivan"]}
    resp = await client.post("/api/v1/tasks", json=body, headers=h["boss"])
    assert resp.status == 201
    live = await until(lambda: [m for m in seen if m["type"] == "notification.created"])
    assert live[0]["kind"] == "task.assigned" and live[0]["data"]["title"] == "Отправить КП"
    assert live[0]["user_id"] == w["ivan"] and isinstance(live[0]["notification_id"], int)
    await ws.close()
