"""The inbox end to end over HTTP: signed WhatsApp webhooks in (a fake Graph API behind the
adapter), conversations and the outbox through the REST API, frames on the manager's /ws."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from contact_center.app import create_app
from contact_center.config import Settings
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.conversations.model import Message
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.jobs.model import ScheduledJob
from crm_core.leads.model import Lead
from crm_core.users import service as users
from tests.fakes.graph_api import FakeGraphApi
from tests.inbox_support import (
    TEMPLATES,
    TOKEN,
    VERIFY_TOKEN,
    signed,
    wa_channel,
    wa_status,
    wa_text,
)

HOOK = "/webhooks/whatsapp/wa-main"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphApi]:
    async with FakeGraphApi(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def inbox_settings(
    make_settings: Callable[..., Settings], database_url: str, graph: FakeGraphApi
) -> Settings:
    return make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([wa_channel(graph.url)]),
        CC_SCHEDULER_INTERVAL_S="3600",  # the tests run the outbox themselves
    )


@pytest.fixture
async def app_client(inbox_settings: Settings, aiohttp_client_factory: Callable[..., Any]) -> Any:
    return await aiohttp_client_factory(create_app(inbox_settings, announce=lambda _t: None))


async def _people(client: Any) -> dict[str, Any]:
    """ivan (whom the default distribution rule gives new clients), anna, boss; their tokens."""
    out: dict[str, Any] = {}
    async with client.app[SESSIONS]() as session:
        for login, role in (("ivan", "manager"), ("anna", "manager"), ("boss", "head")):
            user, _ = await users.create_user(
                session, login=login, role=role, password="password1", scrypt_n=1024
            )
            out[login] = user.id
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="fixed", managers=[ManagerInput(user_id=out["ivan"])]),
            now=utcnow(),
        )
        await session.commit()
    for login in ("ivan", "anna", "boss"):
        resp = await client.post(
            "/api/v1/auth/token", json={"login": login, "password": "password1"}
        )
        out[f"{login}_h"] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return out


async def _deliver(client: Any, body: bytes) -> Any:
    return await client.post(HOOK, data=body, headers=signed(body))


async def test_verification_handshake(app_client: Any) -> None:
    ok = await app_client.get(
        HOOK,
        params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"},
    )
    assert ok.status == 200 and await ok.text() == "42"
    bad = await app_client.get(
        HOOK, params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "42"}
    )
    assert bad.status == 403
    unknown = await app_client.get("/webhooks/whatsapp/nope", params={"hub.mode": "subscribe"})
    assert unknown.status == 404


async def test_forged_and_unsigned_deliveries_are_refused_and_logged(
    app_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = wa_text("wamid.forged", "дайте скидку")
    caplog.set_level(logging.WARNING, logger="contact_center.inbox_service")
    unsigned = await app_client.post(HOOK, data=body, headers={"Content-Type": "application/json"})
    forged = await app_client.post(HOOK, data=body, headers=signed(body, "not-the-secret"))
    assert unsigned.status == 403 and forged.status == 403
    reasons = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any("no X-Hub-Signature-256" in r for r in reasons)
    assert any("does not match" in r for r in reasons)
    async with app_client.app[SESSIONS]() as session:
        assert (await session.scalars(select(Message))).all() == []


async def test_a_message_reaches_the_assigned_managers_socket_once(app_client: Any) -> None:
    ctx = await _people(app_client)
    ivan_ws = await app_client.ws_connect("/ws", headers=ctx["ivan_h"])
    anna_ws = await app_client.ws_connect("/ws", headers=ctx["anna_h"])
    for ws in (ivan_ws, anna_ws):
        assert (await ws.receive_json(timeout=5))["type"] == "hello"
    body = wa_text("wamid.new.1", "Здравствуйте! Сколько стоит доставка?")
    for _ in range(3):  # Meta redelivers
        resp = await _deliver(app_client, body)
        assert resp.status == 200
    frames = []
    while True:
        try:
            frame = await ivan_ws.receive_json(timeout=1)
        except TimeoutError:
            break
        frames.append(frame)
    new = [f for f in frames if f["type"] == "message.new"]
    assert len(new) == 1 and new[0]["text"] == "Здравствуйте! Сколько стоит доставка?"
    assert new[0]["assignee_id"] == ctx["ivan"] and new[0]["client_name"] == "Иван Петров"
    with pytest.raises(TimeoutError):
        while True:  # anna gets no message of ivan's conversation
            frame = await anna_ws.receive_json(timeout=0.5)
            assert frame["type"] != "message.new"
    await ivan_ws.close()
    await anna_ws.close()
    listed = await app_client.get(
        "/api/v1/conversations", params={"view": "mine"}, headers=ctx["ivan_h"]
    )
    body_json = await listed.json()
    assert body_json["total"] == 1
    conv = body_json["items"][0]
    assert conv["unread"] == 1 and conv["window_open"] is True and conv["phone"] == "+79161234567"
    assert conv["channel_name"] == "WhatsApp продаж"
    async with app_client.app[SESSIONS]() as session:
        lead = await session.get(Lead, conv["lead_id"])
        assert lead is not None and lead.origin == "message"
        assert lead.responsible_id == ctx["ivan"]
    hidden = await app_client.get(f"/api/v1/conversations/{conv['id']}", headers=ctx["anna_h"])
    assert hidden.status == 404


async def test_reply_outbox_send_and_delivery_status(app_client: Any, graph: FakeGraphApi) -> None:
    ctx = await _people(app_client)
    await _deliver(app_client, wa_text("wamid.q", "Есть в наличии?"))
    conv = (await (await app_client.get("/api/v1/conversations", headers=ctx["ivan_h"])).json())[
        "items"
    ][0]
    url = f"/api/v1/conversations/{conv['id']}/messages"
    resp = await app_client.post(url, json={"text": "Да, есть."}, headers=ctx["ivan_h"])
    assert resp.status == 201
    reply = await resp.json()
    assert reply["status"] == "queued" and reply["direction"] == "outbound"
    note = await app_client.post(
        url, json={"text": "перезвонить завтра", "note": True}, headers=ctx["ivan_h"]
    )
    assert (await note.json())["status"] == "note"
    await app_client.app[SCHEDULER].run_once()
    sent = graph.calls("/messages")
    assert len(sent) == 1 and sent[0].json()["text"]["body"] == "Да, есть."
    assert sent[0].json()["to"] == "79161234567"
    await app_client.app[SCHEDULER].run_once()
    assert len(graph.calls("/messages")) == 1  # sent once
    messages = (await (await app_client.get(url, headers=ctx["ivan_h"])).json())["items"]
    out = next(m for m in messages if m["id"] == reply["id"])
    assert out["status"] == "sent" and out["provider_message_id"] == "wamid.fake.1"
    assert [m["kind"] for m in messages] == ["text", "text", "note"]
    delivered = await _deliver(app_client, wa_status("wamid.fake.1", "delivered"))
    assert delivered.status == 200
    messages = (await (await app_client.get(url, headers=ctx["ivan_h"])).json())["items"]
    assert next(m for m in messages if m["id"] == reply["id"])["status"] == "delivered"
    read = await app_client.post(f"/api/v1/conversations/{conv['id']}/read", headers=ctx["ivan_h"])
    assert (await read.json())["unread"] == 0
    resolved = await app_client.patch(
        f"/api/v1/conversations/{conv['id']}", json={"status": "resolved"}, headers=ctx["ivan_h"]
    )
    assert (await resolved.json())["status"] == "resolved"
    refused = await app_client.patch(
        f"/api/v1/conversations/{conv['id']}",
        json={"assignee_id": ctx["anna"]},
        headers=ctx["ivan_h"],
    )
    assert refused.status == 403


async def test_outside_the_24_hour_window_a_reply_is_refused(app_client: Any) -> None:
    ctx = await _people(app_client)
    old = time.time() - 25 * 3600
    await _deliver(app_client, wa_text("wamid.old", "вчерашнее", ts=old))
    conv = (await (await app_client.get("/api/v1/conversations", headers=ctx["ivan_h"])).json())[
        "items"
    ][0]
    assert conv["window_open"] is False
    resp = await app_client.post(
        f"/api/v1/conversations/{conv['id']}/messages", json={"text": "ау"}, headers=ctx["ivan_h"]
    )
    assert resp.status == 422
    error = await resp.json()
    assert "24 часов" in error["message"] and "шаблон" in error["message"]
    async with app_client.app[SESSIONS]() as session:
        kinds = (await session.scalars(select(ScheduledJob.kind))).all()
    assert "conversation.send" not in kinds


async def test_provider_failures_retry_then_show_on_the_message(
    app_client: Any, graph: FakeGraphApi
) -> None:
    ctx = await _people(app_client)
    await _deliver(app_client, wa_text("wamid.f", "цена?"))
    conv = (await (await app_client.get("/api/v1/conversations", headers=ctx["ivan_h"])).json())[
        "items"
    ][0]
    url = f"/api/v1/conversations/{conv['id']}/messages"
    first = await (await app_client.post(url, json={"text": "раз"}, headers=ctx["ivan_h"])).json()
    graph.fail_next(
        500, {"error": {"message": "Service temporarily unavailable", "code": 2, "type": "x"}}
    )
    await app_client.app[SCHEDULER].run_once()
    async with app_client.app[SESSIONS]() as session:
        stored = await session.get(Message, first["id"])
        job = await session.scalar(
            select(ScheduledJob).where(ScheduledJob.kind == "conversation.send")
        )
        assert stored is not None and stored.status == "queued"
        assert job is not None and job.status == "pending" and job.attempts == 1
        assert job.due_at > utcnow() + timedelta(seconds=1)  # backed off
        job.due_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    await app_client.app[SCHEDULER].run_once()
    async with app_client.app[SESSIONS]() as session:
        stored = await session.get(Message, first["id"])
        assert stored is not None and stored.status == "sent"
    second = await (await app_client.post(url, json={"text": "два"}, headers=ctx["ivan_h"])).json()
    graph.fail_next(
        400,
        {
            "error": {
                "message": "Re-engagement message",
                "type": "OAuthException",
                "code": 131047,
                "fbtrace_id": "f",
            }
        },
    )
    await app_client.app[SCHEDULER].run_once()
    messages = (await (await app_client.get(url, headers=ctx["ivan_h"])).json())["items"]
    failed = next(m for m in messages if m["id"] == second["id"])
    assert failed["status"] == "failed" and failed["error"].startswith("131047")


async def test_a_crash_between_writing_and_sending_sends_once(
    inbox_settings: Settings, graph: FakeGraphApi, aiohttp_client_factory: Callable[..., Any]
) -> None:
    first = await aiohttp_client_factory(create_app(inbox_settings, announce=lambda _t: None))
    ctx = await _people(first)
    await _deliver(first, wa_text("wamid.c", "жду ответа"))
    conv = (await (await first.get("/api/v1/conversations", headers=ctx["ivan_h"])).json())[
        "items"
    ][0]
    resp = await first.post(
        f"/api/v1/conversations/{conv['id']}/messages",
        json={"text": "ответ"},
        headers=ctx["ivan_h"],
    )
    assert resp.status == 201
    await first.close()  # the server stops before the outbox ran
    assert graph.calls("/messages") == []
    second = await aiohttp_client_factory(create_app(inbox_settings, announce=lambda _t: None))
    for _ in range(50):  # the restarted scheduler's first tick sends it
        if graph.calls("/messages"):
            break
        await asyncio.sleep(0.1)
    await second.app[SCHEDULER].run_once()
    assert len(graph.calls("/messages")) == 1


async def test_outside_the_window_an_approved_template_goes(
    app_client: Any, graph: FakeGraphApi
) -> None:
    graph.templates = TEMPLATES
    ctx = await _people(app_client)
    await _deliver(app_client, wa_text("wamid.t", "давно писал", ts=time.time() - 48 * 3600))
    conv = (await (await app_client.get("/api/v1/conversations", headers=ctx["ivan_h"])).json())[
        "items"
    ][0]
    base = f"/api/v1/conversations/{conv['id']}"
    listed = await (await app_client.get(f"{base}/templates", headers=ctx["ivan_h"])).json()
    assert [(t["name"], t["params"]) for t in listed["items"]] == [
        ("order_ready", ["1", "2"]),
        ("follow_up", ["first_name"]),
    ]
    wrong = await app_client.post(
        f"{base}/messages",
        json={"template": {"name": "order_ready", "language": "ru", "params": ["Иван"]}},
        headers=ctx["ivan_h"],
    )
    assert wrong.status == 422 and "ждёт значений: 2" in (await wrong.json())["message"]
    unknown = await app_client.post(
        f"{base}/messages",
        json={"template": {"name": "nope", "language": "ru"}},
        headers=ctx["ivan_h"],
    )
    assert unknown.status == 422
    for body in (
        {"template": {"name": "order_ready", "language": "ru", "params": ["Иван", "№ 17"]}},
        {"template": {"name": "follow_up", "language": "ru", "params": ["Иван"]}},
    ):
        resp = await app_client.post(f"{base}/messages", json=body, headers=ctx["ivan_h"])
        assert resp.status == 201, await resp.text()
    first = await resp.json()
    assert first["text"] == "Здравствуйте, Иван! Актуален ли заказ?" and first["kind"] == "template"
    await app_client.app[SCHEDULER].run_once()
    sent = [r.json() for r in graph.calls("/messages")]
    assert [s["template"]["name"] for s in sent] == ["order_ready", "follow_up"]
    assert sent[0]["template"]["components"][0]["parameters"] == [
        {"type": "text", "text": "Иван"},
        {"type": "text", "text": "№ 17"},
    ]
    assert sent[1]["template"]["components"][0]["parameters"] == [
        {"type": "text", "parameter_name": "first_name", "text": "Иван"}
    ]


async def test_a_provider_that_takes_its_time_holds_up_only_its_own_message(
    app_client: Any, graph: FakeGraphApi, database_url: str
) -> None:
    """The Graph API sits on the reply to one client: the reply to another goes out meanwhile,
    and no database transaction waits on the provider (one sent at a time before)."""
    ctx = await _people(app_client)
    await _deliver(app_client, wa_text("wamid.a", "Счёт готов?", wa_id="79161234567"))
    await _deliver(app_client, wa_text("wamid.b", "Когда доставка?", wa_id="79035550011"))
    listed = await app_client.get("/api/v1/conversations", headers=ctx["ivan_h"])
    by_phone = {c["phone"]: c["id"] for c in (await listed.json())["items"]}
    replies = {}
    for phone, answer in (("+79161234567", "Готов, высылаю."), ("+79035550011", "Завтра.")):
        url = f"/api/v1/conversations/{by_phone[phone]}/messages"
        resp = await app_client.post(url, json={"text": answer}, headers=ctx["ivan_h"])
        replies[phone] = (await resp.json())["id"]
    graph.hold = lambda call: call.json().get("to") == "79161234567"
    running = asyncio.create_task(app_client.app[SCHEDULER].run_once())
    try:

        async def status(message_id: int) -> str:
            async with app_client.app[SESSIONS]() as session:
                message = await session.get(Message, message_id)
                assert message is not None
                return message.status

        deadline = time.monotonic() + 10
        while await status(replies["+79035550011"]) != "sent":
            assert time.monotonic() < deadline, "the second reply waited for the first"
            await asyncio.sleep(0.05)
        assert await status(replies["+79161234567"]) == "queued"
        assert len(graph.calls("/messages")) == 2  # the first one is at the provider
        if database_url.startswith("postgresql"):
            async with app_client.app[SESSIONS]() as session:
                waiting = await session.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state = 'idle in transaction' "
                        "AND pid <> pg_backend_pid()"
                    )
                )
            assert waiting == 0
    finally:
        graph.release.set()
    assert await running == 2
    assert await status(replies["+79161234567"]) == "sent"
