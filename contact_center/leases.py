"""Leadership leases: exactly one instance does a job (consume a PBX's AMI stream) at a time.

With Redis, a lease is a key holding the owner's id with a TTL: taken with ``SET NX PX``,
renewed and released only by its owner (compare-and-set in Lua), so an instance that dies
loses it within ``ttl`` and another takes over. Without Redis (the embedded single-instance
mode) the lease is always held locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)

STANDBY_POLL_S = 0.25

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisLease:
    """One named lease in Redis."""

    def __init__(self, client: aioredis.Redis, key: str, owner: str, ttl_s: float = 10.0) -> None:
        self._redis = client
        self.key = key
        self.owner = owner
        self.ttl_ms = int(ttl_s * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def try_acquire(self) -> bool:
        """Take the lease if free, or renew it if already ours."""
        if await self._redis.set(self.key, self.owner, nx=True, px=self.ttl_ms):
            return True
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def renew(self) -> bool:
        return bool(await self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    async def release(self) -> None:
        await self._release(keys=[self.key], args=[self.owner])

    async def holder(self) -> str | None:
        value = await self._redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


class LeaseKeeper:
    """Runs ``on_gain`` while this instance holds the lease and ``on_loss`` when it stops.

    Checks every ``ttl/3``: a lost renewal (Redis down, another owner) means stop at once, so
    two instances never consume the same PBX for longer than one check interval. An instance
    that does not hold the lease looks more often (every ``STANDBY_POLL_S`` at most): the
    lease of a dead holder is taken within that of its expiry (one GET-sized SET a poll).
    """

    def __init__(
        self,
        lease: RedisLease | None,
        *,
        on_gain: Callable[[], Awaitable[None]],
        on_loss: Callable[[], Awaitable[None]],
        interval_s: float | None = None,
    ) -> None:
        self.lease = lease
        self._on_gain = on_gain
        self._on_loss = on_loss
        self.interval_s = interval_s or (lease.ttl_ms / 3000 if lease else 1.0)
        self.held = False
        self.redis_down = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.lease is None:
            self.held = True
            await self._on_gain()
            return
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        assert self.lease is not None
        while True:
            try:
                ok = await self.lease.try_acquire()
            except (aioredis.RedisError, OSError, TimeoutError) as exc:
                # Nobody can take the lease while Redis is away: a holder keeps its job (the
                # PBX's calls keep being followed) and decides again when Redis answers.
                log.warning("lease %s: redis unavailable (%s)", self.lease.key, exc)
                self.redis_down = True
                await asyncio.sleep(self.interval_s)
                continue
            self.redis_down = False
            if ok and not self.held:
                self.held = True
                log.info("lease %s taken by %s", self.lease.key, self.lease.owner)
                await self._on_gain()
            elif not ok and self.held:
                self.held = False
                log.warning("lease %s lost by %s", self.lease.key, self.lease.owner)
                await self._on_loss()
            await asyncio.sleep(
                self.interval_s if self.held else min(self.interval_s, STANDBY_POLL_S)
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.held:
            self.held = False
            await self._on_loss()
            if self.lease is not None:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await self.lease.release()

    def provide_status(self) -> dict[str, Any]:
        return {"held": self.held, "key": self.lease.key if self.lease else None}
