"""Many clients' messages stored at once: :func:`receive_many` is :func:`~crm_core.conversations.
service.receive` for a batch (the inbox's webhook deliveries), with set-based statements.

What one message costs alone — is it stored already, its conversation, who the sender is,
the assignment, a lead for a new sender, the message, its activity on the timeline — is asked
once for the whole batch: one query for every stored message id, one for every conversation,
one for every sender's number (then the e-mail, messenger id and other channels of those not
found), one statement per round-robin rule for all its turns, one count of open conversations
for the capacity; the new conversations written in one statement, the new leads with their
numbers and first stage in one, and on PostgreSQL the conversations' update (which also
numbers the new messages) and the messages with their activities in two. The rules are
:func:`receive`'s: the same identification order, assignment and lead; the messages of one
sender in a batch share his conversation (and one lead).

Race safety is the caller's: the batch runs in one transaction; a message or conversation
another writer stored meanwhile makes a statement fail (unique keys), and the caller takes the
batch again one message at a time (:func:`receive`'s insert-if-absent path).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.clients import service as clients
from crm_core.clients.model import MessengerId
from crm_core.conversations import service as conv_service
from crm_core.conversations.model import (
    Conversation,
    ConversationStatus,
    Message,
    MessageStatus,
)
from crm_core.conversations.service import (
    TEXT_MAX,
    Incoming,
    _Client,
    _new_event,
    _Origin,
    _owner,
    _preview,
)
from crm_core.db import (
    UnnestInsert,
    UnnestUpdate,
    fetch_pg,
    is_postgresql,
    transient,
    write_lock,
)
from crm_core.distribution import service as distribution
from crm_core.events import DomainEvent
from crm_core.leads import service as leads
from crm_core.leads.schemas import LeadInput
from crm_core.rules import CrmRules
from crm_core.users.model import User

log = logging.getLogger(__name__)

Key = tuple[str, str, str, str]  # channel, identity kind, identity value, thread key


def _key(incoming: Incoming) -> Key:
    return (
        incoming.channel,
        incoming.identity_kind,
        incoming.identity_value[:320],
        incoming.thread_key[:300],
    )


def _pid(incoming: Incoming) -> tuple[str, str]:
    return incoming.channel, incoming.provider_message_id[:200]


@dataclass
class Batch:
    """What :func:`receive_many` did: the events to publish after the commit (in order), and
    the messages that were stored already (a redelivery: stored once)."""

    events: list[DomainEvent] = field(default_factory=list)
    repeated: list[Incoming] = field(default_factory=list)
    stored: int = 0


@dataclass
class _Thread:
    """One conversation of the batch and its new messages."""

    conv: Conversation
    new: bool
    items: list[Incoming]
    client: _Client | None = None
    why: str = ""
    origin: _Origin | None = None  # an unknown sender's: his lead's source and region


async def receive_many(
    session: AsyncSession,
    incomings: Sequence[Incoming],
    *,
    rules: CrmRules,
    now: datetime,
    default_timezone: str = "Europe/Moscow",
    book: distribution.RuleBook | None = None,
    capacity: int | None = None,
    off_hours_reply: str | None = None,
    fetch_media: bool = False,
) -> Batch:
    """Store every message of ``incomings`` once, as :func:`receive` stores one."""
    out = Batch()
    fresh: list[Incoming] = []
    seen: set[tuple[str, str]] = set()
    for incoming in incomings:
        if _pid(incoming) in seen:
            out.repeated.append(incoming)
        else:
            seen.add(_pid(incoming))
            fresh.append(incoming)
    if not fresh:
        return out
    # The batch writes its conversations back whole (_write): nobody may change them
    # between its reading and its commit (another instance's batch, a manager's action).
    await write_lock(session, "conversations")
    stored = await conv_service.stored_ids(session, sorted(seen))
    todo = [i for i in fresh if _pid(i) not in stored]
    out.repeated.extend(i for i in fresh if _pid(i) in stored)
    if not todo:
        return out
    threads = await _threads(session, todo, now)
    await _identify(session, threads, rules)
    await _origins(session, threads)
    await _assign(session, threads, now, rules, default_timezone, book, capacity)
    lead_events = await _new_leads(session, threads, now, rules)
    out.events.extend(lead_events)
    messages = _messages(threads, now)
    recorded = await _write(session, threads, messages, now)
    by_external = {a.external_id: a for a in recorded}
    for thread, message in messages:
        activity = by_external.get(f"message:{message.id}")
        if activity is not None:
            out.events.append(activity)
        out.events.append(_new_event(thread.conv, message))
        if fetch_media:
            await conv_service.schedule_media(session, message, now)
    for thread in threads:
        if thread.new and thread.why == "nobody_on_duty" and off_hours_reply:
            _, reply_events = await conv_service.queue_reply(
                session, thread.conv.id, off_hours_reply, actor=access.SYSTEM, rules=rules, now=now
            )
            out.events.extend(reply_events)
    out.stored = len(messages)
    return out


async def _threads(session: AsyncSession, todo: Sequence[Incoming], now: datetime) -> list[_Thread]:
    """The conversations of the batch's senders: the stored ones in one query (locked till
    the commit), the new ones written in one statement."""
    grouped: dict[Key, list[Incoming]] = {}
    for incoming in todo:
        grouped.setdefault(_key(incoming), []).append(incoming)
    keys = list(grouped)
    columns = (
        Conversation.channel,
        Conversation.identity_kind,
        Conversation.identity_value,
        Conversation.thread_key,
    )
    pg = is_postgresql(session)

    async def lookup(wanted: list[Key]) -> list[Conversation]:
        if pg:  # the same SQL for any batch, on the driver's connection: transient objects
            rows = await fetch_pg(session, _CONVERSATIONS, _key_arrays(wanted))
            return [transient(Conversation, r) for r in rows]
        return list(
            await session.scalars(
                select(Conversation)
                .where(tuple_(*columns).in_(wanted))
                .order_by(Conversation.id)
                .with_for_update()
            )
        )

    found = {
        (c.channel, c.identity_kind, c.identity_value, c.thread_key): c for c in await lookup(keys)
    }
    missing = [k for k in keys if k not in found]
    created: set[Key] = set()
    if missing:
        rows = []
        for key in missing:
            first = grouped[key][0]
            rows.append(
                {
                    "channel": key[0],
                    "identity_kind": key[1],
                    "identity_value": key[2],
                    "thread_key": key[3],
                    "channel_kind": first.channel_kind,
                    "name": (first.sender_name or "")[:300],
                    "phone": first.phone,
                    "status": ConversationStatus.OPEN.value,
                    "unread": 0,
                    "preview": "",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        inserted: Sequence[Conversation]
        if pg:
            new_rows = await fetch_pg(
                session, _NEW_CONVERSATIONS.statement, _NEW_CONVERSATIONS.params(rows)
            )
            inserted = [transient(Conversation, r) for r in new_rows]
        else:
            inserted = (
                await session.scalars(
                    conv_service._insert(session)(Conversation)
                    .on_conflict_do_nothing()
                    .returning(Conversation),
                    rows,
                )
            ).all()
        for conv in inserted:
            key = (conv.channel, conv.identity_kind, conv.identity_value, conv.thread_key)
            found[key] = conv
            created.add(key)
        late = [k for k in missing if k not in found]
        if late:  # another writer created them meanwhile
            for conv in await lookup(late):
                found[(conv.channel, conv.identity_kind, conv.identity_value, conv.thread_key)] = (
                    conv
                )
    # Detached (PostgreSQL: never in the session): what the batch changes on them is written by
    # one statement at the end (_write), not a flush of each (an UPDATE a row, at every
    # autoflush).
    if not pg:
        for conv in found.values():
            session.expunge(conv)
    return [_Thread(found[k], k in created, grouped[k]) for k in keys]


_CONVERSATIONS = text(
    "SELECT c.* FROM conversations AS c JOIN unnest(CAST(:channels AS VARCHAR[]), "
    "CAST(:kinds AS VARCHAR[]), CAST(:values AS VARCHAR[]), CAST(:threads AS VARCHAR[])) "
    "AS u(channel, kind, value, thread) ON c.channel = u.channel "
    "AND c.identity_kind = u.kind AND c.identity_value = u.value AND c.thread_key = u.thread "
    "ORDER BY c.id FOR UPDATE OF c"  # locked in one order: two batches never deadlock
)
_NEW_CONVERSATIONS = UnnestInsert(
    cast(Table, Conversation.__table__),
    (
        "channel",
        "identity_kind",
        "identity_value",
        "thread_key",
        "channel_kind",
        "name",
        "phone",
        "status",
        "unread",
        "preview",
        "created_at",
        "updated_at",
    ),
    conflict="ON CONFLICT DO NOTHING",
    returning=("*",),
)


def _key_arrays(keys: Sequence[Key]) -> dict[str, list[str]]:
    return {
        "channels": [k[0] for k in keys],
        "kinds": [k[1] for k in keys],
        "values": [k[2] for k in keys],
        "threads": [k[3] for k in keys],
    }


_SAVED = (
    "assignee_id",
    "contact_id",
    "company_id",
    "lead_id",
    "name",
    "phone",
    "status",
    "unread",
    "last_message_at",
    "last_inbound_at",
    "preview",
    "updated_at",
)


def _save_statement() -> Any:
    table = cast(Table, Conversation.__table__)
    return (
        table.update()
        .where(table.c.id == bindparam("conv_id"))
        .values({name: bindparam(f"v_{name}") for name in _SAVED})
    )


_SAVE = _save_statement()


# PostgreSQL: the conversations written back by one statement of arrays (_SAVE_AND_NUMBER).
_SAVE_PG = UnnestUpdate(cast(Table, Conversation.__table__), "id", _SAVED)


async def _save_threads(session: AsyncSession, threads: Sequence[_Thread]) -> None:
    """SQLite: the batch's conversations as it left them, one UPDATE executemany
    (PostgreSQL: :data:`_SAVE_AND_NUMBER`)."""
    params = [
        {"conv_id": t.conv.id, **{f"v_{name}": getattr(t.conv, name) for name in _SAVED}}
        for t in threads
    ]
    conn = await session.connection()
    await conn.execute(_SAVE, params)


_MESSAGE_COLUMNS = (
    "conversation_id",
    "channel",
    "direction",
    "author_kind",
    "kind",
    "text",
    "status",
    "provider_message_id",
    "reply_to",
    "attachments",
    "payload",
    "sent_at",
    "attempts",
    "created_at",
)


# PostgreSQL: _write's statements, the same SQL for any batch. The conversations' update
# numbers the messages; the messages (their ids given) and their activities in one.
_SAVE_AND_NUMBER = text(
    f"WITH saved AS ({_SAVE_PG.statement.text}) "
    f"SELECT nextval(pg_get_serial_sequence('{Message.__tablename__}', 'id')) "
    "FROM generate_series(1, CAST(:n AS INTEGER))"
)
_NEW_MESSAGES = UnnestInsert(
    cast(Table, Message.__table__), ("id", *_MESSAGE_COLUMNS), returning=(), prefix="m"
)
_NEW_ACTIVITIES = activities.new_activities_pg("a")
_MESSAGES_AND_ACTIVITIES = text(
    f"WITH new_messages AS ({_NEW_MESSAGES.statement.text}) {_NEW_ACTIVITIES.statement.text}"
)


async def _write(
    session: AsyncSession,
    threads: Sequence[_Thread],
    messages: Sequence[tuple[_Thread, Message]],
    now: datetime,
) -> list[ActivityRecorded]:
    """The conversations as the batch left them, its messages and their entries on the
    timeline written; the activities' events. PostgreSQL: in two statements — the
    conversations' update also numbers the messages (their sequence), so that the messages
    and the activities naming them go in one. Elsewhere: the conversations' update, the
    session's flush of the messages, the activities."""
    pg = is_postgresql(session)
    if pg:
        saved = [{"id": t.conv.id, **{n: getattr(t.conv, n) for n in _SAVED}} for t in threads]
        numbered = await fetch_pg(
            session, _SAVE_AND_NUMBER, {**_SAVE_PG.params(saved), "n": len(messages)}
        )
        for (_, message), new_id in zip(messages, sorted(r[0] for r in numbered), strict=True):
            message.id = new_id
    else:
        await _save_threads(session, threads)
        session.add_all(m for _, m in messages)
        await session.flush()  # the messages' ids
    # The entries name their messages by id: built once the ids are known.
    entries = [
        entry
        for thread, message in messages
        if (entry := conv_service.timeline_entry(thread.conv, message)) is not None
    ]
    if not pg:
        return await activities.record_new_activities(
            session, entries, actor=access.SYSTEM, now=now
        )
    rows = activities.new_activity_rows(entries, actor=access.SYSTEM, now=now)
    params = _NEW_MESSAGES.params(
        [{name: getattr(m, name) for name in ("id", *_MESSAGE_COLUMNS)} for _, m in messages]
    )
    params.update(_NEW_ACTIVITIES.params(rows))
    result = await fetch_pg(session, _MESSAGES_AND_ACTIVITIES, params)
    return activities.recorded_activities(rows, result)


def _unlinked(conv: Conversation) -> bool:
    return conv.contact_id is None and conv.company_id is None and conv.lead_id is None


async def _identify(session: AsyncSession, threads: Sequence[_Thread], rules: CrmRules) -> None:
    """Who writes, for every conversation not linked to a client yet: :func:`identify`'s
    order (phone, e-mail, messenger id, the same identity on another channel), each step one
    query for the whole batch."""
    unknown = [t for t in threads if _unlinked(t.conv)]
    phones = [t.items[0].phone for t in unknown if t.items[0].phone]
    matches = (
        await clients.find_clients_by_phones(session, phones, actor=access.SYSTEM, rules=rules)
        if phones
        else {}
    )
    left: list[_Thread] = []
    for thread in unknown:
        first = thread.items[0]
        match = matches.get(first.phone) if first.phone else None
        if match is not None:
            thread.client = _Client(
                match.contact_id, match.company_id, match.lead_id, match.responsible_id, match.name
            )
        elif first.email:
            thread.client = await conv_service._by_email(session, first.email)
        if thread.client is None:
            left.append(thread)
    if not left:
        return
    identities = {
        t.conv.id: [(t.items[0].identity_kind, t.items[0].identity_value), *t.items[0].aliases]
        for t in left
    }
    pairs = sorted(
        {
            (channel, value)
            for ids in identities.values()
            for kind, value in ids
            if (channel := conv_service.MESSENGER_OF.get(kind))
        }
    )
    wanted = sorted({pair for ids in identities.values() for pair in ids})
    by_messenger: dict[tuple[str, str], int] = {}
    elsewhere: dict[tuple[str, str], tuple[int | None, int | None, int | None]] = {}
    if is_postgresql(session):  # both look-ups in one round trip
        rows = await fetch_pg(
            session,
            _IDENTITIES,
            {
                "channels": [c for c, _ in pairs],
                "values": [v for _, v in pairs],
                "kinds": [k for k, _ in wanted],
                "identities": [v for _, v in wanted],
            },
        )
        for source, key, value, contact_id, company_id, lead_id, _ in rows:
            if source == "m":
                by_messenger.setdefault((key, value), contact_id)
            else:
                elsewhere.setdefault((key, value), (contact_id, company_id, lead_id))
    else:
        if pairs:
            messenger_rows = await session.execute(
                select(MessengerId.channel, MessengerId.external_id, MessengerId.contact_id).where(
                    tuple_(MessengerId.channel, MessengerId.external_id).in_(pairs)
                )
            )
            for channel, value, messenger_owner in messenger_rows:
                by_messenger.setdefault((channel, value), messenger_owner)
        linked_rows = await session.execute(
            select(
                Conversation.identity_kind,
                Conversation.identity_value,
                Conversation.contact_id,
                Conversation.company_id,
                Conversation.lead_id,
            )
            .where(
                tuple_(Conversation.identity_kind, Conversation.identity_value).in_(wanted),
                or_(
                    Conversation.contact_id.is_not(None),
                    Conversation.company_id.is_not(None),
                    Conversation.lead_id.is_not(None),
                ),
            )
            .order_by(Conversation.id)
        )
        for kind, value, linked_contact, linked_company, linked_lead in linked_rows:
            elsewhere.setdefault((kind, value), (linked_contact, linked_company, linked_lead))
    for thread in left:
        for kind, value in identities[thread.conv.id]:
            channel = conv_service.MESSENGER_OF.get(kind)
            owner_id = by_messenger.get((channel, value)) if channel else None
            if owner_id:
                thread.client = await _owner(session, owner_id, None, None)
                if thread.client is not None:
                    break
        if thread.client is not None:
            continue
        for pair in identities[thread.conv.id]:
            linked = elsewhere.get(pair)
            if linked is not None:
                thread.client = await _owner(session, *linked)
                if thread.client is not None:
                    break


# PostgreSQL: _identify's two look-ups in one statement with the same SQL for any batch
# (arrays, not IN lists): the messenger ids' owners ("m"), then the same identities linked to a
# client in other conversations ("c"), the oldest conversation first.
_IDENTITIES = text(
    "SELECT 'm' AS source, m.channel, m.external_id, m.contact_id, "
    "CAST(NULL AS INTEGER), CAST(NULL AS INTEGER), 0 AS ord FROM messenger_ids AS m "
    "JOIN unnest(CAST(:channels AS VARCHAR[]), CAST(:values AS VARCHAR[])) AS u(channel, value) "
    "ON m.channel = u.channel AND m.external_id = u.value "
    "UNION ALL "
    "SELECT 'c', c.identity_kind, c.identity_value, c.contact_id, c.company_id, c.lead_id, c.id "
    "FROM conversations AS c "
    "JOIN unnest(CAST(:kinds AS VARCHAR[]), CAST(:identities AS VARCHAR[])) AS u(kind, value) "
    "ON c.identity_kind = u.kind AND c.identity_value = u.value "
    "WHERE c.contact_id IS NOT NULL OR c.company_id IS NOT NULL OR c.lead_id IS NOT NULL "
    "ORDER BY source, ord"
)


def _wants_lead(thread: _Thread) -> bool:
    return thread.client is None and _unlinked(thread.conv) and thread.items[0].creates_client


async def _origins(session: AsyncSession, threads: Sequence[_Thread]) -> None:
    """Where each unknown sender came from (:func:`_origin`): the ad, the website visitor's
    source, else the channel (looked up once per channel)."""
    plain: dict[str, _Origin] = {}
    for thread in threads:
        if not _wants_lead(thread):
            continue
        first = thread.items[0]
        payload = first.payload or {}
        if payload.get("referral") or payload.get("start_payload"):
            thread.origin = await conv_service._origin(session, first)
            continue
        if first.channel not in plain:
            plain[first.channel] = await conv_service._origin(session, first)
        thread.origin = plain[first.channel]


# _assign's statements, built once (building one cost about what running it does).
_ACTIVE_USERS = select(User.id).where(
    User.id.in_(bindparam("ids", expanding=True)), User.is_active.is_(True)
)
_OPEN_LOAD = (
    select(Conversation.assignee_id, func.count())
    .where(
        Conversation.assignee_id.in_(bindparam("users", expanding=True)),
        Conversation.status != ConversationStatus.RESOLVED.value,
    )
    .group_by(Conversation.assignee_id)
)


async def _assign(
    session: AsyncSession,
    threads: Sequence[_Thread],
    now: datetime,
    rules: CrmRules,
    default_timezone: str,
    book: distribution.RuleBook | None,
    capacity: int | None,
) -> None:
    """:func:`assign_new` for the batch: the client's responsible while he is active, else the
    rules (all a round-robin rule's turns in one statement), capped by ``capacity``."""
    deciding: list[_Thread] = []
    for thread in threads:
        conv = thread.conv
        if thread.client is not None:
            conv.contact_id, conv.company_id = thread.client.contact_id, thread.client.company_id
            conv.lead_id = thread.client.lead_id
            if not conv.name:
                conv.name = thread.client.name[:300]
            deciding.append(thread)
        elif _unlinked(conv):
            if thread.items[0].creates_client:
                deciding.append(thread)
        elif not thread.new and conv.assignee_id is None:
            deciding.append(thread)  # still in the queue: the rules try again
    if not deciding:
        return
    responsible = {
        t.client.responsible_id for t in deciding if t.client and t.client.responsible_id
    }
    active: set[int] = set()
    if responsible:
        active = set(await session.scalars(_ACTIVE_USERS, {"ids": sorted(responsible)}))
    by_rules: list[_Thread] = []
    for thread in deciding:
        resp = thread.client.responsible_id if thread.client is not None else None
        if resp is not None and resp in active:
            thread.conv.assignee_id, thread.why = resp, "responsible"
        else:
            by_rules.append(thread)
    if not by_rules:
        return
    chosen = await distribution.distribute_many(
        session,
        [t.origin.region_id if t.origin is not None else None for t in by_rules],
        now,
        "message",
        rules=rules,
        book=book,
        default_timezone=default_timezone,
    )
    open_now: dict[int, int] = {}
    if capacity is not None:
        users = sorted({a.user_id for a in chosen if a.user_id is not None})
        if users:
            load_rows = await session.execute(_OPEN_LOAD, {"users": users})
            open_now = {int(u): int(n) for u, n in load_rows if u is not None}
    for thread, assignment in zip(by_rules, chosen, strict=True):
        user_id, why = assignment.user_id, assignment.reason
        if user_id is not None and capacity is not None:
            count = open_now.get(user_id, 0)
            if count >= capacity:
                log.info(
                    "conversation queued: manager %s has %s open (capacity %s)",
                    user_id,
                    count,
                    capacity,
                )
                user_id, why = None, "capacity"
            else:
                open_now[user_id] = count + 1
        thread.conv.assignee_id, thread.why = user_id, why


async def _new_leads(
    session: AsyncSession, threads: Sequence[_Thread], now: datetime, rules: CrmRules
) -> list[DomainEvent]:
    """A lead for every unknown sender (the channel, the ad or the visitor's source), all in
    one write."""
    wanting = [t for t in threads if _wants_lead(t)]
    if not wanting:
        return []
    inputs = []
    for thread in wanting:
        first = thread.items[0]
        origin = thread.origin
        assert origin is not None  # _origins found it
        label = conv_service.channel_label(first.channel_kind, first.channel_name)
        who = first.sender_name or first.phone or first.email or first.identity_value
        inputs.append(
            LeadInput(
                title=f"{label}: {who}"[:300],
                origin="message",
                contact_name=(first.sender_name or None),
                phones=[first.phone] if first.phone else [],
                emails=[first.email] if first.email else [],
                source_id=origin.source_id,
                region_id=origin.region_id,
                responsible_id=thread.conv.assignee_id,
                tracking=origin.tracking,
            )
        )
    created, events = await leads.create_leads(
        session, inputs, actor=access.SYSTEM, rules=rules, now=now, detached=True
    )
    for thread, lead in zip(wanting, created, strict=True):
        thread.conv.lead_id = lead.id
    return events


def _messages(threads: Sequence[_Thread], now: datetime) -> list[tuple[_Thread, Message]]:
    """The new messages, and each conversation moved on by them (:func:`receive`'s rules)."""
    out: list[tuple[_Thread, Message]] = []
    for thread in threads:
        conv = thread.conv
        for incoming in thread.items:
            message = Message(
                conversation_id=conv.id,
                channel=incoming.channel,
                direction="inbound",
                author_kind="client",
                kind=incoming.kind[:16],
                text=(incoming.text or None) and incoming.text[: TEXT_MAX * 10],
                status=MessageStatus.RECEIVED.value,
                provider_message_id=incoming.provider_message_id[:200],
                reply_to=incoming.reply_to,
                attachments=list(incoming.attachments),
                payload=incoming.payload,
                sent_at=incoming.sent_at,
                attempts=0,
                created_at=now,
            )
            out.append((thread, message))
            conv.unread += 1
            conv.last_message_at = max(conv.last_message_at or now, now)
            conv.last_inbound_at = max(conv.last_inbound_at or incoming.sent_at, incoming.sent_at)
            conv.preview = _preview(incoming.text, incoming.kind)
            conv.updated_at = now
            if conv.status in (ConversationStatus.RESOLVED.value, "pending"):
                conv.status = ConversationStatus.OPEN.value
            if incoming.phone and not conv.phone:
                conv.phone = incoming.phone
            if incoming.sender_name and not conv.name:
                conv.name = incoming.sender_name[:300]
    return out
