"""Telegram and SMS webhooks into the inbox: the secret token / callback secret checked,
messages stored once, a reply sent through the fake Bot API, an SMS delivery report."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.conversations.model import Conversation, Message
from crm_core.users import service as users
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.telegram_api import FakeTelegramApi

SECRET = "tg-hook-secret"


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token="123456:TEST") as fake:
        yield fake


@pytest.fixture
async def sms_gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(login="cc", password="gw-secret") as fake:
        yield fake


@pytest.fixture
async def client(
    make_settings: Callable[..., Any],
    database_url: str,
    telegram_api: FakeTelegramApi,
    sms_gateway: FakeSmsGateway,
    aiohttp_client_factory: Callable[..., Any],
) -> Any:
    channels = [
        {
            "code": "tg-bot",
            "kind": "telegram",
            "bot_token": "123456:TEST",
            "webhook_secret": SECRET,
            "api_url": telegram_api.url,
        },
        {
            "code": "sms",
            "kind": "sms",
            "login": "cc",
            "password": "gw-secret",
            "api_url": sms_gateway.url,
        },
    ]
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps(channels),
        CC_SCHEDULER_INTERVAL_S="3600",
    )
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


def update(update_id: int, text: str) -> dict[str, Any]:
    return {
        "update_id": update_id,
        "message": {
            "message_id": update_id,
            "date": 1764669600,
            "chat": {"id": 555, "type": "private", "first_name": "Пётр"},
            "from": {"id": 555, "is_bot": False, "first_name": "Пётр", "last_name": "Иванов"},
            "text": text,
        },
    }


async def test_telegram_secret_token_storage_and_reply(
    client: Any, telegram_api: FakeTelegramApi
) -> None:
    body = update(1, "Здравствуйте, есть доставка в Казань?")
    forged = await client.post(
        "/webhooks/telegram/tg-bot",
        json=body,
        headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"},
    )
    assert forged.status == 403
    for _ in range(2):
        resp = await client.post(
            "/webhooks/telegram/tg-bot",
            json=body,
            headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
        )
        assert resp.status == 200
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
        assert conv.identity_kind == "telegram" and conv.identity_value == "555"
        assert len((await session.scalars(select(Message))).all()) == 1
        await users.create_user(
            session, login="boss", role="head", password="password1", scrypt_n=1024
        )
        await session.commit()
    token = await client.post("/api/v1/auth/token", json={"login": "boss", "password": "password1"})
    headers = {"Authorization": f"Bearer {(await token.json())['token']}"}
    resp = await client.post(
        f"/api/v1/conversations/{conv.id}/messages", json={"text": "Да, доставим."}, headers=headers
    )
    assert resp.status == 201
    await client.app[SCHEDULER].run_once()
    sent = telegram_api.calls("/sendMessage")
    assert len(sent) == 1 and sent[0].json()["chat_id"] in (555, "555")
    assert sent[0].json()["text"] == "Да, доставим."


async def test_an_sms_callback_is_stored(client: Any) -> None:
    resp = await client.post(
        "/webhooks/sms/sms",
        data={
            "phone": "79161234567",
            "mes": "Перезвоните мне",
            "id": "771",
            "sms_id": "771",
            "to": "79990000000",
            "sent": "1764669600",
        },
    )
    assert resp.status == 200
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one_or_none()
        messages = (await session.scalars(select(Message))).all()
    assert conv is not None and conv.channel_kind == "sms" and conv.phone == "+79161234567"
    assert [m.text for m in messages] == ["Перезвоните мне"]
