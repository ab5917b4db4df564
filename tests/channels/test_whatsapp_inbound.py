"""WhatsApp webhooks: the handshake, signatures, every message kind, statuses, nothing dropped."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from channels.base import Identity, InboundMessage, StatusUpdate, WebhookRequest
from channels.errors import PayloadInvalid, SignatureInvalid
from channels.whatsapp import WhatsAppAdapter, sign
from tests.channels.conftest import APP_SECRET, wa_config, wa_fixture


@pytest.fixture
async def adapter():
    wa = WhatsAppAdapter(WhatsAppAdapter.validate_config(wa_config()))
    yield wa
    await wa.close()


def signed(body: bytes, secret: str = APP_SECRET) -> WebhookRequest:
    return WebhookRequest("POST", {"x-hub-signature-256": sign(body, secret)}, body)


def one(adapter: WhatsAppAdapter, name: str) -> InboundMessage:
    items = adapter.parse_webhook(signed(wa_fixture(name)))
    assert len(items) == 1, items
    assert isinstance(items[0], InboundMessage)
    return items[0]


# --------------------------------------------------------------------------- handshake


def test_verification_handshake_answers_the_challenge(adapter: WhatsAppAdapter) -> None:
    query = {
        "hub.mode": "subscribe",
        "hub.verify_token": "verify-me",
        "hub.challenge": "1158201444",
    }
    assert adapter.verify_subscription(query) == "1158201444"


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        (
            {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
            "verify_token",
        ),
        (
            {"hub.mode": "unsubscribe", "hub.verify_token": "verify-me", "hub.challenge": "1"},
            "mode",
        ),
        ({"hub.mode": "subscribe", "hub.challenge": "1"}, "verify_token"),
    ],
)
def test_verification_handshake_refuses(adapter: WhatsAppAdapter, query, reason) -> None:
    with pytest.raises(SignatureInvalid) as err:
        adapter.verify_subscription(query)
    assert reason in err.value.reason


# --------------------------------------------------------------------------- signatures


def test_a_signed_delivery_is_accepted(adapter: WhatsAppAdapter) -> None:
    body = wa_fixture("text")
    assert adapter.parse_webhook(signed(body))


def test_an_unsigned_delivery_is_refused_with_a_reason(adapter: WhatsAppAdapter) -> None:
    with pytest.raises(SignatureInvalid) as err:
        adapter.parse_webhook(WebhookRequest("POST", {}, wa_fixture("text")))
    assert "no X-Hub-Signature-256" in err.value.reason


def test_a_delivery_signed_with_another_secret_is_refused(adapter: WhatsAppAdapter) -> None:
    with pytest.raises(SignatureInvalid) as err:
        adapter.parse_webhook(signed(wa_fixture("text"), secret="not-the-app-secret"))
    assert "does not match" in err.value.reason


def test_a_body_changed_after_signing_is_refused(adapter: WhatsAppAdapter) -> None:
    body = wa_fixture("text")
    request = signed(body)
    forged = WebhookRequest(
        "POST", request.headers, body.replace("доставка".encode(), b"xxxxxxxxxxxxxxxx")
    )
    with pytest.raises(SignatureInvalid):
        adapter.parse_webhook(forged)


def test_a_malformed_signature_header_is_refused(adapter: WhatsAppAdapter) -> None:
    body = wa_fixture("text")
    bare_hex = sign(body, APP_SECRET).removeprefix("sha256=")
    with pytest.raises(SignatureInvalid) as err:
        adapter.parse_webhook(WebhookRequest("POST", {"X-Hub-Signature-256": bare_hex}, body))
    assert "sha256=" in err.value.reason


def test_a_signed_body_that_is_not_json_is_a_payload_error(adapter: WhatsAppAdapter) -> None:
    with pytest.raises(PayloadInvalid):
        adapter.parse_webhook(signed(b"not json"))


# --------------------------------------------------------------------------- message kinds


def test_text(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "text")
    assert msg.kind == "text"
    assert msg.text == "Здравствуйте! Сколько стоит доставка?"
    assert msg.sender == Identity("wa_id", "79161234567")
    assert msg.sender_phone == "+79161234567"
    assert msg.sender_name == "Иван Петров"
    assert msg.sent_at == dt.datetime(2025, 6, 8, 20, 59, 43, tzinfo=dt.UTC)
    assert msg.channel == "wa-main"
    assert msg.recipient == "106540352242922"
    assert msg.provider_message_id.startswith("wamid.")
    assert msg.raw["text"]["body"] == msg.text


@pytest.mark.parametrize(
    ("name", "kind", "mime", "filename", "caption"),
    [
        ("image", "image", "image/jpeg", None, "Вот фото товара"),
        ("document", "document", "application/pdf", "Реквизиты ООО Ромашка.pdf", "Реквизиты"),
        ("audio", "audio", "audio/ogg; codecs=opus", None, None),
        ("video", "video", "video/mp4", None, "Как это выглядит"),
        ("sticker", "sticker", "image/webp", None, None),
    ],
)
def test_media_kinds(adapter: WhatsAppAdapter, name, kind, mime, filename, caption) -> None:
    msg = one(adapter, name)
    assert msg.kind == kind
    assert msg.text == caption
    (att,) = msg.attachments
    assert att.ref.startswith("10033834213872")
    assert att.mime == mime
    assert att.filename == filename
    assert att.sha256


def test_location(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "location")
    assert msg.kind == "location"
    assert msg.location is not None
    assert (msg.location.latitude, msg.location.longitude) == (55.757, 37.6136)
    assert msg.location.address == "ул. Тверская, 1, Москва"


def test_contacts_phones_in_e164(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "contacts")
    assert msg.kind == "contacts"
    (card,) = msg.contacts
    assert card.name == "Анна Смирнова"
    assert card.phones == ("+79265551234", "+74957654321")
    assert card.emails == ("anna@example.ru",)
    assert card.organization == "ООО Ромашка"
    assert card.wa_ids == ("79265551234",)


def test_interactive_button_reply(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "interactive_button_reply")
    assert (msg.kind, msg.text, msg.payload) == ("interactive", "Да, перезвоните", "callback-yes")
    assert msg.reply_to == "wamid.OUTBOUND1"


def test_interactive_list_reply(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "interactive_list_reply")
    assert (msg.kind, msg.text, msg.payload) == (
        "interactive",
        "Доставка по Москве",
        "delivery-msk",
    )


def test_template_quick_reply_button(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "button")
    assert (msg.kind, msg.text, msg.payload) == ("interactive", "Отписаться", "STOP_PROMO")
    assert msg.reply_to == "wamid.TEMPLATE1"


def test_reaction(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "reaction")
    assert (msg.kind, msg.text, msg.reply_to) == ("reaction", "👍", "wamid.OUTBOUND3")


def test_unsupported_is_kept_with_the_reason(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "unsupported")
    assert msg.kind == "unsupported"
    assert "131051" in (msg.text or "")
    assert "not supported" in (msg.text or "")


def test_a_type_newer_than_the_parser_is_kept_as_unsupported(
    adapter: WhatsAppAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="channels.whatsapp")
    msg = one(adapter, "unknown_type")
    assert msg.kind == "unsupported"
    assert "order" in (msg.text or "")
    assert msg.raw["order"]["product_items"][0]["product_retailer_id"] == "sku-1"
    assert any("unsupported message" in r.getMessage() for r in caplog.records)


def test_click_to_whatsapp_referral(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "referral")
    assert msg.referral is not None
    assert msg.referral.source_id == "120211398765430123"
    assert msg.referral.source_type == "ad"
    assert msg.referral.headline == "Скидка 20% на опт"
    assert msg.referral.source_url == "https://fb.me/3cr4Wqqkv"
    assert msg.referral.ctwa_clid is not None and msg.referral.ctwa_clid.startswith("ARAkLkA8")


# --------------------------------------------------------------------------- user_id


def test_a_payload_without_user_id_is_read_and_logged_not_dropped(
    adapter: WhatsAppAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    body = wa_fixture("text")
    assert "user_id" not in json.loads(body)["entry"][0]["changes"][0]["value"]["contacts"][0]
    caplog.set_level(logging.INFO, logger="channels.whatsapp")
    (msg,) = adapter.parse_webhook(signed(body))
    assert isinstance(msg, InboundMessage)
    assert msg.text == "Здравствуйте! Сколько стоит доставка?"
    lines = [r.getMessage() for r in caplog.records]
    assert any("without user_id" in line and msg.provider_message_id in line for line in lines)


def test_pywa_itself_drops_that_payload(adapter: WhatsAppAdapter) -> None:
    """Why we parse ourselves: pywa's own dispatch answers 200 and calls no handler."""
    from flask import Flask
    from pywa.client import WhatsApp
    from pywa.handlers import MessageHandler

    wa = WhatsApp(
        phone_id="106540352242922",
        token="t",
        server=Flask("t"),
        verify_token="v",
        validate_updates=False,
    )
    seen: list[object] = []
    wa.add_handlers(MessageHandler(lambda _client, message: seen.append(message)))
    logging.getLogger("pywa").disabled = True
    try:
        assert wa.webhook_update_handler(wa_fixture("text")) == ("ok", 200)
    finally:
        logging.getLogger("pywa").disabled = False
    assert seen == []
    assert adapter.parse_webhook(signed(wa_fixture("text")))  # ours keeps it


def test_user_id_becomes_an_alias(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "with_user_id")
    assert msg.sender == Identity("wa_id", "79161234567")
    assert Identity("bsuid", "RU.13491208655302741918") in msg.identities
    assert Identity("phone", "+79161234567") in msg.identities


def test_a_sender_with_only_a_bsuid(adapter: WhatsAppAdapter) -> None:
    msg = one(adapter, "bsuid_only")
    assert msg.sender == Identity("bsuid", "RU.13491208655302741918")
    assert msg.sender_phone is None
    assert msg.sender_name == "Скрытый"


# --------------------------------------------------------------------------- statuses


@pytest.mark.parametrize("status", ["sent", "delivered", "read"])
def test_statuses(adapter: WhatsAppAdapter, status: str) -> None:
    (item,) = adapter.parse_webhook(signed(wa_fixture(f"status_{status}")))
    assert isinstance(item, StatusUpdate)
    assert (item.provider_message_id, item.status) == ("wamid.OUTBOUND1", status)
    assert item.recipient == "79161234567"
    assert item.error_code is None


def test_failed_status_carries_the_error(adapter: WhatsAppAdapter) -> None:
    (item,) = adapter.parse_webhook(signed(wa_fixture("status_failed")))
    assert isinstance(item, StatusUpdate)
    assert item.status == "failed"
    assert item.error_code == "131047"
    assert item.error_title == "Re-engagement message"
    assert "24 hours" in (item.error_detail or "")
    assert item.at == dt.datetime.fromtimestamp(1749416500, dt.UTC)


def test_sent_status_keeps_the_pricing_category(adapter: WhatsAppAdapter) -> None:
    (item,) = adapter.parse_webhook(signed(wa_fixture("status_sent")))
    assert isinstance(item, StatusUpdate)
    assert item.pricing_category == "service"


def test_a_batched_delivery_yields_everything_in_order(adapter: WhatsAppAdapter) -> None:
    items = adapter.parse_webhook(signed(wa_fixture("batch")))
    assert [type(i).__name__ for i in items] == ["InboundMessage", "InboundMessage", "StatusUpdate"]
    assert [getattr(i, "kind", None) for i in items[:2]] == ["text", "reaction"]


def test_an_unknown_status_is_logged_not_invented(
    adapter: WhatsAppAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    payload = json.loads(wa_fixture("status_read"))
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["status"] = "deleted"
    body = json.dumps(payload).encode()
    caplog.set_level(logging.INFO, logger="channels.whatsapp")
    assert adapter.parse_webhook(signed(body)) == []
    assert any("'deleted' not understood" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- window


def test_the_24_hour_customer_service_window(adapter: WhatsAppAdapter) -> None:
    now = dt.datetime(2025, 6, 9, 12, 0, tzinfo=dt.UTC)
    hour = dt.timedelta(hours=1)
    assert adapter.messaging_window_open(now - 23 * hour, now)
    assert adapter.messaging_window_open(now - 24 * hour + dt.timedelta(seconds=1), now)
    assert not adapter.messaging_window_open(now - 24 * hour, now)
    assert not adapter.messaging_window_open(now - 30 * hour, now)
    assert not adapter.messaging_window_open(None, now)
