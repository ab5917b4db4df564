"""Fixed-window rate limits in Redis (shared by instances) and in memory."""

from __future__ import annotations

from typing import Any

from contact_center.rate_limit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def check_limits(redis: Any, prefix: str) -> None:
    clock = Clock()
    limiter = RateLimiter(redis, prefix, clock=clock)
    results = [await limiter.hit("ip:1", limit=3, window_s=60) for _ in range(5)]
    assert results == [True, True, True, False, False]
    assert await limiter.hit("ip:2", limit=3, window_s=60)  # another key counts on its own
    clock.now += 60
    assert await limiter.hit("ip:1", limit=3, window_s=60)  # a new window


async def test_limits_per_key_and_window_in_memory() -> None:
    await check_limits(None, "cc")


async def test_limits_per_key_and_window_in_redis(redis_client: Any, redis_prefix: str) -> None:
    await check_limits(redis_client, redis_prefix)


async def test_instances_share_the_count_in_redis(redis_client: Any, redis_prefix: str) -> None:
    clock = Clock()
    one = RateLimiter(redis_client, redis_prefix, clock=clock)
    two = RateLimiter(redis_client, redis_prefix, clock=clock)
    assert await one.hit("v:x", limit=2, window_s=60)
    assert await two.hit("v:x", limit=2, window_s=60)
    assert not await one.hit("v:x", limit=2, window_s=60)
    ttl = await redis_client.ttl(f"{redis_prefix}:rl:v:x:{int(clock.now // 60)}")
    assert 0 < ttl <= 60
