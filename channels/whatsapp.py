"""WhatsApp Business Cloud API: webhooks in, messages out through pywa's async client.

Inbound parsing is ours, over the documented webhook JSON, and pure (:func:`parse_webhook_payload`):
pywa's update classes build only ``entry[0].changes[0].messages[0]`` of a delivery, need a live
client, and pywa 4.5 raises ``KeyError: 'user_id'`` inside its dispatcher for a contact without
``contacts[0].user_id`` (every payload before business-scoped user ids), logs "Failed to construct
update", calls no handler and still answers 200, so Meta never redelivers: the message is lost.
Here every entry, change, message and status of a delivery is read; what has an unknown shape
becomes an ``unsupported`` message or a warning that names it, never nothing.

Outbound (text, template, media), media download and template sync go through
``pywa_async.WhatsApp`` on an ``httpx.AsyncClient`` we own, pointed at ``api_url`` (so tests and the
demo talk to a local fake Graph API).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import httpx
from pywa.errors import WhatsAppError
from pywa.types.templates import TemplateLanguage
from pywa_async.client import WhatsApp

from channels.base import (
    Attachment,
    ChannelKind,
    DeliveryStatus,
    FetchedMedia,
    Identity,
    Inbound,
    InboundMessage,
    Location,
    MessageKind,
    MessageTemplate,
    OutboundMedia,
    Referral,
    SendResult,
    SharedContact,
    StatusUpdate,
    WebhookRequest,
    from_unix,
    read_capped,
    same_mime,
)
from channels.config import WhatsAppConfig
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

SIGNATURE_HEADER = "X-Hub-Signature-256"
WINDOW = dt.timedelta(hours=24)

_MEDIA_KINDS = ("image", "document", "audio", "video", "sticker")
_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
# Graph API error codes worth sending again later: throttling, temporary unavailability.
# https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes
_RETRYABLE_CODES = frozenset({1, 2, 4, 17, 80007, 130429, 131000, 131016, 131048, 131056, 133004})


# --------------------------------------------------------------------------- verification


def verify_signature(body: bytes, header: str | None, app_secret: str) -> None:
    """``X-Hub-Signature-256`` must be ``sha256=`` + HMAC-SHA256(app secret, raw body), hex.
    Raises ``SignatureInvalid`` with the reason; compares in constant time."""
    if not header:
        raise SignatureInvalid(f"no {SIGNATURE_HEADER} header")
    algo, _, received = header.strip().partition("=")
    if algo.lower() != "sha256" or not received:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} is not 'sha256=<hex>': {header[:80]!r}")
    expected = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, received.strip().lower()):
        raise SignatureInvalid(f"{SIGNATURE_HEADER} does not match the body ({len(body)} bytes)")


def sign(body: bytes, app_secret: str) -> str:
    """The header value Meta sends for ``body`` (for fakes, tests and the demo)."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def verify_subscription(query: Mapping[str, str], verify_token: str) -> str:
    """Meta's verification handshake (``GET`` on the webhook URL): answer ``hub.challenge``
    when ``hub.mode`` is ``subscribe`` and ``hub.verify_token`` is ours, else refuse."""
    mode = query.get("hub.mode")
    token = query.get("hub.verify_token") or ""
    challenge = query.get("hub.challenge")
    if mode != "subscribe":
        raise SignatureInvalid(f"hub.mode is {mode!r}, not 'subscribe'")
    if not hmac.compare_digest(token.encode(), verify_token.encode()):
        raise SignatureInvalid("hub.verify_token does not match")
    if not challenge:
        raise SignatureInvalid("no hub.challenge")
    return challenge


# --------------------------------------------------------------------------- parsing


def _phone(wa_id: str | None) -> str | None:
    if not wa_id:
        return None
    return try_normalize_phone("+" + wa_id.lstrip("+"))


def _referral(data: Mapping[str, Any] | None) -> Referral | None:
    if not data:
        return None
    return Referral(
        source_id=data.get("source_id"),
        source_type=data.get("source_type"),
        source_url=data.get("source_url"),
        headline=data.get("headline"),
        body=data.get("body"),
        ctwa_clid=data.get("ctwa_clid"),
        media_type=data.get("media_type"),
    )


def _shared_contact(card: Mapping[str, Any]) -> SharedContact:
    name = card.get("name") or {}
    phones: list[str] = []
    wa_ids: list[str] = []
    for phone in card.get("phones") or ():
        written = str(phone.get("phone") or "")
        wa_id = phone.get("wa_id")
        if wa_id:
            wa_ids.append(str(wa_id))
        e164 = _phone(str(wa_id)) if wa_id else try_normalize_phone(written)
        phones.append(e164 or written)
    return SharedContact(
        name=name.get("formatted_name")
        or " ".join(part for part in (name.get("first_name"), name.get("last_name")) if part)
        or None,
        phones=tuple(p for p in phones if p),
        emails=tuple(str(e.get("email")) for e in card.get("emails") or () if e.get("email")),
        organization=(card.get("org") or {}).get("company"),
        wa_ids=tuple(wa_ids),
    )


def _error_text(errors: Sequence[Mapping[str, Any]] | None) -> str | None:
    if not errors:
        return None
    first = errors[0]
    detail = (first.get("error_data") or {}).get("details")
    return " — ".join(str(p) for p in (first.get("code"), first.get("title"), detail) if p)


def _message(
    channel: str,
    msg: Mapping[str, Any],
    contacts: Mapping[str, Mapping[str, Any]],
    recipient: str | None,
) -> InboundMessage | None:
    msg_id = msg.get("id")
    sender_wa = msg.get("from")
    sender_bsuid = msg.get("from_user_id")
    contact = contacts.get(str(sender_wa)) or contacts.get(str(sender_bsuid)) or {}
    if not sender_wa:
        sender_wa = contact.get("wa_id")
    if not sender_bsuid:
        sender_bsuid = contact.get("user_id")
    if not msg_id or not (sender_wa or sender_bsuid):
        log.warning(
            "whatsapp channel=%s: a message without id or sender skipped: %s",
            channel,
            json.dumps(msg, ensure_ascii=False)[:500],
        )
        return None
    if sender_wa:
        sender = Identity("wa_id", str(sender_wa))
        aka: tuple[Identity, ...] = (Identity("bsuid", str(sender_bsuid)),) if sender_bsuid else ()
    else:
        sender = Identity("bsuid", str(sender_bsuid))
        aka = ()
    if not contact.get("user_id"):
        log.info(
            "whatsapp channel=%s message_id=%s: contact without user_id (read here; pywa drops it)",
            channel,
            msg_id,
        )
    mtype = str(msg.get("type") or "unknown")
    found = msg.get(mtype)
    body: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    kind: MessageKind = "unsupported"
    text: str | None = None
    payload: str | None = None
    attachments: tuple[Attachment, ...] = ()
    location: Location | None = None
    shared: tuple[SharedContact, ...] = ()
    reply_to = (msg.get("context") or {}).get("id")

    if mtype == "text":
        kind, text = "text", body.get("body")
    elif mtype in _MEDIA_KINDS and body.get("id"):
        kind = cast(MessageKind, mtype)  # one of _MEDIA_KINDS
        text = body.get("caption")
        attachments = (
            Attachment(
                ref=str(body["id"]),
                mime=body.get("mime_type"),
                size=body.get("file_size"),
                filename=body.get("filename"),
                sha256=body.get("sha256"),
                caption=body.get("caption"),
            ),
        )
    elif mtype == "location" and "latitude" in body and "longitude" in body:
        kind = "location"
        location = Location(
            latitude=float(body["latitude"]),
            longitude=float(body["longitude"]),
            name=body.get("name"),
            address=body.get("address"),
            url=body.get("url"),
        )
        text = " ".join(p for p in (body.get("name"), body.get("address")) if p) or None
    elif mtype == "contacts" and isinstance(msg.get("contacts"), list):
        kind = "contacts"
        shared = tuple(_shared_contact(card) for card in msg["contacts"])
        text = ", ".join(c.name for c in shared if c.name) or None
    elif mtype == "interactive":
        itype = str(body.get("type"))
        answer = body.get(itype)
        reply: Mapping[str, Any] = answer if isinstance(answer, Mapping) else {}
        if itype in ("button_reply", "list_reply"):
            kind, text, payload = "interactive", reply.get("title"), reply.get("id")
        elif itype == "nfm_reply":
            kind, text = "interactive", reply.get("body") or reply.get("name")
            payload = reply.get("response_json")
        else:
            text = f"interactive reply of type {itype!r}"
    elif mtype == "button":
        kind, text, payload = "interactive", body.get("text"), body.get("payload")
    elif mtype == "reaction":
        kind, text = "reaction", body.get("emoji") or ""
        reply_to = body.get("message_id") or reply_to
    else:
        # "unsupported"/"unknown" (a kind the API cannot deliver), or a type newer than this
        # code (order, system, request_welcome, edit, revoke ...): kept whole, never dropped.
        reason = _error_text(msg.get("errors")) or f"message type {mtype!r}"
        text = reason
        log.info(
            "whatsapp channel=%s message_id=%s: unsupported message (%s) kept",
            channel,
            msg_id,
            reason,
        )
    if kind == "unsupported" and mtype not in ("unsupported", "unknown") and not text:
        text = f"message type {mtype!r}"

    return InboundMessage(
        channel=channel,
        provider_message_id=str(msg_id),
        sender=sender,
        sender_name=(contact.get("profile") or {}).get("name"),
        sent_at=from_unix(msg.get("timestamp") or 0),
        kind=kind,
        text=text,
        attachments=attachments,
        reply_to=reply_to,
        referral=_referral(msg.get("referral")),
        payload=payload,
        location=location,
        contacts=shared,
        sender_phone=_phone(str(sender_wa)) if sender_wa else None,
        also_known_as=aka,
        recipient=recipient,
        raw=msg,
    )


def _status(channel: str, st: Mapping[str, Any]) -> StatusUpdate | None:
    status = _STATUSES.get(str(st.get("status")))
    if status is None or not st.get("id"):
        log.warning(
            "whatsapp channel=%s message_id=%s: status %r not understood, skipped: %s",
            channel,
            st.get("id"),
            st.get("status"),
            json.dumps(st, ensure_ascii=False)[:500],
        )
        return None
    errors = st.get("errors") or []
    first = errors[0] if errors else {}
    pricing = st.get("pricing") or {}
    return StatusUpdate(
        channel=channel,
        provider_message_id=str(st["id"]),
        status=cast(DeliveryStatus, status),
        at=from_unix(st.get("timestamp") or 0),
        recipient=st.get("recipient_id") or st.get("recipient_user_id"),
        error_code=str(first["code"]) if first.get("code") is not None else None,
        error_title=first.get("title") or first.get("message"),
        error_detail=(first.get("error_data") or {}).get("details"),
        pricing_category=pricing.get("category"),
        raw=st,
    )


def parse_webhook_payload(channel: str, payload: Mapping[str, Any]) -> list[Inbound]:
    """Every message and status of a (verified) webhook delivery, in delivery order."""
    if payload.get("object") not in (None, "whatsapp_business_account"):
        log.warning("whatsapp channel=%s: object %r ignored", channel, payload.get("object"))
        return []
    entries = payload.get("entry")
    if not isinstance(entries, list):
        raise PayloadInvalid(
            "no 'entry' list in the WhatsApp webhook", details={"channel": channel}
        )
    out: list[Inbound] = []
    for entry in entries:
        for change in entry.get("changes") or ():
            field_name = change.get("field")
            value = change.get("value") or {}
            if field_name != "messages":
                log.info(
                    "whatsapp channel=%s waba=%s: webhook field %r ignored",
                    channel,
                    entry.get("id"),
                    field_name,
                )
                continue
            recipient = (value.get("metadata") or {}).get("phone_number_id")
            contacts: dict[str, Mapping[str, Any]] = {}
            for contact in value.get("contacts") or ():
                for key in (contact.get("wa_id"), contact.get("user_id")):
                    if key:
                        contacts[str(key)] = contact
            for msg in value.get("messages") or ():
                parsed = _message(channel, msg, contacts, recipient)
                if parsed is not None:
                    out.append(parsed)
            for st in value.get("statuses") or ():
                status = _status(channel, st)
                if status is not None:
                    out.append(status)
            for error in value.get("errors") or ():
                log.warning("whatsapp channel=%s: webhook error %s", channel, error)
    return out


# --------------------------------------------------------------------------- adapter


def _template_params(params: Sequence[str] | Mapping[str, str]) -> list[dict[str, Any]]:
    if not params:
        return []
    if isinstance(params, Mapping):
        parameters = [
            {"type": "text", "parameter_name": name, "text": value}
            for name, value in params.items()
        ]
    else:
        parameters = [{"type": "text", "text": value} for value in params]
    return [{"type": "body", "parameters": parameters}]


def _placeholders(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    return tuple(dict.fromkeys(re.findall(r"\{\{\s*([\w]+)\s*\}\}", text)))


class WhatsAppAdapter:
    """One WhatsApp business number (``WhatsAppConfig``): parse, send, fetch media, templates."""

    kind: ClassVar[ChannelKind] = "whatsapp"

    def __init__(self, config: WhatsAppConfig, *, http: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.code = config.code
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=config.timeout_s)
        self._wa = WhatsApp(
            phone_id=config.phone_number_id,
            token=config.access_token.get_secret_value(),
            session=self._http,
            api_version=config.api_version,
            waba_id=config.waba_id,
        )
        # pywa fixes its session's base URL to graph.facebook.com; the session is ours.
        self._http.base_url = httpx.URL(f"{config.api_url.rstrip('/')}/v{config.api_version}/")

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any]) -> WhatsAppConfig:
        from channels.config import parse_channel_config

        cfg = parse_channel_config({**raw, "kind": raw.get("kind", "whatsapp")})
        if not isinstance(cfg, WhatsAppConfig):
            raise ChannelConfigInvalid("not a whatsapp channel", problems={"kind": "whatsapp"})
        return cfg

    async def close(self) -> None:
        if self._own_http and not self._http.is_closed:
            await self._http.aclose()

    # -- inbound

    def verify_subscription(self, query: Mapping[str, str]) -> str:
        return verify_subscription(query, self.config.verify_token.get_secret_value())

    def parse_webhook(self, request: WebhookRequest) -> list[Inbound]:
        verify_signature(
            request.body,
            request.header(SIGNATURE_HEADER),
            self.config.app_secret.get_secret_value(),
        )
        try:
            payload = json.loads(request.body)
        except ValueError as exc:
            raise PayloadInvalid(f"WhatsApp webhook body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise PayloadInvalid("WhatsApp webhook body is not a JSON object")
        return parse_webhook_payload(self.code, payload)

    def messaging_window_open(self, last_inbound_at: dt.datetime | None, now: dt.datetime) -> bool:
        """The customer service window: free-form messages only within 24 h of the client's
        last message; outside it only templates."""
        if last_inbound_at is None:
            return False
        return now - last_inbound_at < WINDOW

    # -- outbound

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except WhatsAppError as exc:
            status = exc.status_code or 0
            retryable = (
                exc.code in _RETRYABLE_CODES
                or status >= 500
                or status == 429
                or bool(exc.is_transient)
            )
            message = exc.message
            if exc.details:
                message = f"{message}: {exc.details}"
            log.warning(
                "whatsapp channel=%s %s refused: code=%s status=%s %s",
                self.code,
                what,
                exc.code,
                status,
                message,
            )
            raise ChannelSendFailed(
                str(exc.code), message, retryable=retryable, details={"http_status": status}
            ) from None
        except httpx.TransportError as exc:
            raise ChannelSendFailed(
                "transport", f"Graph API unreachable: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            raise ChannelSendFailed(
                str(status), f"Graph API answered {status}", retryable=status >= 500
            ) from None
        except OSError as exc:
            raise ChannelSendFailed(
                "transport", f"Graph API unreachable: {exc}", retryable=True
            ) from exc
        except ValueError as exc:  # pywa checks arguments (an unknown language code ...)
            raise ChannelSendFailed("invalid", str(exc), retryable=False) from None

    @staticmethod
    def _to(to: str) -> str:
        # wa_id or E.164 without "+"; a BSUID ("RU.123...") is passed through
        return to[1:] if to.startswith("+") else to

    async def send_text(self, to: str, text: str, *, reply_to: str | None = None) -> SendResult:
        sent = await self._call(
            "send_text",
            self._wa.send_message(to=self._to(to), text=text, reply_to_message_id=reply_to),
        )
        return SendResult(provider_message_id=sent.id)

    async def send_template(
        self,
        to: str,
        name: str,
        language: str,
        params: Sequence[str] | Mapping[str, str] = (),
    ) -> SendResult:
        try:
            lang = TemplateLanguage(language)
        except (ValueError, TypeError):  # pywa 4.5's _missing_ raises TypeError for unknowns
            raise ChannelSendFailed(
                "invalid", f"unknown template language {language!r}", retryable=False
            ) from None
        sent = await self._call(
            "send_template",
            self._wa.send_template(
                to=self._to(to), name=name, language=lang, params=_template_params(params)
            ),
        )
        return SendResult(provider_message_id=sent.id)

    async def send_media(
        self,
        to: str,
        media: OutboundMedia,
        *,
        caption: str | None = None,
        reply_to: str | None = None,
    ) -> SendResult:
        source: Any = media.link if media.link is not None else media.data
        common: dict[str, Any] = {"to": self._to(to), "reply_to_message_id": reply_to}
        wa = self._wa
        if media.kind == "image":
            coro = wa.send_image(image=source, caption=caption, mime_type=media.mime, **common)
        elif media.kind == "video":
            coro = wa.send_video(video=source, caption=caption, mime_type=media.mime, **common)
        elif media.kind == "document":
            coro = wa.send_document(
                document=source,
                filename=media.filename,
                caption=caption,
                mime_type=media.mime,
                **common,
            )
        elif media.kind == "audio":
            coro = wa.send_audio(audio=source, mime_type=media.mime, **common)
        else:
            coro = wa.send_sticker(sticker=source, mime_type=media.mime, **common)
        sent = await self._call(f"send_{media.kind}", coro)
        return SendResult(provider_message_id=sent.id)

    async def fetch_media(self, ref: str, *, max_bytes: int | None = None) -> FetchedMedia:
        """GET /{media-id} for the URL, mime type and size; then the bytes with the bearer
        token, refused past the cap (announced size first, then while reading) or when the
        content type differs from the announced one."""
        cap = max_bytes or self.config.media_max_bytes
        try:
            info = await self._wa.get_media_url(media_id=ref)
        except WhatsAppError as exc:
            raise MediaUnavailable(
                f"media {ref}: Graph API error {exc.code}: {exc.message}",
                details={"ref": ref, "code": exc.code},
            ) from None
        except (httpx.HTTPError, OSError, KeyError) as exc:
            raise MediaUnavailable(f"media {ref}: {type(exc).__name__}: {exc}") from exc
        if info.file_size and int(info.file_size) > cap:
            raise MediaRefused(
                f"media {ref} is {info.file_size} bytes, over the cap of {cap}",
                details={"ref": ref, "size": info.file_size, "max_bytes": cap},
            )
        try:
            async with self._http.stream("GET", info.url) as response:
                if response.status_code >= 400:
                    raise MediaUnavailable(
                        f"media {ref}: download answered {response.status_code}",
                        details={"ref": ref, "status": response.status_code},
                    )
                received = response.headers.get("Content-Type")
                if not same_mime(info.mime_type, received):
                    raise MediaRefused(
                        f"media {ref}: announced {info.mime_type}, served {received}",
                        details={"ref": ref, "announced": info.mime_type, "served": received},
                    )
                data = await read_capped(response.aiter_bytes(), cap, what=f"media {ref}")
        except (httpx.HTTPError, OSError) as exc:
            raise MediaUnavailable(f"media {ref}: {type(exc).__name__}: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        if info.sha256 and info.sha256 != digest:
            raise MediaRefused(
                f"media {ref}: sha256 differs from the announced one", details={"ref": ref}
            )
        return FetchedMedia(data=data, mime=info.mime_type, sha256=digest)

    async def sync_templates(self) -> list[MessageTemplate]:
        """The approved templates of the business account, every page of
        ``GET /{waba-id}/message_templates`` (read raw: pywa's paging is synchronous and its
        template model drops components it does not know)."""
        if not self.config.waba_id:
            raise ChannelConfigInvalid(
                f"channel {self.code!r}: template sync needs waba_id",
                problems={"waba_id": "required to list message templates"},
            )
        templates: list[MessageTemplate] = []
        url: str | None = f"{self.config.waba_id}/message_templates"
        params: dict[str, Any] | None = {
            "status": "APPROVED",
            "fields": "id,name,language,status,category,components",
            "limit": 100,
        }
        pages = 0
        while url and pages < 100:
            pages += 1
            try:
                response = await self._http.get(url, params=params)
            except (httpx.TransportError, OSError) as exc:
                raise ChannelSendFailed(
                    "transport", f"Graph API unreachable: {exc}", retryable=True
                ) from exc
            if response.status_code >= 400:
                error = _graph_error(response)
                raise ChannelSendFailed(
                    str(error.get("code", response.status_code)),
                    str(error.get("message", response.text[:200])),
                    retryable=response.status_code >= 500,
                )
            page = response.json()
            for item in page.get("data") or ():
                if str(item.get("status", "")).upper() == "APPROVED":
                    templates.append(_template(item))
            url, params = (page.get("paging") or {}).get("next"), None
        return templates


def _graph_error(response: httpx.Response) -> dict[str, Any]:
    try:
        error = response.json().get("error")
    except ValueError:
        return {}
    return error if isinstance(error, dict) else {}


def _template(item: Mapping[str, Any]) -> MessageTemplate:
    components = tuple(item.get("components") or ())
    body = next(
        (c.get("text") for c in components if str(c.get("type", "")).upper() == "BODY"), None
    )
    return MessageTemplate(
        id=str(item.get("id")),
        name=str(item.get("name")),
        language=str(item.get("language")),
        category=item.get("category"),
        status=str(item.get("status")),
        body=body,
        params=_placeholders(body),
        components=components,
    )
