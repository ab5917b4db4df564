"""Number leases, memory and real Redis alike: one live session per number, heartbeats,
expiry, the release cooldown, exhaustion (reuse or refuse) and its statistics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from routing.number_leases import (
    LeaseRateLimited,
    MemoryLeaseStore,
    RateRule,
    RedisLeaseStore,
)

TTL = 0.3  # seconds; Redis needs real time to pass, the memory store a moved clock
DIDS = ["+74950000001", "+74950000002"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis"])
def world(request: pytest.FixtureRequest) -> tuple[Any, Callable[[float], Awaitable[None]]]:
    """(store, advance(seconds))."""
    if request.param == "memory":
        clock = Clock()

        async def move(seconds: float) -> None:
            clock.now += seconds

        return MemoryLeaseStore(clock), move
    redis = request.getfixturevalue("redis_client")
    prefix = request.getfixturevalue("redis_prefix")
    return RedisLeaseStore(redis, prefix), asyncio.sleep


async def _lease(store: Any, session: str, *, reuse: bool = True, cooldown: float = 0.0) -> Any:
    return await store.acquire(
        "p1", DIDS, session, f"attr-{session}", ttl_s=TTL, cooldown_s=cooldown, reuse=reuse
    )


async def test_two_sessions_get_two_numbers_and_the_holder_is_known(world: Any) -> None:
    store, _ = world
    a, b = await _lease(store, "a"), await _lease(store, "b")
    assert {a.did, b.did} == set(DIDS)
    assert not a.low_confidence and not b.low_confidence
    holder = await store.holder(a.did)
    assert (holder.session, holder.payload, holder.low_confidence) == ("a", "attr-a", False)
    stats = await store.stats("p1")
    assert (stats.leased, stats.peak_leased, stats.exhausted) == (2, 2, 0)


async def test_heartbeat_keeps_the_lease_and_silence_ends_it(world: Any) -> None:
    store, advance = world
    a = await _lease(store, "a")
    await advance(TTL * 0.6)
    assert await store.renew("a", ttl_s=TTL, cooldown_s=0)
    await advance(TTL * 0.6)  # past the first expiry, within the renewed one
    assert (await store.holder(a.did)).session == "a"
    await advance(TTL * 1.2)
    assert await store.holder(a.did) is None
    assert not await store.renew("a", ttl_s=TTL, cooldown_s=0)
    assert (await store.stats("p1")).leased == 0


async def test_release_frees_the_number_after_the_cooldown(world: Any) -> None:
    store, _ = world
    a = await _lease(store, "a", cooldown=TTL)
    b = await _lease(store, "b", cooldown=TTL)
    assert await store.release("a", cooldown_s=TTL)
    assert not await store.release("a", cooldown_s=TTL)  # twice: nothing more
    # Resting: the last holder still answers for the number (a call right after closing).
    assert (await store.holder(a.did)).session == "a"
    c = await _lease(store, "c", reuse=True, cooldown=TTL)
    assert (c.did, c.low_confidence) == (a.did, True)  # only a resting number: exhausted
    assert await store.release("c", cooldown_s=TTL)
    await store.release("b", cooldown_s=0)
    d = await _lease(store, "d", cooldown=TTL)
    assert (d.did, d.low_confidence) == (b.did, False)  # b's rest was 0: free again
    assert (await store.stats("p1")).exhausted == 1


async def test_exhausted_pool_without_reuse_leases_nothing(world: Any) -> None:
    store, _ = world
    await _lease(store, "a")
    await _lease(store, "b")
    assert await _lease(store, "c", reuse=False) is None
    assert await _lease(store, "d", reuse=False) is None
    stats = await store.stats("p1")
    assert (stats.exhausted, stats.peak_leased, stats.peak_sessions) == (2, 2, 4)


async def test_exhausted_pool_with_reuse_takes_the_longest_silent_number(world: Any) -> None:
    store, advance = world
    a = await _lease(store, "a")
    await advance(TTL * 0.1)
    b = await _lease(store, "b")
    await advance(TTL * 0.1)
    assert await store.renew("a", ttl_s=TTL, cooldown_s=0)  # now b is the silent one
    c = await _lease(store, "c")
    assert (c.did, c.low_confidence, c.evicted) == (b.did, True, "b")
    assert not await store.renew("b", ttl_s=TTL, cooldown_s=0)  # b lost it
    holder = await store.holder(b.did)
    assert (holder.session, holder.low_confidence) == ("c", True)
    assert (await store.holder(a.did)).session == "a"


async def test_rate_limits_refuse_without_leasing(world: Any) -> None:
    store, _ = world
    rule = RateRule("ip:1.2.3.4", limit=1, window_s=60)
    await store.acquire("p1", DIDS, "a", "", ttl_s=TTL, cooldown_s=0, reuse=True, limits=[rule])
    with pytest.raises(LeaseRateLimited) as caught:
        await store.acquire("p1", DIDS, "b", "", ttl_s=TTL, cooldown_s=0, reuse=True, limits=[rule])
    assert caught.value.rule == rule
    assert (await store.stats("p1")).leased == 1
    with pytest.raises(LeaseRateLimited):
        await store.hit([rule])
    await store.hit([RateRule("ip:5.6.7.8", limit=1, window_s=60)])


async def test_many_concurrent_sessions_never_share_a_number(
    redis_client: Any, redis_prefix: str
) -> None:
    """Four clients (as four server instances would) race for a pool of 20 numbers."""
    stores = [RedisLeaseStore(redis_client, redis_prefix) for _ in range(4)]
    dids = [f"+7495100{n:04d}" for n in range(20)]

    gate = asyncio.Semaphore(8)  # the client's connection pool is small

    async def lease(n: int) -> Any:
        async with gate:
            return await stores[n % 4].acquire(
                "race", dids, f"s{n}", "", ttl_s=30, cooldown_s=0, reuse=False
            )

    leases = await asyncio.gather(*(lease(n) for n in range(200)))
    granted = [lease.did for lease in leases if lease is not None]
    assert len(granted) == 20
    assert len(set(granted)) == 20
    stats = await stores[0].stats("race")
    assert (stats.leased, stats.exhausted, stats.peak_sessions) == (20, 180, 200)


async def test_a_changed_pool_leases_only_its_current_numbers(world: Any) -> None:
    store, _ = world
    a = await _lease(store, "a")
    assert await store.release("a", cooldown_s=0)
    changed = [d for d in DIDS if d != a.did] + ["+74950000009"]
    got = [
        await store.acquire("p1", changed, s, "", ttl_s=TTL, cooldown_s=0, reuse=False)
        for s in ("b", "c", "d")
    ]
    assert {g.did for g in got[:2]} == set(changed)
    assert got[2] is None  # the removed number is not offered any more
