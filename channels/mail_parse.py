"""Reading an e-mail (pure): raw RFC 5322 bytes to an :class:`~channels.base.InboundMessage`.

The stdlib ``email`` package with ``policy.default`` does the MIME work: charsets (UTF-8,
windows-1251, KOI8-R ... whatever Python has a codec for), quoted-printable and base64, RFC 2047
encoded headers, RFC 2231 parameters. Around it, what real mail needs:

- a part whose declared charset is unknown or wrong is decoded by trying UTF-8, then
  windows-1251, then KOI8-R, so a mislabelled Russian letter still reads;
- attachment names encoded RFC 2047-style inside a quoted parameter (Outlook, The Bat!, 1C) are
  decoded too;
- HTML is sanitised with nh3 (ammonia): scripts, styles, event handlers, ``javascript:`` links
  are gone; a plain-text version is derived when the letter has no text part;
- auto-replies and bounces (RFC 3464 delivery status notifications) are recognised and flagged
  (``EmailDetails.auto_reply``, ``EmailDetails.bounce``), so the caller creates no lead for them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.errors
import email.header
import email.utils
import hashlib
import logging
import re
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

import nh3

from channels.base import UTC, Attachment, Bounce, EmailDetails, Identity, InboundMessage

log = logging.getLogger(__name__)

_MSG_ID = re.compile(r"<[^<>\s]+>")
_FALLBACK_CHARSETS = ("utf-8", "windows-1251", "koi8-r")
_VACATION_SUBJECT = re.compile(
    r"^\s*(автоответ|автоматический\s+ответ|auto[\s-]*(reply|response|antwort)|"
    r"automatic\s+reply|out\s+of\s+(the\s+)?office|vacation|отпуск|я\s+в\s+отпуске|"
    r"нахожусь\s+в\s+отпуске|абонент\s+в\s+отпуске)\b",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)

# Tags and attributes a letter may keep once sanitised (nh3's defaults plus what mail layouts
# use); ``cid:`` links keep inline images resolvable by Content-ID.
_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "*": {"style", "title", "align", "dir", "lang"},
    "a": {"href", "name", "target"},
    "img": {"src", "alt", "width", "height"},
    "table": {"width", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "th": {"width", "colspan", "rowspan", "valign", "bgcolor"},
    "font": {"color", "face", "size"},
}
_URL_SCHEMES = {"http", "https", "mailto", "tel", "cid"}


def sanitize_html(markup: str) -> str:
    """HTML safe to show in the workspace: no script, style, event handler or javascript: URL."""
    tags = set(nh3.ALLOWED_TAGS) | {"font", "center", "span", "div"}
    return nh3.clean(
        markup,
        tags=tags,
        attributes={k: set(v) for k, v in _ALLOWED_ATTRIBUTES.items()},
        url_schemes=_URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


class _TextOf(HTMLParser):
    _BLOCK = frozenset(
        ("p", "div", "br", "tr", "li", "table", "blockquote", "h1", "h2", "h3", "h4", "h5")
    )
    _SKIP = frozenset(("script", "style", "head", "title"))

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self._BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(data)


def html_to_text(markup: str) -> str:
    """A readable plain-text version of an HTML body."""
    parser = _TextOf()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.out)
    lines = [re.sub(r"[ \t\xa0]+", " ", line).strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _decode_bytes(data: bytes, declared: str | None) -> str:
    for charset in (declared, *_FALLBACK_CHARSETS):
        if not charset:
            continue
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("utf-8", errors="replace")


def part_text(part: Message) -> str:
    """A text part's content as str, whatever its declared charset says."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return str(part.get_payload() or "")
    return _decode_bytes(payload, part.get_content_charset())


def _decode_words(value: str) -> str:
    """Decode RFC 2047 words left in a value (a quoted filename parameter)."""
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeDecodeError, ValueError, email.errors.HeaderParseError):
        return value


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    try:
        return _decode_words(str(value)).strip()
    except (LookupError, UnicodeDecodeError, ValueError):
        return str(value.encode() if hasattr(value, "encode") else value).strip()


def _addresses(msg: Message, name: str) -> tuple[tuple[str, str], ...]:
    """(display name, lower-cased address) pairs of an address header."""
    values = msg.get_all(name) or []
    out: list[tuple[str, str]] = []
    for display, addr in email.utils.getaddresses([str(v) for v in values]):
        if addr and "@" in addr:
            out.append((_decode_words(display).strip(), addr.strip().lower()))
    return tuple(out)


def _ids(value: str | None) -> tuple[str, ...]:
    return tuple(_MSG_ID.findall(value or ""))


def _auto_reply(msg: Message, sender: str, subject: str) -> str | None:
    auto_submitted = (msg.get("Auto-Submitted") or "").strip().lower()
    if auto_submitted and auto_submitted != "no":
        return f"Auto-Submitted: {auto_submitted}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autoresponder"):
        if msg.get(name) is not None:
            return f"{name} header"
    precedence = (msg.get("Precedence") or "").strip().lower()
    if precedence in ("auto_reply", "bulk", "junk"):
        return f"Precedence: {precedence}"
    if _DAEMON.match(sender):
        return "sent by a mailer daemon"
    if _VACATION_SUBJECT.search(subject):
        return "subject looks like an auto-reply"  # a weak signal, on its own
    return None


def _bounce(msg: Message) -> Bounce | None:
    if msg.get_content_type() != "multipart/report":
        return None
    report_type = msg.get_param("report-type")
    if not isinstance(report_type, str) or report_type.lower() != "delivery-status":
        return None
    recipient = status = action = diagnostic = original = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/delivery-status":
            for block in part.get_payload() or ():
                if not isinstance(block, Message):
                    continue
                final = block.get("Final-Recipient") or block.get("Original-Recipient")
                if final and recipient is None:
                    recipient = str(final).split(";", 1)[-1].strip().strip("<>").lower()
                    status = (block.get("Status") or "").strip() or None
                    action = (block.get("Action") or "").strip().lower() or None
                    code = block.get("Diagnostic-Code")
                    diagnostic = str(code).split(";", 1)[-1].strip() if code else None
        elif ctype in ("message/rfc822", "text/rfc822-headers") and original is None:
            if ctype == "message/rfc822":
                inner = part.get_payload()
                inner_msg = inner[0] if isinstance(inner, list) and inner else None
            else:
                headers = part.get_payload(decode=True)
                inner_msg = BytesParser(policy=policy.default).parsebytes(
                    headers if isinstance(headers, bytes) else b"", headersonly=True
                )
            if isinstance(inner_msg, Message):
                found = _ids(inner_msg.get("Message-ID"))
                original = found[0] if found else None
    return Bounce(
        recipient=recipient,
        status=status,
        action=action,
        diagnostic=diagnostic,
        original_message_id=original,
    )


def _filename(part: Message) -> str | None:
    name: str | None = part.get_filename()
    if not name:
        param = part.get_param("name")
        # RFC 2231 gives (charset, language, value)
        name = email.utils.collapse_rfc2231_value(param) if isinstance(param, tuple) else param
    return _decode_words(str(name)).strip() if name else None


def _bodies_and_attachments(
    msg: Message, max_bytes: int
) -> tuple[str | None, str | None, tuple[Attachment, ...]]:
    plain: str | None = None
    markup: str | None = None
    attachments: list[Attachment] = []
    for index, part in enumerate(msg.walk()):
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get_content_disposition() or "").lower()
        filename = _filename(part)
        is_body_text = ctype in ("text/plain", "text/html") and disposition != "attachment"
        if is_body_text and not filename:
            text = part_text(part)
            if ctype == "text/plain" and plain is None:
                plain = text
            elif ctype == "text/html" and markup is None:
                markup = text
            continue
        if ctype in ("message/delivery-status", "text/rfc822-headers"):
            continue
        data = part.get_payload(decode=True)
        if not isinstance(data, bytes):
            data = str(part.get_payload() or "").encode()
        refused = None
        if len(data) > max_bytes:
            refused = f"larger than {max_bytes} bytes"
            log.info("mail attachment %r (%s bytes) over the cap, not kept", filename, len(data))
        content_id = part.get("Content-ID")
        attachments.append(
            Attachment(
                ref=str(index),
                mime=ctype,
                size=len(data),
                filename=filename,
                sha256=hashlib.sha256(data).hexdigest(),
                data=None if refused else data,
                content_id=str(content_id).strip() if content_id else None,
                inline=disposition == "inline",
                refused=refused,
            )
        )
    return plain, markup, tuple(attachments)


def parse_email(
    raw: bytes,
    *,
    channel: str,
    received_at: dt.datetime | None = None,
    attachment_max_bytes: int = 25 * 1024 * 1024,
) -> InboundMessage:
    """One e-mail as an ``InboundMessage`` of kind ``email`` (never raises on odd mail:
    a header that cannot be decoded is kept as written)."""
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    # policy.default makes every message an EmailMessage (typeshed types it as Message).
    assert isinstance(parsed, EmailMessage)
    msg = parsed
    senders = _addresses(msg, "From") or _addresses(msg, "Sender") or _addresses(msg, "Return-Path")
    display, address = senders[0] if senders else ("", "unknown@invalid")
    subject = _header(msg, "Subject") or ""
    ids = _ids(msg.get("Message-ID"))
    message_id = ids[0] if ids else f"<sha256.{hashlib.sha256(raw).hexdigest()[:32]}@generated>"
    in_reply_to = (_ids(msg.get("In-Reply-To")) or (None,))[0]
    references = _ids(msg.get("References"))
    thread_root = references[0] if references else in_reply_to or message_id
    sent_at = received_at
    try:
        date_header = msg.get("Date")
        if date_header is not None and date_header.datetime is not None:
            parsed = date_header.datetime
            sent_at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (TypeError, ValueError, AttributeError):
        pass
    plain, markup, attachments = _bodies_and_attachments(msg, attachment_max_bytes)
    safe_html = sanitize_html(markup) if markup is not None else None
    if plain is None and markup is not None:
        plain = html_to_text(markup)
    details = EmailDetails(
        subject=subject,
        message_id=message_id,
        in_reply_to=in_reply_to,
        references=references,
        thread_root=thread_root,
        to=tuple(a for _, a in _addresses(msg, "To")),
        cc=tuple(a for _, a in _addresses(msg, "Cc")),
        reply_to=tuple(a for _, a in _addresses(msg, "Reply-To")),
        html=safe_html,
        auto_reply=False,
        auto_reply_reason=None,
        bounce=_bounce(msg),
    )
    reason = _auto_reply(msg, address, subject)
    if reason and details.bounce is None:
        details = _replace(details, auto_reply=True, auto_reply_reason=reason)
    headers = [[k, _safe_str(v)] for k, v in msg.items()]
    return InboundMessage(
        channel=channel,
        provider_message_id=message_id,
        sender=Identity("email", address),
        sender_name=display or None,
        sent_at=(sent_at or dt.datetime.fromtimestamp(0, UTC)).astimezone(UTC),
        kind="email",
        text=plain.strip() if plain else None,
        attachments=attachments,
        reply_to=in_reply_to,
        email=details,
        raw={"headers": headers},
    )


def _safe_str(value: Any) -> str:
    try:
        return _decode_words(str(value))
    except (LookupError, UnicodeDecodeError, ValueError):
        return repr(value)


def _replace(details: EmailDetails, **changes: Any) -> EmailDetails:
    return dataclasses.replace(details, **changes)
