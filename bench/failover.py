"""Benchmark: the PBX changes hands when the instance following it is killed.

    python bench/failover.py [--rate CALLS_PER_S] [--seconds S] [--kill-at S] [--instances N]

Three ``contact-center serve`` processes (``--instances``) on one PostgreSQL database of their
own (``bench_failover`` on the server of ``CC_BENCH_DATABASE_URL``, created and dropped) and one
Redis (``CC_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/13``, under a key prefix of this
run's own, deleted afterwards), behind nginx (a generated configuration in a temporary folder,
run in the foreground on a free port: the reverse proxy of the README's production section).
A simulated PBX in this process places ``--rate`` real-capture calls per second (the inbound
captures replayed in real time: each call lasts 30-40 s, as calls do) for ``--seconds``; it
keeps a table of its live channels, so ``Status`` answers as Asterisk would. At ``--kill-at``
seconds, once calls are both starting and ending, the instance holding the PBX's lease (the
one whose ``/healthz`` shows the PBX connected) is killed with SIGKILL.

Takeover: from the kill to the moment another instance has logged in to the PBX and read its
channel list (``Status``), as the PBX sees it. Then every call the PBX placed must be stored
exactly once: ``lost`` are the calls (Linkedids) the PBX played with no row in ``calls``;
``duplicated`` the calls with more than one call row or more than one call activity on the
client's timeline. Pop-ups through nginx: a manager's socket (through the proxy, so on any
instance) must receive the ``call.ringing`` of every call rung while an instance held the PBX.

The last line is one JSON object: ``{"takeover_s", "calls", "lost", "duplicated", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from ami.frames import FrameParser
from ami.simulator import SimulatedPbx
from bench import crm_lookup, harness
from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.users import service as users
from crm_core.users.model import TokenKind
from tests.fakes.ami_server import ChannelTable

DEFAULT_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
DB_NAME = "bench_failover"
PBX_NAME = "bench"
_LINKEDID = re.compile(rb"^Linkedid: (\S+)\r?$", re.M)
_RINGS = (b"Event: DialBegin", b"Event: AgentCalled")
TRACES = ("c_inbound_short_answered", "b_inbound_missed")
MANAGERS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ListingPbx(SimulatedPbx):
    """The simulated PBX with a table of its live channels (what ``Status`` lists), the calls
    it placed, and when each AMI client logged in and asked for the channel list."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.table = ChannelTable()
        self.calls: set[str] = set()
        self.first: dict[str, float] = {}  # call -> its first frame
        self.last: dict[str, float] = {}  # call -> its last frame
        self.rung: dict[str, float] = {}  # call -> when its first phone rang
        self.listed: list[float] = []  # when a client's Status was answered
        self.unheard: set[str] = set()  # calls rung while no client was logged in

    def broadcast(self, data: bytes) -> None:
        self.table.apply(data)
        match = _LINKEDID.search(data)
        if match:
            call = match.group(1).decode()
            self.calls.add(call)
            now = time.perf_counter()
            self.first.setdefault(call, now)
            self.last[call] = now
            if data.startswith(_RINGS) and call not in self.rung:
                self.rung[call] = time.perf_counter()
                if not self._writers:
                    self.unheard.add(call)
        super().broadcast(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Login, Ping, Status, QueueStatus and CoreShowChannels as Asterisk answers them."""
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        parser = FrameParser()
        try:
            while data := await reader.read(65536):
                for frame in parser.feed(data):
                    action = (frame.get("Action") or "").lower()
                    aid = frame.get("ActionID") or ""
                    if action == "login":
                        if frame.get("Secret") != self.secret:
                            self._reply(writer, aid, "Error", "Authentication failed")
                            continue
                        self._reply(writer, aid, "Success", "Authentication accepted")
                        writer.write(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
                        self._writers.add(writer)
                    elif action == "ping":
                        writer.write(
                            f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n\r\n".encode()
                        )
                    elif action == "status":
                        writer.write(self.table.status(aid))
                        self.listed.append(time.perf_counter())
                    elif action == "coreshowchannels":
                        writer.write(self.table.core_show_channels(aid))
                    elif action == "queuestatus":
                        self._reply(writer, aid, "Success", "Queue status will follow", "start")
                        writer.write(
                            f"Event: QueueStatusComplete\r\nActionID: {aid}\r\n"
                            f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                        )
                    else:
                        self._reply(writer, aid, "Success", "")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


def _nginx_config(folder: Path, port: int, upstreams: list[int]) -> Path:
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams
    )
    config = folder / "nginx.conf"
    config.write_text(
        f"""worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream cc {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cc;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 120s;
            proxy_connect_timeout 2s;
            proxy_next_upstream error timeout http_502 http_503;
        }}
    }}
}}
"""
    )
    return config


async def _prepare(url: str) -> list[str]:
    """A fresh database with ``MANAGERS`` managers on extensions 100..; their API tokens."""
    await harness.recreate_database(url, DB_NAME)
    engine = db.create_engine(DatabaseSettings(url=crm_lookup._sa_url(url, DB_NAME)))
    await db.migrate(engine)
    tokens = []
    async with db.sessionmaker(engine)() as session:
        for i in range(MANAGERS):
            user, _ = await users.create_user(
                session,
                login=f"m{i}",
                role="manager",
                password="password1",
                extensions=[str(100 + i)],
                scrypt_n=1024,
            )
            tokens.append(
                (await users.issue_token(session, user, kind=TokenKind.API, ttl=None)).secret
            )
        await session.commit()
    await engine.dispose()
    return tokens


async def _healthz(http: aiohttp.ClientSession, port: int) -> dict[str, Any] | None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
        async with http.get(
            f"http://127.0.0.1:{port}/healthz", timeout=aiohttp.ClientTimeout(total=2)
        ) as resp:
            doc: dict[str, Any] = await resp.json()
            return doc
    return None


async def _holder(http: aiohttp.ClientSession, ports: list[int]) -> int | None:
    """The port of the instance whose PBX link is up."""
    for port in ports:
        doc = await _healthz(http, port)
        if doc and doc.get("pbx", {}).get(PBX_NAME, {}).get("status") == "ok":
            return port
    return None


async def _stored(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """Call rows and call activities per Linkedid."""
    import asyncpg

    conn = await asyncpg.connect(crm_lookup._dsn(url, DB_NAME))
    try:
        rows = await conn.fetch(
            "SELECT call_id, count(*) AS n FROM calls WHERE pbx = $1 GROUP BY call_id", PBX_NAME
        )
        acts = await conn.fetch(
            "SELECT external_id, count(*) AS n FROM activities WHERE external_id LIKE $1 "
            "GROUP BY external_id",
            f"call:{PBX_NAME}:%",
        )
    finally:
        await conn.close()
    calls = {r["call_id"]: r["n"] for r in rows}
    activities = {r["external_id"].split(":", 2)[2]: r["n"] for r in acts}
    return calls, activities


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long calls are placed")
    parser.add_argument("--kill-at", type=float, default=45.0, help="when the holder is killed")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=3.0, help="telephony.pbx_lease_ttl_s")
    args = parser.parse_args()
    url = os.environ.get("CC_BENCH_DATABASE_URL", DEFAULT_URL)
    redis_url = os.environ.get("CC_BENCH_REDIS_URL", DEFAULT_REDIS)
    prefix = f"bench-failover-{uuid.uuid4().hex[:8]}"
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")

    tokens = await _prepare(url)
    pbx = ListingPbx(username="cc", secret="bench", speed=1.0)
    await pbx.start()
    ports = [_free_port() for _ in range(args.instances)]
    proxy_port = _free_port()
    settings = {
        "CC_DATABASE_URL": crm_lookup._sa_url(url, DB_NAME),
        "CC_DATABASE_MIGRATE_ON_START": "false",
        "CC_REDIS_URL": redis_url,
        "CC_REDIS_PREFIX": prefix,
        "CC_TELEPHONY_PBX_LEASE_TTL_S": str(args.lease_ttl),
        "CC_SERVER_TRUSTED_PROXIES": '["127.0.0.1"]',
        "CC_PBX": json.dumps(
            [
                {
                    "name": PBX_NAME,
                    "host": "127.0.0.1",
                    "port": pbx.port,
                    "username": "cc",
                    "secret": "bench",
                    "trunks": ["provider"],
                    "extension_pattern": r"^\d{3}$",
                }
            ]
        ),
    }
    servers = [await harness.serve({**settings, "CC_SERVER_PORT": str(p)}) for p in ports]
    folder = Path(tempfile.mkdtemp(prefix="cc-failover-"))
    nginx = await asyncio.create_subprocess_exec(
        "nginx",
        "-p",
        str(folder),
        "-c",
        str(_nginx_config(folder, proxy_port, ports)),
        "-g",
        "daemon off;",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    popped: dict[str, float] = {}
    killed_at = 0.0
    result: dict[str, Any] = {}
    try:
        for port in ports:
            await harness.wait_ready(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while (holder := await _holder(http, ports)) is None:
                if time.monotonic() > deadline:
                    raise SystemExit("no instance connected to the PBX within 30 s")
                await asyncio.sleep(0.1)
            print(f"{args.instances} instances on ports {ports}, nginx on {proxy_port}; ", end="")
            print(f"the PBX is followed by the instance on {holder}")
            # The managers watch through the proxy, so their sockets land on any instance; a
            # socket whose instance died connects again at once, as the workspace's does.
            ws_url = f"ws://127.0.0.1:{proxy_port}/ws?token="

            async def reader(token: str) -> None:
                while True:
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.ws_connect(ws_url + token) as ws:
                            async for msg in ws:
                                if msg.type == aiohttp.WSMsgType.TEXT and (
                                    '"call.ringing"' in msg.data
                                ):
                                    call = json.loads(msg.data)["call_id"]
                                    popped.setdefault(call, time.perf_counter())
                    await asyncio.sleep(0.2)

            readers = [asyncio.get_running_loop().create_task(reader(t)) for t in tokens]
            await asyncio.sleep(1)
            rng = random.Random(5)
            placed = 0
            started = time.perf_counter()
            victim = servers[ports.index(holder)]
            while (elapsed := time.perf_counter() - started) < args.seconds:
                while placed < int(elapsed * args.rate) + 1:
                    pbx.play(
                        TRACES[placed % len(TRACES)],
                        outside=f"7916{rng.randrange(10**7):07d}",
                        did="74951112233",
                        extension=str(100 + rng.randrange(MANAGERS)),
                    )
                    placed += 1
                if not killed_at and elapsed >= args.kill_at:
                    listed_before = len(pbx.listed)
                    victim.send_signal(signal.SIGKILL)
                    killed_at = time.perf_counter()
                    await victim.wait()
                    print(f"killed the holder (port {holder}) with SIGKILL at {elapsed:.1f} s")
                await asyncio.sleep(0.01)
            print(f"placed {placed} calls; waiting for them to end ...")
            await asyncio.gather(*list(pbx._tasks), return_exceptions=True)
            new_holder = await _holder(http, [p for p in ports if p != holder])
            # Let the new holder write the last calls: until all are stored or none more is
            # for 30 s (a busy machine writes slowly; the count is what it is then).
            stored, still = -1, time.monotonic()
            while time.monotonic() - still < 30:
                count = len((await _stored(url))[0])
                if count == len(pbx.calls):
                    break
                if count != stored:
                    stored, still = count, time.monotonic()
                await asyncio.sleep(1)
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        takeover = (
            pbx.listed[listed_before] - killed_at
            if killed_at and len(pbx.listed) > listed_before
            else None
        )
        calls, activities = await _stored(url)
        lost = sorted(pbx.calls - set(calls))
        duplicated = sorted(c for c in pbx.calls if calls.get(c, 0) > 1 or activities.get(c, 0) > 1)
        # Pop-ups are owed for calls rung while an instance followed the PBX, leaving out the
        # second after the takeover in which sockets of the dead instance come back.
        back_at = killed_at + (takeover or 0) + 1.0
        rung = {
            c
            for c, at in pbx.rung.items()
            if c not in pbx.unheard and not (killed_at and killed_at <= at < back_at)
        }
        no_pop = sorted(rung - set(popped))
        print(
            "takeover (kill -> another instance logged in and listed the channels): "
            + (f"{takeover:.2f} s" if takeover is not None else "never")
            + f"; new holder: {new_holder}"
        )
        print(
            f"calls placed by the PBX: {len(pbx.calls)}; stored: {len(calls)}; lost: {len(lost)}"
            + (f" (e.g. {lost[:3]})" if lost else "")
            + f"; duplicated: {len(duplicated)}"
        )
        print(
            f"pop-ups through nginx: {len(rung)} calls rung while the PBX was followed (not "
            f"in the takeover), {len(no_pop)} without a pop-up; {len(pbx.unheard)} rang while "
            "nobody followed it"
        )
        if killed_at:
            # When the lost calls were, against the kill and the takeover.
            back = killed_at + (takeover or 0)
            ended_before = sum(1 for c in lost if pbx.last[c] < killed_at)
            in_flight = sum(1 for c in lost if pbx.first[c] < killed_at <= pbx.last[c])
            gap_only = sum(1 for c in lost if pbx.first[c] >= killed_at and pbx.last[c] < back)
            after = len(lost) - ended_before - in_flight - gap_only
            print(
                f"lost calls: {ended_before} ended before the kill, {in_flight} in progress at "
                f"the kill, {gap_only} begun and ended during the takeover, {after} after it"
            )
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}")
        result = {
            "takeover_s": round(takeover, 2) if takeover is not None else None,
            "calls": len(pbx.calls),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "stored": len(calls),
            "rung_unfollowed": len(pbx.unheard),
            "no_popup": len(no_pop),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        }
    finally:
        if nginx.returncode is None:
            nginx.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(nginx.wait(), 10)
        for server in servers:
            if server.returncode is None:
                await harness.stop(server)
        await pbx.close()
        await harness.drop_database(url, DB_NAME)
        client = aioredis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
