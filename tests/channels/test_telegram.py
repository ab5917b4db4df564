"""Telegram: the webhook secret, updates of each kind, /start deep links, sending, files."""

from __future__ import annotations

import json
from typing import Any

import pytest

from channels.base import Identity, InboundMessage, OutboundMedia, WebhookRequest
from channels.errors import ChannelSendFailed, MediaRefused, PayloadInvalid, SignatureInvalid
from channels.telegram import TelegramAdapter, start_payload
from tests.fakes.telegram_api import FakeTelegramApi

USER = {
    "id": 987654321,
    "is_bot": False,
    "first_name": "Мария",
    "last_name": "Иванова",
    "username": "maria_iv",
    "language_code": "ru",
}


def update(message: dict[str, Any], update_id: int = 10001) -> bytes:
    base = {
        "message_id": 42,
        "from": USER,
        "chat": {"id": 987654321, "type": "private", "first_name": "Мария"},
        "date": 1749416383,
    }
    return json.dumps(
        {"update_id": update_id, "message": {**base, **message}}, ensure_ascii=False
    ).encode()


def config(api_url: str = "http://127.0.0.1:9", **over: Any):
    return TelegramAdapter.validate_config(
        {
            "code": "tg-bot",
            "kind": "telegram",
            "bot_token": "123456:TEST",
            "webhook_secret": "tg-hook-secret",
            "api_url": api_url,
            **over,
        }
    )


@pytest.fixture
async def tg(telegram_api: FakeTelegramApi):
    adapter = TelegramAdapter(config(telegram_api.url))
    yield adapter
    await adapter.close()


def hook(body: bytes, secret: str | None = "tg-hook-secret") -> WebhookRequest:
    headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
    return WebhookRequest("POST", headers, body)


def one_message(tg: TelegramAdapter, body: bytes) -> InboundMessage:
    """The message of a webhook carrying one update (Telegram sends no delivery statuses)."""
    (msg,) = tg.parse_webhook(hook(body))
    assert isinstance(msg, InboundMessage)
    return msg


def test_the_secret_token_header_is_required(tg: TelegramAdapter) -> None:
    body = update({"text": "Привет"})
    with pytest.raises(SignatureInvalid) as err:
        tg.parse_webhook(hook(body, secret=None))
    assert "no X-Telegram-Bot-Api-Secret-Token" in err.value.reason
    with pytest.raises(SignatureInvalid) as err:
        tg.parse_webhook(hook(body, secret="guess"))
    assert "does not match" in err.value.reason
    assert tg.parse_webhook(hook(body))


def test_text_message(tg: TelegramAdapter) -> None:
    msg = one_message(tg, update({"text": "Сколько стоит доставка?"}))
    assert msg.kind == "text" and msg.text == "Сколько стоит доставка?"
    assert msg.sender == Identity("telegram", "987654321")
    assert msg.sender_name == "Мария Иванова"
    assert msg.provider_message_id == "987654321:42"
    assert msg.recipient == "987654321"
    assert msg.start_payload is None


def test_start_deep_link_payload_is_the_visitor_id(tg: TelegramAdapter) -> None:
    body = update(
        {
            "text": "/start v_3f9a1c2e",
            "entities": [{"type": "bot_command", "offset": 0, "length": 6}],
        }
    )
    msg = one_message(tg, body)
    assert msg.start_payload == "v_3f9a1c2e"
    assert start_payload("/start") is None
    assert start_payload("/start@shop_bot abc") == "abc"
    assert start_payload("start abc") is None


def test_own_contact_gives_the_phone_in_e164(tg: TelegramAdapter) -> None:
    body = update(
        {"contact": {"phone_number": "79161234567", "first_name": "Мария", "user_id": 987654321}}
    )
    msg = one_message(tg, body)
    assert msg.kind == "contacts"
    assert msg.sender_phone == "+79161234567"
    assert Identity("phone", "+79161234567") in msg.identities
    assert msg.contacts[0].phones == ("+79161234567",)


def test_someone_elses_contact_is_a_card_not_the_senders_phone(tg: TelegramAdapter) -> None:
    body = update({"contact": {"phone_number": "+7 (926) 555-12-34", "first_name": "Олег"}})
    msg = one_message(tg, body)
    assert msg.sender_phone is None
    assert msg.contacts[0].phones == ("+79265551234",)
    assert msg.contacts[0].name == "Олег"


def test_location(tg: TelegramAdapter) -> None:
    msg = one_message(tg, update({"location": {"latitude": 55.75, "longitude": 37.61}}))
    assert msg.kind == "location" and msg.location is not None
    assert (msg.location.latitude, msg.location.longitude) == (55.75, 37.61)


@pytest.mark.parametrize(
    ("field", "value", "kind", "ref", "mime"),
    [
        (
            "photo",
            [
                {
                    "file_id": "small",
                    "file_unique_id": "a",
                    "file_size": 100,
                    "width": 90,
                    "height": 90,
                },
                {
                    "file_id": "big",
                    "file_unique_id": "b",
                    "file_size": 9000,
                    "width": 1280,
                    "height": 960,
                },
            ],
            "image",
            "big",
            "image/jpeg",
        ),
        (
            "document",
            {
                "file_id": "doc1",
                "file_unique_id": "d",
                "file_name": "Счёт.pdf",
                "mime_type": "application/pdf",
                "file_size": 1234,
            },
            "document",
            "doc1",
            "application/pdf",
        ),
        (
            "voice",
            {
                "file_id": "v1",
                "file_unique_id": "v",
                "duration": 3,
                "mime_type": "audio/ogg",
                "file_size": 5000,
            },
            "audio",
            "v1",
            "audio/ogg",
        ),
        (
            "video",
            {
                "file_id": "vid1",
                "file_unique_id": "x",
                "duration": 3,
                "width": 1,
                "height": 1,
                "mime_type": "video/mp4",
            },
            "video",
            "vid1",
            "video/mp4",
        ),
        (
            "sticker",
            {
                "file_id": "st1",
                "file_unique_id": "s",
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "😀",
            },
            "sticker",
            "st1",
            "image/webp",
        ),
    ],
)
def test_media(tg: TelegramAdapter, field, value, kind, ref, mime) -> None:
    msg = one_message(tg, update({field: value, "caption": "подпись"}))
    assert msg.kind == kind
    (att,) = msg.attachments
    assert (att.ref, att.mime) == (ref, mime)
    if field == "document":
        assert att.filename == "Счёт.pdf"
    assert msg.text == ("😀" if field == "sticker" else "подпись")


def test_an_unknown_message_is_kept_as_unsupported(tg: TelegramAdapter) -> None:
    msg = one_message(tg, update({"dice": {"emoji": "🎲", "value": 3}}))
    assert msg.kind == "unsupported" and "dice" in (msg.text or "")


def test_a_reply_points_at_the_quoted_message(tg: TelegramAdapter) -> None:
    msg = one_message(
        tg,
        update(
            {
                "text": "да",
                "reply_to_message": {
                    "message_id": 40,
                    "chat": {"id": 987654321, "type": "private"},
                    "date": 1,
                },
            }
        ),
    )
    assert msg.reply_to == "987654321:40"


def test_updates_without_a_message_yield_nothing(tg: TelegramAdapter) -> None:
    body = json.dumps({"update_id": 5, "my_chat_member": {"chat": {"id": 1}}}).encode()
    assert tg.parse_webhook(hook(body)) == []
    with pytest.raises(PayloadInvalid):
        tg.parse_webhook(hook(b"{}"))


async def test_send_text_on_the_wire(tg: TelegramAdapter, telegram_api: FakeTelegramApi) -> None:
    result = await tg.send_text("987654321", "Добрый день!", reply_to="987654321:42")
    assert result.provider_message_id == "987654321:100"
    (call,) = telegram_api.requests
    assert call.path == "/bot123456:TEST/sendMessage"
    assert call.json() == {
        "chat_id": "987654321",
        "text": "Добрый день!",
        "reply_parameters": {"message_id": 42, "allow_sending_without_reply": True},
    }


async def test_send_media_by_link_and_by_upload(tg, telegram_api: FakeTelegramApi) -> None:
    await tg.send_media(
        "987654321", OutboundMedia("image", link="https://example.ru/a.jpg"), caption="Фото"
    )
    assert telegram_api.requests[-1].path.endswith("/sendPhoto")
    assert telegram_api.requests[-1].json() == {
        "chat_id": "987654321",
        "photo": "https://example.ru/a.jpg",
        "caption": "Фото",
    }
    await tg.send_media(
        "987654321",
        OutboundMedia("document", data=b"%PDF", mime="application/pdf", filename="Счёт.pdf"),
    )
    call = telegram_api.requests[-1]
    assert call.path.endswith("/sendDocument")
    assert call.form["chat_id"] == "987654321"
    assert call.form["document"]["data"] == b"%PDF"
    assert call.form["document"]["filename"] == "Счёт.pdf"


async def test_a_blocked_bot_is_a_permanent_failure(tg, telegram_api) -> None:
    telegram_api.fail_next(
        403,
        {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"},
    )
    with pytest.raises(ChannelSendFailed) as err:
        await tg.send_text("987654321", "hi")
    assert (err.value.code, err.value.retryable) == ("403", False)
    assert "blocked" in err.value.message


async def test_flood_control_is_retryable(tg, telegram_api) -> None:
    telegram_api.fail_next(
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 7",
            "parameters": {"retry_after": 7},
        },
    )
    with pytest.raises(ChannelSendFailed) as err:
        await tg.send_text("987654321", "hi")
    assert err.value.retryable and err.value.details["retry_after"] == 7


async def test_fetch_media_through_get_file(tg, telegram_api) -> None:
    telegram_api.add_file("doc1", "documents/file_7.pdf", b"%PDF-1.7 data")
    media = await tg.fetch_media("doc1")
    assert (media.data, media.mime, media.filename) == (
        b"%PDF-1.7 data",
        "application/pdf",
        "file_7.pdf",
    )
    assert [r.path for r in telegram_api.requests] == [
        "/bot123456:TEST/getFile",
        "/file/bot123456:TEST/documents/file_7.pdf",
    ]
    with pytest.raises(MediaRefused):
        await tg.fetch_media("doc1", max_bytes=5)
