"""Benchmark: tracking-number leases through ``POST /api/v1/tracking/session`` with Redis.

    python bench/tracking.py [--seconds 10] [--concurrency 32] [--pool 128]

The server runs as its own process (``contact-center serve``) on a PostgreSQL database of its
own (``CC_BENCH_DATABASE_URL``, created and dropped) with Redis (``CC_BENCH_REDIS_URL``) for
leases and rate limits. One site, one pool of ``--pool`` numbers for Yandex Direct. Each of
``--concurrency`` simulated pages asks for a number with a Yandex Direct click (so every
request is a real lease: one Lua script in Redis), holds it a moment and lets it go; the
release goes straight to Redis with the same script (as an expiry would, without taking HTTP
capacity from the leases measured). The server also writes every visitor and session to
PostgreSQL in batches, as in production.

Double leases: a number handed to a page while another page, which got it earlier, has not
yet let it go (the pool never runs out here, so no lease is a low-confidence reuse).

Also measured in the same run: raw Redis round trips per second (``PING`` at the same
concurrency from this process), the ceiling of anything that costs one round trip.

Last line: ``{"leases_per_s", "p50_ms", "p99_ms", "double_leases", "redis_roundtrips_per_s"}``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import crm_lookup
import harness

from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.tracking.model import NumberKind, TrackingNumber, TrackingPool, TrackingSite
from routing.number_leases import RedisLeaseStore

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DB_NAME = "cc_bench_tracking"
VISITORS = 20_000


async def _prepare(url: str, pool_size: int) -> None:
    await harness.recreate_database(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    try:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            site = TrackingSite(code="bench", name="Bench", origins=[])
            session.add(site)
            await session.flush()
            pool = TrackingPool(site_id=site.id, code="yd", name="YD", channel="yandex_direct")
            session.add(pool)
            await session.flush()
            session.add_all(
                TrackingNumber(
                    did=f"+7495{5_000_000 + n:07d}",
                    kind=NumberKind.POOL,
                    site_id=site.id,
                    pool_id=pool.id,
                )
                for n in range(pool_size)
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
    """The simulated pages: lease, hold briefly, let go; latencies and double leases.

    A double lease shows twice over: a page gets a number another page holds (as far as the
    pages know), or a release finds its session no longer holding the number (someone else
    was given it). Releases are sent in pipelined batches."""

    def __init__(self, port: int, store: RedisLeaseStore) -> None:
        self.port = port
        self.store = store
        self.held: dict[str, str] = {}  # number -> session holding it (as far as pages know)
        self.to_release: list[str] = []
        self.latencies: list[float] = []
        self.double_leases = 0
        self.without_lease = 0
        self.errors = 0

    async def run(self, rng: random.Random, until: float) -> None:
        conn = await Connection.open(self.port)
        head = b'{"site": "bench", "utm": {"yclid": "1"}, "visitor_id": "'
        try:
            while time.perf_counter() < until:
                body = head + f'v{rng.randrange(VISITORS):08d}"}}'.encode()
                started = time.perf_counter()
                status, raw = await conn.post("/api/v1/tracking/session", body)
                self.latencies.append((time.perf_counter() - started) * 1000)
                if status != 200:
                    self.errors += 1
                    continue
                answer = json.loads(raw)
                if not answer["leased"]:
                    self.without_lease += 1
                    continue
                number = answer["number"]
                if number in self.held:
                    self.double_leases += 1
                self.held[number] = answer["session_id"]
                await asyncio.sleep(0)  # the page holds the number for a moment
                del self.held[number]  # before the release is sent: it may be re-leased now
                self.to_release.append(answer["session_id"])
        finally:
            conn.close()

    async def releaser(self, stop: asyncio.Event) -> None:
        while not (stop.is_set() and not self.to_release):
            batch, self.to_release = self.to_release, []
            if batch:
                released = await self.store.release_many(batch, cooldown_s=0)
                self.double_leases += sum(1 for ok in released if not ok)
            await asyncio.sleep(0.002)


async def _leases(port: int, redis: aioredis.Redis, prefix: str, args: argparse.Namespace) -> Pages:
    pages = Pages(port, RedisLeaseStore(redis, prefix))
    stop = asyncio.Event()
    releaser = asyncio.create_task(pages.releaser(stop))
    warm = time.perf_counter() + 1.0
    await asyncio.gather(*(pages.run(random.Random(i), warm) for i in range(4)))
    pages.latencies.clear()
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
    parser.add_argument("--port", type=int, default=18091)
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("CC_BENCH_REDIS_URL", DEFAULT_REDIS)
    prefix = f"ccbench:{uuid.uuid4().hex[:8]}"
    await _prepare(url, args.pool)
    server = await _serve(url, redis_url, prefix, args.port)
    redis = aioredis.from_url(redis_url, max_connections=args.concurrency + 8)
    base = f"http://127.0.0.1:{args.port}"
    try:
        await harness.wait_ready(base)
        print(f"server up; pool of {args.pool} numbers, {args.concurrency} pages, {args.seconds} s")
        pages = await _leases(args.port, redis, prefix, args)
        roundtrips = await _roundtrips(redis, args.concurrency, 3.0)
    finally:
        await harness.stop(server)
        keys = [k async for k in redis.scan_iter(f"{prefix}:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
        await harness.drop_database(url, DB_NAME)
    leases = len(pages.latencies)
    result = {
        "leases_per_s": round(leases / args.seconds, 1),
        "p50_ms": round(statistics.median(pages.latencies), 2),
        "p99_ms": round(_pct(pages.latencies, 0.99), 2),
        "double_leases": pages.double_leases,
        "redis_roundtrips_per_s": round(roundtrips, 1),
    }
    print(f"leases: {leases} in {args.seconds} s = {result['leases_per_s']}/s")
    print(f"latency: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
    print(
        f"double leases: {pages.double_leases}; errors: {pages.errors}; "
        f"without a lease: {pages.without_lease}"
    )
    print(
        f"raw redis round trips: {result['redis_roundtrips_per_s']}/s; "
        f"leases are {leases / args.seconds / roundtrips:.1%} of it"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
