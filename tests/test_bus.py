"""The event bus: isolation of subscribers, serialisation, Redis fan-out between instances."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from contact_center.bus import BusMetrics, EventBus, RedisEventBus
from crm_core.events import DomainEvent
from tests.helpers import until


@dataclasses.dataclass(frozen=True, kw_only=True)
class SampleHappened(DomainEvent):
    name = "test.sample_happened"
    number: int
    amount: Decimal = Decimal("0")
    when: datetime | None = None
    tags: tuple[str, ...] = ()
    day: date | None = None


def test_event_round_trips_through_json_dict() -> None:
    event = SampleHappened(
        number=7,
        amount=Decimal("1234.50"),
        when=datetime(2026, 11, 26, 9, 0, tzinfo=UTC),
        tags=("a", "b"),
        day=date(2026, 11, 27),
        audience=("ext:101",),
    )
    import json

    back = DomainEvent.from_dict(json.loads(json.dumps(event.to_dict())))
    assert back == event
    assert isinstance(back.amount, Decimal) and back.when is not None and back.when.tzinfo
    assert back.day == date(2026, 11, 27)


async def test_slow_and_failing_subscribers_do_not_hold_up_others() -> None:
    registry = CollectorRegistry()
    bus = EventBus(metrics=BusMetrics(registry))
    fast: list[int] = []
    slow_started = asyncio.Event()
    release = asyncio.Event()
    failing_seen: list[int] = []

    async def on_fast(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        fast.append(e.number)

    async def on_slow(e: DomainEvent) -> None:
        slow_started.set()
        await release.wait()

    async def on_failing(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        failing_seen.append(e.number)
        raise RuntimeError("webhook down")

    bus.subscribe(on_slow, name="slow")
    bus.subscribe(on_failing, name="failing")
    bus.subscribe(on_fast, name="fast", events=["test.sample_happened"])
    await bus.start()
    try:
        for i in range(5):
            await asyncio.wait_for(bus.publish(SampleHappened(number=i)), 0.5)
        await until(lambda: len(fast) == 5)
        assert fast == [0, 1, 2, 3, 4]
        assert failing_seen == [0, 1, 2, 3, 4]  # it kept receiving after raising
        assert slow_started.is_set()
        assert (
            registry.get_sample_value(
                "cc_bus_handler_failures_total",
                {"subscriber": "failing", "event": "test.sample_happened"},
            )
            == 5
        )
        release.set()
    finally:
        await bus.close(drain_timeout=2)


async def test_full_queue_drops_for_that_subscriber_only() -> None:
    registry = CollectorRegistry()
    bus = EventBus(metrics=BusMetrics(registry), queue_size=2)
    got: list[int] = []
    blocked = asyncio.Event()

    async def stuck(e: DomainEvent) -> None:
        await blocked.wait()

    async def ok(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        got.append(e.number)

    bus.subscribe(stuck, name="stuck")
    bus.subscribe(ok, name="ok")
    await bus.start()
    try:
        for i in range(6):
            await bus.publish(SampleHappened(number=i))
            await asyncio.sleep(0)
        await until(lambda: len(got) == 6)
        dropped = registry.get_sample_value("cc_bus_events_dropped_total", {"subscriber": "stuck"})
        assert dropped is not None and dropped >= 1
    finally:
        blocked.set()
        await bus.close(drain_timeout=1)


async def test_two_instances_share_events_over_redis(redis_client: Any, redis_prefix: str) -> None:
    a = RedisEventBus(redis_client, prefix=redis_prefix, instance_id="a")
    b = RedisEventBus(redis_client, prefix=redis_prefix, instance_id="b")
    seen_a: list[DomainEvent] = []
    seen_b: list[DomainEvent] = []

    async def on_a(e: DomainEvent) -> None:
        seen_a.append(e)

    async def on_b(e: DomainEvent) -> None:
        seen_b.append(e)

    a.subscribe(on_a, name="a")
    b.subscribe(on_b, name="b")
    async with _running(a, b):
        event = SampleHappened(number=42, amount=Decimal("10.01"), audience=("user:1",))
        await a.publish(event)
        await until(lambda: seen_b)
        assert seen_b == [event]  # same id, same fields, same type
        await asyncio.sleep(0.2)
        assert seen_a == [event]  # its own event once, not again via Redis
        assert a.provide_status()["subscribed"] is True


@contextlib.asynccontextmanager
async def _running(*buses: RedisEventBus) -> AsyncIterator[None]:
    """The buses started and subscribed to Redis; closed afterwards."""
    for bus in buses:
        await bus.start()
    try:
        for bus in buses:
            await bus.wait_connected()
        yield
    finally:
        for bus in buses:
            await bus.close()


async def test_unreadable_redis_message_is_skipped(redis_client: Any, redis_prefix: str) -> None:
    bus = RedisEventBus(redis_client, prefix=redis_prefix, instance_id="x")
    seen: list[DomainEvent] = []

    async def on(e: DomainEvent) -> None:
        seen.append(e)

    bus.subscribe(on, name="s")
    await bus.start()
    try:
        await bus.wait_connected()
        await redis_client.publish(bus.channel, b"not json")
        await redis_client.publish(bus.channel, b'{"origin": "y", "event": {"name": "no.such"}}')
        await redis_client.publish(
            bus.channel,
            b'{"origin": "y", "event": {"name": "test.sample_happened", "data": {"number": 1}}}',
        )
        await until(lambda: seen)
        [event] = seen  # the unreadable two skipped
        assert isinstance(event, SampleHappened) and event.number == 1
    finally:
        await bus.close()


async def test_an_inline_subscriber_has_the_event_when_publish_returns_and_may_fail_alone() -> None:
    registry = CollectorRegistry()
    bus = EventBus(metrics=BusMetrics(registry))
    pushed: list[int] = []
    queued: list[int] = []

    def on_push(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        pushed.append(e.number)

    def on_broken(e: DomainEvent) -> None:
        raise RuntimeError("boom")

    async def on_queued(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        queued.append(e.number)

    bus.subscribe_inline(on_broken, name="broken")
    bus.subscribe_inline(on_push, name="push", events=["test.sample_happened"])
    bus.subscribe(on_queued, name="queued")
    await bus.start()
    try:
        await bus.publish(SampleHappened(number=1))
        assert pushed == [1]  # no turn of the event loop needed
        await bus.publish(SampleHappened(number=2))
        assert pushed == [1, 2]
        await until(lambda: queued == [1, 2])
        failed = registry.get_sample_value(
            "cc_bus_handler_failures_total",
            {"subscriber": "broken", "event": "test.sample_happened"},
        )
        assert failed == 2
    finally:
        await bus.close()


async def test_many_events_reach_the_other_instance_in_order(
    redis_client: Any, redis_prefix: str
) -> None:
    """A burst (an inbox batch's events) goes out in pipelines, in the order published."""
    a = RedisEventBus(redis_client, prefix=redis_prefix, instance_id="a")
    b = RedisEventBus(redis_client, prefix=redis_prefix, instance_id="b")
    seen_b: list[int] = []

    async def on_b(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        seen_b.append(e.number)

    b.subscribe(on_b, name="b")
    async with _running(a, b):
        for i in range(2000):
            await a.publish(SampleHappened(number=i))
        await until(lambda: len(seen_b) == 2000, timeout=20)
        assert seen_b == list(range(2000))
        assert a.provide_status()["not_sent"] == 0


async def test_a_stalled_redis_holds_up_no_publisher() -> None:
    """Redis accepts the connection and never answers: publish still returns at once and the
    local subscribers have the event (the inbox's worker goes on); the outbox is bounded and
    the events other instances missed are counted."""
    stalled: list[asyncio.StreamWriter] = []

    async def never_answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        stalled.append(w)

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = aioredis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    bus = RedisEventBus(client, prefix="stalled", instance_id="x", outbox_size=100)
    seen: list[int] = []

    def on(e: DomainEvent) -> None:
        assert isinstance(e, SampleHappened)
        seen.append(e.number)

    bus.subscribe_inline(on, name="local")
    await bus.start()
    try:
        async with asyncio.timeout(0.5):
            for i in range(300):
                await bus.publish(SampleHappened(number=i))
        assert seen == list(range(300))
        assert len(bus._outbox) <= 100
        await until(lambda: bus.provide_status()["not_sent"] >= 200, timeout=10)
    finally:
        await bus.close(drain_timeout=0.1)
        for w in stalled:
            w.close()
        server.close()
        await client.aclose()
