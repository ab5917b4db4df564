"""``GET /ws``: pushes each signed-in user the events meant for him.

An event reaches a socket when its audience meets the user's: ``user:<id>``, ``role:<role>``,
``ext:<number>`` for each extension he owns, and ``all``. A socket lives no longer than the
token that opened it: when tokens are revoked (sign-out, a revoked API token, a password change,
a deactivated user) the bus carries :class:`TokensRevoked` to every instance and each hub closes
the sockets those tokens opened. The upgrade must come from one of our pages when a browser
makes it (``Origin``), so another site cannot open a socket with the visitor's cookie.

The hub is an inline bus subscriber (it only hands each event, encoded once, to the sockets'
queues as the event is published) plus a queued one for revocations; each socket has its own
bounded queue and writer task, so a slow browser never holds up the others (it is
disconnected when it falls too far behind).
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

from contact_center.http import security
from contact_center.http.api import USER
from contact_center.http.auth import TOKEN_ID, PasswordChangeRequired
from contact_center.keys import SESSIONS
from crm_core.events import DomainEvent
from crm_core.notifications import service as notifications
from crm_core.users import service as users
from crm_core.users.events import TokensRevoked
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
    token_id: int | None = None
    queue: asyncio.Queue[str] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))


class Hub:
    """The set of connected sockets and the bus subscription feeding them."""

    def __init__(self) -> None:
        self.clients: weakref.WeakSet[Client] = weakref.WeakSet()
        # The sockets by audience key: an event meets only its own keys' sockets, not every
        # socket of the instance (a hundred managers, a few events per message).
        self._by_key: dict[str, set[Client]] = {}
        self.sent = 0
        self._closing: set[asyncio.Task[bool]] = set()  # slow sockets being closed

    def add(self, client: Client) -> None:
        self.clients.add(client)
        for key in client.audience:
            self._by_key.setdefault(key, set()).add(client)

    def discard(self, client: Client) -> None:
        self.clients.discard(client)
        for key in client.audience:
            found = self._by_key.get(key)
            if found is not None:
                found.discard(client)
                if not found:
                    del self._by_key[key]

    async def on_event(self, event: DomainEvent) -> None:
        if isinstance(event, TokensRevoked):
            await self.close_revoked(event)
            return
        self.deliver(event)

    def deliver(self, event: DomainEvent) -> None:
        """Queue ``event`` (encoded once) for every socket of its audience; never waits, so
        the bus runs it inline as the event is published (a socket too far behind is closed
        in the background). TokensRevoked is :meth:`on_event`'s."""
        if not event.audience or isinstance(event, TokensRevoked):
            return
        reached: dict[Client, None] = {}  # each socket once, whatever keys it meets
        for key in event.audience:
            reached.update(dict.fromkeys(self._by_key.get(key, ())))
        targets = list(reached)
        message: str | None = None
        for client in targets:
            message = message or ws_message(event)
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                log.warning("ws client of user %s is too slow; disconnecting", client.user_id)
                closing = asyncio.get_running_loop().create_task(
                    client.ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow")
                )
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)

    async def close_revoked(self, event: TokensRevoked) -> None:
        """Close the sockets the revoked tokens opened (all the user's when every token
        went)."""
        for client in list(self.clients):
            if client.user_id != event.user_id:
                continue
            if event.token_ids and client.token_id not in event.token_ids:
                continue
            log.info("ws of user %s closed: its token was revoked", client.user_id)
            await client.ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"token revoked")

    def provide_status(self) -> dict[str, Any]:
        return {"status": "ok", "connections": len(self.clients), "sent": self.sent}


HUB = web.AppKey("ws_hub", Hub)


async def _user_from_query(request: web.Request) -> tuple[User, int] | None:
    # Browsers cannot set headers on a WebSocket; non-browser clients may pass ?token=.
    token = request.query.get("token")
    if not token:
        return None
    async with request.app[SESSIONS]() as session:
        found = await users.resolve(session, token, kind=TokenKind.API)
        await session.commit()
    if found is not None and found[0].must_change_password:
        raise PasswordChangeRequired("change the one-time password first")
    return found


async def ws_handler(request: web.Request) -> web.StreamResponse:
    # Cross-site WebSocket hijacking: another site's page would open the socket with our
    # visitor's cookie; browsers always send Origin on an upgrade.
    security.require_own_page(request)
    user, token_id = request.get(USER), request.get(TOKEN_ID)
    if user is None:
        found = await _user_from_query(request)
        if found is not None:
            user, token_id = found
    if user is None:
        raise web.HTTPUnauthorized(text="sign in or pass a token")
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=64 * 1024)
    await ws.prepare(request)
    hub = request.app[HUB]
    client = Client(user_id=user.id, audience=audience_of(user), ws=ws, token_id=token_id)
    hub.add(client)
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
        hub.discard(client)
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
