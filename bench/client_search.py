"""Benchmark: the client search box on 1,000,000 contacts in PostgreSQL.

    python bench/client_search.py [--contacts N] [--runs N]

Creates a database of its own (``cc_bench_search`` on the server of ``CC_BENCH_DATABASE_URL``,
default ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``), migrates it (with the pg_trgm
indexes of migration 0010), bulk-loads the contacts and their phones as ``bench/crm_lookup.py``
does, then times ``crm_core.clients.search.list_contacts`` (what ``GET /api/v1/contacts?q=``
runs: the first page of 50 by name, and the total) for each kind of query a manager types:
part of a name that few share, a surname 125,000 share, a name nobody has, the last digits of
a phone, a whole phone number, an e-mail, an INN. The baseline is the same with the trigram
indexes dropped (the database without pg_trgm). The database is dropped at the end.

The last line is one JSON object: ``{"contacts", "p50_ms", "p99_ms", "baseline_p99_ms"}``
over all kinds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core import migrations
from crm_core.clients.search import ClientFilter, list_contacts
from crm_core.rules import CrmRules
from crm_core.users.model import User

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DB_NAME = "cc_bench_search"


def _kinds(numbers: list[str], rng: random.Random) -> dict[str, list[str]]:
    """Queries of each kind; the names are the loader's (``<first> <last> <n>``)."""
    some = [rng.randrange(1, len(numbers) + 1) for _ in range(50)]
    last = crm_lookup.LAST
    return {
        "rare name": [f"{last[(i // 10) % len(last)]} {i}" for i in some],
        "common surname": list(last),
        "unknown name": ["Несуществующий", "Zyx", "Щукин-Кузнецов"],
        "phone suffix": [numbers[i - 1][-5:] for i in some],
        "whole phone": [f"8 ({numbers[i - 1][:3]}) {numbers[i - 1][3:]}" for i in some],
        "e-mail": ["nobody@example.ru", "ivan@romashka.ru"],
        "INN": ["7707083893", "500100732259"],
    }


async def _measure(
    engine: AsyncEngine, actor: User, kinds: dict[str, list[str]], runs: int, rng: random.Random
) -> dict[str, list[float]]:
    sessions = db.sessionmaker(engine)
    rules = CrmRules()
    out: dict[str, list[float]] = {}
    for kind, queries in kinds.items():
        samples = []
        for i in range(runs + 2):
            q = rng.choice(queries)
            started = time.perf_counter()
            async with sessions() as session:
                await list_contacts(session, ClientFilter(q=q), actor=actor, rules=rules)
            if i >= 2:  # the first two warm the plans and the caches
                samples.append((time.perf_counter() - started) * 1000)
        out[kind] = samples
    return out


def _report(title: str, figures: dict[str, list[float]]) -> None:
    print(title)
    for kind, samples in figures.items():
        print(
            f"  {kind:15} p50 {crm_lookup._pct(samples, 0.5):8.2f} ms"
            f"   p99 {crm_lookup._pct(samples, 0.99):8.2f} ms"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20, help="searches per kind")
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    rng = random.Random(5)
    await harness.recreate_database(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    try:
        await db.migrate(engine)
        crm_lookup.DB_NAME = DB_NAME  # its loader writes into the database named there
        print(f"loading {args.contacts:,} contacts …")
        numbers = await crm_lookup._load(url, args.contacts, rng)
        conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
        try:
            # The indexes were built on empty tables by the migration; time a build on the
            # loaded ones (what migrating an existing database costs).
            index = f"ix_contacts_name_search{migrations.TRIGRAM_SUFFIX}"
            await conn.execute(f"DROP INDEX {index}")
            started = time.perf_counter()
            await conn.execute(
                f"CREATE INDEX {index} ON contacts USING gin (name_search gin_trgm_ops)"
            )
            took = time.perf_counter() - started
            print(f"trigram index built on the loaded contacts in {took:.1f} s")
            await conn.execute("ANALYZE contacts")
        finally:
            await conn.close()
        async with db.sessionmaker(engine)() as session:
            actor = User(login="bench-admin", role="admin", password_hash="-")
            session.add(actor)
            await session.commit()
        kinds = _kinds(numbers, rng)
        indexed = await _measure(engine, actor, kinds, args.runs, rng)
        _report("with the trigram indexes (page of 50 by name + total):", indexed)
        conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
        try:
            await conn.execute(f"DROP INDEX {index}")
        finally:
            await conn.close()
        baseline = await _measure(engine, actor, kinds, args.runs, rng)
        _report("baseline, without them:", baseline)
    finally:
        await engine.dispose()
        await harness.drop_database(url, DB_NAME)
    every = [s for samples in indexed.values() for s in samples]
    every_base = [s for samples in baseline.values() for s in samples]
    p99, base_p99 = crm_lookup._pct(every, 0.99), crm_lookup._pct(every_base, 0.99)
    print(f"all kinds: p99 {p99:.2f} ms, baseline p99 {base_p99:.2f} ms ({base_p99 / p99:.0f}x)")
    result = {
        "contacts": args.contacts,
        "p50_ms": round(crm_lookup._pct(every, 0.5), 2),
        "p99_ms": round(p99, 2),
        "baseline_p99_ms": round(base_p99, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
