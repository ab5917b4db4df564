"""Conversations (a client's thread on one channel) and their messages."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from crm_core.db import Base, JsonDoc, utcnow


class ConversationStatus(enum.StrEnum):
    OPEN = "open"
    PENDING = "pending"  # answered, waiting for the client
    RESOLVED = "resolved"


class MessageStatus(enum.StrEnum):
    RECEIVED = "received"  # a client's message
    QUEUED = "queued"  # written to the outbox, not yet taken by the provider
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"
    NOTE = "note"  # an internal note: never sent


# How far an outbound message got; a status update never moves it back.
STATUS_RANK = {"queued": 0, "sent": 1, "delivered": 2, "read": 3}


class Conversation(Base):
    """One client's thread on one channel: ``(channel, identity_kind, identity_value)`` is who
    writes (a WhatsApp wa_id, a Telegram user id, a phone, an address), ``thread_key`` separates
    an e-mail address's threads ("" for messengers)."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint(
            "channel",
            "identity_kind",
            "identity_value",
            "thread_key",
            name="uq_conversations_identity",
        ),
        Index("ix_conversations_assignee_status", "assignee_id", "status", "last_message_at"),
        Index("ix_conversations_status_last", "status", "last_message_at"),
        # the same person on another channel of the kind (identification)
        Index("ix_conversations_identity_value", "identity_value", "identity_kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))  # the channel's code in config
    channel_kind: Mapped[str] = mapped_column(String(16))  # whatsapp, email, telegram, sms
    identity_kind: Mapped[str] = mapped_column(String(16))  # wa_id, telegram, phone, email...
    identity_value: Mapped[str] = mapped_column(String(320))
    thread_key: Mapped[str] = mapped_column(String(300), default="")
    name: Mapped[str] = mapped_column(String(300), default="")  # who writes, as he calls himself
    phone: Mapped[str | None] = mapped_column(String(16))  # E.164 when the channel reveals it
    status: Mapped[str] = mapped_column(String(16), default=ConversationStatus.OPEN.value)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    contact_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), index=True
    )
    company_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    lead_id: Mapped[int | None] = mapped_column(
        ForeignKey("leads.id", ondelete="SET NULL"), index=True
    )
    # A personal mailbox's conversation: only this manager (and the head) sees it.
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    unread: Mapped[int] = mapped_column(default=0)
    last_message_at: Mapped[datetime | None]
    last_inbound_at: Mapped[datetime | None]  # the WhatsApp 24-hour window counts from it
    preview: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    """One message of a conversation, either way, or an internal note.

    ``provider_message_id`` is unique per channel: a redelivered webhook finds the stored
    message, and status updates come back with it."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        UniqueConstraint(
            "channel", "provider_message_id", name="uq_conversation_messages_provider_id"
        ),
        Index("ix_conversation_messages_conv_at", "conversation_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(16))  # inbound, outbound, internal (a note)
    author_kind: Mapped[str] = mapped_column(String(16))  # client, manager, bot
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16), default="text")  # text, image, ..., note
    text: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(500))
    provider_message_id: Mapped[str | None] = mapped_column(String(200))
    reply_to: Mapped[str | None] = mapped_column(String(200))
    attachments: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)  # referral, location...
    sent_at: Mapped[datetime]  # the provider's time of an inbound one; when written, outbound
    status_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MailboxCursor(Base):
    """How far a mailbox of an e-mail channel has been read: its UIDVALIDITY and the last UID
    stored, saved with the messages, so a restart neither loses nor repeats a letter."""

    __tablename__ = "mailbox_cursors"
    __table_args__ = (UniqueConstraint("channel", "mailbox", name="uq_mailbox_cursors_box"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    mailbox: Mapped[str] = mapped_column(String(200))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Delivery(Base):
    """A provider's webhook delivery as it arrived (method, headers, query, raw body), stored
    before the provider is answered and deleted in the transaction that processed it: a
    delivery accepted and not yet processed (a crash, the database away) is processed after a
    restart. ``key`` (the body's SHA-256) stores a redelivery that arrives while the first is
    still waiting once; ``next_at`` is when it is due (None: given up after its attempts, kept
    with the ``error`` for a person to look at)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("channel", "key", name="uq_webhook_deliveries_key"),
        Index("ix_webhook_deliveries_next_at", "next_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # whatsapp, telegram, sms
    key: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8), default="POST")
    headers: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    query: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime]
    next_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(String(500))


class EmailBounce(Base):
    """An address our mail could not reach: the last permanent delivery failure (DSN) a
    mail server reported for it. The client card shows it beside the address and the reply box
    warns before writing to it; a letter the address sends us again clears it."""

    __tablename__ = "email_bounces"
    __table_args__ = (UniqueConstraint("address", name="uq_email_bounces_address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320))  # lower-cased
    bounced_at: Mapped[datetime]
    status: Mapped[str | None] = mapped_column(String(32))  # the enhanced code: 5.1.1
    reason: Mapped[str | None] = mapped_column(String(500))  # the server's diagnostic
    channel: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str | None] = mapped_column(String(200))  # our letter that bounced
