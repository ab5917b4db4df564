"""Benchmark: the screen-pop lookup (who is calling?) on 1,000,000 contacts in PostgreSQL.

    python bench/crm_lookup.py [--contacts N] [--lookups N] [--baseline-lookups N]

Creates a database of its own (``cc_bench_lookup`` on the server of ``CC_BENCH_DATABASE_URL``,
default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``), migrates it, bulk-loads the
contacts and their phones with COPY, then times the lookup of a ringing call's card as the
telephony service does it: the session on its kept read connection
(``contact_center.db.ReadConnection``) and ``crm_core.calls.screen_pop.card_summary`` (who is
calling, then the card and its deals, activities and tasks), on random numbers written in mixed
formats (normalised first, as the call fold does), a fifth of them unknown. The clock runs
around all of it; the who-is-calling query alone (``find_client_by_phone`` on a pooled session
already checked out) is printed beside it. The baseline runs the same lookups with PostgreSQL
barred from using indexes (``enable_indexscan``, ``enable_bitmapscan``, ``enable_indexonlyscan``
off): the plain unindexed queries on the same data. The database is dropped at the end.

The last line is one JSON object: ``{"contacts", "p50_ms", "p99_ms", "baseline_p99_ms",
"find_p50_ms", "find_p99_ms"}``; ``p50_ms``/``p99_ms`` are the whole lookup.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The repository before bench/: bench/recordings.py must not shadow the recordings package
# (imported through contact_center).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.access import SYSTEM
from crm_core.calls.screen_pop import card_summary
from crm_core.clients.lookup import find_client_by_phone
from crm_core.clients.model import fold_name
from crm_core.phones import digits_reversed, try_normalize_phone
from crm_core.rules import CrmRules

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DB_NAME = "cc_bench_lookup"
BATCH = 100_000
FIRST = ("Иван", "Анна", "Сергей", "Мария", "Олег", "Ольга", "Пётр", "Елена", "Андрей", "Юлия")
LAST = ("Иванов", "Смирнова", "Ковалёв", "Орлова", "Петров", "Лебедева", "Соколов", "Попова")


def _dsn(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _sa_url(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _formats(national: str) -> list[str]:
    """One number (10 national digits) as people and PBXes write it."""
    a, b, c, d = national[:3], national[3:6], national[6:8], national[8:]
    return [
        f"+7{national}",
        f"8 ({a}) {b}-{c}-{d}",
        f"+7 {a} {b}{c}{d}",
        f"7{national}",
        f"8{national}",
        f"+7 ({a}) {b}-{c}{d}",
    ]


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))
    return ordered[index]


async def _load(url: str, contacts: int, rng: random.Random) -> list[str]:
    """COPY ``contacts`` contacts with one mobile number each; return the national numbers."""
    conn = await asyncpg.connect(_dsn(url, DB_NAME))
    try:
        numbers = [f"9{n:09d}" for n in rng.sample(range(10**9), contacts)]
        now = datetime.now(UTC)
        started = time.perf_counter()
        for start in range(0, contacts, BATCH):
            ids = range(start + 1, min(start + BATCH, contacts) + 1)
            people = []
            for i in ids:
                name = f"{FIRST[i % len(FIRST)]} {LAST[(i // 10) % len(LAST)]} {i}"
                people.append((i, name, fold_name(name), False, now, now))
            await conn.copy_records_to_table(
                "contacts",
                records=people,
                columns=["id", "name", "name_search", "legal_hold", "created_at", "updated_at"],
            )
            phones = []
            for i in ids:
                e164 = "+7" + numbers[i - 1]
                phones.append((i, i, e164, digits_reversed(e164), e164[-10:], "mobile", now))
            await conn.copy_records_to_table(
                "phones",
                records=phones,
                columns=["id", "contact_id", "e164", "digits_rev", "last10", "kind", "created_at"],
            )
            done = ids[-1]
            print(f"  loaded {done:>9,} contacts ({time.perf_counter() - started:5.1f} s)")
        for table in ("contacts", "phones"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        # Settle the bulk load: without this, autovacuum's pass over the new rows (PostgreSQL
        # vacuums insert-only tables too) and the checkpoint land in the measurement.
        await conn.execute("VACUUM ANALYZE contacts")
        await conn.execute("VACUUM ANALYZE phones")
        await conn.execute("CHECKPOINT")
        return numbers
    finally:
        await conn.close()


def _queries(numbers: list[str], count: int, rng: random.Random) -> list[tuple[str, bool]]:
    """(raw number, expected found): four in five known, in a random format each."""
    known = set(numbers)
    out: list[tuple[str, bool]] = []
    while len(out) < count:
        if rng.random() < 0.8:
            national = rng.choice(numbers)
            out.append((rng.choice(_formats(national)), True))
        else:
            national = f"{rng.choice('3489')}{rng.randrange(10**9):09d}"
            if national in known:
                continue
            out.append((rng.choice(_formats(national)), False))
    return out


async def _measure(
    sessions: async_sessionmaker[Any], queries: list[tuple[str, bool]], *, find_too: bool = True
) -> tuple[list[float], list[float]]:
    """(whole lookups, the who-is-calling query alone) in ms.

    A whole lookup is what the telephony service does for a ringing call: a session on its
    read connection and the card summary, the clock around both. The query alone is timed on
    a pooled session whose connection was checked out (and pre-pinged) before its clock."""
    rules = CrmRules()
    reader = db.ReadConnection(sessions)
    whole: list[float] = []
    alone: list[float] = []
    try:
        for raw, expected in queries:
            number = try_normalize_phone(raw, "RU")
            started = time.perf_counter()
            async with reader.session() as session:
                card = await card_summary(session, number, rules=rules, region="RU")
            whole.append((time.perf_counter() - started) * 1000)
            if (card is not None) != expected:
                raise AssertionError(f"card of {raw!r}: expected found={expected}, got {card}")
            if not find_too:
                continue
            async with sessions() as session:
                await session.connection()
                started = time.perf_counter()
                match = await find_client_by_phone(session, raw, actor=SYSTEM, rules=rules)
                alone.append((time.perf_counter() - started) * 1000)
            if (match is not None) != expected:
                raise AssertionError(f"lookup of {raw!r}: expected found={expected}, got {match}")
    finally:
        await reader.close()
    return whole, alone


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=5_000)
    parser.add_argument("--baseline-lookups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    rng = random.Random(args.seed)

    admin = await asyncpg.connect(_dsn(url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DB_NAME}"')
    finally:
        await admin.close()
    bench_url = _sa_url(url, DB_NAME)
    try:
        engine = db.create_engine(
            DatabaseSettings(url=bench_url, pool_size=2, connect_retry_max_s=30.0)
        )
        try:
            await db.migrate(engine)
            print(f"migrated {db.safe_url(bench_url)}")
            numbers = await _load(url, args.contacts, rng)
            sessions = db.sessionmaker(engine)
            gc.collect()
            gc.freeze()  # the loaded numbers are permanent: keep the collector off them
            await _measure(sessions, _queries(numbers, 300, rng))  # warm up
            timings, alone = await _measure(sessions, _queries(numbers, args.lookups, rng))
        finally:
            await engine.dispose()
        p50, p99 = _pct(timings, 0.50), _pct(timings, 0.99)
        f50, f99 = _pct(alone, 0.50), _pct(alone, 0.99)
        print(
            f"whole lookup as the server does it (read connection, who is calling, card): "
            f"{len(timings)} lookups, p50 {p50:.3f} ms, p99 {p99:.3f} ms"
        )
        print(f"  of which the who-is-calling query alone: p50 {f50:.3f} ms, p99 {f99:.3f} ms")

        plain = create_async_engine(
            bench_url,
            pool_size=2,
            connect_args={
                "server_settings": {
                    "enable_indexscan": "off",
                    "enable_bitmapscan": "off",
                    "enable_indexonlyscan": "off",
                }
            },
        )
        try:
            plain_sessions = db.sessionmaker(plain)
            await _measure(plain_sessions, _queries(numbers, 5, rng), find_too=False)
            baseline, _ = await _measure(
                plain_sessions, _queries(numbers, args.baseline_lookups, rng), find_too=False
            )
        finally:
            await plain.dispose()
        b50, b99 = _pct(baseline, 0.50), _pct(baseline, 0.99)
        print(f"baseline (no indexes): {len(baseline)} lookups, p50 {b50:.1f} ms, p99 {b99:.1f} ms")
        print(
            f"p99 ratio baseline/indexed: {b99 / p99:,.0f}x; goal p99 < 2 ms: "
            f"{'met' if p99 < 2 else 'NOT met'}"
        )
    finally:
        admin = await asyncpg.connect(_dsn(url))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        finally:
            await admin.close()
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
                "baseline_p99_ms": round(b99, 1),
                "find_p50_ms": round(f50, 3),
                "find_p99_ms": round(f99, 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
