"""Telegram and SMS webhooks into the inbox: the secret token / callback secret checked,
messages stored once, a reply sent through the fake Bot API (text, a document and a photo), an
SMS delivery report, an SMS reply that takes no files."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import FormData
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.conversations.model import Conversation, Message
from crm_core.users import service as users
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.telegram_api import FakeTelegramApi
from tests.web.world import csrf, sign_in, team

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


async def test_a_reply_with_a_document_and_a_photo_goes_to_the_bot_api(
    client: Any, telegram_api: FakeTelegramApi
) -> None:
    await team(client)
    resp = await client.post(
        "/webhooks/telegram/tg-bot",
        json=update(7, "Пришлите прайс и фото"),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert resp.status == 200
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "boss")
    token = await csrf(client, "/inbox")
    pdf = b"%PDF-1.7\n" + b"x" * 2000
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 800
    form = FormData(quote_fields=False)
    form.add_field("csrf_token", token)
    form.add_field("text", "Прайс и фото склада")
    form.add_field("files", io.BytesIO(pdf), filename="прайс.pdf", content_type="application/pdf")
    form.add_field("files", io.BytesIO(jpeg), filename="склад.jpg", content_type="image/jpeg")
    resp = await client.post(f"/inbox/{conv.id}/reply", data=form, headers={"HX-Request": "true"})
    assert resp.status == 200
    await client.app[SCHEDULER].run_once()
    document = telegram_api.calls("/sendDocument")
    photo = telegram_api.calls("/sendPhoto")
    assert len(document) == 1 and len(photo) == 1
    assert telegram_api.calls("/sendMessage") == []  # the text went as the caption
    assert document[0].form["document"]["data"] == pdf
    assert document[0].form["document"]["filename"] == "прайс.pdf"
    assert document[0].form["caption"] == "Прайс и фото склада"
    assert photo[0].form["photo"]["data"] == jpeg and "caption" not in photo[0].form
    async with client.app[SESSIONS]() as session:
        sent = (await session.scalars(select(Message).where(Message.direction == "outbound"))).one()
    assert sent.status == "sent" and sent.provider_message_id


async def test_an_sms_reply_takes_no_files(client: Any, sms_gateway: FakeSmsGateway) -> None:
    await team(client)
    resp = await client.post(
        "/webhooks/sms/sms",
        data={
            "phone": "79161234567",
            "mes": "Счёт?",
            "id": "9",
            "sms_id": "9",
            "sent": "1764669600",
        },
    )
    assert resp.status == 200
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "boss")
    page = await (await client.get(f"/inbox?c={conv.id}")).text()
    assert 'type="file"' not in page
    token = await csrf(client, "/inbox")
    form = FormData(quote_fields=False)
    form.add_field("csrf_token", token)
    form.add_field("text", "счёт")
    form.add_field(
        "files", io.BytesIO(b"%PDF-1.4\n"), filename="счёт.pdf", content_type="application/pdf"
    )
    resp = await client.post(f"/inbox/{conv.id}/reply", data=form, headers={"HX-Request": "true"})
    assert resp.status == 422 and "не отправляет файлы" in await resp.text()
