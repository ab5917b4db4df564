"""Benchmark: screen-pop latency, from the PBX's bytes to the manager's WebSocket, as a curve.

    python bench/screen_pop.py [--contacts N] [--managers N] [--rates 50,100,200,400]
                               [--seconds S] [--own-share F] [--click-share F]

``--contacts`` (default 1,000,000) contacts in PostgreSQL (``CC_BENCH_DATABASE_URL``; a
database of its own, ``CC_BENCH_DB_NAME`` or cc_bench_screen_pop, is created and dropped),
written set-based by PostgreSQL (INSERT ... SELECT generate_series), each managed by one of
``--managers`` (default 100) managers, who are all connected to ``/ws``; the server runs as
its own process (``contact-center serve``) connected over AMI to a simulated PBX in a third
process (this script with ``--pbx-child``, told over a pipe which calls to play: so that
neither the PBX's frames nor the sockets' pops wait on the other's work). For each rate of
``--rates`` in turn the PBX places that many real-capture calls per second for ``--seconds``
(replayed faster than real time so they end quickly), each from a random number (four in
five belong to a loaded contact; half of those ring the contact's own manager,
``--own-share``) to a manager's extension; one call in five (``--click-share``) is a
click-to-call: the manager asks ``POST /api/v1/calls`` and the PBX, answering the server's
Originate, rings the manager's own phone first (the real click-to-call capture). The others
come in through the greeting and queue of the real inbound capture, during which the server
identifies the caller.
Latency: from the moment the PBX writes the frame that rings an extension (``DialBegin``,
``AgentCalled`` or a ``Newstate`` to Ringing) to the ``call.ringing`` frame arriving at that
manager's socket.

Every pop is checked: it must reach the socket of the manager whose extension the PBX rang,
and carry the card as he may see it: the whole card of his own client, only the name, company
and responsible of another manager's (issue 15, finding 4), none for an unknown caller. A call
rung at the PBX that popped nowhere is ``missing``; it enters the percentiles with the time it
was waited for (from its ring to the end of its step), so a lost pop cannot make the figures
look better. Click-to-call requests the server refused (not 202) are counted. Each step
prints the load average (the machine may be shared), the CPU the server used per call, and
the CPU the bench used (this process, the sockets and the API calls, and the PBX's) and how
late each of their event loops ran at worst (a lag near the latencies means the bench, not the
server, was too slow). The sockets' reader only notes each pop's arrival; pops are decoded
and checked after the run.

The last line is one JSON object: ``{"contacts", "managers", "seeded_s", "curve": [{"rate",
"calls_per_s", "p50_ms", "p99_ms", "click_p99_ms", "calls", "popped", "missing",
"click_refused", "wrong_socket", "card_missing", "card_unexpected", "card_wrong", "load_avg",
"server_cpu_ms_per_call", "bench_cpu_s", "bench_lag_max_ms", "pbx_cpu_s", "pbx_lag_max_ms"},
...],
"p99_passes_20ms_at_calls_per_s", "p50_ms", "p99_ms", "missing"}`` (``p50_ms``/``p99_ms``: the
200 calls/s step; the crossing is interpolated between the last rate under 20 ms and the first
over it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from ami.simulator import SimulatedPbx
from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.users import service as users
from crm_core.users.model import TokenKind

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
# CC_BENCH_DB_NAME: another name, so that benches sharing the server do not drop each other's.
DB_NAME = os.environ.get("CC_BENCH_DB_NAME", "cc_bench_screen_pop")
GOAL_MS = 20.0
_LINKEDID = re.compile(rb"^Linkedid: (\S+)\r?$", re.M)
_RINGS = (b"Event: DialBegin", b"Event: AgentCalled")
_PHONE_RINGING = re.compile(rb"^ChannelState: 5\r?$", re.M)  # Newstate: Ringing
# The extension rung: the endpoint of the dialled channel (PJSIP/101-00000006, Local/101@...).
_DEST = re.compile(rb"^DestChannel: [A-Za-z]+/([^-@\s]+)", re.M)
_CHANNEL = re.compile(rb"^Channel: [A-Za-z]+/([^-@\s]+)", re.M)


class TimedPbx(SimulatedPbx):
    """The simulated PBX, noting when it writes the frame that rings each call's extension."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: dict[str, float] = {}
        self.phase = 0  # the bench's current rate (index into the curve)
        self.phase_of: dict[str, int] = {}  # call -> the rate it rang during
        self.rang: dict[str, str] = {}  # call -> the extension the PBX rang first
        self.rung_by_state: set[str] = set()  # calls whose phone rang without a Dial first

    def broadcast(self, data: bytes) -> None:
        super().broadcast(data)
        by_state = data.startswith(b"Event: Newstate") and _PHONE_RINGING.search(data)
        if data.startswith(_RINGS) or by_state:
            match = _LINKEDID.search(data)
            if match and (call_id := match.group(1).decode()) not in self.sent:
                self.sent[call_id] = time.perf_counter()
                self.phase_of[call_id] = self.phase
                endpoint = (_CHANNEL if by_state else _DEST).search(data)
                if endpoint:
                    self.rang[call_id] = endpoint.group(1).decode()
                if by_state:
                    self.rung_by_state.add(call_id)


async def _lag_probe(note: Any) -> None:
    """Forever: how late this process's event loop runs, handed to ``note(ms)``."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(0.02)
        note((time.perf_counter() - before - 0.02) * 1000)


async def _pbx_child(speed: float) -> None:
    """The simulated PBX as its own process: prints its port, then reads commands, one a line
    on stdin: ``phase N`` (the step calls ring in from now on), ``play OUTSIDE EXTENSION``
    (an inbound call), ``report`` (one JSON line: when each call rang, its step and extension,
    which rang by state, the worst lag of this process's loop per step), ``quit``."""
    pbx = TimedPbx(username="cc", secret="bench", speed=speed)
    await pbx.start()
    lag: dict[int, float] = {}

    def note(ms: float) -> None:
        if ms > lag.get(pbx.phase, 0.0):
            lag[pbx.phase] = ms

    probe = asyncio.get_running_loop().create_task(_lag_probe(note))
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"port": pbx.port}), flush=True)
    try:
        while line := await reader.readline():
            command, *rest = line.decode().split()
            if command == "play":
                pbx.play(
                    "c_inbound_short_answered",
                    outside=rest[0],
                    did="74951112233",
                    extension=rest[1],
                )
            elif command == "phase":
                pbx.phase = int(rest[0])
            elif command == "report":
                report = {
                    "sent": pbx.sent,
                    "phase_of": pbx.phase_of,
                    "rang": pbx.rang,
                    "rung_by_state": sorted(pbx.rung_by_state),
                    "lag_ms": lag,
                    "cpu_s": time.process_time(),
                }
                print(json.dumps(report), flush=True)
            elif command == "quit":
                break
    finally:
        probe.cancel()
        await pbx.close()


class _PbxProcess:
    """The parent's handle on :func:`_pbx_child`."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port
        self.sent: dict[str, float] = {}
        self.phase_of: dict[str, int] = {}
        self.rang: dict[str, str] = {}
        self.rung_by_state: set[str] = set()
        self.lag_ms: dict[int, float] = {}
        self.cpu_s = 0.0

    @classmethod
    async def start(cls, speed: float) -> _PbxProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--pbx-child",
            "--speed",
            str(speed),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the report is one line of every call so far
        )
        assert proc.stdout is not None
        hello = json.loads(await proc.stdout.readline())
        return cls(proc, int(hello["port"]))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")

    async def report(self) -> None:
        """Fetch what the PBX noted (when, where and in which step each call rang)."""
        assert self.proc.stdout is not None
        self.send("report")
        doc = json.loads(await self.proc.stdout.readline())
        self.sent = doc["sent"]
        self.phase_of = doc["phase_of"]
        self.rang = doc["rang"]
        self.rung_by_state = set(doc["rung_by_state"])
        self.lag_ms = {int(k): v for k, v in doc["lag_ms"].items()}
        self.cpu_s = doc["cpu_s"]

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.send("quit")
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


class _Refusals:
    """Counts click-to-call requests the server did not accept (each must be 202), per step
    of the curve."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""
        self.step = 0
        self.by_step: dict[int, int] = {}

    def check(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        status = None if exc else task.result().status
        if status != 202:
            self.count += 1
            self.by_step[self.step] = self.by_step.get(self.step, 0) + 1
            self.last = repr(exc) if exc else f"HTTP {status}"
        if exc is None:
            task.result().release()


# Contact i (1..N) has the number +7 9XXXXXXXXX with XXXXXXXXX = (i * _STEP + _SHIFT) mod 10**9:
# distinct for every i (the step is prime to 10**9), so PostgreSQL writes them set-based and
# this process finds the contact of any calling number by inverting the map, without a list.
_STEP, _SHIFT, _SPAN = 7919, 12345, 10**9
_INVERSE = pow(_STEP, -1, _SPAN)


def _national(i: int) -> str:
    return f"9{(i * _STEP + _SHIFT) % _SPAN:09d}"


def _contact_of(e164: str | None, contacts: int) -> int | None:
    """The loaded contact whose number ``e164`` is, or None."""
    if not e164 or len(e164) != 12 or not e164.startswith("+79"):
        return None
    i = ((int(e164[3:]) - _SHIFT) * _INVERSE) % _SPAN
    return i if 1 <= i <= contacts else None


_SEED_CONTACTS = """
INSERT INTO contacts (id, name, name_search, legal_hold, responsible_id, created_at, updated_at)
SELECT i, 'Клиент ' || i, 'клиент ' || i, false, ($2::int[])[(i % $3) + 1], now(), now()
FROM generate_series(1, $1::int) AS i
"""
_SEED_PHONES = """
INSERT INTO phones (id, contact_id, e164, digits_rev, last10, kind, created_at)
SELECT i, i, n, reverse(substr(n, 2)), right(n, 10), 'mobile', now()
FROM (SELECT i, '+79' || lpad(((i::bigint * $2 + $3) % $4)::text, 9, '0') AS n
      FROM generate_series(1, $1::int) AS i) AS numbered
"""


async def _seed(url: str, contacts: int, managers: list[int]) -> float:
    """``contacts`` contacts with one mobile number each, contact i managed by
    ``managers[i % len(managers)]``, written by PostgreSQL itself (INSERT ... SELECT
    generate_series); returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        await conn.execute(_SEED_CONTACTS, contacts, managers, len(managers))
        print(f"  {contacts:,} contacts written ({time.perf_counter() - started:.1f} s)")
        await conn.execute(_SEED_PHONES, contacts, _STEP, _SHIFT, _SPAN)
        print(f"  {contacts:,} phones written ({time.perf_counter() - started:.1f} s)")
        for table in ("contacts", "phones"):
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT max(id) FROM {table}))"
            )
        # Settle the bulk load: autovacuum's pass over the new rows and the checkpoint would
        # otherwise land in the measurement.
        await conn.execute("VACUUM ANALYZE contacts")
        await conn.execute("VACUUM ANALYZE phones")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def _prepare(url: str, contacts: int, managers: int) -> tuple[list[str], list[int], float]:
    """A fresh database with ``managers`` managers (m0.. on extensions 100..) and ``contacts``
    contacts spread over them; their API tokens, user ids and the seeding time."""
    await harness.recreate_database(url, DB_NAME)
    sa_url = crm_lookup._sa_url(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=sa_url))
    await db.migrate(engine)
    tokens, ids = [], []
    async with db.sessionmaker(engine)() as session:
        for i in range(managers):
            user, _ = await users.create_user(
                session,
                login=f"m{i}",
                role="manager",
                password="password1",
                extensions=[str(100 + i)],
                scrypt_n=1024,
            )
            issued = await users.issue_token(session, user, kind=TokenKind.API, ttl=None)
            tokens.append(issued.secret)
            ids.append(user.id)
        await session.commit()
    await engine.dispose()
    seeded = await _seed(url, contacts, ids)
    return tokens, ids, seeded


async def _serve(url: str, pbx_port: int, http_port: int) -> asyncio.subprocess.Process:
    pbx = [
        {
            "name": "bench",
            "host": "127.0.0.1",
            "port": pbx_port,
            "username": "cc",
            "secret": "bench",
            "trunks": ["provider"],
            "extension_pattern": r"^\d{3}$",
        }
    ]
    return await harness.serve(
        {
            "CC_DATABASE_URL": crm_lookup._sa_url(url, DB_NAME),
            "CC_PBX": json.dumps(pbx),
            "CC_SERVER_PORT": str(http_port),
        }
    )


@dataclass
class _Step:
    """One rate of the curve: what it placed and what arrived."""

    rate: float
    placed: int = 0
    clicks: int = 0
    achieved: float = 0.0
    latencies: list[float] = field(default_factory=list)
    click_latencies: list[float] = field(default_factory=list)
    popped: dict[str, float] = field(default_factory=dict)
    wrong_socket: list[str] = field(default_factory=list)
    card_missing: list[str] = field(default_factory=list)
    card_unexpected: list[str] = field(default_factory=list)
    card_wrong: list[str] = field(default_factory=list)  # whole card for a non-owner, or not
    ended_at: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    server_cpu_s: float = 0.0  # CPU the server used from the step's start to its end
    bench_cpu_s: float = 0.0  # CPU this process (the sockets, the API calls) used meanwhile
    # Longest this process's event loop was late (ms): the sockets' pops wait as long, so a
    # figure near the latencies says the bench, not the server, was slow.
    bench_lag_ms: float = 0.0
    pbx_cpu_s: float = 0.0  # CPU the PBX's process used meanwhile
    pbx_lag_ms: float = 0.0  # ... and how late its loop ran at worst (its frames wait as long)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (Linux), else 0."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_avg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def _crossing(curve: list[dict[str, Any]], limit: float) -> float | None:
    """The rate at which p99 passes ``limit`` ms: linear between the last rate under it and the
    first over it; the first rate when already over there; None when it never passes."""
    previous: dict[str, Any] | None = None
    for point in curve:
        if point["p99_ms"] >= limit:
            if previous is None:
                return float(point["calls_per_s"])
            low, high = previous["p99_ms"], point["p99_ms"]
            share = (limit - low) / (high - low)
            return round(
                previous["calls_per_s"] + share * (point["calls_per_s"] - previous["calls_per_s"]),
                1,
            )
        previous = point
    return None


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--managers", type=int, default=100)
    parser.add_argument(
        "--rates", default="50,100,200,400", help="the curve: new calls per second, in order"
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each rate runs")
    parser.add_argument("--settle", type=float, default=5.0, help="pause after each rate")
    parser.add_argument("--speed", type=float, default=20.0, help="replay speed of each call")
    parser.add_argument(
        "--click-share",
        type=float,
        default=0.2,
        help="share of calls that are click-to-call (POST /api/v1/calls, then the PBX rings)",
    )
    parser.add_argument(
        "--own-share",
        type=float,
        default=0.5,
        help="share of a known caller's calls that ring his own manager (who sees the whole card)",
    )
    parser.add_argument("--pbx-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pbx_child:
        await _pbx_child(args.speed)
        return
    rates = [float(r) for r in args.rates.split(",")]
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)

    print(f"preparing {args.contacts:,} contacts and {args.managers} managers ...")
    tokens, _ids, seeded = await _prepare(url, args.contacts, args.managers)
    print(f"seeded in {seeded:.1f} s (INSERT ... SELECT generate_series, VACUUM ANALYZE)")
    pbx = await _PbxProcess.start(args.speed)
    http_port = pbx.port + 1 if pbx.port < 65000 else 18999
    server = await _serve(url, pbx.port, http_port)
    base = f"http://127.0.0.1:{http_port}"
    steps: list[_Step] = []
    try:
        await harness.wait_ready(
            base, lambda doc: doc.get("pbx", {}).get("bench", {}).get("status") == "ok"
        )
        # The managers' sockets take the first session's 100 connections; API calls get their own.
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as api:
            sockets = [
                await http.ws_connect(f"{base.replace('http', 'ws')}/ws?token={t}") for t in tokens
            ]

            # (arrival, extension, frame) of each pop, decoded and checked after the run: the
            # reader does no more than it must while pops arrive.
            arrivals: list[tuple[float, str, str]] = []

            async def reader(ws: aiohttp.ClientWebSocketResponse, extension: str) -> None:
                note = arrivals.append
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT and '"call.ringing"' in msg.data:
                        note((time.perf_counter(), extension, msg.data))

            readers = [
                asyncio.get_running_loop().create_task(reader(ws, str(100 + i)))
                for i, ws in enumerate(sockets)
            ]

            def note_lag(ms: float) -> None:
                if steps and ms > steps[-1].bench_lag_ms:
                    steps[-1].bench_lag_ms = ms

            readers.append(asyncio.get_running_loop().create_task(_lag_probe(note_lag)))
            await pbx.report()  # the PBX's CPU so far (its start-up) is no step's
            rng = random.Random(11)
            posts: set[asyncio.Task[Any]] = set()
            refused = _Refusals()
            for rate in rates:
                step = _Step(rate)
                refused.step = len(steps)
                pbx.send(f"phase {len(steps)}")
                steps.append(step)
                started = time.perf_counter()
                cpu_before = _cpu_s(server.pid)
                bench_cpu_before = time.process_time()
                print(f"placing {rate:g} calls/s for {args.seconds:g} s (load {_load_avg()}) ...")
                while (elapsed := time.perf_counter() - started) < args.seconds:
                    due = int(elapsed * rate) + 1
                    while step.placed < due:
                        contact = rng.randrange(1, args.contacts + 1)
                        known = rng.random() < 0.8
                        caller = (
                            "7" + _national(contact) if known else f"7916{rng.randrange(10**7):07d}"
                        )
                        own = known and rng.random() < args.own_share
                        manager = contact % args.managers if own else rng.randrange(args.managers)
                        if rng.random() < args.click_share:
                            # Click-to-call: the manager asks the API, the server sends the PBX
                            # an Originate, the PBX rings the manager's phone showing the client.
                            task = asyncio.get_running_loop().create_task(
                                api.post(
                                    f"{base}/api/v1/calls",
                                    json={"to": caller},
                                    headers={"Authorization": f"Bearer {tokens[manager]}"},
                                )
                            )
                            posts.add(task)
                            task.add_done_callback(posts.discard)
                            task.add_done_callback(refused.check)
                            step.clicks += 1
                        else:
                            pbx.send(f"play {caller} {100 + manager}")
                        step.placed += 1
                    await asyncio.sleep(0.005)
                step.achieved = step.placed / (time.perf_counter() - started)
                step.load = _load_avg()
                await asyncio.sleep(args.settle)  # let the last calls ring and pop
                step.ended_at = time.perf_counter()
                step.server_cpu_s = _cpu_s(server.pid) - cpu_before
                step.bench_cpu_s = time.process_time() - bench_cpu_before
                pbx_cpu_before = pbx.cpu_s
                await pbx.report()
                step.pbx_cpu_s = pbx.cpu_s - pbx_cpu_before
                step.pbx_lag_ms = pbx.lag_ms.get(len(steps) - 1, 0.0)
            if refused.count:
                print(f"{refused.count} click-to-call requests refused, the last: {refused.last}")
            for reader_task in readers:
                if reader_task.done() and reader_task.exception() is not None:
                    raise SystemExit(f"a socket reader failed: {reader_task.exception()!r}")
                reader_task.cancel()
            for ws in sockets:
                await ws.close()
            for arrived, extension, data in arrivals:
                _arrived(steps, pbx, args, arrived, extension, json.loads(data))
    finally:
        await pbx.close()
        await harness.stop(server)
        await harness.drop_database(url, DB_NAME)

    curve = [
        _report(index, step, pbx, refused.by_step.get(index, 0)) for index, step in enumerate(steps)
    ]
    crossing = _crossing(curve, GOAL_MS)
    print(
        f"p99 passes {GOAL_MS:g} ms at "
        + (f"{crossing:g} calls/s" if crossing is not None else "none of the rates measured")
    )
    at_200 = next((p for p in curve if p["rate"] == 200), None)
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "managers": args.managers,
                "seeded_s": round(seeded, 1),
                "curve": curve,
                "p99_passes_20ms_at_calls_per_s": crossing,
                "p50_ms": at_200["p50_ms"] if at_200 else None,
                "p99_ms": at_200["p99_ms"] if at_200 else None,
                "missing": sum(p["missing"] for p in curve),
            }
        )
    )


def _check(step: _Step, pop: dict[str, Any], extension: str, contacts: int, managers: int) -> None:
    """Whether the pop carries the card as the manager of ``extension`` may see it: the whole
    card of his own client, name, company and responsible of another's, none for an unknown
    caller."""
    call_id, client = pop["call_id"], pop.get("client")
    contact = _contact_of(pop["caller"], contacts)
    if contact is None:
        if client:
            step.card_unexpected.append(call_id)
        return
    if not client or not client.get("name"):
        step.card_missing.append(call_id)
        return
    own = contact % managers == int(extension) - 100
    whole = client.get("id") == contact and not client.get("restricted")
    cut = client.get("restricted") is True and "deals" not in client
    if (own and not whole) or (not own and not cut):
        step.card_wrong.append(call_id)


def _arrived(
    steps: list[_Step],
    pbx: _PbxProcess,
    args: argparse.Namespace,
    arrived: float,
    extension: str,
    pop: dict[str, Any],
) -> None:
    """Count one pop that reached the socket of ``extension`` at ``arrived``."""
    call_id = pop["call_id"]
    phase = pbx.phase_of.get(call_id)
    if phase is None:
        return  # no ringing frame seen for it: counted as missing, if rung
    step = steps[phase]
    if pbx.rang.get(call_id) != extension:
        step.wrong_socket.append(f"{call_id} at {extension}, rang {pbx.rang.get(call_id)}")
        return
    _check(step, pop, extension, args.contacts, args.managers)
    if call_id in step.popped:
        return
    step.popped[call_id] = arrived
    latency = (arrived - pbx.sent[call_id]) * 1000
    step.latencies.append(latency)
    if call_id in pbx.rung_by_state:
        step.click_latencies.append(latency)


def _report(index: int, step: _Step, pbx: _PbxProcess, refused: int) -> dict[str, Any]:
    """Print one rate's figures; return them for the JSON."""
    rung = [c for c, phase in pbx.phase_of.items() if phase == index]
    missing = sorted(c for c in rung if c not in step.popped)
    # A call that never popped waited at least until the end of its step: it counts as that.
    counted = step.latencies + [(step.ended_at - pbx.sent[c]) * 1000 for c in missing]
    p50 = crm_lookup._pct(counted, 0.50) if counted else 0.0
    p99 = crm_lookup._pct(counted, 0.99) if counted else 0.0
    click = step.click_latencies
    click_p99 = crm_lookup._pct(click, 0.99) if click else None
    print(
        f"{step.rate:g} calls/s (placed {step.placed}, {step.achieved:.1f}/s, "
        f"{step.clicks} click-to-call, {refused} refused; load average "
        f"{step.load[0]} {step.load[1]} {step.load[2]}): rung {len(rung)}, "
        f"popped {len(step.popped)}, missing {len(missing)}"
        + (f" ({', '.join(missing[:3])})" if missing else "")
    )
    print(
        f"    ring -> pop-up p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        + (f" (click-to-call p99 {click_p99:.2f} ms)" if click_p99 is not None else "")
        + f"; server CPU {step.server_cpu_s:.1f} s "
        f"({1000 * step.server_cpu_s / max(step.placed, 1):.2f} ms a call)"
        + f"; bench CPU {step.bench_cpu_s:.1f} s, its loop late up to {step.bench_lag_ms:.0f} ms"
        + f"; PBX CPU {step.pbx_cpu_s:.1f} s, its loop late up to {step.pbx_lag_ms:.0f} ms"
        + f"; at another socket {len(step.wrong_socket)}, card missing "
        f"{len(step.card_missing)}, card unexpected {len(step.card_unexpected)}, card not as "
        f"its viewer may see it {len(step.card_wrong)}"
    )
    return {
        "rate": step.rate,
        "calls_per_s": round(step.achieved, 1),
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "click_p99_ms": round(click_p99, 2) if click_p99 is not None else None,
        "calls": len(rung),
        "popped": len(step.popped),
        "missing": len(missing),
        "click_refused": refused,
        "wrong_socket": len(step.wrong_socket),
        "card_missing": len(step.card_missing),
        "card_unexpected": len(step.card_unexpected),
        "card_wrong": len(step.card_wrong),
        "load_avg": list(step.load),
        "server_cpu_ms_per_call": round(1000 * step.server_cpu_s / max(step.placed, 1), 2),
        "bench_cpu_s": round(step.bench_cpu_s, 1),
        "bench_lag_max_ms": round(step.bench_lag_ms, 1),
        "pbx_cpu_s": round(step.pbx_cpu_s, 1),
        "pbx_lag_max_ms": round(step.pbx_lag_ms, 1),
    }


if __name__ == "__main__":
    asyncio.run(main())
