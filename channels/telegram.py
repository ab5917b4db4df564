"""Telegram Bot API over plain aiohttp: webhook updates in, ``sendMessage``/``send<Media>`` out.

A library (aiogram, python-telegram-bot) would bring its own dispatcher, models and session
management for the dozen fields read here; the Bot API is small, stable JSON over HTTPS.

Ids. Telegram numbers messages per chat, so a message's provider id here is
``"<chat_id>:<message_id>"`` (unique in the bot); ``reply_to`` takes that form or a bare message
id. The sender identity is ``("telegram", "<user id>")``; in a private chat the chat id to answer
is the same number. The webhook must be registered with ``setWebhook(url, secret_token=...)``;
Telegram then sends the secret in ``X-Telegram-Bot-Api-Secret-Token``.
"""

from __future__ import annotations

import hmac
import json
import logging
import mimetypes
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp

from channels.base import (
    Attachment,
    ChannelKind,
    FetchedMedia,
    Identity,
    Inbound,
    InboundMessage,
    Location,
    MessageKind,
    OutboundMedia,
    SendResult,
    SharedContact,
    WebhookRequest,
    always_open,
    from_unix,
    read_capped,
    transport_errors,
)
from channels.config import TelegramConfig
from channels.errors import (
    ChannelConfigInvalid,
    ChannelSendFailed,
    MediaRefused,
    MediaUnavailable,
    PayloadInvalid,
    SignatureInvalid,
)
from crm_core.phones import try_normalize_phone

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
_MEDIA_FIELDS: tuple[tuple[str, MessageKind], ...] = (
    ("photo", "image"),
    ("document", "document"),
    ("voice", "audio"),
    ("audio", "audio"),
    ("video", "video"),
    ("video_note", "video"),
    ("animation", "video"),
    ("sticker", "sticker"),
)
_SEND_METHOD = {
    "image": ("sendPhoto", "photo"),
    "document": ("sendDocument", "document"),
    "audio": ("sendAudio", "audio"),
    "video": ("sendVideo", "video"),
    "sticker": ("sendSticker", "sticker"),
}


def verify_secret(header: str | None, secret: str) -> None:
    """The secret token Telegram repeats on every webhook call; constant-time compare."""
    if not header:
        raise SignatureInvalid(f"no {SECRET_HEADER} header")
    if not hmac.compare_digest(header.encode(), secret.encode()):
        raise SignatureInvalid(f"{SECRET_HEADER} does not match")


def start_payload(text: str | None) -> str | None:
    """The parameter of a ``/start`` deep link (``t.me/bot?start=PAYLOAD``), or None."""
    if not text:
        return None
    command, _, rest = text.strip().partition(" ")
    if command.split("@", 1)[0] != "/start":
        return None
    return rest.strip() or None


def _name(user: Mapping[str, Any]) -> str | None:
    parts = [user.get("first_name"), user.get("last_name")]
    name = " ".join(p for p in parts if p)
    return name or user.get("username")


def _attachment(field: str, data: Any, caption: str | None) -> Attachment | None:
    if field == "photo":
        if not isinstance(data, list) or not data:
            return None
        data = max(data, key=lambda p: (p.get("file_size") or 0, p.get("width") or 0))
    if not isinstance(data, Mapping) or not data.get("file_id"):
        return None
    mime = data.get("mime_type")
    if mime is None and field == "photo":
        mime = "image/jpeg"
    elif mime is None and field == "sticker":
        mime = "video/webm" if data.get("is_video") else "image/webp"
    return Attachment(
        ref=str(data["file_id"]),
        mime=mime,
        size=data.get("file_size"),
        filename=data.get("file_name"),
        caption=caption,
    )


def parse_update(channel: str, update: Mapping[str, Any]) -> list[Inbound]:
    """One Telegram ``Update`` as messages (pure). Updates that carry no client message
    (edits, chat member changes ...) are logged and yield nothing."""
    msg = update.get("message") or update.get("business_message")
    callback = update.get("callback_query")
    if callback:
        return _callback(channel, callback)
    if not isinstance(msg, Mapping):
        kinds = [k for k in update if k != "update_id"]
        log.info(
            "telegram channel=%s update_id=%s: update %s carries no new message, ignored",
            channel,
            update.get("update_id"),
            kinds,
        )
        return []
    user = msg.get("from") or {}
    chat = msg.get("chat") or {}
    if not user.get("id") or chat.get("id") is None or msg.get("message_id") is None:
        log.warning(
            "telegram channel=%s update_id=%s: message without sender or chat skipped: %s",
            channel,
            update.get("update_id"),
            json.dumps(msg, ensure_ascii=False)[:500],
        )
        return []
    chat_id = str(chat["id"])
    text: str | None = msg.get("text")
    caption = msg.get("caption")
    kind: MessageKind = "text" if text is not None else "unsupported"
    attachments: tuple[Attachment, ...] = ()
    location: Location | None = None
    contacts: tuple[SharedContact, ...] = ()
    sender_phone: str | None = None
    for field, media_kind in _MEDIA_FIELDS:
        if field in msg:
            att = _attachment(field, msg[field], caption)
            if att is not None:
                kind, text, attachments = media_kind, caption, (att,)
                if field == "sticker":
                    text = msg[field].get("emoji")
                break
    if "contact" in msg:
        card = msg["contact"]
        written = str(card.get("phone_number") or "")
        e164 = try_normalize_phone(written if written.startswith("+") else "+" + written)
        e164 = e164 or try_normalize_phone(written)
        contacts = (
            SharedContact(
                name=_name(card),
                phones=(e164 or written,) if written else (),
            ),
        )
        kind, text = "contacts", _name(card)
        if card.get("user_id") == user.get("id"):
            sender_phone = e164  # the client shared his own number
    if "location" in msg or "venue" in msg:
        venue = msg.get("venue") or {}
        loc = venue.get("location") or msg.get("location") or {}
        if "latitude" in loc and "longitude" in loc:
            kind = "location"
            location = Location(
                latitude=float(loc["latitude"]),
                longitude=float(loc["longitude"]),
                name=venue.get("title"),
                address=venue.get("address"),
            )
            text = " ".join(p for p in (venue.get("title"), venue.get("address")) if p) or None
    if kind == "unsupported":
        others = sorted(
            k for k in msg if k not in ("message_id", "from", "chat", "date", "entities")
        )
        text = f"message with {', '.join(others) or 'no content'}"
        log.info(
            "telegram channel=%s message=%s:%s: unsupported message (%s) kept",
            channel,
            chat_id,
            msg["message_id"],
            text,
        )
    reply = msg.get("reply_to_message") or {}
    return [
        InboundMessage(
            channel=channel,
            provider_message_id=f"{chat_id}:{msg['message_id']}",
            sender=Identity("telegram", str(user["id"])),
            sender_name=_name(user),
            sent_at=from_unix(msg.get("date") or 0),
            kind=kind,
            text=text,
            attachments=attachments,
            reply_to=f"{chat_id}:{reply['message_id']}" if reply.get("message_id") else None,
            start_payload=start_payload(msg.get("text")),
            location=location,
            contacts=contacts,
            sender_phone=sender_phone,
            recipient=chat_id,
            raw=msg,
        )
    ]


def _callback(channel: str, callback: Mapping[str, Any]) -> list[Inbound]:
    user = callback.get("from") or {}
    message = callback.get("message") or {}
    chat_id = str((message.get("chat") or {}).get("id") or user.get("id"))
    if not user.get("id") or not callback.get("id"):
        log.warning("telegram channel=%s: callback query without sender skipped", channel)
        return []
    return [
        InboundMessage(
            channel=channel,
            provider_message_id=f"callback:{callback['id']}",
            sender=Identity("telegram", str(user["id"])),
            sender_name=_name(user),
            sent_at=from_unix(message.get("date") or 0),
            kind="interactive",
            text=callback.get("data"),
            payload=callback.get("data"),
            reply_to=f"{chat_id}:{message['message_id']}" if message.get("message_id") else None,
            recipient=chat_id,
            raw=callback,
        )
    ]


def _reply_parameters(reply_to: str | None) -> dict[str, Any] | None:
    if not reply_to:
        return None
    message_id = reply_to.rsplit(":", 1)[-1]
    if not message_id.lstrip("-").isdigit():
        return None
    return {"message_id": int(message_id), "allow_sending_without_reply": True}


class TelegramAdapter:
    """One bot (``TelegramConfig``)."""

    kind: ClassVar[ChannelKind] = "telegram"

    def __init__(
        self, config: TelegramConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.code = config.code
        self._session = session
        self._own_session = session is None
        base = config.api_url.rstrip("/")
        token = config.bot_token.get_secret_value()
        self._api = f"{base}/bot{token}/"
        self._files = f"{base}/file/bot{token}/"

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any]) -> TelegramConfig:
        from channels.config import parse_channel_config

        cfg = parse_channel_config({**raw, "kind": raw.get("kind", "telegram")})
        if not isinstance(cfg, TelegramConfig):
            raise ChannelConfigInvalid("not a telegram channel", problems={"kind": "telegram"})
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

    # -- inbound

    def parse_webhook(self, request: WebhookRequest) -> list[Inbound]:
        verify_secret(request.header(SECRET_HEADER), self.config.webhook_secret.get_secret_value())
        try:
            update = json.loads(request.body)
        except ValueError as exc:
            raise PayloadInvalid(f"Telegram update is not JSON: {exc}") from None
        if not isinstance(update, dict) or "update_id" not in update:
            raise PayloadInvalid("Telegram webhook body is not an Update (no update_id)")
        return parse_update(self.code, update)

    # -- outbound

    async def _call(self, method: str, *, json_body: Any = None, form: Any = None) -> Any:
        with transport_errors("Telegram Bot API"):
            async with self._http().post(self._api + method, json=json_body, data=form) as resp:
                try:
                    answer = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = None
                status = resp.status
        if not isinstance(answer, dict):
            raise ChannelSendFailed(
                str(status), f"Telegram {method}: HTTP {status}, no JSON", retryable=status >= 500
            )
        if not answer.get("ok"):
            code = int(answer.get("error_code") or status)
            retry_after = (answer.get("parameters") or {}).get("retry_after")
            log.warning(
                "telegram channel=%s %s refused: %s %s",
                self.code,
                method,
                code,
                answer.get("description"),
            )
            raise ChannelSendFailed(
                str(code),
                str(answer.get("description") or f"Telegram {method} failed"),
                retryable=code == 429 or code >= 500,
                details={"retry_after": retry_after} if retry_after else None,
            )
        return answer.get("result")

    @staticmethod
    def _sent(result: Any) -> SendResult:
        chat_id = (result.get("chat") or {}).get("id")
        return SendResult(provider_message_id=f"{chat_id}:{result['message_id']}", raw=result)

    async def send_text(self, to: str, text: str, *, reply_to: str | None = None) -> SendResult:
        body: dict[str, Any] = {"chat_id": to, "text": text}
        if params := _reply_parameters(reply_to):
            body["reply_parameters"] = params
        return self._sent(await self._call("sendMessage", json_body=body))

    async def send_media(
        self,
        to: str,
        media: OutboundMedia,
        *,
        caption: str | None = None,
        reply_to: str | None = None,
    ) -> SendResult:
        method, field = _SEND_METHOD[media.kind]
        extra: dict[str, Any] = {}
        if caption and media.kind != "sticker":
            extra["caption"] = caption
        if params := _reply_parameters(reply_to):
            extra["reply_parameters"] = params
        if media.link is not None:
            result = await self._call(method, json_body={"chat_id": to, field: media.link, **extra})
        else:
            # quote_fields=False: the file name goes as UTF-8, not percent-encoded
            form = aiohttp.FormData(quote_fields=False)
            form.add_field("chat_id", to)
            for key, value in extra.items():
                form.add_field(key, json.dumps(value) if isinstance(value, dict) else value)
            form.add_field(
                field,
                media.data or b"",
                filename=media.filename or f"{media.kind}.bin",
                content_type=media.mime or "application/octet-stream",
            )
            result = await self._call(method, form=form)
        return self._sent(result)

    async def fetch_media(self, ref: str, *, max_bytes: int | None = None) -> FetchedMedia:
        """``getFile`` for the path and size, then the file itself, capped."""
        cap = max_bytes or self.config.media_max_bytes
        try:
            info = await self._call("getFile", json_body={"file_id": ref})
        except ChannelSendFailed as exc:
            raise MediaUnavailable(
                f"telegram file {ref}: {exc.message}", details={"ref": ref}
            ) from None
        if info.get("file_size") and int(info["file_size"]) > cap:
            raise MediaRefused(
                f"telegram file {ref} is {info['file_size']} bytes, over the cap of {cap}",
                details={"ref": ref, "size": info["file_size"], "max_bytes": cap},
            )
        path = info.get("file_path")
        if not path:
            raise MediaUnavailable(f"telegram file {ref}: no file_path (too big for the Bot API?)")
        try:
            async with self._http().get(self._files + path) as resp:
                if resp.status >= 400:
                    raise MediaUnavailable(
                        f"telegram file {ref}: download answered {resp.status}",
                        details={"ref": ref, "status": resp.status},
                    )
                data = await read_capped(
                    resp.content.iter_chunked(65536), cap, what=f"telegram file {ref}"
                )
        except (aiohttp.ClientError, OSError) as exc:
            raise MediaUnavailable(f"telegram file {ref}: {type(exc).__name__}: {exc}") from exc
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FetchedMedia(data=data, mime=mime, filename=path.rsplit("/", 1)[-1])
