"""The provider interface every channel adapter implements, and the plain data it speaks.

Inbound, an adapter turns what a provider delivered into :data:`Inbound` items:
:class:`InboundMessage` (a client wrote) and :class:`StatusUpdate` (a message we sent was sent,
delivered, read or failed). Outbound, it turns a call such as :meth:`Sender.send_text` into the
provider's API request and answers a :class:`SendResult` (the provider's message id, the cost when
the provider reports one) or raises :class:`~channels.errors.ChannelSendFailed`.

Capabilities are separate ``Protocol`` classes, because the providers differ:

============  ========  ========  ============  ===========  ===========  ==============
kind          webhook   IMAP      send_text     send_media   templates    fetch_media
============  ========  ========  ============  ===========  ===========  ==============
whatsapp      yes       -         yes           yes          yes          yes (media id)
telegram      yes       -         yes           yes          -            yes (file_id)
sms           yes       -         yes           -            -            -
email         -         yes       yes (SMTP)    attachments  -            inline (parsed)
============  ========  ========  ============  ===========  ===========  ==============

Test with ``isinstance(adapter, TemplateSender)`` (the protocols are runtime-checkable) rather
than with the kind. Adapters hold no database and no event bus: the caller stores what they
return, and persists any cursor they hand back (the IMAP UIDVALIDITY and last UID).

Identities. A sender is an :class:`Identity` ``(kind, value)``: ``("wa_id", "79161234567")``,
``("bsuid", "RU.13491208655302741918")`` (WhatsApp's business-scoped user id, the only id when the
user hides the number), ``("telegram", "123456789")``, ``("phone", "+79161234567")`` (E.164, SMS),
``("email", "ivan@example.ru")`` (lower-cased). ``InboundMessage.sender_phone`` is the E.164
number whenever the provider reveals one (a WhatsApp wa_id, an SMS sender, a Telegram contact the
user shared about himself), so one person writing on two channels meets one client.

Times are timezone-aware UTC ``datetime`` values taken from the provider's payload, never
``now()``. Money is ``Decimal`` in the currency named beside it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol, runtime_checkable

import aiohttp

from channels.errors import ChannelSendFailed, MediaRefused

ChannelKind = Literal["whatsapp", "email", "telegram", "sms"]
CHANNEL_KINDS: tuple[ChannelKind, ...] = ("whatsapp", "email", "telegram", "sms")

MessageKind = Literal[
    "text",
    "image",
    "document",
    "audio",
    "video",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "reaction",
    "unsupported",
    "email",
]
DeliveryStatus = Literal["sent", "delivered", "read", "failed"]
IdentityKind = Literal["wa_id", "bsuid", "telegram", "phone", "email"]
MediaKind = Literal["image", "document", "audio", "video", "sticker"]

UTC = dt.UTC


# --------------------------------------------------------------------------- inbound data


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a message is from on one channel kind: unique together, resolves to one contact."""

    kind: IdentityKind
    value: str


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file that came with a message.

    ``ref`` is what :meth:`MediaFetcher.fetch_media` takes: the WhatsApp media id, the Telegram
    ``file_id``; for e-mail the file is already here in ``data`` and ``ref`` is its MIME part
    number (``"2"``, ``"3.1"``). ``size`` is in bytes when known. ``refused`` names why an
    e-mail attachment's ``data`` was not kept (over the size cap), or is None.
    """

    ref: str
    mime: str | None = None
    size: int | None = None
    filename: str | None = None
    sha256: str | None = None
    caption: str | None = None
    data: bytes | None = None
    content_id: str | None = None
    inline: bool = False
    refused: str | None = None


@dataclass(frozen=True, slots=True)
class Referral:
    """Where a chat came from when a client tapped an ad (WhatsApp Click-to-WhatsApp).

    ``source_id`` is the ad id, ``ctwa_clid`` the click id to report conversions with.
    """

    source_id: str | None
    source_type: str | None
    source_url: str | None
    headline: str | None
    body: str | None
    ctwa_clid: str | None
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class Location:
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class SharedContact:
    """A contact card the client sent; ``phones`` in E.164 where they parse, else as written."""

    name: str | None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    organization: str | None = None
    wa_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Bounce:
    """A delivery status notification (RFC 3464) about mail we sent.

    ``recipient`` is the address that failed, ``status`` its enhanced code (``5.1.1``),
    ``action`` ``failed``/``delayed``/…, ``original_message_id`` the Message-ID of our message when
    the report quotes its headers.
    """

    recipient: str | None
    status: str | None
    action: str | None
    diagnostic: str | None
    original_message_id: str | None

    @property
    def permanent(self) -> bool:
        """A 5.x.x status (or a failed action without a status): the address is bad."""
        if self.status:
            return self.status.startswith("5")
        return self.action == "failed"


@dataclass(frozen=True, slots=True)
class EmailDetails:
    """What only an e-mail has. ``html`` is already sanitised (safe to show); ``text`` of the
    :class:`InboundMessage` is the plain-text version (the text part, or derived from the HTML).

    Threading: ``message_id``/``in_reply_to``/``references`` as in the headers (angle brackets
    kept); ``thread_root`` the first of References, else In-Reply-To, else the message's own id:
    the key a conversation can be found by.
    """

    subject: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    thread_root: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    html: str | None
    auto_reply: bool
    auto_reply_reason: str | None
    bounce: Bounce | None

    @property
    def creates_nothing(self) -> bool:
        """Auto-replies and bounces must not create a lead or a conversation."""
        return self.auto_reply or self.bounce is not None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a client sent us, as the provider delivered it.

    Per kind: ``text`` holds the text, the caption of a media message, the title of a tapped
    button/list row (``interactive``, with its id in ``payload``), the emoji of a ``reaction``
    (``reply_to`` is the message reacted to; an empty text removes the reaction), the plain text of
    an ``email``. ``unsupported`` messages keep the provider's reason in ``text`` and everything in
    ``raw``. ``start_payload`` is the parameter of Telegram's ``/start`` deep link (the website
    visitor id). ``raw`` is the provider's dict for this one message (for e-mail: the headers).
    """

    channel: str
    provider_message_id: str
    sender: Identity
    sender_name: str | None
    sent_at: dt.datetime
    kind: MessageKind
    text: str | None = None
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    referral: Referral | None = None
    start_payload: str | None = None
    payload: str | None = None
    location: Location | None = None
    contacts: tuple[SharedContact, ...] = ()
    sender_phone: str | None = None
    also_known_as: tuple[Identity, ...] = ()
    recipient: str | None = None
    email: EmailDetails | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def identities(self) -> tuple[Identity, ...]:
        """Every identity this message reveals for its sender, the channel's own first."""
        extra = list(self.also_known_as)
        phone = Identity("phone", self.sender_phone) if self.sender_phone else None
        if phone is not None and phone not in extra and self.sender.kind != "phone":
            extra.append(phone)
        return (self.sender, *extra)


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What became of a message we sent. ``cost`` when the provider reports a price."""

    channel: str
    provider_message_id: str
    status: DeliveryStatus
    at: dt.datetime
    recipient: str | None = None
    error_code: str | None = None
    error_title: str | None = None
    error_detail: str | None = None
    cost: Decimal | None = None
    currency: str | None = None
    pricing_category: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


Inbound = InboundMessage | StatusUpdate


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What the HTTP edge hands an adapter: everything needed to verify and parse a delivery.

    ``body`` must be the RAW bytes (signatures are computed over them), ``headers`` any mapping
    (looked up case-insensitively), ``query`` the URL's query parameters, ``received_at`` when the
    edge received it (the time of items whose payload carries none).
    """

    method: str
    headers: Mapping[str, str]
    body: bytes = b""
    query: Mapping[str, str] = field(default_factory=dict)
    received_at: dt.datetime | None = None

    def header(self, name: str) -> str | None:
        """The header's value, whatever the case of its name in ``headers``."""
        value = self.headers.get(name)
        if value is not None:
            return value
        lowered = name.lower()
        for key, val in self.headers.items():
            if key.lower() == lowered:
                return val
        return None


# --------------------------------------------------------------------------- outbound data


@dataclass(frozen=True, slots=True)
class SendResult:
    """The provider took the message: its id (the key status updates come back with), the cost
    and number of parts when it reports them (SMS)."""

    provider_message_id: str
    cost: Decimal | None = None
    currency: str | None = None
    parts: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutboundMedia:
    """A file to send: either ``link`` (a public URL the provider fetches) or ``data``."""

    kind: MediaKind
    link: str | None = None
    data: bytes | None = None
    mime: str | None = None
    filename: str | None = None

    def __post_init__(self) -> None:
        if (self.link is None) == (self.data is None):
            raise ValueError("OutboundMedia needs exactly one of link and data")


@dataclass(frozen=True, slots=True)
class FetchedMedia:
    data: bytes
    mime: str
    filename: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """An approved WhatsApp message template. ``body`` is the body text with its ``{{1}}``
    (or ``{{name}}``) placeholders, ``params`` their names in order."""

    id: str
    name: str
    language: str
    category: str | None
    status: str
    body: str | None
    params: tuple[str, ...]
    components: tuple[Mapping[str, Any], ...] = ()


# --------------------------------------------------------------------------- capabilities


@runtime_checkable
class ChannelAdapter(Protocol):
    """What every adapter has: its channel's code and kind, the messaging window, a close."""

    code: str
    kind: ChannelKind

    def messaging_window_open(self, last_inbound_at: dt.datetime | None, now: dt.datetime) -> bool:
        """May a free-form message be sent now? (WhatsApp: within 24 h of the client's last
        message; every other kind: always.)"""
        ...

    async def close(self) -> None:
        """Release connections (HTTP sessions). Idempotent."""
        ...


@runtime_checkable
class WebhookParser(Protocol):
    def parse_webhook(self, request: WebhookRequest) -> list[Inbound]:
        """Verify ``request`` (raises ``SignatureInvalid`` with a reason to log) and parse it
        into messages and status updates (raises ``PayloadInvalid`` for an unreadable body).
        Nothing the provider sent is dropped silently: what cannot be understood becomes an
        ``unsupported`` message or a log line naming it."""
        ...


@runtime_checkable
class Sender(Protocol):
    async def send_text(self, to: str, text: str, *, reply_to: str | None = None) -> SendResult:
        """Send ``text`` to ``to`` (the identity value: wa_id/E.164, chat id, phone, address);
        ``reply_to`` is a provider message id to quote. Raises ``ChannelSendFailed``."""
        ...


@runtime_checkable
class MediaSender(Protocol):
    async def send_media(
        self,
        to: str,
        media: OutboundMedia,
        *,
        caption: str | None = None,
        reply_to: str | None = None,
    ) -> SendResult: ...


@runtime_checkable
class TemplateSender(Protocol):
    async def send_template(
        self,
        to: str,
        name: str,
        language: str,
        params: Sequence[str] | Mapping[str, str] = (),
    ) -> SendResult:
        """Send an approved template; ``params`` fill the body placeholders, positional
        (``{{1}}``, ``{{2}}``) or named (``{{first_name}}``)."""
        ...

    async def sync_templates(self) -> list[MessageTemplate]:
        """The approved templates, as the provider lists them now."""
        ...


@runtime_checkable
class MediaFetcher(Protocol):
    async def fetch_media(self, ref: str, *, max_bytes: int | None = None) -> FetchedMedia:
        """Download an attachment by its ``Attachment.ref``; raises ``MediaRefused`` past the
        size cap (the channel's, or ``max_bytes``) or for a content type that does not match."""
        ...


# --------------------------------------------------------------------------- helpers


def always_open(last_inbound_at: dt.datetime | None, now: dt.datetime) -> bool:
    """The messaging window of channels without one (e-mail, Telegram, SMS)."""
    return True


def from_unix(value: Any) -> dt.datetime:
    """A provider's unix timestamp (int or digit string) as an aware UTC datetime."""
    return dt.datetime.fromtimestamp(int(value), tz=UTC)


@contextlib.contextmanager
def transport_errors(provider: str) -> Iterator[None]:
    """Wrap connection-level failures (refused, reset, timeout, DNS) as a retryable
    ``ChannelSendFailed``: the message was not taken and may be sent again later."""
    try:
        yield
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise ChannelSendFailed(
            "transport",
            f"{provider} unreachable: {type(exc).__name__}: {exc}",
            retryable=True,
        ) from exc


async def read_capped(chunks: AsyncIterator[bytes], max_bytes: int, *, what: str) -> bytes:
    """Read a body in chunks, refusing it as soon as it passes ``max_bytes``."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > max_bytes:
            raise MediaRefused(
                f"{what} is larger than {max_bytes} bytes",
                details={"max_bytes": max_bytes},
            )
    return bytes(buf)


def same_mime(announced: str | None, received: str | None) -> bool:
    """Do two content types name the same type (parameters and case ignored)? A missing
    announcement or a generic ``application/octet-stream`` reply is accepted."""
    if not announced or not received:
        return True
    a = announced.split(";", 1)[0].strip().lower()
    r = received.split(";", 1)[0].strip().lower()
    return a == r or r == "application/octet-stream"
