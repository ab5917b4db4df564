"""SMS through the SMSC.ru HTTP API, and SMS segment counting.

Sending: ``POST {api_url}/sys/send.php`` with ``fmt=3`` (JSON answer) and ``cost=3``, so the
gateway answers the message id, the number of parts and the COST it charged
(``{"id": 1234, "cnt": 2, "cost": "7.00", "balance": "493.00"}``) or
``{"error": "...", "error_code": N}``.

Callbacks (the "handler URL" set in the SMSC account, pointed at
``/webhooks/sms/{code}?secret=<callback_secret>``): a form (POST, or the query string) with
``id``, ``phone``, ``status`` (numeric), ``ts``/``time``, ``err``, ``cost`` for delivery reports,
and ``phone``, ``mes``, ``to``, ``sms_id``, ``sent`` for an incoming SMS on a rented number. The
``secret`` query parameter is ours, not SMSC's: the handler URL is configured once and Telegram-
style shared-secret checking then needs nothing from the gateway.

:func:`sms_segments` counts the parts a text costs: GSM-7 (160 septets, 153 per part of a long
message; ``^{}[]~|\\€`` and form feed take two) or, as soon as one character is outside GSM-7
(Cyrillic), UCS-2 (70 UTF-16 units, 67 per part; an emoji takes two).
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Literal

import aiohttp

from channels.base import (
    UTC,
    ChannelKind,
    DeliveryStatus,
    Identity,
    Inbound,
    InboundMessage,
    SendResult,
    StatusUpdate,
    WebhookRequest,
    always_open,
    from_unix,
    transport_errors,
)
from channels.config import SmsConfig
from channels.errors import (
    ChannelConfigInvalid,
    ChannelSendFailed,
    PayloadInvalid,
    SignatureInvalid,
)
from crm_core.phones import try_normalize_phone

log = logging.getLogger(__name__)

SECRET_PARAM = "secret"

# --------------------------------------------------------------------------- segments

# GSM 03.38 basic character set, and the extension table reached through ESC (two septets each).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """``units`` are septets (GSM-7) or UTF-16 code units (UCS-2); ``per_part`` the capacity of
    each part at this length, ``remaining`` what still fits in the last part."""

    encoding: Literal["gsm7", "ucs2"]
    units: int
    parts: int
    per_part: int
    remaining: int


def _split_count(weights: list[int], single: int, per_part: int) -> tuple[int, int]:
    """Parts needed without splitting an escape pair or a surrogate pair, and the room left."""
    total = sum(weights)
    if total <= single:
        return 1, single - total
    parts, used = 1, 0
    for weight in weights:
        if used + weight > per_part:
            parts, used = parts + 1, 0
        used += weight
    return parts, per_part - used


def sms_segments(text: str) -> SmsSegments:
    """How many SMS parts ``text`` takes, and in which encoding (pure)."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in text):
        weights = [2 if ch in _GSM_EXTENDED else 1 for ch in text]
        parts, remaining = _split_count(weights, GSM7_SINGLE, GSM7_PART)
        return SmsSegments(
            "gsm7", sum(weights), parts, GSM7_SINGLE if parts == 1 else GSM7_PART, remaining
        )
    weights = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    parts, remaining = _split_count(weights, UCS2_SINGLE, UCS2_PART)
    return SmsSegments(
        "ucs2", sum(weights), parts, UCS2_SINGLE if parts == 1 else UCS2_PART, remaining
    )


def sms_parts(text: str) -> int:
    return sms_segments(text).parts if text else 0


# --------------------------------------------------------------------------- callbacks

# SMSC status codes: 0 handed to the operator, 1 delivered, 2 read, 4 link followed;
# 3 expired, 20 undeliverable, 22 wrong number, 23 prohibited, 24 no funds, 25 unavailable.
_STATUS: dict[str, DeliveryStatus] = {
    "0": "sent",
    "1": "delivered",
    "2": "read",
    "4": "read",
    "3": "failed",
    "20": "failed",
    "22": "failed",
    "23": "failed",
    "24": "failed",
    "25": "failed",
}
_STATUS_TITLE = {
    "3": "Истёк срок жизни сообщения",
    "20": "Невозможно доставить",
    "22": "Неверный номер",
    "23": "Запрещено",
    "24": "Недостаточно средств",
    "25": "Недоступный номер",
}
# Send errors worth retrying: 4 (IP temporarily blocked), 9 (too many identical requests).
_RETRYABLE_SEND_ERRORS = frozenset({4, 9})


def _decimal(value: Any) -> Decimal | None:
    if value in (None, ""):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _when(form: Mapping[str, str], *keys: str, fallback: dt.datetime | None) -> dt.datetime:
    for key in keys:
        value = (form.get(key) or "").strip()
        if value.isdigit():
            return from_unix(value)
        if value:
            for fmt in ("%d.%m.%Y %H:%M:%S", "%d.%m.%y %H:%M:%S"):
                try:
                    # SMSC writes local Moscow time in its text dates
                    moscow = dt.timezone(dt.timedelta(hours=3))
                    return dt.datetime.strptime(value, fmt).replace(tzinfo=moscow).astimezone(UTC)
                except ValueError:
                    continue
    return fallback or dt.datetime.now(UTC)


def parse_callback(
    channel: str, form: Mapping[str, str], *, received_at: dt.datetime | None = None
) -> list[Inbound]:
    """A gateway callback as a delivery report or an incoming SMS (pure)."""
    if "mes" in form:
        sender = try_normalize_phone(form.get("phone"))
        if sender is None:
            log.warning(
                "sms channel=%s: incoming SMS from %r (not a phone) skipped",
                channel,
                form.get("phone"),
            )
            return []
        provider_id = form.get("sms_id") or form.get("id")
        if not provider_id:
            raise PayloadInvalid("incoming SMS without sms_id", details={"channel": channel})
        return [
            InboundMessage(
                channel=channel,
                provider_message_id=str(provider_id),
                sender=Identity("phone", sender),
                sender_name=None,
                sent_at=_when(form, "sent", "ts", "time", fallback=received_at),
                kind="text",
                text=form.get("mes", ""),
                sender_phone=sender,
                recipient=try_normalize_phone(form.get("to")) or form.get("to"),
                raw=dict(form),
            )
        ]
    if "status" in form and form.get("id"):
        code = str(form["status"]).strip()
        status = _STATUS.get(code)
        if status is None:
            log.info(
                "sms channel=%s message_id=%s: interim status %s ignored",
                channel,
                form.get("id"),
                code,
            )
            return []
        err = (form.get("err") or "").strip()
        failed = status == "failed"
        return [
            StatusUpdate(
                channel=channel,
                provider_message_id=str(form["id"]),
                status=status,
                at=_when(form, "ts", "time", fallback=received_at),
                recipient=try_normalize_phone(form.get("phone")) or form.get("phone"),
                error_code=(err or code) if failed else None,
                error_title=_STATUS_TITLE.get(code) if failed else None,
                cost=_decimal(form.get("cost")),
                currency="RUB" if form.get("cost") else None,
                raw=dict(form),
            )
        ]
    raise PayloadInvalid(
        "SMS callback is neither a delivery report nor an incoming SMS",
        details={"channel": channel, "keys": sorted(form)},
    )


# --------------------------------------------------------------------------- adapter


class SmscAdapter:
    """An SMSC.ru account (``SmsConfig`` with ``provider: smsc``)."""

    kind: ClassVar[ChannelKind] = "sms"

    def __init__(self, config: SmsConfig, *, session: aiohttp.ClientSession | None = None) -> None:
        self.config = config
        self.code = config.code
        self._session = session
        self._own_session = session is None

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any]) -> SmsConfig:
        from channels.config import parse_channel_config

        cfg = parse_channel_config({**raw, "kind": raw.get("kind", "sms")})
        if not isinstance(cfg, SmsConfig):
            raise ChannelConfigInvalid("not an sms channel", problems={"kind": "sms"})
        return cfg

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s)
            )
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()

    messaging_window_open = staticmethod(always_open)

    def parse_webhook(self, request: WebhookRequest) -> list[Inbound]:
        if self.config.callback_secret is not None:
            given = request.query.get(SECRET_PARAM) or ""
            expected = self.config.callback_secret.get_secret_value()
            if not given:
                raise SignatureInvalid(f"no '{SECRET_PARAM}' query parameter")
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise SignatureInvalid(f"'{SECRET_PARAM}' query parameter does not match")
        form: dict[str, str] = {k: v for k, v in request.query.items() if k != SECRET_PARAM}
        if request.body:
            try:
                text = request.body.decode("utf-8")
            except UnicodeDecodeError:
                text = request.body.decode("cp1251")  # SMSC's charset=windows-1251 accounts
            form.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        return parse_callback(self.code, form, received_at=request.received_at)

    async def send_text(self, to: str, text: str, *, reply_to: str | None = None) -> SendResult:
        """Send one SMS (``reply_to`` has no meaning for SMS and is ignored)."""
        phone = try_normalize_phone(to)
        if phone is None:
            raise ChannelSendFailed("invalid", f"not a phone number: {to!r}", retryable=False)
        form = {
            "login": self.config.login,
            "psw": self.config.password.get_secret_value(),
            "phones": phone,
            "mes": text,
            "fmt": "3",
            "cost": "3",
            "charset": "utf-8",
        }
        if self.config.sender:
            form["sender"] = self.config.sender
        url = self.config.api_url.rstrip("/") + "/sys/send.php"
        with transport_errors("SMSC"):
            async with self._http().post(url, data=form) as resp:
                status = resp.status
                try:
                    answer = await resp.json(content_type=None)
                except ValueError:
                    answer = None
        if not isinstance(answer, dict):
            raise ChannelSendFailed(
                str(status), f"SMSC answered HTTP {status} without JSON", retryable=status >= 500
            )
        if "error" in answer or "error_code" in answer:
            code = int(answer.get("error_code") or 0)
            log.warning(
                "sms channel=%s send to %s refused: %s %s",
                self.code,
                phone,
                code,
                answer.get("error"),
            )
            raise ChannelSendFailed(
                str(code),
                str(answer.get("error") or "SMSC refused the message"),
                retryable=code in _RETRYABLE_SEND_ERRORS,
            )
        if answer.get("id") is None:
            raise ChannelSendFailed("invalid", f"SMSC answer without id: {answer}", retryable=False)
        parts = answer.get("cnt")
        return SendResult(
            provider_message_id=str(answer["id"]),
            cost=_decimal(answer.get("cost")),
            currency="RUB" if answer.get("cost") is not None else None,
            parts=int(parts) if parts is not None else sms_parts(text),
            raw=answer,
        )
