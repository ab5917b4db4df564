"""The event bus: publish/subscribe of domain events.

Each subscriber gets its own queue and worker task, so a slow or failing subscriber delays and
loses nothing for the others, and ``publish`` never waits on a handler. With Redis configured the
bus also fans events out over Redis pub/sub, so every server instance's subscribers see them;
events that came from this instance are not delivered twice.

Pub/sub is fire-and-forget between instances. Work that must survive a crash (reminders, robot
steps) is stored in the database, not carried on the bus.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Gauge

from crm_core.events import DomainEvent, UnknownEvent
from routing.circuit import REDIS_DOWN, Circuit

log = logging.getLogger(__name__)

Handler = Callable[[DomainEvent], Awaitable[None]]
InlineHandler = Callable[[DomainEvent], None]


class BusMetrics:
    """Bus figures for /metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter(
            "cc_bus_events_published_total",
            "Events published on this instance",
            ["event"],
            registry=registry,
        )
        self.received_remote = Counter(
            "cc_bus_events_received_remote_total",
            "Events received from other instances",
            ["event"],
            registry=registry,
        )
        self.delivered = Counter(
            "cc_bus_events_delivered_total",
            "Events handled by a subscriber",
            ["subscriber", "event"],
            registry=registry,
        )
        self.failed = Counter(
            "cc_bus_handler_failures_total",
            "Subscriber handlers that raised",
            ["subscriber", "event"],
            registry=registry,
        )
        self.dropped = Counter(
            "cc_bus_events_dropped_total",
            "Events dropped because a subscriber's queue was full",
            ["subscriber"],
            registry=registry,
        )
        self.backlog = Gauge(
            "cc_bus_subscriber_backlog",
            "Events waiting for a subscriber",
            ["subscriber"],
            registry=registry,
        )


@dataclass(eq=False)
class Subscription:
    """One subscriber: its handler, the event names it wants (None = all) and its queue."""

    name: str
    handler: Handler
    names: frozenset[str] | None
    queue: asyncio.Queue[DomainEvent]
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # A realtime subscriber run inside publish (no queue, no worker): see subscribe_inline.
    inline: InlineHandler | None = field(default=None, repr=False)

    def wants(self, event: DomainEvent) -> bool:
        return self.names is None or event.name in self.names


class EventBus:
    """In-process bus; subclassed by :class:`RedisEventBus` for fan-out across instances."""

    def __init__(self, *, metrics: BusMetrics | None = None, queue_size: int = 10_000) -> None:
        self._subs: list[Subscription] = []
        self._queue_size = queue_size
        self._metrics = metrics
        self._started = False

    def subscribe(
        self, handler: Handler, *, name: str, events: Iterable[str] | None = None
    ) -> Subscription:
        """Register ``handler`` (a coroutine function) for ``events`` (names) or for all events."""
        sub = Subscription(
            name=name,
            handler=handler,
            names=frozenset(events) if events is not None else None,
            queue=asyncio.Queue(self._queue_size),
        )
        self._subs.append(sub)
        if self._started:
            sub.task = asyncio.get_running_loop().create_task(self._worker(sub))
        return sub

    def subscribe_inline(
        self, handler: InlineHandler, *, name: str, events: Iterable[str] | None = None
    ) -> Subscription:
        """Register a realtime ``handler`` (a plain function) run inside ``publish``, in
        order: the WebSocket push, which only hands the event to per-socket queues. It must
        never block or await; one that raises is logged and the others still get the event.
        It spares the event a queue and a worker's turn of the event loop on the way to the
        browser (the pop-up's latency)."""

        async def unused(_event: DomainEvent) -> None:  # pragma: no cover - never queued
            raise AssertionError("an inline subscriber has no worker")

        sub = Subscription(
            name=name,
            handler=unused,
            names=frozenset(events) if events is not None else None,
            queue=asyncio.Queue(1),
            inline=handler,
        )
        self._subs.append(sub)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        await self._stop_worker(sub)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._started = True
        for sub in self._subs:
            if sub.task is None and sub.inline is None:
                sub.task = loop.create_task(self._worker(sub))

    async def close(self, drain_timeout: float = 5.0) -> None:
        """Let subscribers finish what is queued (bounded), then stop them."""
        self._started = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                for sub in self._subs:
                    await sub.queue.join()
        for sub in list(self._subs):
            await self._stop_worker(sub)

    async def publish(self, event: DomainEvent) -> None:
        """Deliver ``event`` to every local subscriber (and other instances, with Redis)."""
        if self._metrics:
            self._metrics.published.labels(event.name).inc()
        self._dispatch(event)

    def _dispatch(self, event: DomainEvent) -> None:
        for sub in self._subs:
            if not sub.wants(event):
                continue
            if sub.inline is not None:
                self._run_inline(sub, sub.inline, event)
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.error(
                    "subscriber %s is %d events behind; dropped %s %s",
                    sub.name,
                    sub.queue.qsize(),
                    event.name,
                    event.event_id,
                )
                if self._metrics:
                    self._metrics.dropped.labels(sub.name).inc()
                continue
            if self._metrics:
                self._metrics.backlog.labels(sub.name).set(sub.queue.qsize())

    def _run_inline(self, sub: Subscription, handler: InlineHandler, event: DomainEvent) -> None:
        try:
            handler(event)
        except Exception:
            log.exception("subscriber %s failed on %s %s", sub.name, event.name, event.event_id)
            if self._metrics:
                self._metrics.failed.labels(sub.name, event.name).inc()
        else:
            if self._metrics:
                self._metrics.delivered.labels(sub.name, event.name).inc()

    async def _worker(self, sub: Subscription) -> None:
        while True:
            event = await sub.queue.get()
            try:
                await sub.handler(event)
            except asyncio.CancelledError:
                sub.queue.task_done()
                raise
            except Exception:
                log.exception("subscriber %s failed on %s %s", sub.name, event.name, event.event_id)
                if self._metrics:
                    self._metrics.failed.labels(sub.name, event.name).inc()
            else:
                if self._metrics:
                    self._metrics.delivered.labels(sub.name, event.name).inc()
            sub.queue.task_done()
            if self._metrics:
                self._metrics.backlog.labels(sub.name).set(sub.queue.qsize())

    @staticmethod
    async def _stop_worker(sub: Subscription) -> None:
        if sub.task is not None:
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sub.task
            sub.task = None

    def provide_status(self) -> dict[str, Any]:
        return {"status": "ok", "mode": "in-process", "subscribers": len(self._subs)}


class RedisEventBus(EventBus):
    """The bus plus fan-out over Redis pub/sub channel ``<prefix>:events``.

    ``publish`` hands the event to the local subscribers and to an outbox; one sender task
    writes what the outbox holds in a pipeline (one round trip for a whole batch of events,
    in order), so a publisher — the inbox's worker, a request — never waits on Redis. At most
    ``outbox_size`` events wait: past that (Redis stalled) the oldest are dropped and logged,
    as they are while Redis is away (realtime events only; nothing durable rides the bus)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "cc",
        instance_id: str | None = None,
        metrics: BusMetrics | None = None,
        queue_size: int = 10_000,
        outbox_size: int = 10_000,
    ) -> None:
        super().__init__(metrics=metrics, queue_size=queue_size)
        self._redis = client
        self.channel = f"{prefix}:events"
        self.instance_id = instance_id or uuid.uuid4().hex
        # What this instance's own messages begin with (json.dumps keeps the key order): they
        # come back from Redis and are skipped before they are parsed.
        own = '{"origin": ' + json.dumps(self.instance_id) + ","
        self._own = (own, own.encode())
        self._outbox: collections.deque[str] = collections.deque()
        self._outbox_size = outbox_size
        self._outbox_dropped = 0  # events other instances never got (Redis away or stalled)
        self._dropping = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # the outbox is empty and nothing is being sent
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._last_error: str | None = None
        self._circuit = Circuit("bus")

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._listener = loop.create_task(self._listen())
        self._sender = loop.create_task(self._send_loop())

    async def wait_connected(self, timeout: float = 10.0) -> None:
        """Wait until the subscription to the channel is live (for tests and start-up)."""
        async with asyncio.timeout(timeout):
            await self._connected.wait()

    async def close(self, drain_timeout: float = 5.0) -> None:
        if self._sender is not None:  # what is in the outbox goes out first (bounded)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    await self.flushed()
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await super().close(drain_timeout)

    async def publish(self, event: DomainEvent) -> None:
        await super().publish(event)
        if len(self._outbox) >= self._outbox_size:
            self._outbox.popleft()
            self._dropped_from_outbox(1)
        self._outbox.append(json.dumps({"origin": self.instance_id, "event": event.to_dict()}))
        self._idle.clear()
        self._wake.set()

    async def flushed(self) -> None:
        """Until the outbox is empty and nothing is being sent (tests, shutdown)."""
        await self._idle.wait()

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch = [self._outbox.popleft() for _ in range(min(len(self._outbox), 500))]
                if not self._circuit.allows():
                    # Redis is away: local subscribers had them; other instances miss them.
                    self._dropped_from_outbox(len(batch))
                    continue
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for message in batch:
                            pipe.publish(self.channel, message)
                        await pipe.execute()
                except REDIS_DOWN as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
                    self._circuit.failed(exc)
                    self._dropped_from_outbox(len(batch))
                else:
                    self._circuit.succeeded()
                    self._dropping = False
            self._idle.set()

    def _dropped_from_outbox(self, n: int) -> None:
        if not self._dropping:  # once per spell, not once per event
            log.warning("redis bus: events not sent to other instances (Redis away or stalled)")
            self._dropping = True
        self._outbox_dropped += n

    async def _listen(self) -> None:
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._connected.set()
                self._last_error = None
                delay = 0.5
                async for message in pubsub.listen():
                    self._on_message(message)
            except asyncio.CancelledError:
                raise
            except (aioredis.RedisError, OSError) as exc:
                self._connected.clear()
                self._last_error = f"{type(exc).__name__}: {exc}"
                wait = min(delay, 30.0) * random.uniform(0.8, 1.2)
                log.warning("redis bus subscription lost (%s); retrying in %.1f s", exc, wait)
                await asyncio.sleep(wait)
                delay *= 2
            finally:
                close: Callable[[], Awaitable[None]] = pubsub.aclose  # untyped in redis-py
                with contextlib.suppress(Exception):
                    await close()

    def _on_message(self, message: dict[str, Any]) -> None:
        if message.get("type") != "message":
            return
        data = message.get("data")
        own_text, own_bytes = self._own
        if (isinstance(data, bytes) and data.startswith(own_bytes)) or (
            isinstance(data, str) and data.startswith(own_text)
        ):
            return  # its own, back from Redis
        try:
            payload = json.loads(message["data"])
            if payload.get("origin") == self.instance_id:
                return
            event = DomainEvent.from_dict(payload["event"])
        except (ValueError, KeyError, TypeError, UnknownEvent) as exc:
            log.warning("skipped an unreadable bus message on %s: %s", self.channel, exc)
            return
        if self._metrics:
            self._metrics.received_remote.labels(event.name).inc()
        self._dispatch(event)

    def provide_status(self) -> dict[str, Any]:
        status = super().provide_status()
        status.update(
            mode="redis",
            channel=self.channel,
            subscribed=self._connected.is_set(),
            outbox=len(self._outbox),
            not_sent=self._outbox_dropped,
            status="ok" if self._connected.is_set() and not self._circuit.degraded else "degraded",
        )
        if self._last_error:
            status["last_error"] = self._last_error
        return status
