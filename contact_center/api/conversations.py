"""The inbox API: conversations and their messages.

``GET /conversations`` (filters: view mine/unassigned/all, channel, status, assignee, unread,
client), ``GET /conversations/{id}``, ``PATCH /conversations/{id}`` (status, assignee),
``POST /conversations/{id}/read``, ``GET``/``POST /conversations/{id}/messages`` (a reply goes
through the outbox: stored ``queued`` and sent by a durable job; ``note: true`` is an internal
note). A WhatsApp reply outside the 24-hour window is refused with 422 and says why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, uow
from contact_center.http.api import Api
from contact_center.keys import INBOX
from crm_core.conversations import service as conversations
from crm_core.conversations.model import Conversation, Message
from crm_core.db import DbId

api = Api()
TAGS = ["inbox"]


class ConversationOut(BaseModel):
    id: int
    channel: str
    channel_kind: str
    channel_name: str
    identity_kind: str
    identity_value: str
    name: str
    phone: str | None
    status: str
    assignee_id: int | None
    contact_id: int | None
    company_id: int | None
    lead_id: int | None
    unread: int
    last_message_at: datetime | None
    last_inbound_at: datetime | None
    preview: str
    window_open: bool = Field(description="may a free-form reply go now (WhatsApp: 24 h)")
    created_at: datetime

    @classmethod
    def of(cls, conv: Conversation, request: web.Request) -> Self:
        inbox = request.app[INBOX]
        return cls(
            **{k: getattr(conv, k) for k in cls.model_fields if hasattr(conv, k)},
            channel_name=inbox.label(conv.channel),
            window_open=inbox.window_open(conv, clock(request).now()),
        )


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    conversation_id: int
    direction: str
    author_kind: str
    author_id: int | None
    kind: str
    text: str | None
    status: str
    error: str | None
    provider_message_id: str | None
    attachments: list[dict[str, Any]]
    payload: dict[str, Any] | None
    sent_at: datetime
    status_at: datetime | None

    @classmethod
    def of(cls, message: Message) -> Self:
        return cls.model_validate(message)


class ConversationQuery(PageQuery):
    view: Literal["mine", "unassigned", "all"] = "all"
    channel: str | None = Field(None, max_length=64)
    status: Literal["open", "pending", "resolved"] | None = None
    assignee_id: DbId | None = None
    unread: bool | None = None
    contact_id: DbId | None = None
    company_id: DbId | None = None
    lead_id: DbId | None = None


@api.route(
    "GET",
    "/conversations",
    summary="Conversations, latest first",
    query=ConversationQuery,
    tags=TAGS,
)
async def list_conversations(request: web.Request, query: ConversationQuery) -> dict[str, Any]:
    async with uow(request) as u:
        rows, total = await conversations.list_conversations(
            u.session,
            actor=actor(request),
            rules=rules(request),
            view=query.view,
            channel=query.channel,
            status=query.status,
            assignee_id=query.assignee_id,
            unread=query.unread,
            contact_id=query.contact_id,
            company_id=query.company_id,
            lead_id=query.lead_id,
            limit=query.limit,
            offset=query.offset,
        )
    items = [ConversationOut.of(c, request).model_dump(mode="json") for c in rows]
    return page(items, total, query)


@api.route(
    "GET",
    "/conversations/{id}",
    summary="One conversation",
    response=ConversationOut,
    tags=TAGS,
    errors={404: "No such conversation"},
)
async def get_conversation(request: web.Request) -> ConversationOut:
    conv_id = path_id(request, "id", "conversation")
    async with uow(request) as u:
        conv = await conversations.get_conversation(
            u.session, conv_id, actor=actor(request), rules=rules(request)
        )
    return ConversationOut.of(conv, request)


class ConversationPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["open", "pending", "resolved"] | None = None
    assignee_id: DbId | None = Field(None, description="null with the key present: unassign")


@api.route(
    "PATCH",
    "/conversations/{id}",
    summary="Resolve, reopen or reassign a conversation",
    body=ConversationPatch,
    response=ConversationOut,
    tags=TAGS,
    errors={403: "Only the head reassigns", 404: "No such conversation"},
)
async def patch_conversation(request: web.Request, body: ConversationPatch) -> ConversationOut:
    conv_id = path_id(request, "id", "conversation")
    user, now = actor(request), clock(request).now()
    async with uow(request) as u:
        if "assignee_id" in body.model_fields_set:
            _, events = await conversations.assign(
                u.session, conv_id, body.assignee_id, actor=user, rules=rules(request), now=now
            )
            u.emit(*events)
        if body.status is not None:
            _, events = await conversations.set_status(
                u.session, conv_id, body.status, actor=user, rules=rules(request), now=now
            )
            u.emit(*events)
        conv = await conversations.get_conversation(
            u.session, conv_id, actor=user, rules=rules(request)
        )
        await u.commit()
    return ConversationOut.of(conv, request)


@api.route(
    "POST",
    "/conversations/{id}/read",
    summary="Mark the conversation read",
    response=ConversationOut,
    tags=TAGS,
    errors={404: "No such conversation"},
)
async def read_conversation(request: web.Request) -> ConversationOut:
    conv_id = path_id(request, "id", "conversation")
    async with uow(request) as u:
        conv, events = await conversations.mark_read(
            u.session, conv_id, actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
    return ConversationOut.of(conv, request)


class InboxCounts(BaseModel):
    mine: int = Field(description="unread messages in the caller's open conversations")
    unassigned: int = Field(description="open conversations nobody has")


@api.route(
    "GET",
    "/inbox/counts",
    summary="The inbox counters of the menu",
    response=InboxCounts,
    tags=TAGS,
)
async def inbox_counts(request: web.Request) -> InboxCounts:
    async with uow(request) as u:
        counts = await conversations.unread_counts(
            u.session, actor=actor(request), rules=rules(request)
        )
    return InboxCounts(**counts)


class MessageQuery(BaseModel):
    limit: int = Field(100, ge=1, le=500)
    before_id: DbId | None = None


@api.route(
    "GET",
    "/conversations/{id}/messages",
    summary="Messages and notes of a conversation, oldest first",
    query=MessageQuery,
    tags=TAGS,
    errors={404: "No such conversation"},
)
async def list_messages(request: web.Request, query: MessageQuery) -> dict[str, Any]:
    conv_id = path_id(request, "id", "conversation")
    async with uow(request) as u:
        rows = await conversations.list_messages(
            u.session,
            conv_id,
            actor=actor(request),
            rules=rules(request),
            limit=query.limit,
            before_id=query.before_id,
        )
    return {"items": [MessageOut.of(m).model_dump(mode="json") for m in rows]}


class TemplateInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=512)
    language: str = Field(min_length=2, max_length=16, examples=["ru"])
    params: list[str] = Field(default_factory=list, max_length=20)


class MessageInput(BaseModel):
    """Text (a reply, or with ``note`` an internal note), or an approved WhatsApp template,
    which may go outside the 24-hour window."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(None, min_length=1, max_length=conversations.TEXT_MAX)
    note: bool = Field(False, description="an internal note: never sent to the client")
    template: TemplateInput | None = None
    subject: str | None = Field(
        None,
        max_length=conversations.SUBJECT_MAX,
        description='e-mail: the subject (default "Re: " and the answered letter\'s)',
    )
    reply_to_message_id: DbId | None = Field(
        None, description="e-mail: the client's letter answered (default: his latest)"
    )
    quote: bool = Field(True, description="e-mail: quote the answered letter below the reply")

    @model_validator(mode="after")
    def _one_kind(self) -> MessageInput:
        if (self.text is None) == (self.template is None):
            raise ValueError("give either text or template")
        if self.template is not None and self.note:
            raise ValueError("a note is text, not a template")
        return self


class TemplateOut(BaseModel):
    name: str
    language: str
    category: str | None
    body: str | None
    params: list[str]


@api.route(
    "GET",
    "/conversations/{id}/templates",
    summary="The approved templates the conversation's channel can send (WhatsApp)",
    tags=TAGS,
    errors={404: "No such conversation"},
)
async def list_templates(request: web.Request) -> dict[str, Any]:
    conv_id = path_id(request, "id", "conversation")
    async with uow(request) as u:
        conv = await conversations.get_conversation(
            u.session, conv_id, actor=actor(request), rules=rules(request)
        )
    found = await request.app[INBOX].templates(conv.channel)
    items = [
        TemplateOut(
            name=t.name,
            language=t.language,
            category=t.category,
            body=t.body,
            params=list(t.params),
        ).model_dump()
        for t in found
    ]
    return {"items": items}


@api.route(
    "POST",
    "/conversations/{id}/messages",
    summary="Reply (through the outbox) or add an internal note",
    body=MessageInput,
    response=MessageOut,
    status=201,
    tags=TAGS,
    errors={
        404: "No such conversation",
        422: "Empty text, an unknown template, or a WhatsApp reply outside the 24-hour window",
    },
)
async def post_message(request: web.Request, body: MessageInput) -> MessageOut:
    conv_id = path_id(request, "id", "conversation")
    user, now = actor(request), clock(request).now()
    async with uow(request) as u:
        if body.template is not None:
            tpl = body.template
            message, events = await request.app[INBOX].queue_template(
                u.session,
                conv_id,
                tpl.name,
                tpl.language,
                tpl.params,
                actor=user,
                now=now,
            )
        elif body.note:
            message, events = await conversations.add_note(
                u.session, conv_id, body.text or "", actor=user, rules=rules(request), now=now
            )
        else:
            conv = await conversations.get_conversation(
                u.session, conv_id, actor=user, rules=rules(request)
            )
            message, events = await conversations.queue_reply(
                u.session,
                conv_id,
                body.text or "",
                actor=user,
                rules=rules(request),
                window_open=request.app[INBOX].window_open(conv, now),
                now=now,
                subject=body.subject,
                reply_to_message_id=body.reply_to_message_id,
                quote=body.quote,
            )
        u.emit(*events)
        await u.commit()
    return MessageOut.of(message)
