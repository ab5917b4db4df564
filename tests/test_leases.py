"""Leases in real Redis: one holder at a time, takeover when the holder dies."""

from __future__ import annotations

import asyncio
from typing import Any

from contact_center.leases import LeaseKeeper, RedisLease
from tests.helpers import until


async def test_only_one_owner_and_only_the_owner_renews_or_releases(
    redis_client: Any, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:ami:main"
    a = RedisLease(redis_client, key, "a", ttl_s=5)
    b = RedisLease(redis_client, key, "b", ttl_s=5)
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert not await b.renew()
    await b.release()  # not b's: nothing happens
    assert await a.holder() == "a"
    assert await a.try_acquire()  # re-acquiring one's own lease renews it
    await a.release()
    assert await b.try_acquire()
    assert await b.holder() == "b"


async def test_concurrent_acquire_has_exactly_one_winner(
    redis_client: Any, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:race"
    leases = [RedisLease(redis_client, key, f"i{n}", ttl_s=5) for n in range(20)]
    wins = await asyncio.gather(*(lease.try_acquire() for lease in leases))
    assert sum(wins) == 1


async def test_keeper_hands_over_when_the_holder_stops_renewing(
    redis_client: Any, redis_prefix: str
) -> None:
    key = f"{redis_prefix}:ami:pbx1"
    events: list[str] = []

    def keeper(name: str) -> LeaseKeeper:
        async def gain() -> None:
            events.append(f"{name}+")

        async def loss() -> None:
            events.append(f"{name}-")

        return LeaseKeeper(
            RedisLease(redis_client, key, name, ttl_s=0.6),
            on_gain=gain,
            on_loss=loss,
            interval_s=0.1,
        )

    one, two = keeper("one"), keeper("two")
    await one.start()
    await until(lambda: one.held)
    await two.start()
    await asyncio.sleep(0.4)
    assert not two.held and events == ["one+"]
    # "one" dies without releasing: its task stops, the key expires, "two" takes over.
    assert one._task is not None
    one._task.cancel()
    await until(lambda: two.held, timeout=3)
    assert events == ["one+", "two+"]
    await two.stop()
    assert events == ["one+", "two+", "two-"]
    assert await redis_client.get(key) is None  # released on a clean stop


async def test_without_redis_the_lease_is_always_local() -> None:
    gained: list[bool] = []

    async def gain() -> None:
        gained.append(True)

    async def loss() -> None:
        gained.append(False)

    keeper = LeaseKeeper(None, on_gain=gain, on_loss=loss)
    await keeper.start()
    assert keeper.held and gained == [True]
    await keeper.stop()
    assert gained == [True, False]
