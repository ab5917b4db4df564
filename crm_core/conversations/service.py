"""Use cases of conversations: store what a client wrote (once), reply through the outbox,
notes, statuses, assignment, listings.

A message in is identified against the CRM: the conversation of its sender on that channel
already knows the client; a new one is looked up by phone (contacts, companies, open leads),
then by e-mail, then by the messenger id a contact card holds, then by the same identity on
another channel; an unknown sender becomes a lead whose source is the channel. The client's
responsible manager gets the conversation; a new client's goes by the distribution rules.

Every use case takes the caller's session, flushes, and returns ``(object, events)``: the
caller commits and then publishes the events. Writes are idempotent where providers repeat
themselves: a message is unique per ``(channel, provider_message_id)``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access, listing
from crm_core.access import Actor
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import ActivityKind
from crm_core.activities.schemas import ActivityInput
from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact, Email, MessengerId, Phone
from crm_core.conversations.events import (
    ConversationChanged,
    MessageNew,
    MessageStatusChanged,
    conversation_audience,
)
from crm_core.conversations.model import (
    STATUS_RANK,
    Conversation,
    ConversationStatus,
    EmailBounce,
    MailboxCursor,
    Message,
    MessageStatus,
)
from crm_core.db import fetch_pg, is_postgresql, utcnow, write_lock
from crm_core.distribution import service as distribution
from crm_core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from crm_core.events import DomainEvent
from crm_core.jobs import service as jobs
from crm_core.leads import service as leads
from crm_core.leads.model import Lead
from crm_core.leads.schemas import LeadInput
from crm_core.reference import service as reference
from crm_core.reference.model import Source, SourceKind
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tracking import service as tracking_service
from crm_core.tracking.model import TrackingVisitor
from crm_core.users.model import User

log = logging.getLogger(__name__)

SEND_JOB = "conversation.send"
MEDIA_JOB = "conversation.media"  # download a client's attachment into storage
SEND_ATTEMPTS = 6
SEND_BACKOFF = timedelta(seconds=5)
# The origin key of a missed call's call-back task (contact_center.call_outcomes writes it):
# reaching the client on any channel settles it.
MISSED_CALL_PREFIX = "missed-call:"
TEXT_MAX = 10_000
SUBJECT_MAX = 300
ATTACHMENTS_MAX = 10

CHANNEL_LABELS = {"whatsapp": "WhatsApp", "telegram": "Telegram", "sms": "SMS", "email": "E-mail"}
View = Literal["mine", "unassigned", "all"]


class WindowClosed(InvalidInput):
    """A free-form WhatsApp message outside the 24-hour customer service window."""

    error_id = "messaging-window-closed"


@dataclass(frozen=True)
class Incoming:
    """A client's message as the channel adapter read it, in the CRM's terms.

    ``identity_kind``/``identity_value`` say who wrote on this channel (``wa_id``,
    ``telegram``, ``phone``, ``email``); ``phone`` (E.164) and ``email`` are what identifies
    him across channels; ``aliases`` more ``(kind, value)`` identities of his."""

    channel: str
    channel_kind: str
    provider_message_id: str
    identity_kind: str
    identity_value: str
    sent_at: datetime
    kind: str = "text"
    text: str | None = None
    sender_name: str | None = None
    phone: str | None = None
    email: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()
    thread_key: str = ""
    attachments: tuple[dict[str, Any], ...] = ()
    payload: dict[str, Any] | None = None
    reply_to: str | None = None
    creates_client: bool = True  # auto-replies and bounces create no lead
    channel_name: str | None = None  # the channel's name people see (config), not its code
    owner_id: int | None = None  # a personal mailbox's manager: the conversation is his


@dataclass
class Received:
    """What storing an incoming message did; ``created`` False for a redelivery."""

    message: Message
    conversation: Conversation
    created: bool
    events: list[DomainEvent] = field(default_factory=list)
    lead_id: int | None = None


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def _preview(text: str | None, kind: str) -> str:
    if text:
        return text.strip().replace("\n", " ")[:200]
    return f"[{kind}]"


# ---------------------------------------------------------------- identification


@dataclass(frozen=True)
class _Client:
    contact_id: int | None
    company_id: int | None
    lead_id: int | None
    responsible_id: int | None
    name: str


async def _by_phone(session: AsyncSession, phone: str, rules: CrmRules) -> _Client | None:
    match = await clients.find_client_by_phone(session, phone, actor=access.SYSTEM, rules=rules)
    if match is None:
        return None
    return _Client(
        match.contact_id, match.company_id, match.lead_id, match.responsible_id, match.name
    )


async def _owner(
    session: AsyncSession, contact_id: int | None, company_id: int | None, lead_id: int | None
) -> _Client | None:
    """The card an e-mail or messenger id row belongs to, with its responsible."""
    if contact_id is not None:
        contact = await session.get(Contact, contact_id)
        if contact is not None and contact.merged_into_id is None:
            return _Client(contact.id, None, None, contact.responsible_id, contact.name)
    if company_id is not None:
        company = await session.get(Company, company_id)
        if company is not None and company.merged_into_id is None:
            return _Client(None, company.id, None, company.responsible_id, company.name)
    if lead_id is not None:
        lead = await session.get(Lead, lead_id)
        if lead is not None:
            name = lead.contact_name or lead.company_name or lead.title
            return _Client(lead.contact_id, lead.company_id, lead.id, lead.responsible_id, name)
    return None


async def _by_email(session: AsyncSession, address: str) -> _Client | None:
    rows = (
        await session.execute(
            select(Email.contact_id, Email.company_id, Email.lead_id)
            .where(Email.address == address.lower())
            .order_by(Email.contact_id.is_(None), Email.company_id.is_(None), Email.id.desc())
            .limit(5)
        )
    ).all()
    for row in rows:
        found = await _owner(session, row.contact_id, row.company_id, row.lead_id)
        if found is not None:
            return found
    return None


# The messenger-id channel an identity kind is stored under (messenger_ids.channel).
MESSENGER_OF = {"wa_id": "whatsapp", "telegram": "telegram"}


async def _by_messenger(session: AsyncSession, kind: str, value: str) -> _Client | None:
    channel = MESSENGER_OF.get(kind)
    if channel is None:
        return None
    contact_id = await session.scalar(
        select(MessengerId.contact_id).where(
            MessengerId.channel == channel, MessengerId.external_id == value
        )
    )
    return await _owner(session, contact_id, None, None) if contact_id else None


async def _by_other_conversation(
    session: AsyncSession, identities: Sequence[tuple[str, str]]
) -> _Client | None:
    """The same person already writing on another channel of the same kind."""
    for kind, value in identities:
        row = (
            await session.execute(
                select(Conversation.contact_id, Conversation.company_id, Conversation.lead_id)
                .where(
                    Conversation.identity_kind == kind,
                    Conversation.identity_value == value,
                    or_(
                        Conversation.contact_id.is_not(None),
                        Conversation.company_id.is_not(None),
                        Conversation.lead_id.is_not(None),
                    ),
                )
                .order_by(Conversation.id)
                .limit(1)
            )
        ).first()
        if row is not None:
            found = await _owner(session, row.contact_id, row.company_id, row.lead_id)
            if found is not None:
                return found
    return None


async def identify(session: AsyncSession, incoming: Incoming, rules: CrmRules) -> _Client | None:
    """Who wrote ``incoming`` among contacts, companies and leads, or None."""
    if incoming.phone:
        found = await _by_phone(session, incoming.phone, rules)
        if found is not None:
            return found
    if incoming.email:
        found = await _by_email(session, incoming.email)
        if found is not None:
            return found
    identities = [(incoming.identity_kind, incoming.identity_value), *incoming.aliases]
    for kind, value in identities:
        found = await _by_messenger(session, kind, value)
        if found is not None:
            return found
    return await _by_other_conversation(session, identities)


async def _source(
    session: AsyncSession, kind: str, code: str, name: str, parent_id: int | None = None
) -> Source:
    """The source ``(kind, code)``, created on first use; two first messages racing create it
    once (insert-if-absent on its unique key)."""
    source = await reference.find_source(session, kind, code)
    if source is not None:
        return source
    await session.execute(
        _insert(session)(Source)
        .values(
            kind=kind,
            code=code,
            name=name[:200],
            parent_id=parent_id,
            is_active=True,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["kind", "code"])
    )
    source = await reference.find_source(session, kind, code)
    assert source is not None
    return source


def channel_label(channel_kind: str, name: str | None = None) -> str:
    """What people see for a channel: its configured name, else its kind's ("WhatsApp")."""
    return name or CHANNEL_LABELS.get(channel_kind, channel_kind)


async def channel_source(
    session: AsyncSession, channel: str, channel_kind: str, name: str | None = None
) -> Source:
    """The lead source of a channel (created on first use), named as the channel is
    (``name`` from its config, else its kind: "WhatsApp"), never by its code. A source an
    earlier version named "WhatsApp (wa-main)" takes the name; one renamed by a person keeps
    his."""
    label = channel_label(channel_kind, name)
    source = await _source(session, SourceKind.OTHER.value, f"channel-{channel}"[:100], label)
    raw = f"{CHANNEL_LABELS.get(channel_kind, channel_kind)} ({channel})"
    if source.name == raw and label != raw:
        source.name = label[:200]
    return source


async def assign_new(
    session: AsyncSession,
    responsible_id: int | None,
    phone: str | None,
    now: datetime,
    rules: CrmRules,
    *,
    region_id: int | None = None,
    default_timezone: str = "Europe/Moscow",
    book: distribution.RuleBook | None = None,
    capacity: int | None = None,
) -> tuple[int | None, str]:
    """The client's responsible manager while he is active; else the distribution rules of the
    region (round robin, weights, working hours); None: the manual queue (unassigned). With why:
    ``responsible``, a strategy, ``manual``,
    ``nobody_on_duty`` (outside everyone's working hours), ``capacity``.

    ``capacity`` caps the open conversations a manager gets from the rules: one who has that
    many already leaves a new client's conversation in the queue (his own clients still reach
    him)."""
    if responsible_id is not None:
        active = await session.scalar(select(User.is_active).where(User.id == responsible_id))
        if active:
            return responsible_id, "responsible"
    assignment = await distribution.distribute(
        session,
        region_id,
        phone,
        now,
        "message",
        rules=rules,
        book=book,
        default_timezone=default_timezone,
    )
    chosen = assignment.user_id
    if chosen is not None and capacity is not None:
        open_now = await session.scalar(
            select(func.count()).where(
                Conversation.assignee_id == chosen,
                Conversation.status != ConversationStatus.RESOLVED.value,
            )
        )
        if int(open_now or 0) >= capacity:
            log.info(
                "conversation queued: manager %s has %s open (capacity %s)",
                chosen,
                open_now,
                capacity,
            )
            return None, "capacity"
    return chosen, assignment.reason


# ---------------------------------------------------------------- inbound


async def find_message(
    session: AsyncSession, channel: str, provider_message_id: str
) -> Message | None:
    return await session.scalar(
        select(Message).where(
            Message.channel == channel, Message.provider_message_id == provider_message_id
        )
    )


async def stored_ids(session: AsyncSession, ids: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which ``(channel, provider_message_id)`` pairs are stored messages: one query."""
    if not ids:
        return set()
    pairs = sorted(set(ids))
    if is_postgresql(session):  # the same SQL for any number of ids
        rows = await fetch_pg(
            session, _STORED_IDS, {"channels": [c for c, _ in pairs], "ids": [p for _, p in pairs]}
        )
    else:
        rows = (
            await session.execute(
                select(Message.channel, Message.provider_message_id).where(
                    tuple_(Message.channel, Message.provider_message_id).in_(pairs)
                )
            )
        ).all()
    return {(str(c), str(p)) for c, p in rows}


_STORED_IDS = sql_text(
    "SELECT m.channel, m.provider_message_id FROM conversation_messages AS m "
    "JOIN unnest(CAST(:channels AS VARCHAR[]), CAST(:ids AS VARCHAR[])) AS u(channel, pid) "
    "ON m.channel = u.channel AND m.provider_message_id = u.pid"
)


async def _conversation_for(
    session: AsyncSession, incoming: Incoming, now: datetime
) -> tuple[Conversation, bool]:
    """The sender's conversation on the channel, created if absent (race-safe); (row, new)."""
    key = {
        "channel": incoming.channel,
        "identity_kind": incoming.identity_kind,
        "identity_value": incoming.identity_value[:320],
        "thread_key": incoming.thread_key[:300],
    }
    stmt = (
        select(Conversation)
        .filter_by(**key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    existing = await session.scalar(stmt)
    if existing is not None:
        return existing, False
    new_id = await session.scalar(
        _insert(session)(Conversation)
        .values(
            **key,
            channel_kind=incoming.channel_kind,
            name=(incoming.sender_name or "")[:300],
            phone=incoming.phone,
            status=ConversationStatus.OPEN.value,
            unread=0,
            preview="",
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Conversation.id)
    )
    conv = await session.scalar(stmt)
    assert conv is not None
    return conv, new_id is not None


@dataclass(frozen=True)
class _Origin:
    """Where a new client came from: the lead's source, region and tracking."""

    source_id: int
    region_id: int | None
    tracking: dict[str, Any]
    # The source's row, kept referenced (the session's identity map is weak): the lead's
    # checks find it there rather than reading it again.
    source: Source | None = field(default=None, compare=False, repr=False)


async def _ad_source(session: AsyncSession, referral: dict[str, Any]) -> Source:
    """The Click-to-WhatsApp ad as a campaign source under the "WhatsApp ads" channel."""
    parent = await _source(
        session, SourceKind.AD_CHANNEL.value, "whatsapp-ads", "Реклама со ссылкой на WhatsApp"
    )
    ad = str(referral.get("source_id") or referral.get("source_url") or "unknown")[:80]
    headline = str(referral.get("headline") or "").strip()
    return await _source(
        session,
        SourceKind.CAMPAIGN.value,
        f"ctwa-{ad}",
        headline or f"Объявление {ad}",
        parent_id=parent.id,
    )


async def _visitor(session: AsyncSession, visitor_id: str) -> dict[str, Any] | None:
    """The website visitor a Telegram ``/start`` deep link names: his attribution."""
    if not visitor_id or len(visitor_id) > 64:
        return None
    site_id = await session.scalar(
        select(TrackingVisitor.site_id)
        .where(TrackingVisitor.visitor_id == visitor_id)
        .order_by(TrackingVisitor.last_seen_at.desc())
        .limit(1)
    )
    if site_id is None:
        return None
    return await tracking_service.visitor_attribution(session, site_id, visitor_id)


async def _origin(session: AsyncSession, incoming: Incoming) -> _Origin:
    """A Click-to-WhatsApp ad's campaign; else the website visitor's source (Telegram deep
    link); else the channel itself."""
    payload = incoming.payload or {}
    tracking: dict[str, Any] = {"channel": incoming.channel}
    referral = payload.get("referral")
    if referral:
        source = await _ad_source(session, referral)
        tracking.update(
            referral=referral,
            source=source.name,
            campaign=referral.get("headline"),
            ctwa_clid=referral.get("ctwa_clid"),
        )
        return _Origin(source.id, None, tracking, source)
    visitor = payload.get("start_payload")
    attribution = await _visitor(session, str(visitor)) if visitor else None
    if attribution is not None and attribution.get("source_id"):
        return _Origin(
            int(attribution["source_id"]),
            attribution.get("region_id"),
            {**attribution, "channel": incoming.channel},
        )
    source = await channel_source(
        session, incoming.channel, incoming.channel_kind, incoming.channel_name
    )
    return _Origin(source.id, None, tracking, source)


async def _new_lead(
    session: AsyncSession,
    incoming: Incoming,
    conv: Conversation,
    now: datetime,
    rules: CrmRules,
    assignee: int | None,
    origin: _Origin,
) -> tuple[Lead, list[DomainEvent]]:
    label = channel_label(incoming.channel_kind, incoming.channel_name)
    who = incoming.sender_name or incoming.phone or incoming.email or incoming.identity_value
    return await leads.create_lead(
        session,
        LeadInput(
            title=f"{label}: {who}"[:300],
            origin="message",
            contact_name=(incoming.sender_name or None),
            phones=[incoming.phone] if incoming.phone else [],
            emails=[incoming.email] if incoming.email else [],
            source_id=origin.source_id,
            region_id=origin.region_id,
            responsible_id=assignee,
            tracking=origin.tracking,
        ),
        actor=access.SYSTEM,
        rules=rules,
        now=now,
    )


async def receive(
    session: AsyncSession,
    incoming: Incoming,
    *,
    rules: CrmRules,
    now: datetime | None = None,
    default_timezone: str = "Europe/Moscow",
    book: distribution.RuleBook | None = None,
    capacity: int | None = None,
    off_hours_reply: str | None = None,
    fetch_media: bool = False,
) -> Received:
    """Store a client's message once (a redelivery returns the stored one, ``created``
    False); identify the client (an unknown one becomes a lead), assign the conversation,
    put the message on the client's timeline."""
    now = now or utcnow()
    # The conversation is read, moved on and written back: locked till the commit.
    await write_lock(session, "conversations")
    stored = await find_message(session, incoming.channel, incoming.provider_message_id)
    if stored is not None:
        conv = await session.get(Conversation, stored.conversation_id)
        assert conv is not None
        return Received(stored, conv, created=False)
    conv, new = await _conversation_for(session, incoming, now)
    events: list[DomainEvent] = []
    lead_id: int | None = None
    why = ""
    owner = incoming.owner_id
    if owner is not None and conv.owner_id is None:
        # A personal mailbox: its manager gets the conversation, not the distribution rules.
        conv.owner_id = owner
        if conv.assignee_id is None:
            conv.assignee_id, why = owner, "owner"
    if conv.contact_id is None and conv.company_id is None and conv.lead_id is None:
        client = await identify(session, incoming, rules)
        if client is not None:
            conv.contact_id, conv.company_id = client.contact_id, client.company_id
            conv.lead_id = client.lead_id
            if owner is None:
                conv.assignee_id, why = await assign_new(
                    session,
                    client.responsible_id,
                    None,
                    now,
                    rules,
                    default_timezone=default_timezone,
                    book=book,
                    capacity=capacity,
                )
            if not conv.name:
                conv.name = client.name[:300]
        elif incoming.creates_client:
            origin = await _origin(session, incoming)
            if owner is not None:
                assignee, why = conv.assignee_id, "owner"
            else:
                assignee, why = await assign_new(
                    session,
                    None,
                    None,
                    now,
                    rules,
                    region_id=origin.region_id,
                    default_timezone=default_timezone,
                    book=book,
                    capacity=capacity,
                )
            lead, lead_events = await _new_lead(
                session, incoming, conv, now, rules, assignee, origin
            )
            conv.lead_id = lead_id = lead.id
            conv.assignee_id = assignee
            events.extend(lead_events)
    elif new is False and conv.assignee_id is None:
        # Still in the queue (nobody on duty, everyone at capacity): the rules try again.
        conv.assignee_id, _ = await assign_new(
            session,
            None,
            None,
            now,
            rules,
            default_timezone=default_timezone,
            book=book,
            capacity=capacity,
        )
    # The message itself: insert-if-absent, so two deliveries racing store one.
    values = {
        "conversation_id": conv.id,
        "channel": incoming.channel,
        "direction": "inbound",
        "author_kind": "client",
        "kind": incoming.kind[:16],
        "text": (incoming.text or None) and incoming.text[: TEXT_MAX * 10],
        "status": MessageStatus.RECEIVED.value,
        "provider_message_id": incoming.provider_message_id[:200],
        "reply_to": incoming.reply_to,
        "attachments": list(incoming.attachments),
        "payload": incoming.payload,
        "sent_at": incoming.sent_at,
        "attempts": 0,
        "created_at": now,
    }
    new_id = await session.scalar(
        _insert(session)(Message)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["channel", "provider_message_id"])
        .returning(Message.id)
    )
    message = await session.scalar(
        select(Message)
        .where(
            Message.channel == incoming.channel,
            Message.provider_message_id == values["provider_message_id"],
        )
        .execution_options(populate_existing=True)
    )
    assert message is not None
    if new_id is None:
        return Received(message, conv, created=False)
    conv.unread += 1
    conv.last_message_at = max(conv.last_message_at or now, now)
    conv.last_inbound_at = max(conv.last_inbound_at or incoming.sent_at, incoming.sent_at)
    conv.preview = _preview(incoming.text, incoming.kind)
    conv.updated_at = now
    if conv.status == ConversationStatus.RESOLVED.value or conv.status == "pending":
        conv.status = ConversationStatus.OPEN.value
    if incoming.phone and not conv.phone:
        conv.phone = incoming.phone
    if incoming.sender_name and not conv.name:
        conv.name = incoming.sender_name[:300]
    if incoming.email and incoming.channel_kind == "email":
        await clear_bounce(session, incoming.email)  # the address writes again: it works
    await session.flush()
    events.extend(await _timeline(session, conv, message, now))
    events.append(_new_event(conv, message))
    if fetch_media:
        await schedule_media(session, message, now)
    if new and why == "nobody_on_duty" and off_hours_reply:
        # Nobody works now: the client learns when he will hear from us.
        _, reply_events = await queue_reply(
            session, conv.id, off_hours_reply, actor=access.SYSTEM, rules=rules, now=now
        )
        events.extend(reply_events)
    return Received(message, conv, created=True, events=events, lead_id=lead_id)


def _new_event(conv: Conversation, message: Message) -> MessageNew:
    return MessageNew(
        conversation_id=conv.id,
        message_id=message.id,
        channel=conv.channel,
        channel_kind=conv.channel_kind,
        direction=message.direction,
        author_kind=message.author_kind,
        kind=message.kind,
        text=(message.text or "")[:500] or None,
        status=message.status,
        client_name=conv.name,
        assignee_id=conv.assignee_id,
        unread=conv.unread,
        audience=conversation_audience(conv.assignee_id),
    )


async def schedule_media(session: AsyncSession, message: Message, now: datetime) -> None:
    """A download job for each of the message's attachments the provider still holds (once
    per attachment, however often the message is delivered)."""
    for index, attachment in enumerate(message.attachments):
        if attachment.get("ref") and not attachment.get("refused"):
            await jobs.schedule(
                session,
                MEDIA_JOB,
                now,
                {"message_id": message.id, "index": index},
                dedupe_key=f"media:{message.id}:{index}",
            )


def timeline_entry(conv: Conversation, message: Message) -> ActivityInput | None:
    """The message as an activity of the client's timeline (None: the thread has no client
    yet); the same entry whether the message came alone or in a batch."""
    if conv.contact_id is None and conv.company_id is None and conv.lead_id is None:
        return None
    label = CHANNEL_LABELS.get(conv.channel_kind, conv.channel_kind)
    inbound = message.direction == "inbound"
    return ActivityInput(
        kind=ActivityKind.EMAIL if conv.channel_kind == "email" else ActivityKind.MESSAGE,
        direction="inbound" if inbound else "outbound",
        subject=f"{label}: {'входящее' if inbound else 'исходящее'} сообщение",
        body=(message.text or _preview(None, message.kind))[:100_000],
        occurred_at=message.sent_at,
        outcome=message.status,
        user_id=message.author_id if not inbound else conv.assignee_id,
        contact_id=conv.contact_id,
        company_id=conv.company_id,
        lead_id=conv.lead_id,
        external_id=f"message:{message.id}",
        private_to_id=conv.owner_id,  # a personal mailbox's letter stays his
        payload={
            "conversation_id": conv.id,
            "message_id": message.id,
            "channel": conv.channel,
            "channel_kind": conv.channel_kind,
        },
    )


async def _timeline(
    session: AsyncSession, conv: Conversation, message: Message, now: datetime
) -> list[DomainEvent]:
    """The message as an activity on the client's timeline (idempotent by its id)."""
    entry = timeline_entry(conv, message)
    if entry is None:
        return []
    activity = await activities.record_activity(session, entry, actor=access.SYSTEM, now=now)
    return [ActivityRecorded.of(activity)]


# ---------------------------------------------------------------- access


def _personal_hidden(actor: Actor, conv: Conversation) -> bool:
    """A personal mailbox's conversation is shown to its manager, to whom it was handed and to
    the head, to nobody else (whatever ``crm.managers_read_all`` says)."""
    if conv.owner_id is None or access.is_privileged(actor):
        return False
    return actor.id not in (conv.owner_id, conv.assignee_id)


def _check(actor: Actor, conv: Conversation, rules: CrmRules, *, write: bool) -> None:
    """An unassigned conversation is everyone's to take; an assigned one its manager's (and
    the head's; with ``crm.managers_read_all`` every manager reads it); a personal mailbox's
    its manager's alone."""
    if _personal_hidden(actor, conv):
        raise NotFound(f"no conversation {conv.id}")
    if conv.assignee_id is None:
        return
    access.check(
        actor,
        conv.assignee_id,
        rules,
        write=write,
        what=f"conversation {conv.id}",
        owners=() if conv.owner_id is None else (conv.owner_id,),
    )


async def get_conversation(
    session: AsyncSession, conversation_id: int, *, actor: Actor, rules: CrmRules
) -> Conversation:
    conv = await session.get(Conversation, conversation_id)
    if conv is None:
        raise NotFound(f"no conversation {conversation_id}")
    _check(actor, conv, rules, write=False)
    return conv


def _scope(stmt: Any, actor: Actor, rules: CrmRules) -> Any:
    if access.is_privileged(actor):
        return stmt
    stmt = stmt.where(
        or_(
            Conversation.owner_id.is_(None),
            Conversation.owner_id == actor.id,
            Conversation.assignee_id == actor.id,
        )
    )
    if rules.managers_read_all:
        return stmt
    return stmt.where(
        or_(
            Conversation.assignee_id == actor.id,
            Conversation.assignee_id.is_(None),
            Conversation.owner_id == actor.id,
        )
    )


async def list_conversations(
    session: AsyncSession,
    *,
    actor: Actor,
    rules: CrmRules,
    view: View = "all",
    channel: str | None = None,
    status: str | None = None,
    assignee_id: int | None = None,
    unread: bool | None = None,
    contact_id: int | None = None,
    company_id: int | None = None,
    lead_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[Conversation], int]:
    """Conversations ``actor`` may read, latest message first, with their total."""
    stmt = _scope(select(Conversation), actor, rules)
    if view == "mine":
        stmt = stmt.where(Conversation.assignee_id == actor.id)
    elif view == "unassigned":
        stmt = stmt.where(Conversation.assignee_id.is_(None))
    if channel:
        stmt = stmt.where(Conversation.channel == channel)
    if status:
        stmt = stmt.where(Conversation.status == status)
    if assignee_id is not None:
        stmt = stmt.where(Conversation.assignee_id == assignee_id)
    if unread is not None:
        stmt = stmt.where(Conversation.unread > 0 if unread else Conversation.unread == 0)
    for column, value in (
        (Conversation.contact_id, contact_id),
        (Conversation.company_id, company_id),
        (Conversation.lead_id, lead_id),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    total = await listing.total(session, stmt, None)
    stmt = stmt.order_by(Conversation.last_message_at.desc().nulls_last(), Conversation.id.desc())
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), total


async def unread_counts(session: AsyncSession, *, actor: Actor, rules: CrmRules) -> dict[str, int]:
    """The menu's counters: unread messages in ``actor``'s open conversations, and the open
    conversations nobody has."""
    mine = await session.scalar(
        select(func.coalesce(func.sum(Conversation.unread), 0)).where(
            Conversation.assignee_id == actor.id,
            Conversation.status != ConversationStatus.RESOLVED.value,
        )
    )
    unassigned = await session.scalar(
        select(func.count()).where(
            Conversation.assignee_id.is_(None),
            Conversation.status != ConversationStatus.RESOLVED.value,
        )
    )
    return {"mine": int(mine or 0), "unassigned": int(unassigned or 0)}


async def list_messages(
    session: AsyncSession,
    conversation_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    limit: int = 100,
    before_id: int | None = None,
) -> list[Message]:
    """The latest ``limit`` messages (and notes), oldest first."""
    await get_conversation(session, conversation_id, actor=actor, rules=rules)
    stmt = select(Message).where(Message.conversation_id == conversation_id)
    if before_id is not None:
        stmt = stmt.where(Message.id < before_id)
    rows = list(await session.scalars(stmt.order_by(Message.id.desc()).limit(limit)))
    rows.reverse()
    return rows


# ---------------------------------------------------------------- outbound


async def _locked(session: AsyncSession, conversation_id: int) -> Conversation:
    """The conversation as committed now, locked till this transaction ends: whoever changes
    it (a manager, the webhook worker, another instance) decides on what the others did."""
    await write_lock(session, "conversations")
    conv = await session.get(
        Conversation, conversation_id, with_for_update=True, populate_existing=True
    )
    if conv is None:
        raise NotFound(f"no conversation {conversation_id}")
    return conv


async def _writable(
    session: AsyncSession, conversation_id: int, actor: Actor, rules: CrmRules
) -> Conversation:
    conv = await _locked(session, conversation_id)
    _check(actor, conv, rules, write=True)
    return conv


def _clean_text(text: str, *, empty_ok: bool = False) -> str:
    cleaned = text.strip()
    if not cleaned and not empty_ok:
        raise InvalidInput("text: пустое сообщение — напишите текст", details={"field": "text"})
    if len(cleaned) > TEXT_MAX:
        raise InvalidInput(
            f"text: не длиннее {TEXT_MAX} символов", details={"field": "text", "max": TEXT_MAX}
        )
    return cleaned


def reply_subject(subject: str | None) -> str:
    """The subject of a reply to a letter titled ``subject``: "Re: …", once."""
    subject = (subject or "").strip()
    if subject.lower().startswith(("re:", "re[", "на:", "отв:")):
        return subject
    return f"Re: {subject}".strip()


async def answered_letter(
    session: AsyncSession, conv: Conversation, message_id: int | None = None
) -> Message | None:
    """The client's letter a reply answers: ``message_id`` (it must be an inbound message of
    ``conv``, else ``InvalidInput``), by default the client's latest."""
    if message_id is None:
        return await session.scalar(
            select(Message)
            .where(Message.conversation_id == conv.id, Message.direction == "inbound")
            .order_by(Message.id.desc())
            .limit(1)
        )
    message = await session.get(Message, message_id)
    if message is None or message.conversation_id != conv.id or message.direction != "inbound":
        raise InvalidInput(
            f"reply_to_message_id: {message_id} — это не письмо клиента из этого разговора",
            details={"field": "reply_to_message_id", "value": message_id},
        )
    return message


def _clean_subject(subject: str) -> str:
    cleaned = " ".join(subject.split())  # a line break would start another header
    if len(cleaned) > SUBJECT_MAX:
        raise InvalidInput(
            f"subject: тема не длиннее {SUBJECT_MAX} символов",
            details={"field": "subject", "max": SUBJECT_MAX},
        )
    return cleaned


async def queue_reply(
    session: AsyncSession,
    conversation_id: int,
    text: str,
    *,
    actor: Actor,
    rules: CrmRules,
    window_open: bool = True,
    now: datetime | None = None,
    subject: str | None = None,
    reply_to_message_id: int | None = None,
    quote: bool = True,
    attachments: Sequence[dict[str, Any]] = (),
) -> tuple[Message, list[DomainEvent]]:
    """A manager's reply, written to the outbox: stored ``queued`` with its send job in the
    same transaction, so it is sent once the caller commits and never lost. Refused outside the
    channel's messaging window (WhatsApp: 24 h after the client's last message). A manager who
    answers an unassigned conversation takes it.

    E-mail: ``subject`` (default "Re: " and the answered letter's), the letter answered
    (``reply_to_message_id``, default the client's latest: the reply threads under it) and
    whether to ``quote`` it below the reply. ``attachments`` are files already in storage
    (``key``, ``mime``, ``size``, ``filename``, ``sha256``); with them the text may be empty."""
    now = now or utcnow()
    conv = await _writable(session, conversation_id, actor, rules)
    if len(attachments) > ATTACHMENTS_MAX:
        raise InvalidInput(
            f"files: не больше {ATTACHMENTS_MAX} файлов в одном сообщении",
            details={"field": "files", "max": ATTACHMENTS_MAX},
        )
    cleaned = _clean_text(text, empty_ok=bool(attachments))
    payload: dict[str, Any] | None = None
    if conv.channel_kind == "email":
        answered = await answered_letter(session, conv, reply_to_message_id)
        original = ((answered.payload or {}).get("email") or {}) if answered else {}
        chosen = _clean_subject(subject) if subject is not None else ""
        payload = {
            "email": {
                "subject": chosen or reply_subject(original.get("subject")),
                "to": [conv.identity_value],
                "reply_to_message_id": answered.id if answered else None,
                "quote": bool(quote and answered is not None and answered.text),
            }
        }
    if not window_open:
        raise WindowClosed(
            "Прошло больше 24 часов с последнего сообщения клиента: WhatsApp не доставляет "
            "произвольный текст вне этого окна. Отправьте одобренный шаблон или дождитесь, "
            "пока клиент напишет.",
            details={"last_inbound_at": conv.last_inbound_at.isoformat()}
            if conv.last_inbound_at
            else {},
        )
    events: list[DomainEvent] = []
    if conv.assignee_id is None and actor.id is not None:
        conv.assignee_id = actor.id
        events.append(_changed(conv, ("assignee_id",)))
    files = [
        {k: a.get(k) for k in ("key", "mime", "size", "filename", "sha256")} for a in attachments
    ]
    kind = "text"
    if files and not cleaned:
        kind = "image" if str(files[0].get("mime") or "").startswith("image/") else "document"
    message = Message(
        conversation_id=conv.id,
        channel=conv.channel,
        direction="outbound",
        author_kind="manager" if actor.id is not None else "bot",
        author_id=actor.id,
        kind=kind,
        text=cleaned or None,
        status=MessageStatus.QUEUED.value,
        attachments=files,
        payload=payload,
        sent_at=now,
        attempts=0,
        created_at=now,
    )
    session.add(message)
    if actor.id is not None:  # a manager answered: he has read it (a bot's reply has not)
        conv.unread = 0
    conv.last_message_at = now
    conv.preview = _preview(cleaned or (files[0].get("filename") if files else None), kind)
    conv.updated_at = now
    if conv.status == ConversationStatus.RESOLVED.value:
        conv.status = ConversationStatus.OPEN.value
    return await _to_outbox(session, conv, message, now, events)


async def _to_outbox(
    session: AsyncSession,
    conv: Conversation,
    message: Message,
    now: datetime,
    events: list[DomainEvent],
) -> tuple[Message, list[DomainEvent]]:
    """``message`` (added to the session) written with the durable job that sends it, in the
    same transaction: a crash between the two sends once, never loses it."""
    await session.flush()
    await jobs.schedule(
        session,
        SEND_JOB,
        now,
        # One conversation's messages go out one after the other, in order.
        {"message_id": message.id, "lane": f"conversation:{conv.id}"},
        dedupe_key=f"send-message:{message.id}",
        max_attempts=SEND_ATTEMPTS,
    )
    events.extend(await _timeline(session, conv, message, now))
    events.append(_new_event(conv, message))
    return message, events


def render_template(
    body: str | None, params: Sequence[str], names: Sequence[str] | None = None
) -> str:
    """A template's body with its placeholders (``{{1}}``, ``{{2}}`` or ``{{first_name}}``,
    in ``names``' order) filled, as the client will read it (what the conversation shows)."""
    text = body or ""
    keys = list(names) if names else [str(i) for i in range(1, len(params) + 1)]
    for key, value in zip(keys, params, strict=False):
        text = text.replace("{{" + key + "}}", value)
    return text


async def queue_template(
    session: AsyncSession,
    conversation_id: int,
    *,
    name: str,
    language: str,
    params: Sequence[str],
    body: str | None,
    param_names: Sequence[str] = (),
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Message, list[DomainEvent]]:
    """An approved template (WhatsApp, any time: the 24-hour window does not bind it), written
    to the outbox like a reply. ``body`` is the template's text, shown filled in."""
    now = now or utcnow()
    conv = await _writable(session, conversation_id, actor, rules)
    if len(params) > 20 or any(len(p) > 1000 for p in params):
        raise InvalidInput(
            "params: не больше 20 значений по 1000 символов", details={"field": "params"}
        )
    events: list[DomainEvent] = []
    if conv.assignee_id is None and actor.id is not None:
        conv.assignee_id = actor.id
        events.append(_changed(conv, ("assignee_id",)))
    text = render_template(body, params, param_names) or name
    message = Message(
        conversation_id=conv.id,
        channel=conv.channel,
        direction="outbound",
        author_kind="manager" if actor.id is not None else "bot",
        author_id=actor.id,
        kind="template",
        text=text,
        status=MessageStatus.QUEUED.value,
        attachments=[],
        payload={
            "template": {
                "name": name,
                "language": language,
                "params": list(params),
                "param_names": list(param_names),
            }
        },
        sent_at=now,
        attempts=0,
        created_at=now,
    )
    session.add(message)
    conv.last_message_at = now
    conv.preview = _preview(text, "template")
    conv.updated_at = now
    conv.unread = 0
    return await _to_outbox(session, conv, message, now, events)


async def add_note(
    session: AsyncSession,
    conversation_id: int,
    text: str,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Message, list[DomainEvent]]:
    """An internal note in the conversation: seen by colleagues, never sent to the client."""
    now = now or utcnow()
    conv = await _writable(session, conversation_id, actor, rules)
    message = Message(
        conversation_id=conv.id,
        channel=conv.channel,
        direction="internal",
        author_kind="manager",
        author_id=actor.id,
        kind="note",
        text=_clean_text(text),
        status=MessageStatus.NOTE.value,
        attachments=[],
        sent_at=now,
        attempts=0,
        created_at=now,
    )
    session.add(message)
    await session.flush()
    return message, [_new_event(conv, message)]


@dataclass(frozen=True)
class Outgoing:
    """What the send job needs to hand a queued message to the channel adapter."""

    message_id: int
    conversation_id: int
    channel: str
    to: str  # the identity value: wa_id, chat id, phone, address
    text: str
    last_inbound_at: datetime | None
    reply_to: str | None
    subject: str | None = None  # e-mail: the thread's subject
    references: tuple[str, ...] = ()  # e-mail: the client's Message-IDs in the thread
    template: dict[str, Any] | None = None  # WhatsApp: {"name", "language", "params"}
    quote: Quoted | None = None  # e-mail: the letter answered, quoted below the reply
    attachments: tuple[dict[str, Any], ...] = ()  # files in storage: key, mime, filename
    # A message sent as several (files, a long text first): the parts the provider already
    # took, by part ("text", "file:0", ...) -> its id; a retry sends only the rest.
    sent_parts: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Quoted:
    """The client's letter a reply quotes: who wrote it, when, and its text."""

    author: str
    sent_at: datetime
    text: str


async def outgoing(session: AsyncSession, message_id: int) -> Outgoing | None:
    """The queued message ``message_id`` to send, or None when it is sent (or failed)
    already: a job that runs twice sends once."""
    message = await session.get(Message, message_id, populate_existing=True)
    if message is None or message.status != MessageStatus.QUEUED.value:
        return None
    conv = await session.get(Conversation, message.conversation_id)
    assert conv is not None
    message.attempts += 1
    reply_to, subject = message.reply_to, None
    references: tuple[str, ...] = ()
    quoted: Quoted | None = None
    if conv.channel_kind == "email":
        # A reply threads under the letter it answers (the client's latest unless the
        # manager chose one) and keeps its subject unless he changed it.
        chosen = (message.payload or {}).get("email") or {}
        answered: Message | None = None
        if chosen.get("reply_to_message_id"):
            answered = await session.get(Message, int(chosen["reply_to_message_id"]))
        if answered is None:
            answered = await answered_letter(session, conv)
        subject = chosen.get("subject")
        if answered is not None:
            original = (answered.payload or {}).get("email") or {}
            reply_to = reply_to or answered.provider_message_id
            if subject is None:
                subject = reply_subject(original.get("subject"))
            parent_refs = [str(r) for r in original.get("references") or ()] or [conv.thread_key]
            references = tuple(r for r in (*parent_refs, answered.provider_message_id) if r)
            if chosen.get("quote") and answered.text:
                quoted = Quoted(conv.name or conv.identity_value, answered.sent_at, answered.text)
    return Outgoing(
        message.id,
        conv.id,
        conv.channel,
        conv.identity_value,
        message.text or "",
        conv.last_inbound_at,
        reply_to,
        subject,
        tuple(dict.fromkeys(references)),
        (message.payload or {}).get("template"),
        quoted,
        tuple(dict(a) for a in message.attachments or ()),
        dict((message.payload or {}).get("sent_parts") or {}),
    )


async def note_part_sent(
    session: AsyncSession, message_id: int, part: str, provider_message_id: str
) -> None:
    """The provider took one part of a message sent in several: a retry skips it. The caller
    commits at once (the next part may never be sent)."""
    message = await session.get(Message, message_id)
    if message is None:
        return
    payload = dict(message.payload or {})
    payload["sent_parts"] = {**(payload.get("sent_parts") or {}), part: provider_message_id}
    message.payload = payload


def billing(message: Message) -> tuple[int | None, Decimal | None, str | None]:
    """What the provider reported the message cost: (parts, cost, currency), each None when
    not reported (SMS gateways report them; messengers do not)."""
    got = (message.payload or {}).get("billing") or {}
    parts, cost = got.get("parts"), got.get("cost")
    try:
        amount = Decimal(str(cost)) if cost is not None else None
    except ArithmeticError:
        amount = None
    return (int(parts) if isinstance(parts, int) else None), amount, got.get("currency")


def _note_billing(
    message: Message, *, parts: int | None, cost: Decimal | None, currency: str | None
) -> None:
    """Keep the provider's count of parts and its price on the message (money as a decimal
    string in the JSON document; a later report's price replaces an earlier one)."""
    if parts is None and cost is None:
        return
    got = dict((message.payload or {}).get("billing") or {})
    if parts is not None:
        got["parts"] = parts
    if cost is not None:
        got["cost"], got["currency"] = str(cost), currency or got.get("currency")
    # A new dict: the JSON column sees the change.
    message.payload = {**(message.payload or {}), "billing": got}


async def mark_sent(
    session: AsyncSession,
    message_id: int,
    provider_message_id: str,
    *,
    now: datetime,
    parts: int | None = None,
    cost: Decimal | None = None,
    currency: str | None = None,
) -> list[DomainEvent]:
    """The provider took the message (and said what it cost, for SMS); a missed call's
    call-back task for the client closes."""
    message = await session.get(Message, message_id)
    if message is None:
        return []
    message.provider_message_id = provider_message_id[:200]
    _note_billing(message, parts=parts, cost=cost, currency=currency)
    if STATUS_RANK.get(message.status, -1) < STATUS_RANK["sent"]:
        message.status = MessageStatus.SENT.value
        message.status_at = now
    message.error = None
    conv = await session.get(Conversation, message.conversation_id)
    assert conv is not None
    await close_call_backs(session, conv, now=now)
    await session.flush()
    return [_status_event(conv, message)]


async def mark_failed(
    session: AsyncSession, message_id: int, error: str, *, now: datetime
) -> list[DomainEvent]:
    """The provider refused the message for good: it shows as failed with the reason."""
    message = await session.get(Message, message_id)
    if message is None:
        return []
    message.status = MessageStatus.FAILED.value
    message.error = error[:500]
    message.status_at = now
    conv = await session.get(Conversation, message.conversation_id)
    assert conv is not None
    await session.flush()
    return [_status_event(conv, message)]


def _status_event(conv: Conversation, message: Message) -> MessageStatusChanged:
    return MessageStatusChanged(
        conversation_id=conv.id,
        message_id=message.id,
        status=message.status,
        error=message.error,
        audience=conversation_audience(conv.assignee_id),
    )


async def apply_status(
    session: AsyncSession,
    channel: str,
    provider_message_id: str,
    status: str,
    *,
    at: datetime,
    error: str | None = None,
    cost: Decimal | None = None,
    currency: str | None = None,
) -> tuple[Message | None, list[DomainEvent]]:
    """A delivery report: the message moves forward (sent → delivered → read), or fails with
    the provider's error; a repeated or late report changes nothing but the price it reports.
    None: not our message."""
    message = await find_message(session, channel, provider_message_id)
    event = _apply_status(message, status, at=at, error=error, cost=cost, currency=currency)
    if message is None or event is None:
        return message, []
    conv = await session.get(Conversation, message.conversation_id)
    assert conv is not None
    await session.flush()
    return message, [_status_event(conv, message)]


@dataclass(frozen=True)
class StatusReport:
    """One delivery report of :func:`apply_statuses`."""

    channel: str
    provider_message_id: str
    status: str
    at: datetime
    error: str | None = None
    cost: Decimal | None = None
    currency: str | None = None


async def find_messages(
    session: AsyncSession, ids: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Message]:
    """The stored messages of ``(channel, provider_message_id)`` pairs: one query."""
    if not ids:
        return {}
    pairs = sorted(set(ids))
    if is_postgresql(session):  # the same SQL for any number of ids
        stmt: Any = select(Message).from_statement(
            _FIND_MESSAGES.bindparams(channels=[c for c, _ in pairs], ids=[p for _, p in pairs])
        )
    else:
        stmt = select(Message).where(
            tuple_(Message.channel, Message.provider_message_id).in_(pairs)
        )
    return {(m.channel, str(m.provider_message_id)): m for m in await session.scalars(stmt)}


_FIND_MESSAGES = sql_text(
    "SELECT m.* FROM conversation_messages AS m "
    "JOIN unnest(CAST(:channels AS VARCHAR[]), CAST(:ids AS VARCHAR[])) AS u(channel, pid) "
    "ON m.channel = u.channel AND m.provider_message_id = u.pid"
)


async def apply_statuses(
    session: AsyncSession,
    reports: Sequence[StatusReport],
    messages: Mapping[tuple[str, str], Message] | None = None,
) -> list[DomainEvent]:
    """:func:`apply_status` for many reports, in order: the messages and their conversations
    read in one query each, the changes written by one flush. ``messages``: the reports'
    messages found already (:func:`find_messages`)."""
    if messages is None:
        messages = await find_messages(
            session, [(r.channel, r.provider_message_id) for r in reports]
        )
    wanted = sorted({m.conversation_id for m in messages.values() if m.direction == "outbound"})
    convs = {
        c.id: c
        for c in (
            await session.scalars(select(Conversation).where(Conversation.id.in_(wanted)))
            if wanted
            else []
        )
    }
    events: list[DomainEvent] = []
    for report in reports:  # in order: each event as the message stood after its report
        message = messages.get((report.channel, report.provider_message_id))
        changed = _apply_status(
            message,
            report.status,
            at=report.at,
            error=report.error,
            cost=report.cost,
            currency=report.currency,
        )
        if message is not None and changed:
            events.append(_status_event(convs[message.conversation_id], message))
    await session.flush()
    return events


def _apply_status(
    message: Message | None,
    status: str,
    *,
    at: datetime,
    error: str | None,
    cost: Decimal | None,
    currency: str | None,
) -> bool | None:
    """The report applied to ``message`` in memory; True when its status changed (an event
    to send), None when not."""
    if message is None or message.direction != "outbound":
        return None
    _note_billing(message, parts=None, cost=cost, currency=currency)
    if status == MessageStatus.FAILED.value:
        if message.status == MessageStatus.FAILED.value:
            return None
        message.status = status
        message.error = (error or "не доставлено")[:500]
    elif STATUS_RANK.get(status, -1) > STATUS_RANK.get(message.status, 99):
        message.status = status
    else:
        return None
    message.status_at = at
    return True


async def close_call_backs(session: AsyncSession, conv: Conversation, *, now: datetime) -> int:
    """The client was reached: close the call-back tasks of his missed calls (by every number
    of the conversation and of his card)."""
    numbers = {conv.phone} if conv.phone else set()
    owners = [
        (Phone.contact_id, conv.contact_id),
        (Phone.company_id, conv.company_id),
        (Phone.lead_id, conv.lead_id),
    ]
    for column, value in owners:
        if value is not None:
            numbers.update(await session.scalars(select(Phone.e164).where(column == value)))
    closed = 0
    for number in sorted(n for n in numbers if n):
        closed += await tasks.close_tasks_by_origin(session, MISSED_CALL_PREFIX + number, at=now)
    return closed


# ---------------------------------------------------------------- state


def _changed(conv: Conversation, changes: tuple[str, ...]) -> ConversationChanged:
    return ConversationChanged(
        conversation_id=conv.id,
        changes=changes,
        status=conv.status,
        assignee_id=conv.assignee_id,
        unread=conv.unread,
        audience=conversation_audience(conv.assignee_id),
    )


async def mark_read(
    session: AsyncSession, conversation_id: int, *, actor: Actor, rules: CrmRules
) -> tuple[Conversation, list[DomainEvent]]:
    """The assigned manager (or the head) opened the conversation: nothing is unread."""
    conv = await get_conversation(session, conversation_id, actor=actor, rules=rules)
    if conv.unread == 0 or (conv.assignee_id is not None and conv.assignee_id != actor.id):
        return conv, []
    conv = await _locked(session, conversation_id)  # as it is now, for the write
    if conv.assignee_id is not None and conv.assignee_id != actor.id:
        return conv, []
    conv.unread = 0
    await session.flush()
    return conv, [_changed(conv, ("unread",))]


async def set_status(
    session: AsyncSession,
    conversation_id: int,
    status: str,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Conversation, list[DomainEvent]]:
    """Resolve, reopen or park (pending) a conversation."""
    if status not in {s.value for s in ConversationStatus}:
        raise InvalidInput(
            f"status: {status!r} — ожидается open, pending или resolved",
            details={"field": "status", "value": status},
        )
    conv = await _writable(session, conversation_id, actor, rules)
    if conv.status == status:
        return conv, []
    conv.status = status
    if status == ConversationStatus.RESOLVED.value:
        conv.unread = 0
    conv.updated_at = now or utcnow()
    await session.flush()
    return conv, [_changed(conv, ("status",))]


async def assign(
    session: AsyncSession,
    conversation_id: int,
    user_id: int | None,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime | None = None,
) -> tuple[Conversation, list[DomainEvent]]:
    """Hand the conversation to ``user_id`` (None: back to the queue). A manager may take an
    unassigned one for himself; only the head or an admin hands it to somebody else."""
    conv = await _locked(session, conversation_id)  # two taking it at once: one gets it
    if (
        user_id == actor.id
        and conv.assignee_id not in (None, actor.id)
        and conv.owner_id is None  # a personal mailbox's stays unseen (not found)
        and not access.is_privileged(actor)
    ):
        raise Conflict(
            "разговор уже взял другой менеджер",
            details={"field": "assignee_id", "value": user_id},
        )
    _check(actor, conv, rules, write=False)
    taking = conv.assignee_id is None and user_id == actor.id
    if not taking and not access.is_privileged(actor):
        raise PermissionDenied(
            "переназначить разговор может только руководитель отдела продаж или администратор",
            details={"field": "assignee_id", "value": user_id},
        )
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is None or not user.is_active:
            raise InvalidInput(
                f"assignee_id: нет активного пользователя {user_id}",
                details={"field": "assignee_id", "value": user_id},
            )
    if conv.assignee_id == user_id:
        return conv, []
    previous = conv.assignee_id
    conv.assignee_id = user_id
    conv.updated_at = now or utcnow()
    await session.flush()
    event = _changed(conv, ("assignee_id",))
    if previous is not None:
        event = ConversationChanged(
            **{
                **{k: getattr(event, k) for k in ("conversation_id", "changes", "status")},
                "assignee_id": user_id,
                "unread": conv.unread,
                "audience": (*event.audience, f"user:{previous}"),
            }
        )
    return conv, [event]


# ---------------------------------------------------------------- mailboxes


async def mailbox_cursors(session: AsyncSession, channel: str) -> dict[str, tuple[int | None, int]]:
    """Mailbox name -> (UIDVALIDITY, last UID stored) of an e-mail channel."""
    rows = await session.execute(
        select(MailboxCursor.mailbox, MailboxCursor.uidvalidity, MailboxCursor.last_uid).where(
            MailboxCursor.channel == channel
        )
    )
    return {r.mailbox: (r.uidvalidity, r.last_uid) for r in rows}


async def save_mailbox_cursor(
    session: AsyncSession,
    channel: str,
    mailbox: str,
    uidvalidity: int | None,
    last_uid: int,
    *,
    now: datetime,
) -> None:
    """Remember how far ``mailbox`` was read, in the transaction that stored its letters."""
    stmt = _insert(session)(MailboxCursor).values(
        channel=channel, mailbox=mailbox, uidvalidity=uidvalidity, last_uid=last_uid, updated_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=["channel", "mailbox"],
            set_={"uidvalidity": uidvalidity, "last_uid": last_uid, "updated_at": now},
        )
    )


async def store_attachment(
    session: AsyncSession, message_id: int, index: int, **facts: Any
) -> Message | None:
    """Record what became of attachment ``index`` of a message: its storage ``key``, ``size``,
    ``sha256`` and ``mime``, or why it was ``refused``."""
    message = await session.get(Message, message_id, populate_existing=True)
    if message is None or index >= len(message.attachments):
        return None
    attachments = [dict(a) for a in message.attachments]
    attachments[index].update(facts)
    message.attachments = attachments  # a new list: the JSON column sees the change
    await session.flush()
    return message


# ---------------------------------------------------------------- bounces


async def record_bounce(
    session: AsyncSession,
    address: str,
    *,
    at: datetime,
    channel: str,
    status: str | None,
    reason: str | None,
    message_id: str | None = None,
) -> None:
    """A mail server reported ``address`` permanently unreachable: remember the latest
    report (its date, code and the server's reason) for the card and the reply box."""
    values = {
        "bounced_at": at,
        "status": (status or None) and status[:32],
        "reason": (reason or None) and reason[:500],
        "channel": channel[:64],
        "message_id": (message_id or None) and message_id[:200],
    }
    stmt = _insert(session)(EmailBounce).values(address=address.strip().lower()[:320], **values)
    await session.execute(stmt.on_conflict_do_update(index_elements=["address"], set_=values))


async def clear_bounce(session: AsyncSession, address: str) -> None:
    """The address wrote to us: it is reachable again."""
    bounce = await session.scalar(
        select(EmailBounce).where(EmailBounce.address == address.strip().lower())
    )
    if bounce is not None:
        await session.delete(bounce)


async def bounces(session: AsyncSession, addresses: Sequence[str]) -> dict[str, EmailBounce]:
    """The bounce reports of ``addresses`` that have one, by lower-cased address."""
    wanted = sorted({a.strip().lower() for a in addresses if a})
    if not wanted:
        return {}
    rows = await session.scalars(select(EmailBounce).where(EmailBounce.address.in_(wanted)))
    return {b.address: b for b in rows}
