"""Benchmark: tracking-number leases through ``POST /api/v1/tracking/session`` with Redis.

    python bench/tracking.py [--seconds 10] [--concurrency 8] [--pool 256]
                             [--probe-seconds 10] [--probe-numbers 16] [--probe-pages 128]

The server runs as its own process (``contact-center serve``) on a PostgreSQL database of its
own (``CC_BENCH_DATABASE_URL``, created and dropped) with Redis (``CC_BENCH_REDIS_URL``) for
leases and rate limits. The server also writes every visitor and session to PostgreSQL in
batches, as in production.

Throughput: one site, one pool of ``--pool`` numbers for Yandex Direct. Each of
``--concurrency`` simulated pages asks for a number with a Yandex Direct click (one Lua script
in Redis), and lets it go at once (straight to Redis with the same script, as an expiry would,
without taking HTTP capacity from the leases measured). Only granted leases count (an answer
with ``leased: true``); errors and answers without a lease are reported apart, and latencies
are those of granted leases.

Double leases: a second site whose pool has far fewer numbers (``--probe-numbers``) than pages
(``--probe-pages``), so numbers are fought over. Each page leases a number, keeps it for a
lifetime of its own (up to ``--probe-hold`` seconds) sending heartbeats, checks at random
moments that Redis still names it as the holder, and releases it over HTTP; it stops holding
it only once the release has been answered. A double lease is a number granted to a page while
another page holds it, a heartbeat that finds the lease gone, or a check that finds another
holder.

Also measured in the same run: raw Redis round trips per second (``PING`` at the same
concurrency from this process), the ceiling of anything that costs one round trip.

Last line: ``{"leases_per_s", "p50_ms", "p99_ms", "errors", "without_lease", "double_leases",
"probe_leases", "ownership_checks", "redis_roundtrips_per_s"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.tracking.model import NumberKind, TrackingNumber, TrackingPool, TrackingSite
from routing.number_leases import RedisLeaseStore

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DB_NAME = "cc_bench_tracking"
VISITORS = 20_000


async def _prepare(url: str, pool_size: int, probe_numbers: int) -> None:
    await harness.recreate_database(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    try:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            for code, size, first in (
                ("bench", pool_size, 5_000_000),
                ("probe", probe_numbers, 6_000_000),
            ):
                site = TrackingSite(code=code, name=code, origins=[])
                session.add(site)
                await session.flush()
                pool = TrackingPool(site_id=site.id, code="yd", name="YD", channel="yandex_direct")
                session.add(pool)
                await session.flush()
                session.add_all(
                    TrackingNumber(
                        did=f"+7495{first + n:07d}",
                        kind=NumberKind.POOL,
                        site_id=site.id,
                        pool_id=pool.id,
                    )
                    for n in range(size)
                )
            await session.commit()
    finally:
        await engine.dispose()


async def _serve(url: str, redis_url: str, prefix: str, port: int) -> asyncio.subprocess.Process:
    return await harness.serve(
        {
            "CC_DATABASE_URL": crm_lookup._sa_url(url, DB_NAME),
            "CC_REDIS_URL": redis_url,
            "CC_REDIS_PREFIX": prefix,
            "CC_SERVER_PORT": str(port),
            "CC_TRACKING_EXHAUSTION": "static",
            "CC_TRACKING_RELEASE_COOLDOWN_MINUTES": "0",
            "CC_TRACKING_SESSIONS_PER_IP": "1000000000",
            "CC_TRACKING_SESSIONS_PER_VISITOR": "1000000000",
            "CC_TRACKING_BEATS_PER_SESSION": "1000000000",
            "CC_TRACKING_HEARTBEAT_S": "5",
        }
    )


class Connection:
    """A bare keep-alive HTTP/1.1 connection: the load generator must cost far less than the
    server it measures (aiohttp's client would be the bottleneck on two cores)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(
            b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: text/plain\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


class Pages:
    """The throughput pages: lease and let go at once; only granted leases count."""

    def __init__(self, port: int, store: RedisLeaseStore) -> None:
        self.port = port
        self.store = store
        self.to_release: list[str] = []
        self.latencies: list[float] = []  # of granted leases
        self.without_lease = 0
        self.errors = 0
        self.lost_releases = 0

    async def run(self, rng: random.Random, until: float) -> None:
        conn = await Connection.open(self.port)
        head = b'{"site": "bench", "utm": {"yclid": "1"}, "visitor_id": "'
        try:
            while time.perf_counter() < until:
                body = head + f'v{rng.randrange(VISITORS):08d}"}}'.encode()
                started = time.perf_counter()
                status, raw = await conn.post("/api/v1/tracking/session", body)
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    self.errors += 1
                    continue
                answer = json.loads(raw)
                if not answer["leased"] or answer["low_confidence"]:
                    self.without_lease += 1
                    continue
                self.latencies.append(elapsed)
                self.to_release.append(answer["session_id"])
        finally:
            conn.close()

    async def releaser(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self.to_release):
            batch, self.to_release = self.to_release, []
            if batch:
                released = await self.store.release_many(batch, cooldown_s=0)
                self.lost_releases += sum(1 for ok in released if not ok)
            await asyncio.sleep(0.002)


class Probe:
    """Many more pages than numbers, each holding its lease for its lifetime."""

    def __init__(self, port: int, store: RedisLeaseStore, hold_s: float) -> None:
        self.port = port
        self.store = store
        self.hold_s = hold_s
        self.held: dict[str, str] = {}  # number -> the session holding it until released
        self.releasing: set[str] = set()  # sessions whose release is on its way
        self.leases = 0
        self.without_lease = 0
        self.errors = 0
        self.doubles = 0
        self.lost = 0  # heartbeats or checks that found the lease gone or someone else's
        self.checks = 0
        self.examples: list[str] = []

    def _double(self, what: str) -> None:
        self.doubles += 1
        if len(self.examples) < 5:
            self.examples.append(what)

    async def run(self, rng: random.Random, until: float) -> None:
        conn = await Connection.open(self.port)
        try:
            while time.perf_counter() < until:
                body = json.dumps(
                    {
                        "site": "probe",
                        "utm": {"yclid": "1"},
                        "visitor_id": f"p{rng.getrandbits(40):012x}",
                    }
                ).encode()
                status, raw = await conn.post("/api/v1/tracking/session", body)
                if status != 200:
                    self.errors += 1
                    if len(self.examples) < 8:
                        self.examples.append(f"{status} {raw[:200]!r}")
                    await asyncio.sleep(0.01)
                    continue
                answer = json.loads(raw)
                if not answer["leased"] or answer["low_confidence"]:
                    self.without_lease += 1
                    await asyncio.sleep(rng.uniform(0, 0.05))
                    continue
                number, session = answer["number"], answer["session_id"]
                self.leases += 1
                holder = self.held.get(number)
                if holder is not None and holder not in self.releasing:
                    self._double(f"{number} granted to {session} while {holder} holds it")
                self.held[number] = session
                await self._hold(conn, rng, number, session)
                # From here until the answer the number may be someone else's already (the
                # release reached Redis before its answer reached the page): not a double.
                self.releasing.add(session)
                status, raw = await conn.post(f"/api/v1/tracking/session/{session}/release", b"")
                if status != 200 or not json.loads(raw)["released"]:
                    self.lost += 1
                self.releasing.discard(session)
                if self.held.get(number) == session:
                    del self.held[number]
        finally:
            conn.close()

    async def _hold(self, conn: Connection, rng: random.Random, number: str, session: str) -> None:
        """Keep the lease for a lifetime: heartbeats, and ownership checks at random moments."""
        end = time.perf_counter() + rng.uniform(0.05, self.hold_s)
        while (left := end - time.perf_counter()) > 0:
            await asyncio.sleep(min(left, rng.expovariate(1 / 0.1)))
            if rng.random() < 0.5:
                status, raw = await conn.post(f"/api/v1/tracking/session/{session}/heartbeat", b"")
                if status != 200 or not json.loads(raw)["active"]:
                    self.lost += 1
                    self._double(f"heartbeat of {session} found its lease of {number} gone")
                    return
            else:
                holder = await self.store.holder(number)
                self.checks += 1
                if holder is None or holder.session != session:
                    self.lost += 1
                    other = holder.session if holder else None
                    self._double(f"{number} of {session} is held by {other}")
                    return


async def _probe(port: int, store: RedisLeaseStore, args: argparse.Namespace) -> Probe:
    probe = Probe(port, store, args.probe_hold)
    until = time.perf_counter() + args.probe_seconds
    await asyncio.gather(
        *(probe.run(random.Random(1000 + i), until) for i in range(args.probe_pages))
    )
    return probe


async def _leases(port: int, redis: aioredis.Redis, prefix: str, args: argparse.Namespace) -> Pages:
    pages = Pages(port, RedisLeaseStore(redis, prefix))
    stop = asyncio.Event()
    releaser = asyncio.create_task(pages.releaser(stop))
    warm = time.perf_counter() + 1.0
    await asyncio.gather(*(pages.run(random.Random(i), warm) for i in range(4)))
    pages.latencies.clear()
    pages.errors = pages.without_lease = 0
    until = time.perf_counter() + args.seconds
    await asyncio.gather(*(pages.run(random.Random(i), until) for i in range(args.concurrency)))
    stop.set()
    await releaser
    return pages


async def _roundtrips(redis: aioredis.Redis, concurrency: int, seconds: float) -> float:
    count = 0

    async def loop(until: float) -> None:
        nonlocal count
        while time.perf_counter() < until:
            await redis.ping()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(loop(started + seconds) for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pool", type=int, default=256)
    parser.add_argument("--probe-seconds", type=float, default=10.0)
    parser.add_argument("--probe-numbers", type=int, default=16)
    parser.add_argument("--probe-pages", type=int, default=128)
    parser.add_argument("--probe-hold", type=float, default=1.0, help="longest lifetime, s")
    parser.add_argument("--port", type=int, default=18091)
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("CC_BENCH_REDIS_URL", DEFAULT_REDIS)
    prefix = f"ccbench:{uuid.uuid4().hex[:8]}"
    await _prepare(url, args.pool, args.probe_numbers)
    server = await _serve(url, redis_url, prefix, args.port)
    redis = aioredis.from_url(redis_url, max_connections=args.probe_pages + args.concurrency + 8)
    base = f"http://127.0.0.1:{args.port}"
    try:
        await harness.wait_ready(base)
        print(f"server up; pool of {args.pool} numbers, {args.concurrency} pages, {args.seconds} s")
        pages = await _leases(args.port, redis, prefix, args)
        print(
            f"probe: {args.probe_pages} pages fight over {args.probe_numbers} numbers for "
            f"{args.probe_seconds} s, holding each up to {args.probe_hold} s"
        )
        probe = await _probe(args.port, RedisLeaseStore(redis, prefix), args)
        roundtrips = await _roundtrips(redis, args.concurrency, 3.0)
    finally:
        await harness.stop(server)
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await harness.drop_database(url, DB_NAME)
    leases = len(pages.latencies)
    doubles = probe.doubles + pages.lost_releases
    result = {
        "leases_per_s": round(leases / args.seconds, 1),
        "p50_ms": round(statistics.median(pages.latencies), 2) if leases else None,
        "p99_ms": round(_pct(pages.latencies, 0.99), 2) if leases else None,
        "errors": pages.errors + probe.errors,
        "without_lease": pages.without_lease,
        "double_leases": doubles,
        "probe_leases": probe.leases,
        "ownership_checks": probe.checks,
        "redis_roundtrips_per_s": round(roundtrips, 1),
    }
    print(f"granted leases: {leases} in {args.seconds} s = {result['leases_per_s']}/s")
    print(f"latency of a granted lease: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(f"errors: {pages.errors}; answers without a lease: {pages.without_lease}")
    print(
        f"probe: {probe.leases} leases held, {probe.checks} ownership checks, "
        f"{probe.without_lease} answers without a lease (pool exhausted), "
        f"{probe.errors} errors, {probe.lost} leases lost"
    )
    print(f"double leases: {doubles}" + (f" e.g. {probe.examples}" if probe.examples else ""))
    print(
        f"raw redis round trips: {result['redis_roundtrips_per_s']}/s; "
        f"leases are {leases / args.seconds / roundtrips:.1%} of it"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
