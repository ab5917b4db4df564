"""The frames of a PBX's calls in progress, kept in Redis for the instance that takes over.

Exactly one instance follows a PBX (its lease, :mod:`contact_center.leases`); the calls in
progress live in that instance's fold. When it dies, the next holder learns the live channels
from the PBX (``Status``) but not what happened to them before, and nothing at all of the
calls that ended while nobody followed the PBX: those would be lost. So the holder writes every
folded frame of a call in progress to Redis (one list per call, dropped when the call ends);
the next holder folds them again before it connects, and the ``Status`` resync then ends the
calls the PBX no longer lists (:meth:`ami.fold.CallFolder.reconcile`), as after a reconnect.

Writes leave the AMI reader at once: frames are batched per event-loop turn and sent as one
pipeline by a single writer task, in order. Redis away means the journal has a gap (logged);
following the PBX never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict

import redis.asyncio as aioredis

from ami.frames import Frame

log = logging.getLogger(__name__)

# Batches waiting for Redis at most; beyond, the journal drops (and says so) rather than grow.
MAX_PENDING = 1000
# Calls ended lately, whose stray late frames are not journalled again.
_ENDED_MEMORY = 20_000


class CallJournal:
    """The journal of one PBX under ``<prefix>:ami:<pbx>:``: a set of live calls and a list of
    frames (JSON headers) per call, each expiring ``ttl_s`` after its last frame."""

    def __init__(self, client: aioredis.Redis, prefix: str, pbx: str, ttl_s: float) -> None:
        self._redis = client
        self._base = f"{prefix}:ami:{pbx}"
        self._live = f"{self._base}:live"
        self._ttl_s = int(ttl_s)
        self._batch: list[tuple[str, str | None]] = []  # (call, frame JSON | None: ended)
        self._pending: asyncio.Queue[list[tuple[str, str | None]]] = asyncio.Queue(MAX_PENDING)
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._writer: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failures = 0

    def _call_key(self, call: str) -> str:
        return f"{self._base}:call:{call}"

    # ------------------------------------------------------------------ writing (holder)

    def record(self, frame: Frame) -> None:
        """Journal one folded frame of a call (frames without a Linkedid are not)."""
        call = frame.headers.get("Linkedid")
        if not call or call in self._ended:
            return
        self._add((call, json.dumps(frame.headers, ensure_ascii=False)))

    def ended(self, call: str) -> None:
        """Forget ``call``: it ended and is on its way to the call log."""
        self._ended[call] = None
        if len(self._ended) > _ENDED_MEMORY:
            self._ended.popitem(last=False)
        self._add((call, None))

    def _add(self, item: tuple[str, str | None]) -> None:
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        self._batch.append(item)

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            self._pending.put_nowait(batch)
        except asyncio.QueueFull:
            self.dropped += len(batch)
            log.warning("call journal: Redis is %d batches behind; dropped one", MAX_PENDING)
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while not self._pending.empty():
            batch = self._pending.get_nowait()
            pipe = self._redis.pipeline(transaction=False)
            for call, data in batch:
                key = self._call_key(call)
                if data is None:
                    pipe.delete(key)
                    pipe.srem(self._live, call)
                else:
                    pipe.rpush(key, data)
                    pipe.expire(key, self._ttl_s)
                    pipe.sadd(self._live, call)
            try:
                await pipe.execute()
            except (aioredis.RedisError, OSError, TimeoutError) as exc:
                self.failures += 1
                log.warning("call journal: %d frame(s) not written (%s)", len(batch), exc)

    async def flush(self) -> None:
        """Wait until everything recorded so far is written (tests, shutdown)."""
        self._flush()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.flush()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    # ------------------------------------------------------------------ reading (new holder)

    async def load(self) -> list[Frame]:
        """The journalled frames of every call in progress, call by call in the order the
        calls began, each call's in the order they came."""
        members = await self._redis.smembers(self._live)
        calls = [c.decode() if isinstance(c, bytes) else str(c) for c in members]
        if not calls:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for call in calls:
            pipe.lrange(self._call_key(call), 0, -1)
        lists = await pipe.execute()
        found: list[list[Frame]] = []
        gone = []
        for call, raw in zip(calls, lists, strict=True):
            if not raw:
                gone.append(call)  # expired: nothing left to fold
                continue
            frames = []
            for item in raw:
                with contextlib.suppress(ValueError, TypeError):
                    headers = json.loads(item)
                    if isinstance(headers, dict):
                        frames.append(Frame({str(k): str(v) for k, v in headers.items()}))
            if frames:
                found.append(frames)
        if gone:
            await self._redis.srem(self._live, *gone)
        found.sort(key=lambda frames: _first_ts(frames))
        return [frame for frames in found for frame in frames]


def _first_ts(frames: list[Frame]) -> float:
    for frame in frames:
        with contextlib.suppress(TypeError, ValueError):
            return float(frame.headers.get("Timestamp") or "")
    return 0.0
