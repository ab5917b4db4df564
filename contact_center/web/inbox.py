"""Входящие: one inbox for WhatsApp, Telegram, SMS and e-mail. The conversation lists (mine,
unassigned, all; by channel and status) on the left, the open conversation in the middle with
its reply box (free text while the channel allows it, an explanation outside WhatsApp's 24-hour
window) and internal notes, the client's card summary on the right. New messages and delivery
statuses arrive over /ws (static/inbox.js refreshes the pieces that changed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from channels.sms import sms_segments
from contact_center.api.common import UnitOfWork
from contact_center.keys import INBOX, RULES, SESSIONS
from contact_center.web import links, listing
from contact_center.web.leads import stage_names
from contact_center.web.shell import (
    MenuEntry,
    is_partial,
    language,
    now,
    page,
    render_error,
    session_user,
    t_of,
)
from crm_core import access
from crm_core.clients.model import Company, Contact
from crm_core.conversations import service as conversations
from crm_core.conversations.model import Conversation, Message
from crm_core.errors import InvalidInput, NotFound
from crm_core.leads.model import Lead
from crm_core.reference.model import Source
from crm_core.users.model import User

MENU = (MenuEntry("inbox", "/inbox", "menu.inbox", "inbox", 55),)
VIEWS = ("mine", "unassigned", "all")
STATUSES = ("open", "pending", "resolved")


def _filters(request: web.Request) -> dict[str, Any]:
    q = request.query
    view = q.get("view") if q.get("view") in VIEWS else "mine"
    status = q.get("status") if q.get("status") in (*STATUSES, "any") else "open"
    channel = q.get("channel") or None
    return {"view": view, "status": status, "channel": channel}


async def _card(
    session: Any, conv: Conversation, names: Any, stages: dict[str, str]
) -> dict[str, Any] | None:
    """The client card summary beside the conversation."""
    refs = await links.client_refs(session, [conv])
    ref = refs.get(id(conv))
    if ref is None:
        return None
    card: dict[str, Any] = {"name": ref.name, "url": ref.url, "phone": ref.phone or conv.phone}
    record: Any = None
    if conv.contact_id is not None:
        record, card["kind"] = await session.get(Contact, conv.contact_id), "contact"
    elif conv.company_id is not None:
        record, card["kind"] = await session.get(Company, conv.company_id), "company"
    elif conv.lead_id is not None:
        record, card["kind"] = await session.get(Lead, conv.lead_id), "lead"
    if record is not None:
        card["responsible"] = names.users.get(record.responsible_id)
        stage = getattr(record, "stage", None)
        card["stage"] = stages.get(stage, stage) if stage else None
        source_id = getattr(record, "source_id", None)
        card["source"] = (
            await session.scalar(select(Source.name).where(Source.id == source_id))
            if source_id
            else None
        )
        card["client_type"] = getattr(record, "client_type", None)
    return card


async def _mail(
    session: Any, inbox: Any, conv: Conversation, answer: int | None = None
) -> dict[str, Any] | None:
    """What the reply box of an e-mail conversation shows: from which mailbox to whom, the
    subject, the letter answered (``answer``, or the client's latest; quoted below the reply)
    and whether the address bounced."""
    if conv.channel_kind != "email":
        return None
    answered = await conversations.answered_letter(session, conv, answer)
    original = ((answered.payload or {}).get("email") or {}) if answered is not None else {}
    found = await conversations.bounces(session, [conv.identity_value])
    return {
        "from": inbox.address(conv.channel),
        "to": conv.identity_value,
        "subject": conversations.reply_subject(original.get("subject")),
        "answered": answered,
        "bounce": found.get(conv.identity_value.lower()),
    }


async def _thread(
    request: web.Request, session: Any, user: User, conv_id: int, names: Any
) -> dict[str, Any]:
    rules = request.app[RULES]
    conv = await conversations.get_conversation(session, conv_id, actor=user, rules=rules)
    messages = await conversations.list_messages(
        session, conv.id, actor=user, rules=rules, limit=200
    )
    inbox = request.app[INBOX]
    window_open = inbox.window_open(conv, now(request))
    raw = request.query.get("answer", "")
    answer = int(raw) if raw.isdigit() and len(raw) < 10 else None
    sms = conv.channel_kind == "sms"
    return {
        "sms": {m.id: _sms_billing(m) for m in messages if m.direction == "outbound"}
        if sms
        else {},
        "sms_counter": sms_counter("") if sms else None,
        "mail": await _mail(session, inbox, conv, answer),
        "upload_limit": inbox.upload_limit(conv.channel),
        "templates": [] if window_open else await inbox.templates(conv.channel),
        "conv": conv,
        "messages": messages,
        "card": await _card(
            session, conv, names, stage_names(request.app[RULES], language(request))
        ),
        "channel_name": inbox.label(conv.channel),
        "window_open": window_open,
        "can_write": conv.assignee_id in (None, user.id) or access.is_privileged(user),
        "can_assign": access.is_privileged(user),
        "assignee": names.users.get(conv.assignee_id) if conv.assignee_id else None,
        "managers": names.managers,
    }


def _sms_billing(message: Message) -> dict[str, Any]:
    """An SMS we sent: its parts (as the gateway counted them, else as we count them) and the
    price the gateway reported (None until it does)."""
    parts, cost, _currency = conversations.billing(message)
    if parts is None and message.text:
        parts = sms_segments(message.text).parts
    return {"parts": parts, "cost": cost}


def sms_counter(text: str) -> dict[str, Any]:
    """What the counter under an SMS reply box says about ``text``: characters, parts, and the
    capacity of a part (Cyrillic is UCS-2: 70 characters, 67 per part of a long message)."""
    seg = sms_segments(text)
    return {
        "chars": len(text),
        "parts": seg.parts if text else 0,
        "per_part": seg.per_part,
        "remaining": seg.remaining,
        "encoding": seg.encoding,
    }


@page("inbox/inbox.html", partial="inbox/_list.html")
async def inbox_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    rules = request.app[RULES]
    f = _filters(request)
    selected = request.query.get("c", "")
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        rows, total = await conversations.list_conversations(
            session,
            actor=user,
            rules=rules,
            view=f["view"],
            channel=f["channel"],
            status=None if f["status"] == "any" else f["status"],
            limit=100,
        )
        counts = await conversations.unread_counts(session, actor=user, rules=rules)
        thread = None
        if selected.isdigit():
            conv_id = int(selected)
            async with UnitOfWork(request) as u:
                _, events = await conversations.mark_read(
                    u.session, conv_id, actor=user, rules=rules
                )
                u.emit(*events)
                await u.commit()
            thread = await _thread(request, session, user, conv_id, names)
    inbox = request.app[INBOX]
    channels = [(code, inbox.label(code)) for code in sorted(inbox.adapters)]
    return {
        "title": t("menu.inbox"),
        "rows": rows,
        "total": total,
        "filters": f,
        "counts": counts,
        "channels": channels,
        "labels": {code: inbox.label(code) for code in inbox.adapters},
        "thread": thread,
        "selected": int(selected) if selected.isdigit() else None,
        "_page": {"conversation_id": int(selected) if selected.isdigit() else None},
    }


@page("inbox/_thread.html")
async def thread_partial(request: web.Request, user: User) -> dict[str, Any]:
    conv_id = int(request.match_info["id"])
    async with UnitOfWork(request) as u:  # he is looking at it: nothing is unread
        _, events = await conversations.mark_read(
            u.session, conv_id, actor=user, rules=request.app[RULES]
        )
        u.emit(*events)
        await u.commit()
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        return {"thread": await _thread(request, session, user, conv_id, names)}


async def _after(request: web.Request, user: User, conv_id: int) -> web.StreamResponse | Any:
    """After an action: the thread again (htmx), or back to the page."""
    if not is_partial(request):
        raise web.HTTPSeeOther(f"/inbox?c={conv_id}")
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        return {"thread": await _thread(request, session, user, conv_id, names)}


# The reply form's body: text and up to ATTACHMENTS_MAX files of at most a channel's limit
# (25 MB by default); each file is checked against its channel's own limit.
UPLOAD_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class _Reply:
    text: str
    as_note: bool
    subject: str | None
    reply_to_message_id: int | None
    quote: bool
    files: Sequence[tuple[str, str | None, bytes]]


def _reply_form(form: Any) -> _Reply:
    raw = str(form.get("reply_to_message_id", "")).strip()
    if raw and not raw.isdigit():
        raise InvalidInput(
            f"reply_to_message_id: {raw!r} — ожидается номер письма",
            details={"field": "reply_to_message_id", "value": raw},
        )
    files: list[tuple[str, str | None, bytes]] = []
    for key, value in form.items():
        if isinstance(value, web.FileField):
            with value.file:  # aiohttp's spooled temporary file: closed once read
                data = value.file.read()
            if key == "files" and value.filename:
                files.append((str(value.filename), value.content_type, data))
    return _Reply(
        text=str(form.get("text", "")),
        as_note=form.get("note") == "1",
        subject=str(form["subject"]) if "subject" in form else None,
        reply_to_message_id=int(raw) if raw else None,
        quote=form.get("quote") == "1",
        files=files,
    )


async def reply_route(request: web.Request) -> web.StreamResponse:
    """The reply form takes files: a larger body than other forms (refused in Russian, not
    with aiohttp's English 413, past it: announced by Content-Length or found while reading
    a chunked body)."""
    t = t_of(request)
    if request.content_length is not None and request.content_length > UPLOAD_MAX_BODY:
        return await render_error(request, 413, t("inbox.files.too_large_total"))
    clone = request.clone(
        client_max_size=UPLOAD_MAX_BODY,
        remote=request.remote or "",
        scheme=request.scheme,
        host=request.host,
    )
    return await reply(clone)


@page("inbox/_thread.html", too_large="inbox.files.too_large_total")
async def reply(request: web.Request, user: User) -> Any:
    conv_id = int(request.match_info["id"])
    form = await request.post()
    text = str(form.get("text", ""))
    try:
        await _write(request, user, conv_id, _reply_form(form))
    except InvalidInput as exc:  # an empty text, the WhatsApp window, a file: beside the box
        if not is_partial(request):
            raise
        async with request.app[SESSIONS]() as session:
            names = await listing.names(session)
            thread = await _thread(request, session, user, conv_id, names)
        draft = {"error": exc.message, "draft": text}
        if "subject" in form:
            draft["draft_subject"] = str(form["subject"])
        return {"thread": {**thread, **draft}, "_status": 422}
    return await _after(request, user, conv_id)


async def _write(request: web.Request, user: User, conv_id: int, form: _Reply) -> None:
    rules = request.app[RULES]
    inbox = request.app[INBOX]
    at = now(request)
    if form.as_note:
        if form.files:
            raise InvalidInput(
                "files: к внутренней заметке файлы не прикладываются — снимите отметку "
                "«заметка» или уберите файлы",
                details={"field": "files"},
            )
        async with UnitOfWork(request) as u:
            _, events = await conversations.add_note(
                u.session, conv_id, form.text, actor=user, rules=rules, now=at
            )
            u.emit(*events)
            await u.commit()
        return
    async with request.app[SESSIONS]() as session:
        conv = await conversations.get_conversation(session, conv_id, actor=user, rules=rules)
        channel = conv.channel
    kept = await inbox.store_files(channel, form.files)
    try:
        async with UnitOfWork(request) as u:
            conv = await conversations.get_conversation(u.session, conv_id, actor=user, rules=rules)
            _, events = await conversations.queue_reply(
                u.session,
                conv_id,
                form.text,
                actor=user,
                rules=rules,
                window_open=inbox.window_open(conv, at),
                now=at,
                subject=form.subject,
                reply_to_message_id=form.reply_to_message_id,
                quote=form.quote,
                attachments=kept,
            )
            u.emit(*events)
            await u.commit()
    except BaseException:
        await inbox.drop_files(kept)  # refused (the window, an empty text): nothing is kept
        raise


@page("inbox/_thread.html")
async def send_template(request: web.Request, user: User) -> Any:
    conv_id = int(request.match_info["id"])
    form = await request.post()
    name, language = str(form.get("name", "")), str(form.get("language", ""))
    params = [str(form.get(f"param_{i}", "")).strip() for i in range(1, 21) if f"param_{i}" in form]
    try:
        async with UnitOfWork(request) as u:
            _, events = await request.app[INBOX].queue_template(
                u.session, conv_id, name, language, params, actor=user, now=now(request)
            )
            u.emit(*events)
            await u.commit()
    except InvalidInput as exc:
        if not is_partial(request):
            raise
        async with request.app[SESSIONS]() as session:
            names = await listing.names(session)
            thread = await _thread(request, session, user, conv_id, names)
        return {"thread": {**thread, "template_error": exc.message}, "_status": 422}
    return await _after(request, user, conv_id)


@page("inbox/_thread.html")
async def set_status(request: web.Request, user: User) -> Any:
    conv_id = int(request.match_info["id"])
    status = str((await request.post()).get("status", ""))
    async with UnitOfWork(request) as u:
        _, events = await conversations.set_status(
            u.session, conv_id, status, actor=user, rules=request.app[RULES], now=now(request)
        )
        u.emit(*events)
        await u.commit()
    return await _after(request, user, conv_id)


@page("inbox/_thread.html")
async def assign(request: web.Request, user: User) -> Any:
    conv_id = int(request.match_info["id"])
    raw = str((await request.post()).get("assignee_id", ""))
    if raw and not raw.isdigit():
        raise InvalidInput(f"assignee_id: {raw!r} — ожидается номер пользователя")
    async with UnitOfWork(request) as u:
        _, events = await conversations.assign(
            u.session,
            conv_id,
            int(raw) if raw else None,
            actor=user,
            rules=request.app[RULES],
            now=now(request),
        )
        u.emit(*events)
        await u.commit()
    return await _after(request, user, conv_id)


INLINE = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif"})


async def media(request: web.Request) -> web.StreamResponse:
    """A client's attachment, for those who may read the conversation: pictures inline, any
    other file as a download (never rendered by the browser)."""
    user = session_user(request)
    message_id, index = int(request.match_info["id"]), int(request.match_info["index"])
    storage = request.app[INBOX].storage
    async with request.app[SESSIONS]() as session:
        message = await session.get(Message, message_id)
        if message is None or index >= len(message.attachments) or storage is None:
            raise web.HTTPNotFound()
        try:
            await conversations.get_conversation(
                session, message.conversation_id, actor=user, rules=request.app[RULES]
            )
        except NotFound:
            raise web.HTTPNotFound() from None
    attachment = message.attachments[index]
    key = attachment.get("key")
    if not key:
        raise web.HTTPNotFound()
    mime = str(attachment.get("mime") or "application/octet-stream").split(";", 1)[0]
    filename = str(attachment.get("filename") or f"file-{message_id}-{index}")
    disposition = "inline" if mime in INLINE else "attachment"
    resp = web.StreamResponse(
        headers={
            "Content-Type": mime if mime in INLINE else "application/octet-stream",
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(filename)}",
            "Cache-Control": "private, max-age=3600",
        }
    )
    await resp.prepare(request)
    async for chunk in await storage.open_range(str(key)):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


@page("inbox/_sms_counter.html")
async def sms_count(request: web.Request, user: User) -> dict[str, Any]:
    """The SMS reply box's counter for the text typed so far (htmx, as he types)."""
    text = str((await request.post()).get("text", ""))[:10_000]
    return {"counter": sms_counter(text)}


def routes(app: web.Application) -> None:
    app.router.add_get("/inbox", inbox_page)
    app.router.add_post("/inbox/sms-count", sms_count)
    app.router.add_get(r"/inbox/{id:\d{1,9}}/thread", thread_partial)
    app.router.add_get(r"/inbox/media/{id:\d{1,9}}/{index:\d{1,2}}", media)
    app.router.add_post(r"/inbox/{id:\d{1,9}}/reply", reply_route)
    app.router.add_post(r"/inbox/{id:\d{1,9}}/template", send_template)
    app.router.add_post(r"/inbox/{id:\d{1,9}}/status", set_status)
    app.router.add_post(r"/inbox/{id:\d{1,9}}/assign", assign)
