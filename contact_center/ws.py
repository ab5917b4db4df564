"""``GET /ws``: pushes each signed-in user the events meant for him.

An event reaches a socket when its audience meets the user's: ``user:<id>``, ``role:<role>``,
``ext:<number>`` for each extension he owns, and ``all``. The hub is one bus subscriber; each
socket has its own bounded queue and writer task, so a slow browser never holds up the others
(it is disconnected when it falls too far behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, web

from contact_center.http.api import USER
from contact_center.keys import SESSIONS
from crm_core.events import DomainEvent
from crm_core.notifications import service as notifications
from crm_core.users import service as users
from crm_core.users.model import TokenKind, User

log = logging.getLogger(__name__)

QUEUE_LIMIT = 1000


def audience_of(user: User) -> frozenset[str]:
    keys = {"all", f"user:{user.id}", f"role:{user.role}"}
    keys.update(f"ext:{e.extension}" for e in user.extensions)
    return frozenset(keys)


def ws_message(event: DomainEvent) -> str:
    """``{"type": <event name>, ...fields}``; the audience stays on the server."""
    data = event.to_dict()["data"]
    data.pop("audience", None)
    return json.dumps({"type": event.name, **data}, ensure_ascii=False)


@dataclass(eq=False)
class Client:
    user_id: int
    audience: frozenset[str]
    ws: web.WebSocketResponse
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))


class Hub:
    """The set of connected sockets and the bus subscription feeding them."""

    def __init__(self) -> None:
        self.clients: weakref.WeakSet[Client] = weakref.WeakSet()
        self.sent = 0

    async def on_event(self, event: DomainEvent) -> None:
        if not event.audience:
            return
        wanted = set(event.audience)
        message: str | None = None
        for client in list(self.clients):
            if client.audience.isdisjoint(wanted):
                continue
            message = message or ws_message(event)
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("ws client of user %s is too slow; disconnecting", client.user_id)
                await client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")

    def provide_status(self) -> dict[str, Any]:
        return {"status": "ok", "connections": len(self.clients), "sent": self.sent}


HUB = web.AppKey("ws_hub", Hub)


async def _user_from_query(request: web.Request) -> User | None:
    # Browsers cannot set headers on a WebSocket; non-browser clients may pass ?token=.
    token = request.query.get("token")
    if not token:
        return None
    async with request.app[SESSIONS]() as session:
        user = await users.resolve_token(session, token, kind=TokenKind.API)
        await session.commit()
    return user


async def ws_handler(request: web.Request) -> web.StreamResponse:
    user = request.get(USER) or await _user_from_query(request)
    if user is None:
        raise web.HTTPUnauthorized(text="sign in or pass a token")
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = request.app[HUB]
    client = Client(user_id=user.id, audience=audience_of(user), ws=ws)
    hub.clients.add(client)
    log.info("ws connected: user %s", user.login, extra={"user_id": user.id})
    writer = asyncio.get_running_loop().create_task(_writer(client, hub))
    try:
        async with request.app[SESSIONS]() as session:
            unread = await notifications.unread_count(session, user.id)
        # What waited for him while he was away (the list: GET /api/v1/notifications).
        hello = {"type": "hello", "user_id": user.id, "unread_notifications": unread}
        await ws.send_str(json.dumps(hello))
        async for msg in ws:
            if msg.type == web.WSMsgType.TEXT and msg.data == "ping":
                await ws.send_str('{"type": "pong"}')
    finally:
        hub.clients.discard(client)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    return ws


async def _writer(client: Client, hub: Hub) -> None:
    while True:
        message = await client.queue.get()
        if client.ws.closed:
            return
        try:
            await client.ws.send_str(message)
        except (ConnectionResetError, RuntimeError):
            return
        hub.sent += 1


async def on_shutdown(app: web.Application) -> None:
    """Close every socket with GOING_AWAY: the server is shutting down."""
    for client in list(app[HUB].clients):
        await client.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def routes(app: web.Application) -> None:
    """``GET /ws`` (the hub is built by the composition root)."""
    app.router.add_get("/ws", ws_handler)
