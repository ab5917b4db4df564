"""Benchmark: screen-pop latency, from the PBX's bytes to the manager's WebSocket.

    python bench/screen_pop.py [--contacts N] [--managers N] [--rate CALLS_PER_S] [--seconds S]

1,000,000 contacts in PostgreSQL (``CC_BENCH_DATABASE_URL``; a database of its own is created
and dropped), the server running as its own process (``contact-center serve``) connected over
AMI to a simulated PBX in this process, 100 managers connected to ``/ws``. The PBX places
``--rate`` real-capture calls per second (replayed faster than real time so they end quickly),
each from a random number (four in five belong to a loaded contact) to a random manager's
extension; one call in five (``--click-share``) is a click-to-call: the manager asks
``POST /api/v1/calls`` and the PBX, answering the server's Originate, rings the manager's own phone
first (the real click-to-call capture), with no greeting in front to identify the client in; the
server looks the card up when the API is asked. The others come in through the greeting and
queue of the real inbound capture, during which the server identifies the caller.
Latency: from the moment the PBX writes the frame that rings an extension (``DialBegin``,
``AgentCalled`` or a ``Newstate`` to Ringing) to the ``call.ringing`` frame arriving at that
manager's socket; printed for all calls and for the click-to-calls alone.

Every pop is checked: it must reach the socket of the manager whose extension the PBX rang
(the extension read from the ringing frame, not from the pop), and carry the client's card when
the caller is a loaded contact (and none otherwise). A call rung at the PBX that popped nowhere
is ``missing``; it enters the percentiles with the time it was waited for (from its ring to the
end of the run), so a lost pop cannot make the figures look better.

The last line is one JSON object: ``{"contacts", "calls_per_s", "p50_ms", "p99_ms", "calls",
"popped", "missing", "wrong_socket", "card_missing", "card_unexpected"}``.
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
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ami.simulator import SimulatedPbx
from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.users import service as users
from crm_core.users.model import TokenKind

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DB_NAME = "cc_bench_screen_pop"
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
        self.rang: dict[str, str] = {}  # call -> the extension the PBX rang first
        self.rung_by_state: set[str] = set()  # calls whose phone rang without a Dial first

    def broadcast(self, data: bytes) -> None:
        super().broadcast(data)
        by_state = data.startswith(b"Event: Newstate") and _PHONE_RINGING.search(data)
        if data.startswith(_RINGS) or by_state:
            match = _LINKEDID.search(data)
            if match and (call_id := match.group(1).decode()) not in self.sent:
                self.sent[call_id] = time.perf_counter()
                endpoint = (_CHANNEL if by_state else _DEST).search(data)
                if endpoint:
                    self.rang[call_id] = endpoint.group(1).decode()
                if by_state:
                    self.rung_by_state.add(call_id)


class _Refusals:
    """Counts click-to-call requests the server did not accept (each must be 202)."""

    def __init__(self) -> None:
        self.count = 0
        self.last = ""

    def check(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        status = None if exc else task.result().status
        if status != 202:
            self.count += 1
            self.last = repr(exc) if exc else f"HTTP {status}"
        if exc is None:
            task.result().release()


async def _prepare(url: str, contacts: int, managers: int) -> tuple[list[str], list[str]]:
    await harness.recreate_database(url, DB_NAME)
    sa_url = crm_lookup._sa_url(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=sa_url))
    await db.migrate(engine)
    await engine.dispose()
    crm_lookup.DB_NAME = DB_NAME  # its loader writes into the database named there
    numbers = await crm_lookup._load(url, contacts, random.Random(7))
    engine = db.create_engine(DatabaseSettings(url=sa_url))
    tokens = []
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
        await session.commit()
    await engine.dispose()
    return numbers, tokens


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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--managers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to place calls")
    parser.add_argument("--speed", type=float, default=20.0, help="replay speed of each call")
    parser.add_argument(
        "--click-share",
        type=float,
        default=0.2,
        help="share of calls that are click-to-call (POST /api/v1/calls, then the PBX rings)",
    )
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)

    print(f"preparing {args.contacts:,} contacts and {args.managers} managers ...")
    numbers, tokens = await _prepare(url, args.contacts, args.managers)
    pbx = TimedPbx(username="cc", secret="bench", speed=args.speed)
    await pbx.start()
    http_port = pbx.port + 1 if pbx.port < 65000 else 18999
    server = await _serve(url, pbx.port, http_port)
    base = f"http://127.0.0.1:{http_port}"
    latencies: list[float] = []
    click_latencies: list[float] = []
    rings: dict[str, float] = {}
    loaded = {"+7" + n for n in numbers}
    wrong_socket: list[str] = []
    card_missing: list[str] = []
    card_unexpected: list[str] = []
    try:
        await harness.wait_ready(
            base, lambda doc: doc.get("pbx", {}).get("bench", {}).get("status") == "ok"
        )
        # The managers' sockets take the first session's 100 connections; API calls get their own.
        async with aiohttp.ClientSession() as http, aiohttp.ClientSession() as api:
            sockets = [
                await http.ws_connect(f"{base.replace('http', 'ws')}/ws?token={t}") for t in tokens
            ]

            async def reader(ws: aiohttp.ClientWebSocketResponse, extension: str) -> None:
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT or '"call.ringing"' not in msg.data:
                        continue
                    arrived = time.perf_counter()
                    pop = json.loads(msg.data)
                    call_id = pop["call_id"]
                    if pbx.rang.get(call_id) != extension:
                        # not the phone that rang (or no ringing frame seen for the call)
                        wrong_socket.append(
                            f"{call_id} at {extension}, rang {pbx.rang.get(call_id)}"
                        )
                        continue
                    if pop["caller"] in loaded and not (pop.get("client") or {}).get("id"):
                        card_missing.append(call_id)
                    elif pop["caller"] not in loaded and pop.get("client"):
                        card_unexpected.append(call_id)
                    if call_id in rings:
                        continue
                    rings[call_id] = arrived
                    sent = pbx.sent.get(call_id)
                    if sent is not None:
                        latencies.append((arrived - sent) * 1000)
                        if call_id in pbx.rung_by_state:
                            click_latencies.append((arrived - sent) * 1000)

            readers = [
                asyncio.get_running_loop().create_task(reader(ws, str(100 + i)))
                for i, ws in enumerate(sockets)
            ]
            rng = random.Random(11)
            placed = clicks = 0
            posts: set[asyncio.Task[Any]] = set()
            refused = _Refusals()
            started = time.perf_counter()
            print(f"placing {args.rate:g} calls/s for {args.seconds:g} s ...")
            while (elapsed := time.perf_counter() - started) < args.seconds:
                due = int(elapsed * args.rate) + 1
                while placed < due:
                    known = rng.random() < 0.8
                    caller = (
                        "7" + rng.choice(numbers) if known else f"7916{rng.randrange(10**7):07d}"
                    )
                    extension = str(100 + rng.randrange(args.managers))
                    if rng.random() < args.click_share:
                        # Click-to-call: the manager asks the API, the server sends the PBX an
                        # Originate, the PBX rings the manager's phone showing the client.
                        manager = rng.randrange(args.managers)
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
                        clicks += 1
                    else:
                        pbx.play(
                            "c_inbound_short_answered",
                            outside=caller,
                            did="74951112233",
                            extension=extension,
                        )
                    placed += 1
                await asyncio.sleep(0.005)
            achieved = placed / (time.perf_counter() - started)
            await asyncio.sleep(5)  # let the last calls ring
            waited_until = time.perf_counter()
            if refused.count:
                raise SystemExit(f"{refused.count} click-to-call requests failed: {refused.last}")
            for reader_task in readers:
                if reader_task.done() and reader_task.exception() is not None:
                    raise SystemExit(f"a socket reader failed: {reader_task.exception()!r}")
                reader_task.cancel()
            for ws in sockets:
                await ws.close()
    finally:
        await pbx.close()
        await harness.stop(server)
        await harness.drop_database(url, DB_NAME)

    if not latencies:
        raise SystemExit(
            f"no call.ringing frame arrived at the ringing manager (rung: {len(pbx.sent)}, "
            f"at another socket: {len(wrong_socket)}, e.g. {list(pbx.rang.items())[:3]})"
        )
    missing = sorted(set(pbx.sent) - set(rings))
    # A call that never popped waited at least until the end of the run: it counts as that.
    counted = latencies + [(waited_until - pbx.sent[c]) * 1000 for c in missing]
    p50, p99 = crm_lookup._pct(counted, 0.50), crm_lookup._pct(counted, 0.99)
    print(
        f"calls placed: {placed} ({achieved:.1f}/s, {clicks} click-to-call); rung at the PBX: "
        f"{len(pbx.sent)}; popped at the ringing manager: {len(latencies)}"
    )
    print(f"missing (rung, no pop-up at the ringing manager): {len(missing)}", end="")
    print(f" ({', '.join(missing[:5])})" if missing else "")
    print(
        f"pop-ups at another manager's socket: {len(wrong_socket)} {wrong_socket[:3]}; "
        f"known caller without the card: {len(card_missing)}; "
        f"unknown caller with a card: {len(card_unexpected)}"
    )
    print(
        f"ring -> pop-up latency (missing counted as waited): p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms (goal p99 < 20 ms)"
    )
    if click_latencies:
        print(
            f"  of which click-to-call (asked through the API): "
            f"p50 {crm_lookup._pct(click_latencies, 0.5):.2f} ms, "
            f"p99 {crm_lookup._pct(click_latencies, 0.99):.2f} ms"
        )
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "calls_per_s": round(achieved, 1),
                "p50_ms": round(p50, 2),
                "p99_ms": round(p99, 2),
                "calls": len(pbx.sent),
                "popped": len(latencies),
                "missing": len(missing),
                "wrong_socket": len(wrong_socket),
                "card_missing": len(card_missing),
                "card_unexpected": len(card_unexpected),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
