"""Benchmark: the dialplan's "which extension" lookup over HTTP against PostgreSQL.

    python bench/dialplan_routing.py [--contacts N] [--requests N] [--concurrency N]

``--contacts`` contacts (default 1,000,000; every fifth has a responsible manager) in a
PostgreSQL database of its own (``CC_BENCH_DATABASE_URL``, created and dropped), 20 managers
with extensions, Moscow served round-robin by ten of them (so every new caller's answer also
writes the rule's turn: the slowest strategy), and the server as its own process
(``contact-center serve``). Lookups ask ``GET /api/v1/routing/dial`` the way Asterisk's
``CURL()`` does, each for a random caller (four in five known contacts):

- latency: ``--rate`` lookups per second (default 100: a busy PBX's incoming calls, each
  independent of the others), measured per request at the client;
- ceiling: ``--concurrency`` lookups always in flight (default 8), lookups per second.

Only correct answers count: HTTP 200 with one of the configured extensions (a manager's, or
the default); anything else is an error, reported apart and left out of the figures.

Baseline, in the same run and measured the same way: a bare aiohttp server (its own process)
whose one handler answers a constant extension; both are printed with their ratio.

The last line is one JSON object: ``{"requests_per_s" (the ceiling), "p50_ms", "p99_ms",
"errors", "baseline_requests_per_s", "baseline_p50_ms", "baseline_p99_ms"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.distribution.model import DistributionRule, RuleManager
from crm_core.reference.model import Region
from crm_core.users import service as users

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DB_NAME = "cc_bench_dialplan"
MANAGERS = 20
DEFAULT_EXTENSION = "600"
EXTENSIONS = frozenset({*(str(200 + i) for i in range(MANAGERS)), DEFAULT_EXTENSION})
# The baseline: aiohttp answering a constant, nothing else (no middleware, no database).
BARE_SERVER = """
import sys
from aiohttp import web

async def dial(request):
    return web.Response(text="600", content_type="text/plain")

app = web.Application()
app.router.add_get("/api/v1/routing/dial", dial)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _prepare(url: str, contacts: int, rng: random.Random) -> list[str]:
    """A migrated database with the contacts, managers and the Moscow rule; the numbers."""
    await harness.recreate_database(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    try:
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            ids = []
            for i in range(MANAGERS):
                user, _ = await users.create_user(
                    session,
                    login=f"m{i}",
                    role="manager",
                    password="bench-password",
                    extensions=[str(200 + i)],
                    scrypt_n=1024,
                )
                ids.append(user.id)
            moscow = Region(code="RU-MOW", name="Москва", timezone="Europe/Moscow")
            session.add(moscow)
            await session.flush()
            rule = DistributionRule(region_id=moscow.id, strategy="round_robin")
            session.add(rule)
            await session.flush()
            session.add_all(RuleManager(rule_id=rule.id, user_id=u) for u in ids[:10])
            await session.commit()
    finally:
        await engine.dispose()
    crm_lookup.DB_NAME = DB_NAME  # its loader writes into the database named there
    numbers = await crm_lookup._load(url, contacts, rng)
    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        await conn.execute(
            f"UPDATE contacts SET responsible_id = {ids[0]} + id % {MANAGERS} WHERE id % 5 = 0"
        )
        # Settle the bulk load first, so background writes do not land in the measurement.
        await conn.execute("VACUUM ANALYZE contacts")
        await conn.execute("VACUUM ANALYZE phones")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return numbers


async def _serve(url: str, port: int) -> asyncio.subprocess.Process:
    return await harness.serve(
        {
            "CC_DATABASE_URL": crm_lookup._sa_url(url, DB_NAME),
            "CC_SERVER_PORT": str(port),
            "CC_DISTRIBUTION_DEFAULT_REGION": "RU-MOW",
            "CC_DISTRIBUTION_DEFAULT_EXTENSION": DEFAULT_EXTENSION,
        }
    )


class Tally:
    """Answers by kind; only correct ones are figures."""

    def __init__(self) -> None:
        self.latencies: list[float] = []  # of correct answers
        self.managers = 0
        self.defaults = 0
        self.errors = 0
        self.examples: list[str] = []

    def add(self, ms: float, status: int, body: str) -> None:
        if status != 200 or body not in EXTENSIONS:
            self.errors += 1
            if len(self.examples) < 3:
                self.examples.append(f"{status} {body[:100]!r}")
            return
        self.latencies.append(ms)
        if body == DEFAULT_EXTENSION:
            self.defaults += 1
        else:
            self.managers += 1


async def _ask(http: aiohttp.ClientSession, base: str, caller: str, tally: Tally) -> None:
    """One lookup as ``CURL()`` makes it, tallied (a refused connection is an error too)."""
    params = {"caller": caller, "did": "+74951110000"}
    started = time.perf_counter()
    try:
        async with http.get(f"{base}/api/v1/routing/dial", params=params) as resp:
            status, body = resp.status, (await resp.text()).strip()
    except aiohttp.ClientError as exc:
        status, body = 0, repr(exc)
    tally.add((time.perf_counter() - started) * 1000, status, body)


async def _paced(base: str, callers: list[str], rate: float) -> Tally:
    """Lookups started at ``rate`` per second whatever the answers take (calls arrive on
    their own), as a PBX's incoming calls do."""
    tally = Tally()
    async with aiohttp.ClientSession() as http:
        loop = asyncio.get_running_loop()
        start = loop.time()
        pending = []
        for i, caller in enumerate(callers):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.ensure_future(_ask(http, base, caller, tally)))
        await asyncio.gather(*pending)
    return tally


async def _saturate(base: str, callers: list[str], concurrency: int) -> tuple[float, Tally]:
    """Correct answers per second with ``concurrency`` always in flight: the ceiling."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for caller in callers:
        queue.put_nowait(caller)
    tally = Tally()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def worker() -> None:
            while not queue.empty():
                await _ask(http, base, queue.get_nowait(), tally)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(tally.latencies) / (time.perf_counter() - started), tally


async def _bare_server(port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BARE_SERVER,
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def _wait_bare(base: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/api/v1/routing/dial") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the bare server at {base} did not start")


_BUCKET = re.compile(
    r'^cc_http_request_duration_seconds_bucket\{le="([0-9.]+|\+Inf)",method="GET",'
    r'route="/api/v1/routing/dial"\} ([0-9.e+]+)$',
    re.M,
)


async def _server_buckets(base: str) -> dict[float, float]:
    """The server's own latency histogram of the dial route: upper bound (s) → count."""
    async with aiohttp.ClientSession() as http, http.get(f"{base}/metrics") as resp:
        body = await resp.text()
    return {float(le): float(n) for le, n in _BUCKET.findall(body)}


def _share(before: dict[float, float], after: dict[float, float]) -> dict[float, float]:
    """Share of the requests between two scrapes under 1, 2.5 and 5 ms."""
    total = after.get(max(after), 0) - before.get(max(after), 0) if after else 0
    return {
        le: (after[le] - before.get(le, 0)) / total
        for le in (0.001, 0.0025, 0.005)
        if total and le in after
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=100.0, help="paced lookups per second")
    parser.add_argument("--concurrency", type=int, default=8, help="in flight for the ceiling")
    parser.add_argument("--port", type=int, default=18093)
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    rng = random.Random(6)
    print(f"loading {args.contacts:,} contacts into {DB_NAME} …")
    numbers = await _prepare(url, args.contacts, rng)
    callers = [
        crm_lookup._formats(rng.choice(numbers))[0]
        if rng.random() < 0.8
        else f"+7916{rng.randrange(10**7):07d}"
        for _ in range(args.requests)
    ]
    del numbers
    # The million numbers are this process's heap; a full collection walking them would stall
    # the client and be counted as the server's latency.
    gc.collect()
    gc.freeze()
    base = f"http://127.0.0.1:{args.port}"
    bare_base = f"http://127.0.0.1:{args.port + 1}"
    server = await _serve(url, args.port)
    bare = await _bare_server(args.port + 1)
    try:
        await harness.wait_ready(base)
        await _wait_bare(bare_base)
        await _saturate(base, callers[:500], args.concurrency)  # warm-up: pools, caches, plans
        await _saturate(bare_base, callers[:500], args.concurrency)
        before = await _server_buckets(base)
        paced = await _paced(base, callers, args.rate)
        server_side = _share(before, await _server_buckets(base))
        rate, ceiling = await _saturate(base, callers, args.concurrency)
        bare_paced = await _paced(bare_base, callers, args.rate)
        bare_rate, bare_ceiling = await _saturate(bare_base, callers, args.concurrency)
    finally:
        await harness.stop(server)
        await harness.stop(bare)
        await harness.drop_database(url, DB_NAME)
    if not paced.latencies:
        raise SystemExit(f"no correct answer; errors: {paced.examples}")
    latencies = paced.latencies
    p50, p99 = crm_lookup._pct(latencies, 0.50), crm_lookup._pct(latencies, 0.99)
    b50 = crm_lookup._pct(bare_paced.latencies, 0.50)
    b99 = crm_lookup._pct(bare_paced.latencies, 0.99)
    errors = paced.errors + ceiling.errors
    print(
        f"{len(latencies):,} correct dialplan lookups at {args.rate:g}/s: p50 {p50:.2f} ms, "
        f"p90 {crm_lookup._pct(latencies, 0.90):.2f} ms, p99 {p99:.2f} ms (goal: p99 < 5 ms)"
    )
    print(
        "inside the server (its latency histogram): "
        + ", ".join(f"{share:.1%} under {le * 1000:g} ms" for le, share in server_side.items())
    )
    print(
        f"answers: {paced.managers:,} a manager's extension, {paced.defaults:,} default; "
        f"errors: {errors}" + (f" e.g. {paced.examples + ceiling.examples}" if errors else "")
    )
    print(f"ceiling: {rate:,.0f} correct lookups/s with {args.concurrency} always in flight")
    print(
        f"baseline (bare aiohttp answering a constant): p50 {b50:.2f} ms, p99 {b99:.2f} ms, "
        f"ceiling {bare_rate:,.0f}/s; errors: {bare_paced.errors + bare_ceiling.errors}"
    )
    print(
        f"dialplan / baseline: p50 {p50 / b50:.1f}x, p99 {p99 / b99:.1f}x, "
        f"ceiling {rate / bare_rate:.0%} of the bare server's"
    )
    result = {
        "requests_per_s": round(rate, 1),
        "p50_ms": round(p50, 3),
        "p99_ms": round(p99, 3),
        "errors": errors,
        "baseline_requests_per_s": round(bare_rate, 1),
        "baseline_p50_ms": round(b50, 3),
        "baseline_p99_ms": round(b99, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
