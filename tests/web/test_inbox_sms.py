"""An SMS conversation in Входящие: the counter under the reply box (characters and parts;
Cyrillic is UCS-2: 70 characters in one SMS, 67 per part of a long one) and, on each SMS we
sent, its parts and the cost the gateway reported, in Russian."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.conversations.model import Conversation, Message
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.web.world import csrf, sign_in, team, visible

HOOK = "/webhooks/sms/sms-main?secret=cb-secret"


@pytest.fixture
async def gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(login="cc", password="gw-secret") as fake:
        yield fake


@pytest.fixture
async def client(
    make_settings: Any, database_url: str, gateway: FakeSmsGateway, aiohttp_client_factory: Any
) -> Any:
    channel = {
        "code": "sms-main",
        "kind": "sms",
        "login": "cc",
        "password": "gw-secret",
        "api_url": gateway.url,
        "callback_secret": "cb-secret",
    }
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([channel]),
        CC_SCHEDULER_INTERVAL_S="3600",  # the test runs the outbox itself
    )
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


async def test_the_sms_reply_box_counts_parts_and_each_sms_shows_its_parts_and_cost(
    client: Any, gateway: FakeSmsGateway
) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as session:
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="fixed", managers=[ManagerInput(user_id=ids.ivan)]),
            now=utcnow(),
        )
        await session.commit()
    incoming = {"sms_id": "77001", "phone": "79161234567", "mes": "Есть ли доставка?"}
    resp = await client.post(HOOK, data=incoming)
    assert resp.status == 200, await resp.text()
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()

    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert 'id="sms-counter"' in page and "Символов: 0 · SMS-частей: 0" in page
    assert 'hx-post="/inbox/sms-count"' in page

    token = await csrf(client, "/inbox")
    # 70 Cyrillic characters fit one SMS; the 71st makes two parts of at most 67.
    for text, expected in (
        ("а" * 70, "Символов: 70 · SMS-частей: 1 · в части до 70, осталось 0"),
        ("а" * 71, "Символов: 71 · SMS-частей: 2 · в части до 67, осталось 63"),
        ("b" * 161, "Символов: 161 · SMS-частей: 2 · в части до 153, осталось 145"),
    ):
        resp = await client.post(
            "/inbox/sms-count",
            data={"text": text, "csrf_token": token},
            headers={"HX-Request": "true"},
        )
        assert resp.status == 200
        counter = await resp.text()
        assert expected in counter, counter
    assert "кириллица (UCS-2)" not in counter and "латиница (GSM-7)" in counter

    reply = "Да, доставляем по Москве и области. " * 2  # 72 characters: two parts
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data={"text": reply, "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200
    await client.app[SCHEDULER].run_once()
    (sent,) = [r for r in gateway.requests if r.path == "/sys/send.php"]
    async with client.app[SESSIONS]() as session:
        message = (
            await session.scalars(select(Message).where(Message.direction == "outbound"))
        ).one()
    assert message.status == "sent"
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert "SMS-частей: 2" in page and "стоимость 7\u00a0₽" in page  # 2 × 3,50 ₽, as reported

    # The delivery report brings the final price: it replaces the one of the send.
    report = {"id": message.provider_message_id, "phone": "79161234567", "status": "1"}
    resp = await client.post(HOOK, data={**report, "cost": "7.50"})
    assert resp.status == 200
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert "стоимость 7,50\u00a0₽" in page and "доставлено" in page
    assert sent.form or sent.query  # the gateway was asked once
