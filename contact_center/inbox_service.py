"""The inbox's application service: channel adapters in, conversations in the CRM, replies out.

:class:`Inbox` holds one adapter per configured channel (built by the composition root from
``settings.channels``). A webhook delivery is verified by its adapter (a forged or unsigned one
is refused and logged with the reason) and stored as it arrived; a worker processes the
stored deliveries in batches — messages and status updates in one transaction per batch —
and then the events go on the bus (the assigned manager's ``/ws`` gets ``message.new``).
Storing is idempotent on the provider's message id, so Meta's redeliveries store one message.
Replies are written to the outbox by the API and sent by the durable job
:meth:`Inbox.send_job`: a retryable provider failure is retried with back-off by the scheduler,
a permanent one (or the last attempt) shows on the message as failed with the provider's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import mimetypes
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.base import (
    Inbound,
    InboundMessage,
    MediaFetcher,
    MediaSender,
    MessageTemplate,
    OutboundMedia,
    SendResult,
    StatusUpdate,
    TemplateSender,
    WebhookParser,
    WebhookRequest,
)
from channels.config import ChannelConfig, EmailConfig
from channels.errors import (
    ChannelConfigInvalid,
    ChannelSendFailed,
    MediaRefused,
    PayloadInvalid,
    SignatureInvalid,
)
from channels.mail import EmailAdapter, MailBatch, MailboxState, OutboundEmail, quote_reply
from channels.registry import Adapter, build_adapter
from channels.whatsapp import WhatsAppAdapter
from contact_center.inbox_queue import DIRECT_BELOW, DIRECT_WAIT, DeliveryQueue, Outcome
from crm_core.access import Actor
from crm_core.clock import Clock
from crm_core.conversations import service as conversations
from crm_core.conversations.batch import receive_many
from crm_core.conversations.model import Conversation, Delivery, Message
from crm_core.distribution.service import RuleBook
from crm_core.errors import InvalidInput, NotFound
from crm_core.events import DomainEvent
from crm_core.jobs.model import ScheduledJob
from crm_core.notifications import service as notifications
from crm_core.ports import EventPublisher
from crm_core.rules import CrmRules
from crm_core.users.model import User
from recordings.storage import Storage

log = logging.getLogger(__name__)

TEMPLATES_TTL_S = 600.0
# A status report of a message not stored yet is taken again for this long (the send job
# commits the provider's id after the provider answered; its report may be quicker).
STATUS_GRACE = timedelta(seconds=60)


# Photos go as photos (WhatsApp takes JPEG and PNG as images, up to 5 MB; Telegram photos up to
# 10 MB); a larger picture and any other file as a document.
PHOTO_TYPES = frozenset({"image/jpeg", "image/png"})
PHOTO_MAX_BYTES = 5 * 1024 * 1024
CAPTION_MAX = 1024  # WhatsApp's and Telegram's caption limit
MiB = 1024 * 1024
# What a manager may attach, by extension: the types every channel delivers (WhatsApp's
# document and image types), each with the first bytes its files start with, so a renamed
# program or a page saved as ".pdf" is refused rather than sent.
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .doc, .xls, .ppt
_ZIP = b"PK\x03\x04"  # .docx, .xlsx, .pptx
UPLOAD_TYPES: dict[str, tuple[str, tuple[bytes, ...]]] = {
    ".jpg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".jpeg": ("image/jpeg", (b"\xff\xd8\xff",)),
    ".png": ("image/png", (b"\x89PNG\r\n\x1a\n",)),
    ".pdf": ("application/pdf", (b"%PDF-",)),
    ".doc": ("application/msword", (_OLE,)),
    ".xls": ("application/vnd.ms-excel", (_OLE,)),
    ".ppt": ("application/vnd.ms-powerpoint", (_OLE,)),
    ".docx": (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        (_ZIP,),
    ),
    ".xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", (_ZIP,)),
    ".pptx": (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        (_ZIP,),
    ),
    ".txt": ("text/plain", ()),
    ".csv": ("text/csv", ()),
}
GENERIC_TYPES = frozenset({"", "application/octet-stream"})


def _mib(size: int) -> str:
    return f"{size / MiB:.1f}".rstrip("0").rstrip(".").replace(".", ",") + " МБ"


def check_upload(filename: str, declared: str | None, data: bytes, max_bytes: int) -> str:
    """The content type of a file a manager attached, or ``InvalidInput`` naming what is
    wrong with it: empty, over the channel's limit, a type that is not sent, or contents that
    are not what the name says."""
    name = Path(filename or "").name or "файл"
    field = {"field": "files", "value": name}
    if not data:
        raise InvalidInput(f"Файл «{name}» пустой — выберите другой", details=field)
    if len(data) > max_bytes:
        raise InvalidInput(
            f"Файл «{name}»: {_mib(len(data))} — больше предела {_mib(max_bytes)} для этого "
            "канала; уменьшите файл или отправьте ссылку",
            details={**field, "size": len(data), "max_bytes": max_bytes},
        )
    known = UPLOAD_TYPES.get(Path(name).suffix.lower())
    if known is None:
        raise InvalidInput(
            f"Файл «{name}»: такой тип не отправляется — подойдут изображения JPEG и PNG, "
            "PDF, документы Word, Excel, PowerPoint, TXT и CSV",
            details=field,
        )
    mime, magics = known
    said = (declared or "").split(";", 1)[0].strip().lower()
    aliases = {mime, "image/jpg"} if mime == "image/jpeg" else {mime}
    if said not in GENERIC_TYPES and said not in aliases:
        raise InvalidInput(
            f"Файл «{name}»: браузер назвал его {said}, а по имени это {mime} — проверьте файл",
            details={**field, "declared": said, "expected": mime},
        )
    if magics and not data.startswith(magics):
        raise InvalidInput(
            f"Файл «{name}»: содержимое не похоже на {Path(name).suffix.lower()[1:].upper()} — "
            "файл повреждён или переименован",
            details={**field, "expected": mime},
        )
    return mime


def to_incoming(
    item: InboundMessage,
    kind: str,
    channel_name: str | None = None,
    *,
    owner_id: int | None = None,
) -> conversations.Incoming:
    """A channel adapter's message in the CRM's terms (``channel_name``: what people see;
    ``owner_id``: the manager of a personal mailbox)."""
    email = item.email
    payload: dict[str, Any] = {}
    if item.referral is not None:
        payload["referral"] = dataclasses.asdict(item.referral)
    if item.location is not None:
        payload["location"] = dataclasses.asdict(item.location)
    if item.contacts:
        payload["contacts"] = [dataclasses.asdict(c) for c in item.contacts]
    if item.payload:
        payload["payload"] = item.payload
    if item.start_payload:
        payload["start_payload"] = item.start_payload
    if email is not None:
        payload["email"] = {
            "subject": email.subject,
            "message_id": email.message_id,
            "references": list(email.references),
            "auto_reply": email.auto_reply,
            "bounce": email.bounce is not None,
        }
    attachments = tuple(
        {
            "ref": a.ref,
            "mime": a.mime,
            "size": a.size,
            "filename": a.filename,
            "caption": a.caption,
            "refused": a.refused,
        }
        for a in item.attachments
    )
    return conversations.Incoming(
        channel=item.channel,
        channel_kind=kind,
        provider_message_id=item.provider_message_id,
        identity_kind=item.sender.kind,
        identity_value=item.sender.value,
        sent_at=item.sent_at,
        kind=item.kind,
        text=item.text,
        sender_name=item.sender_name,
        phone=item.sender_phone,
        email=item.sender.value if item.sender.kind == "email" else None,
        aliases=tuple((i.kind, i.value) for i in item.also_known_as),
        thread_key=email.thread_root if email is not None else "",
        attachments=attachments,
        payload=payload or None,
        reply_to=item.reply_to,
        creates_client=not (email is not None and email.creates_nothing),
        channel_name=channel_name,
        owner_id=owner_id,
    )


class Inbox:
    """The configured channels and what goes through them."""

    def __init__(
        self,
        configs: Sequence[ChannelConfig],
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventPublisher,
        rules: CrmRules,
        clock: Clock,
        timezone: str = "Europe/Moscow",
        adapters: Mapping[str, Adapter] | None = None,
        rulebook: Callable[[], Awaitable[RuleBook]] | None = None,
        capacity: int | None = None,
        off_hours_reply: str | None = None,
        storage: Storage | None = None,
        work_dir: Path | None = None,
        ack_wait: float = 0.0,
        batch: int = 200,
        direct_below: int = DIRECT_BELOW,
        direct_wait: float = DIRECT_WAIT,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self.rules = rules
        self._clock = clock
        self._timezone = timezone
        self._rulebook = rulebook  # the distribution rules, cached by the dialplan
        self.capacity = capacity
        self.off_hours_reply = off_hours_reply
        self.storage = storage  # attachments are kept where the recordings are
        self.work_dir = work_dir or Path(tempfile.gettempdir())
        self.configs = {c.code: c for c in configs}
        self.adapters: dict[str, Adapter] = (
            dict(adapters) if adapters is not None else {c.code: build_adapter(c) for c in configs}
        )
        self.received = 0
        self.refused = 0
        self._mail_tasks: list[asyncio.Task[None]] = []
        self._templates: dict[str, tuple[float, list[MessageTemplate]]] = {}
        self._parsers: dict[int, tuple[Adapter, bool]] = {}
        self.deliveries = DeliveryQueue(
            sessions,
            self._process,
            bus=bus,
            clock=clock,
            ack_wait=ack_wait,
            batch=batch,
            direct_below=direct_below,
            direct_wait=direct_wait,
        )

    def start(self) -> None:
        """The webhook deliveries' worker (it first takes what a previous run left stored) and
        the IMAP readers."""
        self.deliveries.start()
        self.start_mail()

    async def close(self) -> None:
        await self.deliveries.stop()
        await self.stop_mail()
        for adapter in self.adapters.values():
            await adapter.close()

    # ---------------------------------------------------------------- e-mail

    def start_mail(self) -> None:
        """One background reader per e-mail channel (IMAP IDLE where the server has it,
        polling otherwise), from where the stored cursors say reading got to."""
        for code, adapter in self.adapters.items():
            if isinstance(adapter, EmailAdapter) and adapter.config.imap_enabled:
                self._mail_tasks.append(
                    asyncio.create_task(self._read_mailbox(code, adapter), name=f"imap:{code}")
                )

    async def stop_mail(self) -> None:
        for task in self._mail_tasks:
            task.cancel()
        for task in self._mail_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._mail_tasks.clear()

    async def _read_mailbox(self, code: str, adapter: EmailAdapter) -> None:
        receiver = adapter.receiver()
        try:
            while True:
                try:
                    async with self._sessions() as session:
                        cursors = await conversations.mailbox_cursors(session, code)
                    states = {
                        box: MailboxState(box, validity, last)
                        for box, (validity, last) in cursors.items()
                    }
                    await receiver.watch(states, lambda batch: self.store_mail(code, batch))
                except asyncio.CancelledError:
                    raise
                except Exception:  # the database away: keep the reader alive
                    log.exception("email channel=%s: reading the mailbox failed", code)
                    await asyncio.sleep(5)
        finally:
            await receiver.close()

    async def store_mail(self, code: str, batch: MailBatch) -> None:
        """Store a batch of letters and the mailbox's new cursor in one transaction. A bounce
        marks our letter failed and creates nothing; an auto-reply creates no lead."""
        now = self._clock.now()
        events: list[DomainEvent] = []
        async with self._sessions() as session:
            for mail in batch.mails:
                message = mail.message
                details = message.email
                if details is not None and details.bounce is not None:
                    bounce = details.bounce
                    log.info(
                        "email channel=%s uid=%s: bounce for %s (%s %s)",
                        code,
                        mail.uid,
                        bounce.recipient,
                        bounce.status,
                        bounce.action,
                    )
                    if bounce.recipient and bounce.permanent:
                        await conversations.record_bounce(
                            session,
                            bounce.recipient,
                            at=message.sent_at,
                            channel=code,
                            status=bounce.status,
                            reason=bounce.diagnostic,
                            message_id=bounce.original_message_id,
                        )
                    if bounce.original_message_id and bounce.permanent:
                        _, status_events = await conversations.apply_status(
                            session,
                            code,
                            bounce.original_message_id,
                            "failed",
                            at=message.sent_at,
                            error=f"{bounce.status or ''} {bounce.diagnostic or ''}".strip(),
                        )
                        events.extend(status_events)
                    continue
                got = await conversations.receive(
                    session,
                    to_incoming(
                        message,
                        "email",
                        self.label(code),
                        owner_id=await self._owner(session, code),
                    ),
                    rules=self.rules,
                    now=now,
                    default_timezone=self._timezone,
                    book=await self._book(),
                    capacity=self.capacity,
                    off_hours_reply=self.off_hours_reply,
                )
                events.extend(got.events)
            state = batch.state
            await conversations.save_mailbox_cursor(
                session, code, state.mailbox, state.uidvalidity, state.last_uid, now=now
            )
            events.extend(await notifications.record(session, events, now=now))
            await session.commit()
        self.received += len(batch.mails)
        for event in events:
            await self._bus.publish(event)

    async def _owner(self, session: AsyncSession, code: str) -> int | None:
        """The manager a personal mailbox belongs to (``owner:`` his login), or None: a shared
        mailbox, or an owner who is not an active user (logged; its mail is shared then)."""
        cfg = self.configs.get(code)
        login = getattr(cfg, "owner", None)
        if not login:
            return None
        user_id = await session.scalar(
            select(User.id).where(User.login == login, User.is_active.is_(True))
        )
        if user_id is None:
            log.warning(
                "email channel=%s: owner %r is not an active user; the mail goes to everyone",
                code,
                login,
            )
        return user_id

    def address(self, code: str) -> str | None:
        """The From address of an e-mail channel."""
        cfg = self.configs.get(code)
        return cfg.address if isinstance(cfg, EmailConfig) else None

    def upload_limit(self, code: str) -> int | None:
        """The largest file channel ``code`` sends, or None when it sends none (SMS) or the
        server keeps no files (no storage)."""
        cfg = self.configs.get(code)
        if self.storage is None or cfg is None or cfg.kind == "sms":
            return None
        limit = getattr(cfg, "attachment_max_bytes", None) or getattr(cfg, "media_max_bytes", None)
        return int(limit) if limit else None

    async def store_files(
        self, code: str, files: Sequence[tuple[str, str | None, bytes]]
    ) -> list[dict[str, Any]]:
        """Check (``check_upload``) and keep a manager's files ``(name, type, bytes)`` for a
        reply on channel ``code``, where the clients' attachments are kept; what the message
        stores of each. All are checked before any is kept."""
        if not files:
            return []
        if len(files) > conversations.ATTACHMENTS_MAX:
            raise InvalidInput(
                f"files: не больше {conversations.ATTACHMENTS_MAX} файлов в одном сообщении — "
                "отправьте остальные следующим",
                details={"field": "files", "max": conversations.ATTACHMENTS_MAX},
            )
        limit = self.upload_limit(code)
        if limit is None:
            raise InvalidInput(
                f"files: канал {self.label(code)} не отправляет файлы — напишите текстом",
                details={"field": "files"},
            )
        checked = [
            (name, check_upload(name, declared, data, limit), data)
            for name, declared, data in files
        ]
        assert self.storage is not None  # upload_limit() said there is one
        kept: list[dict[str, Any]] = []
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for name, mime, data in checked:
            suffix = Path(name).suffix.lower()
            with tempfile.NamedTemporaryFile(dir=self.work_dir, suffix=suffix) as tmp:
                tmp.write(data)
                tmp.flush()
                stored = await self.storage.put(Path(tmp.name), suffix)
            kept.append(
                {
                    "key": stored.key,
                    "mime": mime,
                    "size": stored.size,
                    "filename": Path(name).name[:200],
                    "sha256": stored.sha256,
                }
            )
        return kept

    async def drop_files(self, kept: Sequence[Mapping[str, Any]]) -> None:
        """Delete files kept for a reply that was then refused."""
        if self.storage is None:
            return
        for item in kept:
            with contextlib.suppress(Exception):
                await self.storage.delete(str(item["key"]))

    def provide_status(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "channels": {code: a.kind for code, a in self.adapters.items()},
            "received": self.received,
            "refused": self.refused,
            "deliveries": self.deliveries.provide_status(),
        }

    async def _book(self) -> RuleBook | None:
        return await self._rulebook() if self._rulebook is not None else None

    def adapter(self, kind: str, code: str) -> Adapter:
        """The adapter of channel ``code``, which must be of ``kind``."""
        adapter = self.adapters.get(code)
        if adapter is None or adapter.kind != kind:
            raise NotFound(f"no {kind} channel {code!r}")
        return adapter

    def label(self, code: str) -> str:
        """The channel's name people see: its ``name`` in config, else its kind's label
        ("WhatsApp", "Telegram"), with the code only to tell apart unnamed channels of one
        kind; the code alone when it is not configured (any more)."""
        cfg = self.configs.get(code)
        if cfg is None:
            return code
        label = conversations.channel_label(cfg.kind, cfg.name)
        if cfg.name is None and any(
            c.kind == cfg.kind and c.name is None and c.code != code for c in self.configs.values()
        ):
            return f"{label} {code}"
        return label

    # ---------------------------------------------------------------- webhooks

    def verify(self, code: str, query: Mapping[str, str]) -> str:
        """Meta's verification handshake: the challenge, or ``SignatureInvalid`` (logged)."""
        adapter = self.adapter("whatsapp", code)
        assert isinstance(adapter, WhatsAppAdapter)  # adapter() checked the kind
        try:
            return adapter.verify_subscription(query)
        except SignatureInvalid as exc:
            self.refused += 1
            log.warning("webhook whatsapp/%s: verification refused: %s", code, exc.reason)
            raise

    async def ingest(
        self, kind: str, code: str, request: WebhookRequest, *, peer: str | None = None
    ) -> int:
        """Verify one webhook delivery and store it as it arrived; the number of items it
        carried. It is processed by the deliveries' worker in a batch with the others waiting
        (:mod:`contact_center.inbox_queue`); this waits for that, at most ``ack_wait`` seconds.

        ``SignatureInvalid`` (forged, unsigned) is logged with its reason and re-raised; the
        caller answers 403. A database failure propagates: the provider gets a 5xx and
        redelivers, and the redelivery stores each message once."""
        adapter = self.adapter(kind, code)
        if not self._parses(adapter):
            raise NotFound(f"channel {code!r} takes no webhooks")
        try:
            items = cast(WebhookParser, adapter).parse_webhook(request)  # _parses() said so
        except SignatureInvalid as exc:
            self.refused += 1
            log.warning(
                "webhook %s/%s refused from %s: %s (%d bytes)",
                kind,
                code,
                peer,
                exc.reason,
                len(request.body),
            )
            raise
        if not items:
            return 0
        await self.deliveries.put(kind, code, request, parsed=items)
        return len(items)

    def _parses(self, adapter: Adapter) -> bool:
        """Whether ``adapter`` takes webhooks (a Protocol's isinstance is slow: asked once)."""
        known = self._parsers.get(id(adapter))
        if known is None or known[0] is not adapter:
            known = self._parsers[id(adapter)] = (adapter, isinstance(adapter, WebhookParser))
        return known[1]

    async def _process(
        self, session: AsyncSession, rows: Sequence[Delivery], now: datetime
    ) -> Outcome:
        """The deliveries' messages and statuses stored in the caller's transaction, in the
        order they arrived. A delivery whose channel is gone or that no longer verifies is kept
        (logged) to be taken again; so is one with a status of a message not stored yet (the
        send job's commit may come after the provider's report), for ``STATUS_GRACE``."""
        events: list[DomainEvent] = []
        retry: dict[int, str] = {}
        parsed: list[tuple[Delivery, list[Inbound]]] = []
        book = await self._book()
        for row in rows:
            adapter = self.adapters.get(row.channel)
            if adapter is None or adapter.kind != row.kind or not self._parses(adapter):
                log.error(
                    "webhook %s/%s delivery %s: the channel is not configured; kept",
                    row.kind,
                    row.channel,
                    row.id,
                )
                retry[row.id] = "канал не настроен"
                continue
            items = self.deliveries.parsed.pop(row.id, None)
            if items is not None:  # the webhook's own reading of it (verified then)
                parsed.append((row, items))
                continue
            request = WebhookRequest(
                method=row.method,
                headers=row.headers,
                body=row.body,
                query=row.query,
                received_at=row.received_at,
            )
            try:
                items = cast(WebhookParser, adapter).parse_webhook(request)  # _parses()
            except (SignatureInvalid, PayloadInvalid) as exc:
                log.error(
                    "webhook %s/%s delivery %s no longer reads: %s; kept",
                    row.kind,
                    row.channel,
                    row.id,
                    exc,
                )
                retry[row.id] = str(exc)
                continue
            parsed.append((row, items))
        # The messages of every delivery at once (set-based), then the status reports.
        incoming = [
            to_incoming(item, row.kind, self.label(row.channel))
            for row, items in parsed
            for item in items
            if isinstance(item, InboundMessage)
        ]
        if incoming:
            batch = await receive_many(
                session,
                incoming,
                rules=self.rules,
                now=now,
                default_timezone=self._timezone,
                book=book,
                capacity=self.capacity,
                off_hours_reply=self.off_hours_reply,
                fetch_media=self.storage is not None,
            )
            for again in batch.repeated:
                log.info(
                    "webhook %s/%s: message %s delivered again, stored once",
                    again.channel_kind,
                    again.channel,
                    again.provider_message_id,
                )
            events.extend(batch.events)
        statuses = [
            (row, item) for row, items in parsed for item in items if isinstance(item, StatusUpdate)
        ]
        # The status reports at once: their messages read in one query, written in one flush.
        known = await conversations.find_messages(
            session, [(row.channel, item.provider_message_id) for row, item in statuses]
        )
        reports: list[conversations.StatusReport] = []
        for row, item in statuses:
            if (row.channel, item.provider_message_id) not in known:
                if now - row.received_at < STATUS_GRACE:
                    retry[row.id] = f"статус {item.status} до сообщения"
                else:
                    log.info(
                        "webhook %s/%s: status %s of unknown message %s",
                        row.kind,
                        row.channel,
                        item.status,
                        item.provider_message_id,
                    )
                continue
            error = None
            if item.status == "failed":
                error = ": ".join(
                    p for p in (item.error_code, item.error_title, item.error_detail) if p
                )
            reports.append(
                conversations.StatusReport(
                    row.channel,
                    item.provider_message_id,
                    item.status,
                    at=item.at,
                    error=error,
                    cost=item.cost,
                    currency=item.currency,
                )
            )
        if reports:
            events.extend(await conversations.apply_statuses(session, reports, known))
        self.received += sum(len(items) for row, items in parsed if row.id not in retry)
        events.extend(await notifications.record(session, events, now=now))
        return Outcome(events, retry)

    # ---------------------------------------------------------------- replies

    async def templates(self, code: str) -> list[MessageTemplate]:
        """The channel's approved templates (WhatsApp), synced from the provider at most every
        ``TEMPLATES_TTL_S``; none for a channel without templates or when the sync fails
        (logged; the last good list is kept)."""
        adapter = self.adapters.get(code)
        if not isinstance(adapter, TemplateSender) or not getattr(adapter.config, "waba_id", None):
            return []
        cached = self._templates.get(code)
        now = time.monotonic()
        if cached is not None and now - cached[0] < TEMPLATES_TTL_S:
            return cached[1]
        try:
            found = await adapter.sync_templates()
        except (ChannelSendFailed, ChannelConfigInvalid) as exc:
            log.warning("channel=%s: template sync failed: %s", code, exc)
            return cached[1] if cached is not None else []
        self._templates[code] = (now, found)
        return found

    async def template(self, code: str, name: str, language: str) -> MessageTemplate | None:
        for item in await self.templates(code):
            if item.name == name and item.language == language:
                return item
        return None

    async def queue_template(
        self,
        session: AsyncSession,
        conversation_id: int,
        name: str,
        language: str,
        params: Sequence[str],
        *,
        actor: Actor,
        now: datetime,
    ) -> tuple[Message, list[DomainEvent]]:
        """An approved template of the conversation's channel into the outbox; an unknown
        template or a wrong number of values is refused, naming what is wrong."""
        conv = await conversations.get_conversation(
            session, conversation_id, actor=actor, rules=self.rules
        )
        known = await self.template(conv.channel, name, language)
        if known is None:
            raise InvalidInput(
                f"template: нет одобренного шаблона {name!r} ({language}) у этого канала — "
                "выберите шаблон из списка",
                details={"field": "template", "value": name},
            )
        if len(params) != len(known.params):
            raise InvalidInput(
                f"template.params: шаблон {name!r} ждёт значений: {len(known.params)}, "
                f"получено {len(params)}",
                details={"field": "template.params", "expected": len(known.params)},
            )
        return await conversations.queue_template(
            session,
            conversation_id,
            name=name,
            language=language,
            params=params,
            body=known.body,
            param_names=() if all(p.isdigit() for p in known.params) else known.params,
            actor=actor,
            rules=self.rules,
            now=now,
        )

    def window_open(self, conv: Conversation, now: datetime) -> bool:
        """May a free-form message go to ``conv`` now (WhatsApp: 24 h window)?"""
        adapter = self.adapters.get(conv.channel)
        if adapter is None:
            return True  # an unconfigured channel: the send job reports it on the message
        return adapter.messaging_window_open(conv.last_inbound_at, now)

    async def send_job(
        self, session: AsyncSession, job: ScheduledJob, now: datetime
    ) -> list[DomainEvent]:
        """The outbox's job: hand one queued message to its channel's provider."""
        message_id = int(job.payload["message_id"])
        out = await conversations.outgoing(session, message_id)
        if out is None:
            return []  # sent (or failed) already: a job that runs twice sends once
        adapter = self.adapters.get(out.channel)
        if adapter is None:
            return await conversations.mark_failed(
                session, message_id, f"канал {out.channel} не настроен", now=now
            )
        if out.template is None and not adapter.messaging_window_open(out.last_inbound_at, now):
            return await conversations.mark_failed(
                session,
                message_id,
                "окно 24 часов WhatsApp закрыто: нужен шаблон",
                now=now,
            )
        # The attempt is counted and the connection handed back before the provider is
        # called: no transaction waits on a provider that takes its time to answer.
        await session.commit()
        try:
            if out.template is not None:
                if not isinstance(adapter, TemplateSender):
                    return await conversations.mark_failed(
                        session, message_id, f"канал {out.channel} не отправляет шаблоны", now=now
                    )
                values = [str(p) for p in out.template.get("params") or ()]
                names = [str(n) for n in out.template.get("param_names") or ()]
                result = await adapter.send_template(
                    out.to,
                    str(out.template["name"]),
                    str(out.template["language"]),
                    dict(zip(names, values, strict=True)) if names else values,
                )
            elif isinstance(adapter, EmailAdapter):
                result = await adapter.send_email(await self._letter(out))
            elif out.attachments:
                result = await self._send_files(session, adapter, out)
            else:
                result = await adapter.send_text(out.to, out.text, reply_to=out.reply_to)
        except ChannelSendFailed as exc:
            last = job.attempts >= job.max_attempts
            log.warning(
                "send message=%s channel=%s attempt %d/%d failed: %s %s (retryable=%s)",
                message_id,
                out.channel,
                job.attempts,
                job.max_attempts,
                exc.code,
                exc.message,
                exc.retryable,
            )
            if exc.retryable and not last:
                raise  # the scheduler retries with back-off
            return await conversations.mark_failed(
                session, message_id, f"{exc.code}: {exc.message}", now=now
            )
        log.info(
            "sent message=%s channel=%s provider_id=%s",
            message_id,
            out.channel,
            result.provider_message_id,
        )
        return await conversations.mark_sent(
            session,
            message_id,
            result.provider_message_id,
            now=now,
            parts=result.parts,
            cost=result.cost,
            currency=result.currency,
        )

    async def _files(self, out: conversations.Outgoing) -> list[OutboundMedia]:
        """The message's files, read back from storage."""
        if not out.attachments:
            return []
        if self.storage is None:
            raise ChannelSendFailed("storage", "хранилище файлов не настроено", retryable=False)
        files: list[OutboundMedia] = []
        for item in out.attachments:
            data = bytearray()
            async for chunk in await self.storage.open_range(str(item["key"])):
                data += chunk
            mime = str(item.get("mime") or "application/octet-stream")
            files.append(
                OutboundMedia(
                    kind="image"
                    if mime in PHOTO_TYPES and len(data) <= PHOTO_MAX_BYTES
                    else "document",
                    data=bytes(data),
                    mime=mime,
                    filename=str(item.get("filename") or "file"),
                )
            )
        return files

    async def _letter(self, out: conversations.Outgoing) -> OutboundEmail:
        """The e-mail of a reply: its subject, threading, the quoted letter, the files."""
        text, html = out.text, None
        if out.quote is not None:
            when = out.quote.sent_at.astimezone(ZoneInfo(self._timezone))
            attribution = f"{when:%d.%m.%Y %H:%M}, {out.quote.author} <{out.to}>:"
            text, html = quote_reply(out.text, out.quote.text, attribution)
        return OutboundEmail(
            to=(out.to,),
            subject=out.subject or "",
            text=text,
            html=html,
            in_reply_to=out.reply_to,
            references=out.references,
            attachments=tuple(await self._files(out)),
        )

    async def _send_files(
        self, session: AsyncSession, adapter: Adapter, out: conversations.Outgoing
    ) -> SendResult:
        """A messenger's reply with files: each file a media message (photos as photos, the
        rest as documents), the text the first one's caption when it fits, else sent first.
        The first message's id is the one status updates are followed by. Each part the
        provider takes is written down at once, so a retry after a later part failed sends
        only the parts still missing (the client does not get the first file twice)."""
        if not isinstance(adapter, MediaSender):
            raise ChannelSendFailed(
                "invalid", f"канал {out.channel} не отправляет файлы", retryable=False
            )
        files = await self._files(out)
        sent = dict(out.sent_parts)

        async def part(key: str, send: Callable[[], Awaitable[SendResult]]) -> SendResult:
            if key in sent:
                return SendResult(sent[key])
            result = await send()
            sent[key] = result.provider_message_id
            await conversations.note_part_sent(
                session, out.message_id, key, result.provider_message_id
            )
            await session.commit()
            return result

        caption: str | None = out.text or None
        first: SendResult | None = None
        if caption is not None and len(caption) > CAPTION_MAX:
            first = await part(
                "text", partial(adapter.send_text, out.to, caption, reply_to=out.reply_to)
            )
            caption = None
        for index, media in enumerate(files):
            reply_to = out.reply_to if first is None else None
            result = await part(
                f"file:{index}",
                partial(adapter.send_media, out.to, media, caption=caption, reply_to=reply_to),
            )
            caption = None
            first = first or result
        assert first is not None
        return first

    async def media_job(
        self, session: AsyncSession, job: ScheduledJob, now: datetime
    ) -> list[DomainEvent]:
        """Download a client's attachment (WhatsApp media id, Telegram file_id) within the
        channel's size cap and keep it in storage; a refused one (too large, wrong type) is
        recorded with the reason, an unavailable one retried with back-off."""
        message_id, index = int(job.payload["message_id"]), int(job.payload["index"])
        message = await session.get(Message, message_id)
        if message is None or index >= len(message.attachments) or self.storage is None:
            return []
        attachment = message.attachments[index]
        if attachment.get("key"):
            return []  # stored by an earlier run
        adapter = self.adapters.get(message.channel)
        if not isinstance(adapter, MediaFetcher):
            return []
        await session.commit()  # no transaction held while the provider sends the file
        try:
            fetched = await adapter.fetch_media(str(attachment["ref"]))
        except MediaRefused as exc:
            log.warning("media message=%s #%s refused: %s", message_id, index, exc.message)
            await conversations.store_attachment(session, message_id, index, refused=exc.message)
            return []
        suffix = Path(attachment.get("filename") or "").suffix or _extension(fetched.mime)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.work_dir, suffix=suffix) as tmp:
            tmp.write(fetched.data)
            tmp.flush()
            stored = await self.storage.put(Path(tmp.name), suffix or "bin")
        await conversations.store_attachment(
            session,
            message_id,
            index,
            key=stored.key,
            size=stored.size,
            sha256=stored.sha256,
            mime=fetched.mime,
        )
        log.info(
            "media message=%s #%s stored as %s (%d bytes)",
            message_id,
            index,
            stored.key,
            stored.size,
        )
        return []


def _extension(mime: str) -> str:
    return mimetypes.guess_extension(mime.split(";", 1)[0].strip()) or ".bin"
