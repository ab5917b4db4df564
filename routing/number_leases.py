"""Leases of pool numbers to website visitor sessions: in memory (embedded) or in Redis.

A lease lasts ``ttl`` after the last heartbeat. A released (or expired) number rests for a
*cooldown* before it is leased again, because a visitor often dials the number a few minutes
after closing the page; a call in that time is still his.

Choice of a number, in order:

1. a number neither leased nor resting, the one released longest ago first;
2. the pool is *exhausted* (counted): with ``reuse``, a resting number (released longest ago),
   else the live number whose holder has been silent longest (that holder loses it); either
   way the new lease is **low-confidence**: a call on it may be someone else's. Without
   ``reuse`` nothing is leased and the caller falls back to a static number.

Per pool the stores keep the peak of live leases, the peak of concurrent sessions that wanted
a number (the pool size that would have covered the peak) and the count of exhaustions.

The Redis store does all of one operation in one Lua script (atomic, one round trip), so a
number is never leased to two live sessions, whatever the number of server instances. The
endpoint's rate limits ride in the same script, so a lease costs exactly one round trip.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import redis.asyncio as aioredis

from routing.circuit import REDIS_DOWN, Circuit

_SEP = "\x1f"
T = TypeVar("T")


class LeaseRateLimited(Exception):
    """A rate limit of the request was exceeded (``rule`` names which)."""

    def __init__(self, rule: RateRule) -> None:
        super().__init__(f"rate limit {rule.key} exceeded")
        self.rule = rule


@dataclass(frozen=True)
class RateRule:
    """At most ``limit`` hits of ``key`` per ``window_s`` seconds (fixed window)."""

    key: str
    limit: int
    window_s: int


@dataclass(frozen=True)
class Lease:
    did: str
    low_confidence: bool = False
    evicted: str | None = None  # the session that lost the number to this one


@dataclass(frozen=True)
class Holder:
    """The session a number belongs to (live, or released within the cooldown)."""

    session: str
    low_confidence: bool
    payload: str


@dataclass(frozen=True)
class PoolStats:
    leased: int = 0
    peak_leased: int = 0
    peak_sessions: int = 0  # the pool size that would have covered the peak
    exhausted: int = 0


class LeaseStore(Protocol):
    async def acquire(
        self,
        pool: str,
        dids: Sequence[str],
        session: str,
        payload: str,
        *,
        ttl_s: float,
        cooldown_s: float,
        reuse: bool,
        limits: Sequence[RateRule] = (),
    ) -> Lease | None:
        """Lease a number of ``dids`` to ``session``; None when exhausted without ``reuse``.
        Raises :class:`LeaseRateLimited` (nothing leased) when a limit is exceeded."""

    async def hit(self, limits: Sequence[RateRule]) -> None:
        """Count one hit of each limit; raises :class:`LeaseRateLimited`."""

    async def renew(self, session: str, *, ttl_s: float, cooldown_s: float) -> bool:
        """Heartbeat: extend the session's lease; False when it has none (expired, released,
        or taken by an exhausted pool)."""

    async def release(self, session: str, *, cooldown_s: float) -> bool:
        """End the session's lease; the number rests for the cooldown. False if none."""

    async def holder(self, did: str) -> Holder | None:
        """Whose ``did`` is now (a live lease, or a release within the cooldown)."""

    async def stats(self, pool: str) -> PoolStats: ...


# ---------------------------------------------------------------- memory


@dataclass
class _MemPool:
    leases: dict[str, float] = field(default_factory=dict)  # did -> expiry
    holders: dict[str, str] = field(default_factory=dict)  # did -> session
    released: dict[str, float] = field(default_factory=dict)  # did -> rest ends at
    demand: dict[str, float] = field(default_factory=dict)  # session -> expiry
    stats: PoolStats = PoolStats()

    def expire(self, now: float, cooldown: float) -> None:
        for did, until in list(self.leases.items()):
            if until <= now:
                del self.leases[did]
                self.holders.pop(did, None)
                self.released[did] = until + cooldown
        for session, until in list(self.demand.items()):
            if until <= now:
                del self.demand[session]


class MemoryLeaseStore:
    """One process's leases (the embedded default); same rules as the Redis store."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pools: dict[str, _MemPool] = {}
        self._sessions: dict[str, tuple[str, str, float]] = {}  # session -> pool, did, expiry
        self._numbers: dict[str, tuple[Holder, float]] = {}  # did -> holder, visible until
        self._hits: dict[str, tuple[float, int]] = {}  # rate key -> window end, count

    async def hit(self, limits: Sequence[RateRule]) -> None:
        now = self._clock()
        if len(self._hits) > 100_000:  # a spray of keys: forget them rather than grow
            self._hits.clear()
        for rule in limits:
            end, count = self._hits.get(rule.key, (0.0, 0))
            if end <= now:
                end, count = now + rule.window_s, 0
            self._hits[rule.key] = (end, count + 1)
            if count + 1 > rule.limit:
                raise LeaseRateLimited(rule)

    async def acquire(
        self,
        pool: str,
        dids: Sequence[str],
        session: str,
        payload: str,
        *,
        ttl_s: float,
        cooldown_s: float,
        reuse: bool,
        limits: Sequence[RateRule] = (),
    ) -> Lease | None:
        await self.hit(limits)
        now = self._clock()
        state = self._pools.setdefault(pool, _MemPool())
        state.expire(now, cooldown_s)
        state.demand[session] = now + ttl_s
        stats = state.stats
        stats = _replace(stats, peak_sessions=max(stats.peak_sessions, len(state.demand)))
        idle = [d for d in dids if d not in state.leases]
        free = [d for d in idle if state.released.get(d, 0.0) <= now]
        low, evicted = False, None
        if free:
            did = min(free, key=lambda d: state.released.get(d, 0.0))
        else:
            stats = _replace(stats, exhausted=stats.exhausted + 1)
            if not reuse or not (idle or state.leases):
                state.stats = stats
                return None
            low = True
            if idle:
                did = min(idle, key=lambda d: state.released.get(d, 0.0))
            else:
                did = min(state.leases, key=state.leases.__getitem__)
                evicted = state.holders.get(did)
                if evicted is not None:
                    self._sessions.pop(evicted, None)
                    state.demand.pop(evicted, None)
        state.leases[did] = now + ttl_s
        state.holders[did] = session
        self._sessions[session] = (pool, did, now + ttl_s)
        self._numbers[did] = (Holder(session, low, payload), now + ttl_s + cooldown_s)
        state.stats = _replace(stats, peak_leased=max(stats.peak_leased, len(state.leases)))
        return Lease(did, low, evicted)

    def _live(self, session: str) -> tuple[str, str] | None:
        entry = self._sessions.get(session)
        if entry is None or entry[2] <= self._clock():
            self._sessions.pop(session, None)
            return None
        pool, did, _ = entry
        if self._pools[pool].holders.get(did) != session:
            return None
        return pool, did

    async def renew(self, session: str, *, ttl_s: float, cooldown_s: float) -> bool:
        live = self._live(session)
        if live is None:
            return False
        pool, did = live
        now = self._clock()
        state = self._pools[pool]
        state.leases[did] = state.demand[session] = now + ttl_s
        self._sessions[session] = (pool, did, now + ttl_s)
        holder, _ = self._numbers[did]
        self._numbers[did] = (holder, now + ttl_s + cooldown_s)
        return True

    async def release(self, session: str, *, cooldown_s: float) -> bool:
        live = self._live(session)
        self._sessions.pop(session, None)
        if live is None:
            return False
        pool, did = live
        now = self._clock()
        state = self._pools[pool]
        del state.leases[did]
        del state.holders[did]
        state.demand.pop(session, None)
        state.released[did] = now + cooldown_s
        holder, _ = self._numbers[did]
        self._numbers[did] = (holder, now + cooldown_s)
        return True

    async def holder(self, did: str) -> Holder | None:
        entry = self._numbers.get(did)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    async def stats(self, pool: str) -> PoolStats:
        state = self._pools.get(pool)
        if state is None:
            return PoolStats()
        now = self._clock()
        return _replace(state.stats, leased=sum(1 for t in state.leases.values() if t > now))


def _replace(stats: PoolStats, **changes: int) -> PoolStats:
    return PoolStats(**{**stats.__dict__, **changes})


# ---------------------------------------------------------------- redis

# Shared head of the scripts: the time (Redis's clock, the same for every instance) and the
# keys of a pool. Per pool: ``leases`` (number -> lease expiry, ms), ``holders`` (number ->
# session), ``free`` (numbers not leased -> when their rest ends, ms; 0: never used), the set
# of the pool's ``numbers``, ``demand`` (session -> expiry) and ``stats``. Choosing a number is
# a range query on ``free``, so a lease costs O(log n) whatever the size of the pool.
_HEAD = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function keys(pool)
  local base = p .. ':tl:p:' .. pool
  return base .. ':leases', base .. ':holders', base .. ':free', base .. ':demand',
    base .. ':stats', base .. ':numbers'
end
local function rest(pool, did, until_ms)
  local _, _, free, _, _, numbers = keys(pool)
  if redis.call('SISMEMBER', numbers, did) == 1 then redis.call('ZADD', free, until_ms, did) end
end
local function expire(pool, cooldown)
  local leases, holders, free, demand = keys(pool)
  local gone = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'WITHSCORES')
  for k = 1, #gone, 2 do
    rest(pool, gone[k], tonumber(gone[k + 1]) + cooldown)
    redis.call('HDEL', holders, gone[k])
  end
  if #gone > 0 then redis.call('ZREMRANGEBYSCORE', leases, '-inf', now) end
  redis.call('ZREMRANGEBYSCORE', demand, '-inf', now)
end
local function peak(stats, field, value)
  if value > tonumber(redis.call('HGET', stats, field) or '0') then
    redis.call('HSET', stats, field, value)
  end
end
local function hits(first, count)
  for k = first, first + 3 * (count - 1), 3 do
    local key = p .. ':tl:rl:' .. ARGV[k]
    local n = redis.call('INCR', key)
    if n == 1 then redis.call('EXPIRE', key, tonumber(ARGV[k + 2])) end
    if n > tonumber(ARGV[k + 1]) then return ARGV[k] end
  end
  return nil
end
"""

# ARGV: prefix, limits count, limits (key, limit, window) x count
_HIT = (
    _HEAD
    + """
local over = hits(3, tonumber(ARGV[2]))
if over then return over end
return ''
"""
)

# ARGV: prefix, pool, session, payload, ttl ms, cooldown ms, reuse 0|1, version of the
#       pool's numbers, limits count, limits (key, limit, window) x count, [dids...]
# The pool's numbers are kept in Redis under their version; they are sent only when the
# version there differs (answer -2: send them).
_ACQUIRE = (
    _HEAD
    + """
local pool, session, payload = ARGV[2], ARGV[3], ARGV[4]
local ttl, cooldown, reuse = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local nlimits = tonumber(ARGV[9])
local first_did = 10 + 3 * nlimits
local leases, holders, free, demand, stats, numbers = keys(pool)
if redis.call('HGET', stats, 'version') ~= ARGV[8] then
  if #ARGV < first_did then return {-1} end
  redis.call('DEL', numbers)
  redis.call('SADD', numbers, unpack(ARGV, first_did))
  for _, did in ipairs(redis.call('ZRANGE', free, 0, -1)) do
    if redis.call('SISMEMBER', numbers, did) == 0 then redis.call('ZREM', free, did) end
  end
  for k = first_did, #ARGV do
    if not redis.call('ZSCORE', leases, ARGV[k]) then
      redis.call('ZADD', free, 'NX', 0, ARGV[k])
    end
  end
  redis.call('HSET', stats, 'version', ARGV[8])
end
local over = hits(10, nlimits)
if over then return {-2, over} end
expire(pool, cooldown)
redis.call('ZADD', demand, now + ttl, session)
peak(stats, 'peak_sessions', redis.call('ZCARD', demand))
local did = redis.call('ZRANGEBYSCORE', free, '-inf', now, 'LIMIT', 0, 1)[1]
local low, evicted = 0, ''
if did == nil then
  redis.call('HINCRBY', stats, 'exhausted', 1)
  if not reuse then return {0} end
  low = 1
  did = redis.call('ZRANGE', free, 0, 0)[1]
  if did == nil then
    did = redis.call('ZRANGE', leases, 0, 0)[1]
    if did == nil then return {0} end
    evicted = redis.call('HGET', holders, did) or ''
    if evicted ~= '' then
      redis.call('DEL', p .. ':tl:s:' .. evicted)
      redis.call('ZREM', demand, evicted)
    end
  end
end
redis.call('ZREM', free, did)
redis.call('ZADD', leases, now + ttl, did)
redis.call('HSET', holders, did, session)
redis.call('SET', p .. ':tl:s:' .. session, pool .. '\\31' .. did, 'PX', ttl)
redis.call('SET', p .. ':tl:n:' .. did, session .. '\\31' .. low .. '\\31' .. payload,
  'PX', ttl + cooldown)
peak(stats, 'peak_leased', redis.call('ZCARD', leases))
return {1, did, low, evicted}
"""
)

# The session's pool and number, if it still holds the number; shared by renew and release.
_OWN = """
local session = ARGV[2]
local skey = p .. ':tl:s:' .. session
local entry = redis.call('GET', skey)
if not entry then return 0 end
local sep = string.find(entry, '\\31', 1, true)
local pool, did = string.sub(entry, 1, sep - 1), string.sub(entry, sep + 1)
local leases, holders, free, demand = keys(pool)
if redis.call('HGET', holders, did) ~= session then
  redis.call('DEL', skey)
  return 0
end
"""

# ARGV: prefix, session, ttl ms, cooldown ms
_RENEW = (
    _HEAD
    + _OWN
    + """
local ttl, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZADD', leases, now + ttl, did)
redis.call('ZADD', demand, now + ttl, session)
redis.call('PEXPIRE', skey, ttl)
redis.call('PEXPIRE', p .. ':tl:n:' .. did, ttl + cooldown)
return 1
"""
)

# ARGV: prefix, session, cooldown ms
_RELEASE = (
    _HEAD
    + _OWN
    + """
local cooldown = tonumber(ARGV[3])
redis.call('DEL', skey)
redis.call('ZREM', leases, did)
redis.call('HDEL', holders, did)
redis.call('ZREM', demand, session)
rest(pool, did, now + cooldown)
if cooldown > 0 then
  redis.call('PEXPIRE', p .. ':tl:n:' .. did, cooldown)
else
  redis.call('DEL', p .. ':tl:n:' .. did)
end
return 1
"""
)

# ARGV: prefix, pool
_STATS = (
    _HEAD
    + """
local leases, holders, free, demand, stats = keys(ARGV[2])
local leased = redis.call('ZCOUNT', leases, '(' .. now, '+inf')
return {leased, redis.call('HGET', stats, 'peak_leased') or 0,
  redis.call('HGET', stats, 'peak_sessions') or 0, redis.call('HGET', stats, 'exhausted') or 0}
"""
)


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 0)


def _limits(limits: Sequence[RateRule]) -> list[str | int]:
    args: list[str | int] = [len(limits)]
    for rule in limits:
        args += [rule.key, rule.limit, rule.window_s]
    return args


class RedisLeaseStore:
    """Leases shared by every instance; each operation is one script call.

    Keys live under ``{prefix}:tl:``; the scripts derive them from the prefix, so this needs
    a single Redis (or a cluster with all the keys on one slot)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._redis = redis
        self._hit = redis.register_script(_HIT)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._stats = redis.register_script(_STATS)
        self._versions: dict[tuple[str, ...], str] = {}

    async def hit(self, limits: Sequence[RateRule]) -> None:
        if not limits:
            return
        over = await self._hit(args=[self._prefix, *_limits(limits)])
        _raise_over(limits, over)

    async def acquire(
        self,
        pool: str,
        dids: Sequence[str],
        session: str,
        payload: str,
        *,
        ttl_s: float,
        cooldown_s: float,
        reuse: bool,
        limits: Sequence[RateRule] = (),
    ) -> Lease | None:
        version = self._versions.get(tuple(dids))
        if version is None:
            version = hashlib.sha1("\n".join(dids).encode()).hexdigest()[:16]
            if len(self._versions) > 10_000:
                self._versions.clear()
            self._versions[tuple(dids)] = version
        args: list[str | int] = [
            self._prefix,
            pool,
            session,
            payload,
            _ms(ttl_s),
            _ms(cooldown_s),
            int(reuse),
        ]
        args += [version, *_limits(limits)]
        result = await self._acquire(args=args)
        if result[0] == -1:  # Redis has another version of the pool's numbers: send them
            result = await self._acquire(args=[*args, *dids])
        if result[0] == -2:
            _raise_over(limits, result[1])
        if result[0] == 0:
            return None
        _, did, low, evicted = result
        return Lease(_text(did), bool(int(low)), _text(evicted) or None)

    async def renew(self, session: str, *, ttl_s: float, cooldown_s: float) -> bool:
        args: list[str | int] = [self._prefix, session, _ms(ttl_s), _ms(cooldown_s)]
        return bool(await self._renew(args=args))

    async def release(self, session: str, *, cooldown_s: float) -> bool:
        return bool(await self._release(args=[self._prefix, session, _ms(cooldown_s)]))

    async def release_many(self, sessions: Sequence[str], *, cooldown_s: float) -> list[bool]:
        """Release several sessions in one round trip (pipelined scripts)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for session in sessions:
                await self._release(args=[self._prefix, session, _ms(cooldown_s)], client=pipe)
            return [bool(r) for r in await pipe.execute()]

    async def holder(self, did: str) -> Holder | None:
        raw = await self._redis.get(f"{self._prefix}:tl:n:{did}")
        if raw is None:
            return None
        session, low, payload = _text(raw).split(_SEP, 2)
        return Holder(session, low == "1", payload)

    async def stats(self, pool: str) -> PoolStats:
        leased, peak_leased, peak_sessions, exhausted = await self._stats(args=[self._prefix, pool])
        return PoolStats(int(leased), int(peak_leased), int(peak_sessions), int(exhausted))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _raise_over(limits: Sequence[RateRule], over: bytes | str | None) -> None:
    key = _text(over) if over else ""
    for rule in limits:
        if rule.key == key:
            raise LeaseRateLimited(rule)


# ---------------------------------------------------------------- Redis with a way out


class FallbackLeaseStore:
    """The Redis store, falling back to a store in memory while Redis does not answer.

    Redis is where leases are shared, not where anything is kept for good: while it is away a
    visitor still gets a number (from this instance's memory, marked low-confidence because
    another instance may lease the same number meanwhile) and a call is still attributed from
    what this instance leased. ``circuit`` says when to try Redis again; leases given out in
    memory keep being served from memory until they end, new ones go to Redis again.
    """

    def __init__(self, redis: RedisLeaseStore, memory: MemoryLeaseStore, circuit: Circuit) -> None:
        self.redis = redis
        self.memory = memory
        self.circuit = circuit
        self.fallbacks = 0  # operations answered from memory

    @property
    def degraded(self) -> bool:
        return self.circuit.degraded

    async def _try(self, operation: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """(True, result) from Redis, or (False, None) when Redis is (still) away."""
        if not self.circuit.allows():
            return False, None
        try:
            result = await operation()
        except REDIS_DOWN as exc:
            self.circuit.failed(exc)
            return False, None
        self.circuit.succeeded()
        return True, result

    async def hit(self, limits: Sequence[RateRule]) -> None:
        answered, _ = await self._try(lambda: self.redis.hit(limits))
        if not answered:
            self.fallbacks += 1
            await self.memory.hit(limits)

    async def acquire(
        self,
        pool: str,
        dids: Sequence[str],
        session: str,
        payload: str,
        *,
        ttl_s: float,
        cooldown_s: float,
        reuse: bool,
        limits: Sequence[RateRule] = (),
    ) -> Lease | None:
        answered, lease = await self._try(
            lambda: self.redis.acquire(
                pool,
                dids,
                session,
                payload,
                ttl_s=ttl_s,
                cooldown_s=cooldown_s,
                reuse=reuse,
                limits=limits,
            )
        )
        if answered:
            return lease
        self.fallbacks += 1
        kept = await self.memory.acquire(
            pool,
            dids,
            session,
            payload,
            ttl_s=ttl_s,
            cooldown_s=cooldown_s,
            reuse=reuse,
            limits=limits,
        )
        # Another instance may lease the same number meanwhile: a call on it may be another's.
        return Lease(kept.did, True, kept.evicted) if kept is not None else None

    async def renew(self, session: str, *, ttl_s: float, cooldown_s: float) -> bool:
        if await self.memory.renew(session, ttl_s=ttl_s, cooldown_s=cooldown_s):
            return True  # leased from memory during an outage
        answered, alive = await self._try(
            lambda: self.redis.renew(session, ttl_s=ttl_s, cooldown_s=cooldown_s)
        )
        # While Redis cannot say, the page keeps its number rather than start over.
        return bool(alive) if answered else True

    async def release(self, session: str, *, cooldown_s: float) -> bool:
        if await self.memory.release(session, cooldown_s=cooldown_s):
            return True
        _, released = await self._try(lambda: self.redis.release(session, cooldown_s=cooldown_s))
        return bool(released)

    async def holder(self, did: str) -> Holder | None:
        _, found = await self._try(lambda: self.redis.holder(did))
        if found is not None:
            return found
        kept = await self.memory.holder(did)
        return Holder(kept.session, True, kept.payload) if kept is not None else None

    async def stats(self, pool: str) -> PoolStats:
        answered, stats = await self._try(lambda: self.redis.stats(pool))
        if answered and stats is not None:
            return stats
        return await self.memory.stats(pool)
