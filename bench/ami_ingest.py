"""Benchmark: AMI events per second through our link, parser and call fold, against panoramisk.

    python bench/ami_ingest.py [--repeat N] [--rounds N]

A fake PBX in a child process (its own core) blasts a capture-shaped event stream over
loopback: the real ``g_concurrent_20.ami`` (20 concurrent queue calls, 3,942 events of
Asterisk 22 with ``read = all``) repeated ``--repeat`` times, each copy with its Uniqueids,
Linkedids, bridge ids and timestamps moved so the calls of different copies never collide.

In this process, one core, one event loop:

* **ours**: :class:`ami.connection.AmiLink` reads the socket with :class:`ami.frames.FrameParser`
  and hands every event to :class:`ami.fold.CallFolder` (no database). The run checks that
  every call of every copy was folded to its end.
* **panoramisk**: panoramisk 1.4's ``Manager`` on the same stream, its own protocol parsing
  and dispatching every event to one empty callback (``register_event('*', …)``).

Each is timed from its first event to its last; the best of ``--rounds`` alternating runs is
kept. The last line is one JSON object: ``{"events_per_s", "panoramisk_events_per_s",
"ratio"}`` (ratio = ours / panoramisk). Goal: ratio ≥ 1.5 and ≥ 100,000 events/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CAPTURE = ROOT / "tests" / "fixtures" / "ami" / "g_concurrent_20.ami"
TRUNKS = ("provider",)
EXTENSION_PATTERN = r"^\d{3}$"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"

# Slots rewritten per copy: ids "epoch.seq", bridge UUIDs, timestamps.
_SLOT = re.compile(
    rb"^(?:(?P<idkey>\w*(?:Uniqueid|UniqueID|Linkedid)): (?P<id>\d+\.\d+)"
    rb"|(?P<brkey>\w*BridgeUniqueid|BridgeId|BridgeID): (?P<bridge>[0-9a-f-]{36})"
    rb"|Timestamp: (?P<ts>\d+\.\d+))\r$",
    re.M,
)


# --------------------------------------------------------------------------- the stream


def build_stream(repeat: int) -> tuple[bytes, int, int]:
    """(bytes, events, calls): the capture's events ``repeat`` times with fresh ids."""
    raw = CAPTURE.read_bytes()
    frames = [
        f + b"\r\n\r\n"
        for f in raw.split(b"\r\n\r\n")
        if f.startswith(b"Event: ") and not f.startswith((b"Event: FullyBooted", b"Event: Su"))
    ]
    template = b"".join(frames)
    calls = len({m.group(1) for m in re.finditer(rb"^Linkedid: (\S+)\r$", template, re.M)})
    # Cut the template once into literal pieces and slots, then fill the slots per copy.
    pieces: list[bytes] = []
    slots: list[tuple[str, bytes]] = []
    last = 0
    for m in _SLOT.finditer(template):
        kind = "id" if m.group("id") else "bridge" if m.group("bridge") else "ts"
        pieces.append(template[last : m.start(kind)])
        slots.append((kind, m.group(kind)))
        last = m.end(kind)
    tail = template[last:]
    stamps = [float(v) for k, v in slots if k == "ts"]
    span = max(stamps) - min(stamps) + 60.0
    out: list[bytes] = []
    for copy in range(repeat):
        cache: dict[bytes, bytes] = {}
        for piece, (kind, value) in zip(pieces, slots, strict=True):
            out.append(piece)
            new = cache.get(value)
            if new is None:
                if kind == "id":
                    epoch, seq = value.split(b".")
                    new = b"%s.%d" % (epoch, int(seq) + 1000 * copy)
                elif kind == "bridge":
                    new = value[:-4] + b"%04x" % copy
                else:
                    new = b"%.6f" % (float(value) + span * copy)
                cache[value] = new
            out.append(new)
        out.append(tail)
    return b"".join(out), len(frames) * repeat, calls * repeat


# --------------------------------------------------------------------------- the fake PBX


async def _blast(stream: bytes) -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        buffer = b""
        sender: asyncio.Task[None] | None = None

        async def send_all() -> None:
            view = memoryview(stream)
            for i in range(0, len(stream), 1 << 20):
                writer.write(view[i : i + (1 << 20)])
                await writer.drain()

        try:
            while data := await reader.read(65536):
                buffer += data
                while b"\r\n\r\n" in buffer:
                    block, buffer = buffer.split(b"\r\n\r\n", 1)
                    headers = dict(
                        line.split(": ", 1) for line in block.decode().split("\r\n") if ": " in line
                    )
                    action = headers.get("Action", "").lower()
                    aid = headers.get("ActionID", "")
                    status = "Goodbye" if action == "logoff" else "Success"
                    writer.write(f"Response: {status}\r\nActionID: {aid}\r\n\r\n".encode())
                    if action == "login" and sender is None:
                        sender = asyncio.get_running_loop().create_task(send_all())
                    if action == "logoff":
                        return
        except ConnectionError:
            pass
        finally:
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await sender
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------- the clients


async def run_ours(port: int, events: int, calls: int, *, filtered: bool = False) -> float:
    """Events per second through our link and fold; ``filtered``: as the server runs it, events
    the fold does not need dropped unparsed (``fold.NEEDED``)."""
    from ami.connection import AmiLink
    from ami.fold import NEEDED, CallEnded, CallFolder

    folder = CallFolder(TRUNKS, EXTENSION_PATTERN)
    feed = folder.feed
    done = asyncio.Event()
    state = {"n": 0, "ended": 0, "t0": 0.0, "t1": 0.0}

    def on_frame(frame: Any) -> None:
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["t0"] = time.perf_counter()
        produced = feed(frame)
        if produced:
            for event in produced:
                if isinstance(event, CallEnded):
                    state["ended"] += 1
        if n == events:
            state["t1"] = time.perf_counter()
            done.set()

    async def all_received() -> None:
        # Dropped events never reach on_frame; the link counts every event it received.
        while link.events_total < events:  # noqa: ASYNC110 (a counter, not an event, to watch)
            await asyncio.sleep(0.0005)
        state["t1"] = time.perf_counter()
        done.set()

    link = AmiLink(
        host="127.0.0.1",
        port=port,
        username="bench",
        secret="bench",
        name="bench",
        on_frame=on_frame,
        ping_interval_s=3600.0,
        keep=NEEDED if filtered else None,
    )
    await link.start()
    watcher = asyncio.get_running_loop().create_task(all_received()) if filtered else None
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        if watcher is not None:
            watcher.cancel()
        await link.close()
    if state["ended"] != calls:
        raise SystemExit(f"fold ended {state['ended']} calls, expected {calls}")
    return (events - 1) / (state["t1"] - state["t0"])


async def run_panoramisk(port: int, events: int) -> float:
    from panoramisk import Manager

    done = asyncio.Event()
    state = {"n": 0, "t0": 0.0, "t1": 0.0}

    def on_event(_manager: Any, _message: Any) -> None:
        n = state["n"] = state["n"] + 1
        if n == 1:
            state["t0"] = time.perf_counter()
        if n == events:
            state["t1"] = time.perf_counter()
            done.set()

    manager = Manager(
        host="127.0.0.1",
        port=port,
        username="bench",
        secret="bench",
        ping_delay=3600,
        reconnect_timeout=3600,
        loop=asyncio.get_running_loop(),
    )
    manager.register_event("*", on_event)
    await manager.connect()
    try:
        await asyncio.wait_for(done.wait(), timeout=600)
    finally:
        manager.close()
    return (events - 1) / (state["t1"] - state["t0"])


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=25, help="copies of the capture")
    parser.add_argument("--rounds", type=int, default=5, help="alternating runs of each")
    parser.add_argument("--blaster", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.blaster:
        asyncio.run(_blast(Path(args.blaster).read_bytes()))
        return

    stream, events, calls = build_stream(args.repeat)
    print(
        f"stream: g_concurrent_20.ami x {args.repeat} = {events:,} events, {calls:,} calls, "
        f"{len(stream) / 1e6:.1f} MB ({len(stream) / events:.0f} bytes/event)"
    )
    with tempfile.NamedTemporaryFile(suffix=".ami", delete=False) as tmp:
        tmp.write(stream)
    blaster = subprocess.Popen(
        [sys.executable, __file__, "--blaster", tmp.name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert blaster.stdout is not None
        port = int(blaster.stdout.readline())
        ours: list[float] = []
        theirs: list[float] = []
        served: list[float] = []

        async def rounds() -> None:
            for i in range(args.rounds):
                ours.append(await run_ours(port, events, calls))
                theirs.append(await run_panoramisk(port, events))
                served.append(await run_ours(port, events, calls, filtered=True))
                print(
                    f"round {i + 1}: ours {ours[-1]:,.0f} events/s (parse + fold), "
                    f"panoramisk {theirs[-1]:,.0f} events/s (parse + dispatch), "
                    f"ours as served {served[-1]:,.0f} events/s (unneeded events dropped unparsed)"
                )

        asyncio.run(rounds())
    finally:
        blaster.terminate()
        blaster.wait()
        os.unlink(tmp.name)
    best_ours, best_theirs = max(ours), max(theirs)
    ratio = best_ours / best_theirs
    print(f"ours (AmiLink + FrameParser + CallFolder): {best_ours:,.0f} events/s, best of runs")
    print(f"panoramisk 1.4 Manager, empty callback:  {best_theirs:,.0f} events/s, best of runs")
    print(f"ratio: {ratio:.2f} (goal >= 1.5); goal >= 100,000 events/s on one core")
    print(
        f"the server's link drops events the fold does not need before parsing them"
        f" (fold.NEEDED): {max(served):,.0f} events/s received and folded, best of runs"
        " (the figures above parse every event)"
    )
    print(
        json.dumps(
            {
                "events_per_s": round(best_ours),
                "panoramisk_events_per_s": round(best_theirs),
                "ratio": round(ratio, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
