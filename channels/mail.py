"""E-mail: IMAP in (aioimaplib; IDLE where the server has it, polling otherwise), SMTP out
(aiosmtplib; STARTTLS, implicit TLS or plain per config).

IMAP state is the caller's: :class:`MailboxState` (mailbox, UIDVALIDITY, last UID seen) goes in,
a new one comes back with each :class:`MailBatch`. The caller stores the batch's messages and the
new state in one transaction; after a restart it passes the stored state and gets exactly the
messages it has not seen: none twice, none lost. When the server's UIDVALIDITY changed (mailbox
recreated), the old UIDs mean nothing: the batch says ``uidvalidity_changed`` and starts over
from UID 1, and the caller dedupes those by Message-ID. Messages are fetched with ``BODY.PEEK[]``
and never flagged, moved or deleted: the mailbox stays as the people using it left it.

:meth:`ImapReceiver.watch` is the long-running loop the composition root runs as a background
task per channel: connect, drain every mailbox in batches, wait (IDLE or poll), repeat;
reconnects with back-off when the server goes away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from html import escape as html_escape
from typing import Any, ClassVar

import aioimaplib
import aiosmtplib

from channels.base import (
    UTC,
    ChannelKind,
    InboundMessage,
    OutboundMedia,
    SendResult,
    always_open,
)
from channels.config import EmailConfig
from channels.errors import ChannelConfigInvalid, ChannelSendFailed
from channels.mail_parse import parse_email

log = logging.getLogger(__name__)

_FETCH_HEAD = re.compile(rb"^(\d+) FETCH \(")
_UID = re.compile(rb"UID (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


class ImapError(ConnectionError):
    """The IMAP server refused a command or went away (retried by :meth:`ImapReceiver.watch`)."""


@dataclass(frozen=True, slots=True)
class MailboxState:
    """Where reading a mailbox got to. ``uidvalidity`` None: never read (start from UID 1)."""

    mailbox: str = "INBOX"
    uidvalidity: int | None = None
    last_uid: int = 0


@dataclass(frozen=True, slots=True)
class FetchedMail:
    uid: int
    raw: bytes
    message: InboundMessage


@dataclass(frozen=True, slots=True)
class MailBatch:
    """Messages with UIDs above the state's ``last_uid`` (oldest first, at most
    ``fetch_batch``), and the state to persist once they are stored. ``more`` says another
    batch is waiting."""

    state: MailboxState
    mails: list[FetchedMail] = field(default_factory=list)
    uidvalidity_changed: bool = False
    more: bool = False


def _parse_fetch(lines: Sequence[Any]) -> list[tuple[int, dt.datetime | None, bytes]]:
    """``UID FETCH (UID INTERNALDATE BODY.PEEK[])`` response lines as (uid, date, raw)."""
    out: list[tuple[int, dt.datetime | None, bytes]] = []
    meta = b""
    literal: bytes | None = None
    for line in lines:
        if isinstance(line, (bytearray, memoryview)):
            literal = bytes(line)
            continue
        if _FETCH_HEAD.match(line):
            meta, literal = line, None
            continue
        if literal is not None and meta:
            meta += b" " + line  # the attributes after the literal, up to ")"
            if line.rstrip().endswith(b")"):
                uid_match = _UID.search(meta)
                date_match = _INTERNALDATE.search(meta)
                if uid_match:
                    when = None
                    if date_match:
                        try:
                            when = dt.datetime.strptime(
                                date_match.group(1).decode(), "%d-%b-%Y %H:%M:%S %z"
                            ).astimezone(UTC)
                        except ValueError:
                            when = None
                    out.append((int(uid_match.group(1)), when, literal))
                meta, literal = b"", None
    return out


def _drop(client: aioimaplib.IMAP4) -> None:
    """Close the socket whatever state the session is in (a dead server answers no LOGOUT)."""
    transport = getattr(client.protocol, "transport", None)
    if transport is not None and not transport.is_closing():
        transport.close()
    for task in list(getattr(client, "tasks", ())):
        task.cancel()


class ImapReceiver:
    """Reads one e-mail channel's mailboxes over IMAP."""

    def __init__(self, config: EmailConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.code = config.code
        self._ssl = ssl_context
        self._client: aioimaplib.IMAP4 | None = None
        self._selected: str | None = None
        self.idle_supported: bool | None = None
        self.last_error: str | None = None

    def provide_status(self, status: dict[str, Any]) -> None:
        """Health for ``/healthz`` (wazo's ``provide_status`` pattern): this mailbox's IMAP
        link under ``status["channels"][code]``."""
        status.setdefault("channels", {})[self.code] = {
            "imap": "ok" if self._client is not None else "down",
            "idle": bool(self.idle_supported),
            "last_error": self.last_error,
        }

    async def connect(self) -> None:
        cfg = self.config
        if cfg.imap_security == "ssl":
            client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                host=cfg.imap_host,
                port=cfg.imap_port,
                timeout=cfg.timeout_s,
                ssl_context=self._ssl,
            )
        else:
            client = aioimaplib.IMAP4(host=cfg.imap_host, port=cfg.imap_port, timeout=cfg.timeout_s)
        try:
            await client.wait_hello_from_server()
            response = await client.login(cfg.login_imap, cfg.imap_password.get_secret_value())
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            _drop(client)
            raise ImapError(f"IMAP {cfg.imap_host}:{cfg.imap_port}: {exc!r}") from exc
        if response.result != "OK":
            _drop(client)
            raise ImapError(f"IMAP login as {cfg.login_imap} refused: {response.lines[-1:]!r}")
        self._client = client
        self._selected = None
        self.idle_supported = client.has_capability("IDLE")
        log.info(
            "email channel=%s: IMAP connected to %s:%s (IDLE %s)",
            self.code,
            cfg.imap_host,
            cfg.imap_port,
            "yes" if self.idle_supported else "no",
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.has_pending_idle():
                client.idle_done()
            await asyncio.wait_for(client.logout(), 5)
        except (OSError, TimeoutError, aioimaplib.AioImapException):
            pass
        finally:
            _drop(client)

    def _need(self) -> aioimaplib.IMAP4:
        if self._client is None:
            raise ImapError("IMAP not connected")
        return self._client

    async def _select(self, mailbox: str) -> int:
        client = self._need()
        try:
            response = await client.select(mailbox)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IMAP SELECT {mailbox}: {exc!r}") from exc
        if response.result != "OK":
            raise ImapError(f"IMAP SELECT {mailbox} refused: {response.lines[-1:]!r}")
        self._selected = mailbox
        for line in response.lines:
            if isinstance(line, bytes) and (m := _UIDVALIDITY.search(line)):
                return int(m.group(1))
        raise ImapError(f"IMAP SELECT {mailbox}: no UIDVALIDITY in the answer")

    async def fetch_new(self, state: MailboxState) -> MailBatch:
        """The next batch of messages above ``state.last_uid`` in ``state.mailbox``."""
        client = self._need()
        uidvalidity = await self._select(state.mailbox)
        changed = state.uidvalidity is not None and state.uidvalidity != uidvalidity
        last_uid = 0 if changed else state.last_uid
        if changed:
            log.warning(
                "email channel=%s mailbox=%s: UIDVALIDITY changed %s -> %s, reading it anew",
                self.code,
                state.mailbox,
                state.uidvalidity,
                uidvalidity,
            )
        try:
            found = await client.uid_search(f"UID {last_uid + 1}:*", charset=None)
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IMAP UID SEARCH: {exc!r}") from exc
        if found.result != "OK":
            raise ImapError(f"IMAP UID SEARCH refused: {found.lines[-1:]!r}")
        uids = sorted(
            {int(tok) for line in found.lines[:-1] for tok in line.split() if tok.isdigit()}
        )
        # "N:*" always matches the highest UID, even below N
        uids = [uid for uid in uids if uid > last_uid]
        batch = uids[: self.config.fetch_batch]
        new_state = MailboxState(state.mailbox, uidvalidity, last_uid)
        if not batch:
            return MailBatch(new_state, [], changed, False)
        try:
            response = await client.uid(
                "fetch", ",".join(map(str, batch)), "(UID INTERNALDATE BODY.PEEK[])"
            )
        except (OSError, TimeoutError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IMAP UID FETCH: {exc!r}") from exc
        if response.result != "OK":
            raise ImapError(f"IMAP UID FETCH refused: {response.lines[-1:]!r}")
        mails: list[FetchedMail] = []
        for uid, when, raw in sorted(_parse_fetch(response.lines)):
            if uid <= last_uid:
                continue
            message = parse_email(
                raw,
                channel=self.code,
                received_at=when,
                attachment_max_bytes=self.config.attachment_max_bytes,
            )
            mails.append(FetchedMail(uid, raw, message))
        top = max((m.uid for m in mails), default=last_uid)
        # a UID the server listed but did not return (expunged meanwhile) is passed over
        top = max(top, batch[-1])
        return MailBatch(replace(new_state, last_uid=top), mails, changed, len(uids) > len(batch))

    async def wait_for_news(self, timeout: float | None = None) -> bool:
        """Wait for the selected mailbox to change: IDLE when the server has it and the config
        allows (True when the server announced something), else sleep the poll interval."""
        cfg = self.config
        client = self._need()
        if not (cfg.idle and self.idle_supported and self._selected):
            await asyncio.sleep(timeout if timeout is not None else cfg.poll_interval_s)
            return False
        wait = timeout if timeout is not None else cfg.idle_renew_s
        try:
            idle = await client.idle_start(timeout=wait)
            try:
                pushed = await client.wait_server_push(timeout=wait + 5)
            finally:
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(idle, cfg.timeout_s)
        except TimeoutError:
            return False
        except (OSError, aioimaplib.AioImapException) as exc:
            raise ImapError(f"IMAP IDLE: {exc!r}") from exc
        if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
            return False
        return any(b"EXISTS" in line for line in pushed if isinstance(line, bytes))

    async def watch(
        self,
        states: Mapping[str, MailboxState],
        handle: Callable[[MailBatch], Awaitable[None]],
        *,
        backoff_s: Sequence[float] = (1, 2, 5, 15, 30, 60),
    ) -> None:
        """Run until cancelled: drain every configured mailbox (``handle`` gets each batch and
        must persist ``batch.state`` with the messages), then wait for news; reconnect with
        back-off when the connection fails. ``states`` is keyed by mailbox name."""
        current = {box: states.get(box, MailboxState(box)) for box in self.config.mailboxes}
        failures = 0
        while True:
            try:
                if self._client is None:
                    await self.connect()
                for box in self.config.mailboxes:
                    while True:
                        batch = await self.fetch_new(current[box])
                        if batch.mails or batch.state != current[box]:
                            await handle(batch)
                        current[box] = batch.state
                        if not batch.more:
                            break
                failures, self.last_error = 0, None
                if len(self.config.mailboxes) > 1:
                    # IDLE watches one mailbox: with several, poll them all
                    await asyncio.sleep(self.config.poll_interval_s)
                else:
                    await self.wait_for_news()
            except ImapError as exc:
                delay = backoff_s[min(failures, len(backoff_s) - 1)]
                failures += 1
                self.last_error = str(exc)
                log.warning("email channel=%s: %s; reconnecting in %s s", self.code, exc, delay)
                await self.close()
                await asyncio.sleep(delay)


# --------------------------------------------------------------------------- sending


@dataclass(frozen=True, slots=True)
class OutboundEmail:
    """A letter to send. ``in_reply_to``/``references`` thread it under the client's letter
    (``references`` should be the parent's References plus the parent's Message-ID)."""

    to: tuple[str, ...]
    subject: str
    text: str
    html: str | None = None
    cc: tuple[str, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    attachments: tuple[OutboundMedia, ...] = ()


def quote_reply(text: str, original: str, attribution: str) -> tuple[str, str]:
    """A reply with the letter it answers quoted below it, as mail programs do: the plain
    text with ``> `` before each quoted line, and the HTML with the original in a
    ``<blockquote type="cite">``. Everything is escaped: the HTML holds no markup of the
    client's or the manager's."""
    quoted_lines = original.replace("\r\n", "\n").rstrip("\n").split("\n")
    plain_quote = "\n".join(">" if not line else f"> {line}" for line in quoted_lines)
    plain = (
        f"{text.rstrip()}\n\n{attribution}\n{plain_quote}\n"
        if text.strip()
        else (f"{attribution}\n{plain_quote}\n")
    )

    def paragraphs(value: str) -> str:
        lines = value.replace("\r\n", "\n").rstrip("\n").split("\n")
        return "<br>\n".join(html_escape(line) for line in lines)

    body = f"<div>{paragraphs(text)}</div>\n" if text.strip() else ""
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n'
        f"{body}<div>{html_escape(attribution)}</div>\n"
        '<blockquote type="cite" style="margin:0 0 0 .8ex;border-left:1px solid #ccc;'
        f'padding-left:1ex">\n{paragraphs(original)}\n</blockquote>\n</body></html>\n'
    )
    return plain, html


def build_message(config: EmailConfig, letter: OutboundEmail, *, message_id: str) -> EmailMessage:
    """The MIME message (pure): text, optional HTML alternative, attachments, threading."""
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((config.display_name or "", config.address))
    msg["To"] = ", ".join(letter.to)
    if letter.cc:
        msg["Cc"] = ", ".join(letter.cc)
    msg["Subject"] = letter.subject
    msg["Message-ID"] = message_id
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    if letter.in_reply_to:
        msg["In-Reply-To"] = letter.in_reply_to
        refs = list(letter.references)
        if letter.in_reply_to not in refs:
            refs.append(letter.in_reply_to)
        msg["References"] = " ".join(refs)
    elif letter.references:
        msg["References"] = " ".join(letter.references)
    msg.set_content(letter.text)
    if letter.html:
        msg.add_alternative(letter.html, subtype="html")
    for media in letter.attachments:
        if media.data is None:
            raise ChannelSendFailed(
                "invalid", "an e-mail attachment needs data, not a link", retryable=False
            )
        maintype, _, subtype = (media.mime or "application/octet-stream").partition("/")
        msg.add_attachment(
            media.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=media.filename or "attachment",
        )
    return msg


class EmailAdapter:
    """One mailbox (``EmailConfig``): SMTP sending here, IMAP reading via :meth:`receiver`."""

    kind: ClassVar[ChannelKind] = "email"

    def __init__(self, config: EmailConfig, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.code = config.code
        self._ssl = ssl_context

    @classmethod
    def validate_config(cls, raw: Mapping[str, Any]) -> EmailConfig:
        from channels.config import parse_channel_config

        cfg = parse_channel_config({**raw, "kind": raw.get("kind", "email")})
        if not isinstance(cfg, EmailConfig):
            raise ChannelConfigInvalid("not an email channel", problems={"kind": "email"})
        return cfg

    def receiver(self) -> ImapReceiver:
        """A new IMAP reader for this mailbox (one per background task)."""
        return ImapReceiver(self.config, ssl_context=self._ssl)

    async def close(self) -> None:
        return None

    messaging_window_open = staticmethod(always_open)

    def new_message_id(self) -> str:
        domain = self.config.address.rsplit("@", 1)[-1]
        return email.utils.make_msgid(domain=domain)

    async def send_email(self, letter: OutboundEmail) -> SendResult:
        """Send ``letter``; the result's id is the Message-ID we generated (the key a reply's
        In-Reply-To and a bounce's report will carry)."""
        cfg = self.config
        message_id = self.new_message_id()
        msg = build_message(cfg, letter, message_id=message_id)
        password = cfg.smtp_password.get_secret_value() if cfg.smtp_password else None
        try:
            errors, answer = await aiosmtplib.send(
                msg,
                hostname=cfg.smtp_host,
                port=cfg.smtp_port,
                username=cfg.login_smtp if password is not None else None,
                password=password,
                use_tls=cfg.smtp_security == "ssl",
                start_tls=cfg.smtp_security == "starttls",
                tls_context=self._ssl,
                timeout=cfg.timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            code = exc.recipients[0].code if exc.recipients else 550
            raise ChannelSendFailed(
                str(code), f"recipients refused: {refused}", retryable=False
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise ChannelSendFailed(
                str(exc.code), f"SMTP {exc.code}: {exc.message}", retryable=400 <= exc.code < 500
            ) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise ChannelSendFailed(
                "transport",
                f"SMTP {cfg.smtp_host}:{cfg.smtp_port} unreachable: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        if errors:
            log.warning(
                "email channel=%s message_id=%s: some recipients refused: %s",
                self.code,
                message_id,
                errors,
            )
        return SendResult(
            provider_message_id=message_id,
            raw={"smtp": answer, "refused": {k: list(v) for k, v in errors.items()}},
        )

    async def send_text(
        self,
        to: str,
        text: str,
        *,
        reply_to: str | None = None,
        subject: str | None = None,
        references: Sequence[str] = (),
    ) -> SendResult:
        """A plain letter; with ``reply_to`` (the client's Message-ID) it threads under it."""
        return await self.send_email(
            OutboundEmail(
                to=(to,),
                subject=subject if subject is not None else ("Re: " if reply_to else ""),
                text=text,
                in_reply_to=reply_to,
                references=tuple(references),
            )
        )

    async def send_media(
        self,
        to: str,
        media: OutboundMedia,
        *,
        caption: str | None = None,
        reply_to: str | None = None,
    ) -> SendResult:
        return await self.send_email(
            OutboundEmail(
                to=(to,),
                subject=media.filename or "",
                text=caption or "",
                in_reply_to=reply_to,
                attachments=(media,),
            )
        )
