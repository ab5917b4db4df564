"""Fixed-window rate limits shared by every instance (Redis) or kept in memory (embedded).

A window is ``window_s`` seconds long; the first ``limit`` hits of a key in a window pass. With
Redis the count is one ``INCR`` (plus ``EXPIRE`` on the first hit) per check, atomic across
instances; without it each process counts its own, which still bounds a single abuser.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis.asyncio as aioredis

from routing.circuit import REDIS_DOWN, Circuit

_MEMORY_KEYS = 100_000  # forget everything past this many keys (a spray of addresses)


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis | None,
        prefix: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self.circuit = Circuit("rate limits")
        self._counts: dict[str, int] = {}
        self._window_of: dict[str, int] = {}

    async def hit(self, key: str, *, limit: int, window_s: int) -> bool:
        """Count one hit of ``key``; True while it is within ``limit`` for this window."""
        window = int(self._clock() // window_s)
        name = f"{self._prefix}:rl:{key}:{window}"
        if self._redis is not None and self.circuit.allows():
            try:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.expire(name, window_s, nx=True)
                    count, _ = await pipe.execute()
            except REDIS_DOWN as exc:
                # Limits are a safeguard, not a record: count in this process meanwhile.
                self.circuit.failed(exc)
            else:
                self.circuit.succeeded()
                return int(count) <= limit
        if len(self._counts) > _MEMORY_KEYS:
            self._counts.clear()
            self._window_of.clear()
        if self._window_of.get(key) != window:
            self._window_of[key], self._counts[key] = window, 0
        self._counts[key] += 1
        return self._counts[key] <= limit
