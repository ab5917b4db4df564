"""SMS through the SMSC.ru API: cost, delivery reports, incoming SMS, segment counting."""

from __future__ import annotations

import datetime as dt
import urllib.parse
from decimal import Decimal

import pytest

from channels.base import Identity, InboundMessage, StatusUpdate, WebhookRequest
from channels.errors import ChannelSendFailed, PayloadInvalid, SignatureInvalid
from channels.sms import SmscAdapter, sms_segments
from tests.fakes.sms_gateway import FakeSmsGateway


def config(api_url: str = "http://127.0.0.1:9", **over):
    return SmscAdapter.validate_config(
        {
            "code": "sms",
            "kind": "sms",
            "login": "cc",
            "password": "gw-secret",
            "sender": "SHOP",
            "api_url": api_url,
            "callback_secret": "cb-secret",
            **over,
        }
    )


@pytest.fixture
async def sms(sms_gateway: FakeSmsGateway):
    adapter = SmscAdapter(config(sms_gateway.url))
    yield adapter
    await adapter.close()


# --------------------------------------------------------------------------- segments


@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [
        ("", "gsm7", 1),
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("я" * 70, "ucs2", 1),
        ("я" * 71, "ucs2", 2),
        ("я" * 134, "ucs2", 2),
        ("я" * 135, "ucs2", 3),
        ("a" * 69 + "я", "ucs2", 1),  # one Cyrillic letter switches the whole text to UCS-2
        ("a" * 70 + "я", "ucs2", 2),
        ("{" * 80, "gsm7", 1),  # extension characters take two septets
        ("{" * 81, "gsm7", 2),
        ("€" * 80, "gsm7", 1),
    ],
)
def test_segment_boundaries(text: str, encoding: str, parts: int) -> None:
    seg = sms_segments(text)
    assert (seg.encoding, seg.parts) == (encoding, parts)


def test_segment_capacity_and_room_left() -> None:
    assert sms_segments("Привет").per_part == 70
    assert sms_segments("Привет").remaining == 64
    long = sms_segments("Ж" * 100)
    assert (long.per_part, long.units, long.remaining) == (67, 100, 34)


def test_an_emoji_takes_two_ucs2_units_and_is_never_split() -> None:
    assert sms_segments("😀" * 35).parts == 1
    assert sms_segments("😀" * 36).parts == 2
    # 66 units + one emoji (2 units) does not fit a 67-unit part: a third part is not needed
    seg = sms_segments("я" * 66 + "😀" + "я" * 66)
    assert (seg.units, seg.parts) == (134, 3)


# --------------------------------------------------------------------------- sending


async def test_send_returns_the_id_and_the_cost(sms: SmscAdapter, sms_gateway) -> None:
    text = "Ваш заказ № 1042 готов к выдаче. Ждём вас с 9 до 21 ч. в пункте на ул. Тверской, 1."
    result = await sms.send_text("8 (916) 123-45-67", text)
    assert result.provider_message_id == "5000"
    assert result.parts == 2
    assert result.cost == Decimal("7.00") and result.currency == "RUB"
    (call,) = sms_gateway.requests
    assert call.path == "/sys/send.php"
    assert call.form == {
        "login": "cc",
        "psw": "gw-secret",
        "phones": "+79161234567",
        "mes": text,
        "fmt": "3",
        "cost": "3",
        "charset": "utf-8",
        "sender": "SHOP",
    }


async def test_a_gateway_refusal_is_permanent_or_retryable_by_code(sms, sms_gateway) -> None:
    sms_gateway.fail_next(200, {"error": "invalid number", "error_code": 7})
    with pytest.raises(ChannelSendFailed) as err:
        await sms.send_text("+79161234567", "x")
    assert (err.value.code, err.value.retryable) == ("7", False)
    sms_gateway.fail_next(200, {"error": "duplicate request, wait a minute", "error_code": 9})
    with pytest.raises(ChannelSendFailed) as err:
        await sms.send_text("+79161234567", "x")
    assert (err.value.code, err.value.retryable) == ("9", True)


async def test_not_a_phone_is_refused_before_the_gateway(sms, sms_gateway) -> None:
    with pytest.raises(ChannelSendFailed):
        await sms.send_text("ivan@example.ru", "x")
    assert sms_gateway.requests == []


async def test_wrong_credentials(sms_gateway) -> None:
    adapter = SmscAdapter(config(sms_gateway.url, password="wrong"))
    try:
        with pytest.raises(ChannelSendFailed) as err:
            await adapter.send_text("+79161234567", "x")
    finally:
        await adapter.close()
    assert err.value.code == "2" and not err.value.retryable


# --------------------------------------------------------------------------- callbacks


def callback(fields: dict[str, str], secret: str | None = "cb-secret") -> WebhookRequest:
    query = {"secret": secret} if secret is not None else {}
    body = urllib.parse.urlencode(fields).encode()
    return WebhookRequest(
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        body,
        query,
        received_at=dt.datetime(2025, 6, 9, 12, 0, tzinfo=dt.UTC),
    )


def test_callbacks_need_the_secret(sms: SmscAdapter) -> None:
    fields = {"id": "5000", "phone": "79161234567", "status": "1", "ts": "1749416400"}
    with pytest.raises(SignatureInvalid):
        sms.parse_webhook(callback(fields, secret=None))
    with pytest.raises(SignatureInvalid):
        sms.parse_webhook(callback(fields, secret="guess"))


def test_delivery_report(sms: SmscAdapter) -> None:
    fields = {
        "id": "5000",
        "phone": "79161234567",
        "status": "1",
        "ts": "1749416400",
        "err": "0",
        "cnt": "2",
    }
    (item,) = sms.parse_webhook(callback(fields))
    assert isinstance(item, StatusUpdate)
    assert (item.provider_message_id, item.status, item.recipient) == (
        "5000",
        "delivered",
        "+79161234567",
    )
    assert item.at == dt.datetime.fromtimestamp(1749416400, dt.UTC)
    assert item.error_code is None


def test_failed_delivery_report(sms: SmscAdapter) -> None:
    fields = {
        "id": "5001",
        "phone": "79161234567",
        "status": "20",
        "err": "1",
        "time": "09.06.2025 15:00:00",
    }
    (item,) = sms.parse_webhook(callback(fields))
    assert isinstance(item, StatusUpdate)
    assert item.status == "failed"
    assert item.error_code == "1" and item.error_title == "Невозможно доставить"
    assert item.at == dt.datetime(2025, 6, 9, 12, 0, tzinfo=dt.UTC)


def test_interim_status_is_not_an_update(sms: SmscAdapter) -> None:
    assert sms.parse_webhook(callback({"id": "5000", "phone": "79161234567", "status": "-1"})) == []


def test_incoming_sms(sms: SmscAdapter) -> None:
    fields = {
        "sms_id": "77001",
        "phone": "79161234567",
        "mes": "Перезвоните, пожалуйста",
        "to": "79001112233",
        "sent": "1749416300",
    }
    (msg,) = sms.parse_webhook(callback(fields))
    assert isinstance(msg, InboundMessage)
    assert msg.sender == Identity("phone", "+79161234567")
    assert msg.sender_phone == "+79161234567"
    assert (msg.kind, msg.text, msg.provider_message_id) == (
        "text",
        "Перезвоните, пожалуйста",
        "77001",
    )
    assert msg.recipient == "+79001112233"


def test_a_callback_of_no_known_shape_is_a_payload_error(sms: SmscAdapter) -> None:
    with pytest.raises(PayloadInvalid):
        sms.parse_webhook(callback({"foo": "bar"}))
