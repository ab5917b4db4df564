"""Benchmark: the inbox, from a signed WhatsApp webhook to the assigned manager's WebSocket.

    python bench/inbox.py [--contacts N] [--managers N] [--rate MSG_PER_S] [--seconds S]
                          [--burst N] [--concurrency N] [--direct-below N] [--direct-wait S]
                          [--instances N] [--redis] [--keep-db | --reuse] [--db-name NAME]

``--contacts`` contacts in PostgreSQL (``CC_BENCH_DATABASE_URL``; a database of its own is
created and dropped; ``--keep-db`` keeps it, ``--reuse`` measures a kept one again without
seeding), the server as its own process (``contact-center serve``) with one WhatsApp
channel, a round-robin rule over ``--managers`` managers, each connected to ``/ws``;
``--direct-below`` is its ``inbox.direct_below`` (0: every delivery stored first),
``--direct-wait`` its ``inbox.direct_wait_s``.

1. Latency: signed webhooks at ``--rate`` per second for ``--seconds``: half from new numbers
   (a lead each), four in ten from loaded contacts, one in ten a status update (no frame). The
   latency of a message is from just before its request is sent to its ``message.new`` frame
   arriving on the socket of the manager the frame names (any other socket is ``wrong_socket``).
2. Ingest: ``--burst`` messages as fast as ``--concurrency`` connections take them, one in
   twenty delivered twice (Meta redelivers); the rate is messages per second from the first
   request to the last message STORED in ``conversation_messages`` (processed: identified,
   assigned, on the timeline), not merely accepted; ``accepted_per_s`` is the webhooks' own.

``BENCH_LATENCIES=FILE`` writes the latency part's ``[sent_at, latency_ms]`` pairs there as
JSON (when in the run the slow ones came).

Afterwards the database must hold every message exactly once: ``lost`` and ``duplicated``
count the differences. The last line is one JSON object: ``{"contacts", "p50_ms", "p99_ms",
"ingest_per_s", "lost", "duplicated", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import crm_lookup, harness
from channels.whatsapp import sign
from contact_center import db
from contact_center.config import DatabaseSettings
from contact_center.inbox_queue import DIRECT_BELOW, DIRECT_WAIT
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.users import service as users
from crm_core.users.model import TokenKind, User

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DB_NAME = "cc_bench_inboxfast"
SECRET = "bench-app-secret"


def _body(mid: str, wa_id: str, text: str) -> bytes:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "1", "phone_number_id": "1"},
                            "contacts": [{"profile": {"name": "Клиент"}, "wa_id": wa_id}],
                            "messages": [
                                {
                                    "from": wa_id,
                                    "id": mid,
                                    "timestamp": str(int(time.time())),
                                    "type": "text",
                                    "text": {"body": text},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _status(mid: str) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "1", "phone_number_id": "1"},
        "statuses": [
            {
                "id": mid,
                "status": "delivered",
                "timestamp": str(int(time.time())),
                "recipient_id": "1",
            }
        ],
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process ``pid`` has used so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> float:
    """CPU seconds every core of the machine has been busy so far (Linux ``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


async def _deliveries(http: aiohttp.ClientSession, bases: list[str]) -> dict[str, int]:
    """The servers' webhook-delivery counters (/healthz), summed."""
    total: dict[str, int] = {}
    for base in bases:
        async with http.get(f"{base}/healthz") as r:
            counters = (await r.json())["channels"]["deliveries"]
        for name, value in counters.items():
            total[name] = total.get(name, 0) + int(value)
    return total


def _batching(before: dict[str, int], after: dict[str, int]) -> tuple[float, float]:
    """(deliveries per batch, share of them stored first) between two readings."""
    processed = after["processed"] - before["processed"]
    batches = after["batches"] - before["batches"]
    stored = after["stored_first"] - before["stored_first"]
    return round(processed / max(1, batches), 1), round(stored / max(1, processed), 2)


def _pct(samples: list[float], q: float) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _prepare(url: str, contacts: int, managers: int) -> tuple[list[str], list[str]]:
    await harness.recreate_database(url, DB_NAME)
    sa_url = crm_lookup._sa_url(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=sa_url))
    await db.migrate(engine)
    await engine.dispose()
    crm_lookup.DB_NAME = DB_NAME
    numbers = await crm_lookup._load(url, contacts, random.Random(7))
    engine = db.create_engine(DatabaseSettings(url=sa_url))
    tokens, ids = [], []
    async with db.sessionmaker(engine)() as session:
        for i in range(managers):
            user, _ = await users.create_user(
                session, login=f"m{i}", role="manager", password="password1", scrypt_n=1024
            )
            issued = await users.issue_token(session, user, kind=TokenKind.API, ttl=None)
            tokens.append(issued.secret)
            ids.append(user.id)
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="round_robin", managers=[ManagerInput(user_id=i) for i in ids]),
            now=utcnow(),
        )
        await session.commit()
    await engine.dispose()
    return numbers, tokens


async def _reuse(url: str, managers: int) -> tuple[list[str], list[str]]:
    """A kept database: its contacts' national numbers and fresh tokens of its managers."""
    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        rows = await conn.fetch(
            "SELECT e164 FROM phones WHERE contact_id IS NOT NULL ORDER BY id LIMIT 2000000"
        )
    finally:
        await conn.close()
    numbers = [r["e164"][2:] for r in rows]
    await _steady(url)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    tokens = []
    async with db.sessionmaker(engine)() as session:
        for i in range(managers):
            user = await session.scalar(select(User).where(User.login == f"m{i}"))
            assert user is not None, f"no manager m{i} in the kept database"
            issued = await users.issue_token(session, user, kind=TokenKind.API, ttl=None)
            tokens.append(issued.secret)
        await session.commit()
    await engine.dispose()
    return numbers, tokens


async def _steady(url: str) -> None:
    """A kept database as a server with autovacuum finds it: what earlier runs left in the
    queue (status reports of messages that never existed, retried for a minute) dropped, the
    tables the runs churn vacuumed. Without autovacuum (this machine's PostgreSQL has it off)
    their dead rows pile up run after run and each run measures a slower database."""
    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        if await conn.fetchval("SHOW autovacuum") != "on":
            print("note: autovacuum is off on this PostgreSQL; the bench vacuums its tables")
        await conn.execute("DELETE FROM webhook_deliveries")
        await conn.execute(
            "VACUUM ANALYZE webhook_deliveries, conversations, conversation_messages, leads"
        )
    finally:
        await conn.close()


async def _stored(url: str, ids: set[str]) -> int:
    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM conversation_messages WHERE direction = 'inbound' "
                "AND provider_message_id = ANY($1::text[])",
                list(ids),
            )
        )
    finally:
        await conn.close()


async def main() -> None:
    global DB_NAME
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--managers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--ack-wait",
        type=float,
        default=0.0,
        help="inbox.ack_wait_s of the server (0, its default: answered once stored)",
    )
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="server processes, each on its port, sharing the database and Redis"
        " (CC_BENCH_REDIS_URL); requests and sockets go to each in turn",
    )
    parser.add_argument(
        "--redis", action="store_true", help="with Redis even for one instance (its cost alone)"
    )
    parser.add_argument(
        "--direct-below",
        type=int,
        default=DIRECT_BELOW,
        help="inbox.direct_below: deliveries waiting from which they are stored first (0: all)",
    )
    parser.add_argument(
        "--direct-wait",
        type=float,
        default=DIRECT_WAIT,
        help="inbox.direct_wait_s: seconds a delivery waits for the worker, then it is stored",
    )
    parser.add_argument("--keep-db", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure a kept database again")
    parser.add_argument(
        "--db-name", default=DB_NAME, help="the bench's database (runs side by side: one each)"
    )
    args = parser.parse_args()
    DB_NAME = args.db_name
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    if args.reuse:
        numbers, tokens = await _reuse(url, args.managers)
        args.contacts = len(numbers)
        print(f"reusing {DB_NAME}: {args.contacts:,} contacts, {args.managers} managers")
    else:
        print(f"preparing {args.contacts:,} contacts and {args.managers} managers ...")
        numbers, tokens = await _prepare(url, args.contacts, args.managers)
    http_port = 18000 + random.randrange(900)
    channel = {
        "code": "wa",
        "kind": "whatsapp",
        "phone_number_id": "1",
        "access_token": "x",
        "app_secret": SECRET,
        "verify_token": "v",
        "api_url": "http://127.0.0.1:9",
    }
    shared = {
        "CC_DATABASE_URL": crm_lookup._sa_url(url, DB_NAME),
        "CC_CHANNELS": json.dumps([channel]),
        "CC_RECORDINGS_ENABLED": "false",
        "CC_INBOX_ACK_WAIT_S": str(args.ack_wait),
        "CC_INBOX_DIRECT_BELOW": str(args.direct_below),
        "CC_INBOX_DIRECT_WAIT_S": str(args.direct_wait),
    }
    if args.instances > 1 or args.redis:  # events reach other instances' sockets over Redis
        shared["CC_REDIS_URL"] = os.environ.get("CC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        shared["CC_REDIS_PREFIX"] = f"bench{http_port}"
    servers = [
        await harness.serve({**shared, "CC_SERVER_PORT": str(http_port + i)})
        for i in range(args.instances)
    ]
    bases = [f"http://127.0.0.1:{http_port + i}" for i in range(args.instances)]
    turns = itertools.cycle(bases)  # requests and sockets go to each instance in turn

    def servers_cpu_s() -> float:
        return sum(_cpu_s(server.pid) for server in servers)

    sent_at: dict[str, float] = {}
    latencies: list[float] = []
    series: list[tuple[float, float]] = []
    wrong_socket = 0
    run = int(time.time())
    rng = random.Random(run)  # new senders new on every run (--reuse)
    counter = 0
    stored_ids: set[str] = set()
    try:
        for base in bases:
            await harness.wait_ready(base)
        async with (
            aiohttp.ClientSession() as wsession,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http,
        ):
            me = {}
            sockets = []
            for token in tokens:
                base = next(turns)
                ws = await wsession.ws_connect(f"{base.replace('http', 'ws')}/ws?token={token}")
                hello = json.loads((await ws.receive()).data)
                me[id(ws)] = hello["user_id"]
                sockets.append(ws)

            async def reader(ws: aiohttp.ClientWebSocketResponse) -> None:
                nonlocal wrong_socket
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT or '"message.new"' not in msg.data:
                        continue
                    arrived = time.perf_counter()
                    frame = json.loads(msg.data)
                    key = (frame.get("text") or "").rsplit(" ", 1)[-1]
                    if frame.get("assignee_id") != me[id(ws)]:
                        wrong_socket += 1
                    started = sent_at.pop(key, None)
                    if started is not None:
                        latencies.append((arrived - started) * 1000)
                        series.append((started, (arrived - started) * 1000))

            readers = [asyncio.create_task(reader(ws)) for ws in sockets]

            async def post(body: bytes) -> None:
                headers = {
                    "X-Hub-Signature-256": sign(body, SECRET),
                    "Content-Type": "application/json",
                }
                async with http.post(
                    f"{next(turns)}/webhooks/whatsapp/wa", data=body, headers=headers
                ) as r:
                    if r.status != 200:
                        print("webhook answered", r.status, await r.text())

            def message() -> tuple[str, bytes]:
                nonlocal counter
                counter += 1
                key = f"k{counter}"
                if rng.random() < 0.45:
                    wa_id = "7" + rng.choice(numbers)
                else:
                    wa_id = f"79{rng.randrange(10**9):09d}"
                mid = f"wamid.bench.{run}.{counter}"  # unique across runs (--reuse)
                stored_ids.add(mid)
                return key, _body(mid, wa_id, f"Сообщение {key}")

            print(f"latency: {args.rate:.0f} webhooks/s for {args.seconds:.0f} s ...")
            pending: set[asyncio.Task[None]] = set()
            interval = 1.0 / args.rate
            latency_cpu = servers_cpu_s()
            counted = await _deliveries(http, bases)
            start = time.perf_counter()
            n = 0
            while time.perf_counter() - start < args.seconds:
                n += 1
                if rng.random() < 0.1:
                    body = _status(f"wamid.unknown.{n}")
                else:
                    key, body = message()
                    sent_at[key] = time.perf_counter()
                task = asyncio.create_task(post(body))
                pending.add(task)
                task.add_done_callback(pending.discard)
                await asyncio.sleep(max(0.0, start + n * interval - time.perf_counter()))
            await asyncio.gather(*pending)
            latency_cpu = (servers_cpu_s() - latency_cpu) * 1000 / max(1, n)
            await asyncio.sleep(2)
            latency_batch, latency_stored = _batching(counted, await _deliveries(http, bases))
            unanswered = len(sent_at)
            latencies.extend([2000.0] * unanswered)  # a frame that never came counts, waited

            print(f"ingest: {args.burst} webhooks over {args.concurrency} connections ...")
            burst_ids = set(stored_ids)
            bodies = [message()[1] for _ in range(args.burst)]
            burst_ids = stored_ids - burst_ids
            bodies += rng.sample(bodies, len(bodies) // 20)  # redeliveries
            rng.shuffle(bodies)
            queue: asyncio.Queue[bytes] = asyncio.Queue()
            for body in bodies:
                queue.put_nowait(body)

            async def worker() -> None:
                while not queue.empty():
                    await post(queue.get_nowait())

            counted = await _deliveries(http, bases)
            started = time.perf_counter()
            cpu_before = servers_cpu_s()
            machine_before = _machine_cpu_s()
            own_before = _cpu_s(os.getpid())
            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
            accepted = args.burst / max(1e-9, time.perf_counter() - started)
            deadline = time.perf_counter() + 300
            while await _stored(url, burst_ids) < len(burst_ids):
                if time.perf_counter() > deadline:
                    print("ingest: not every message stored after 300 s")
                    break
                await asyncio.sleep(0.05)
            ingest = args.burst / (time.perf_counter() - started)
            burst = max(1, args.burst)  # --burst 0: the latency part only
            cpu_ms = (servers_cpu_s() - cpu_before) * 1000 / burst
            machine_ms = (_machine_cpu_s() - machine_before) * 1000 / burst
            own_ms = (_cpu_s(os.getpid()) - own_before) * 1000 / burst
            ingest_batch, ingest_stored = _batching(counted, await _deliveries(http, bases))
            for task in readers:
                task.cancel()
            for ws in sockets:
                await ws.close()
        conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
        try:
            rows = await conn.fetch(
                "SELECT provider_message_id, count(*) AS n FROM conversation_messages "
                "WHERE direction = 'inbound' GROUP BY provider_message_id"
            )
        finally:
            await conn.close()
        counts = {r["provider_message_id"]: r["n"] for r in rows}
        lost = len(stored_ids - set(counts))
        duplicated = sum(n - 1 for n in counts.values() if n > 1)
    finally:
        for server in servers:
            await harness.stop(server)
        if not (args.keep_db or args.reuse):
            await harness.drop_database(url, DB_NAME)
    result = {
        "contacts": args.contacts,
        "managers": args.managers,
        "instances": args.instances,
        "redis": "CC_REDIS_URL" in shared,
        "rate_per_s": args.rate,
        "messages": len(latencies),
        "p50_ms": round(_pct(latencies, 0.5), 1),
        "p99_ms": round(_pct(latencies, 0.99), 1),
        "no_frame": unanswered,
        "wrong_socket": wrong_socket,
        "latency_server_cpu_ms_per_webhook": round(latency_cpu, 2),
        # Deliveries per transaction, and the share stored before processing (the worker
        # lagged), in each part.
        "latency_batch_mean": latency_batch,
        "latency_stored_first": latency_stored,
        "ingest_batch_mean": ingest_batch,
        "ingest_stored_first": ingest_stored,
        "ingest_per_s": round(ingest, 1),
        "accepted_per_s": round(accepted, 1),
        "server_cpu_ms_per_msg": round(cpu_ms, 2),
        "machine_cpu_ms_per_msg": round(machine_ms, 2),  # server, PostgreSQL, this bench...
        "bench_cpu_ms_per_msg": round(own_ms, 2),
        "ack_wait_s": args.ack_wait,
        "direct_below": args.direct_below,
        "direct_wait_s": args.direct_wait,  # the machine's load aside
        "load_avg": round(os.getloadavg()[0], 2),
        "lost": lost,
        "duplicated": duplicated,
    }
    print(
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; ingest {result['ingest_per_s']}/s"
    )
    if os.environ.get("BENCH_LATENCIES"):
        await asyncio.to_thread(Path(os.environ["BENCH_LATENCIES"]).write_text, json.dumps(series))
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
