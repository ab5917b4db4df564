"""When Redis does not answer: stop asking it on every request, try again now and then.

Redis is a cache, a bus and a lease table here, never the system of record. While it is away
each user of it falls back (leases and rate limits in memory); a :class:`Circuit` tells them
when to try Redis again (one operation every ``retry_s``), so a dead Redis costs one timeout
per interval, not one per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

REDIS_DOWN: tuple[type[BaseException], ...] = (aioredis.RedisError, OSError, TimeoutError)
"""What a Redis call raises when Redis is away (refused, reset, timed out, pool exhausted)."""


class Circuit:
    """Open (use the fallback) after a failure; half-open every ``retry_s``; closed again by
    the first success. ``name`` appears in the log lines of each change."""

    def __init__(
        self, name: str, *, retry_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.retry_s = retry_s
        self._clock = clock
        self._down_since: float | None = None
        self._last_try = 0.0
        self.last_error: str | None = None

    @property
    def degraded(self) -> bool:
        return self._down_since is not None

    def allows(self) -> bool:
        """Whether to ask Redis now (always while it answers; once per ``retry_s`` while not)."""
        if self._down_since is None:
            return True
        now = self._clock()
        if now - self._last_try >= self.retry_s:
            self._last_try = now
            return True
        return False

    def failed(self, exc: BaseException) -> None:
        self._last_try = self._clock()
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self._down_since is None:
            self._down_since = self._last_try
            log.warning("%s: Redis unreachable (%s); falling back", self.name, self.last_error)

    def succeeded(self) -> None:
        if self._down_since is not None:
            self._down_since = None
            log.info("%s: Redis answers again", self.name)
