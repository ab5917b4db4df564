"""A simulated PBX for ``contact-center demo``: an AMI server on loopback that plays real call
traffic.

The calls are real Asterisk 22 captures (``ami/demo_traces``) replayed with fresh channel ids,
Uniqueids/Linkedids and timestamps, and with the outside number and the dialed DID swapped
for the ones the demo asks for, so the server folds them exactly like production traffic.
It answers ``Login``, ``Ping``, ``CoreShowChannels`` and ``Originate`` (click-to-call plays the
originate capture with the requested extension and number).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ami.frames import Frame, FrameParser

log = logging.getLogger(__name__)

TRACES = Path(__file__).parent / "demo_traces"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"

_ID_KEYS = re.compile(rb"^(\w*(?:niqueid|inkedid|UniqueID)): (\d+\.\d+)\r?$", re.M)
_CHAN_SUFFIX = re.compile(rb"((?:PJSIP|SIP|Local|IAX2)/[^\s;@]+?(?:@[\w-]+)?)-([0-9a-f]{8})")
_TS = re.compile(rb"^Timestamp: (\d+\.\d+)\r?$", re.M)


@dataclass(frozen=True)
class Trace:
    """One capture: its events (without banner and login) and what it is about."""

    name: str
    frames: tuple[bytes, ...]  # each ends with b"\r\n\r\n"
    offsets: tuple[float, ...]  # seconds since the first timestamped event
    direction: str
    outside: str  # the outside party's digits as the capture writes them (no "+")
    did: str | None
    extension: str | None
    # Per frame, cut once at load (replays rewrite every frame of every call): its literal
    # bytes and the slots a replay fills (see _template).
    parts: tuple[tuple[Part, ...], ...] = ()


# A slot of a frame a replay fills: (kind, original bytes, channel prefix). Kinds: "ts" the
# Timestamp, "id" a Uniqueid/Linkedid, "chan" a channel's unique suffix (its prefix, which may
# name the extension or a number, is kept beside it), "out" the outside number, "did" the
# DID, "ext" the extension, "aid" the ActionID line.
Part = bytes | tuple[str, bytes, bytes]


def _boundary(literal: str) -> bytes:
    """``literal`` as a pattern matching it whole: never inside an id ("<epoch>.101"), a
    channel suffix ("0000a101") or a longer number."""
    return rb"(?<![0-9A-Za-z.])" + re.escape(literal.encode()) + rb"(?![0-9A-Za-z.])"


def _template(
    frame: bytes, ids: set[bytes], outside: str, did: str | None, extension: str | None
) -> tuple[Part, ...]:
    """``frame`` cut into literal bytes and the slots a replay fills, found in one pass."""
    alternatives = [rb"(?P<ts>(?<=^Timestamp: )\d+\.\d+(?=\r?$))", rb"(?P<aid>^ActionID: .*$)"]
    alternatives.append(rb"(?P<chan>" + _CHAN_SUFFIX.pattern + rb")")
    if ids:
        longest = sorted(ids, key=len, reverse=True)  # "1795722921.55" before "1795722921.5"
        alternatives.append(rb"(?P<id>(?:" + b"|".join(map(re.escape, longest)) + rb")(?!\d))")
    if outside:
        alternatives.append(rb"(?P<out>" + re.escape(outside.encode()) + rb")")
    if did:
        alternatives.append(rb"(?P<did>" + re.escape(did.encode()) + rb")")
    if extension:
        alternatives.append(rb"(?P<ext>" + _boundary(extension) + rb")")
    pattern = re.compile(b"|".join(alternatives), re.M)
    parts: list[Part] = []
    at = 0
    for m in pattern.finditer(frame):
        kind = m.lastgroup or ""
        if kind == "chan":
            # The channel's own groups follow the named one: (prefix)-(suffix).
            prefix = m.group(m.lastindex + 1 if m.lastindex else 0)
            parts += [frame[at : m.start()], ("chan", m.group(0), prefix)]
        else:
            parts += [frame[at : m.start()], (kind, m.group(0), b"")]
        at = m.end()
    parts.append(frame[at:])
    return tuple(p for p in parts if p != b"")


def _load(path: Path) -> Trace:
    raw = path.read_bytes()
    expected = [
        json.loads(line)
        for line in path.with_suffix(".expected.jsonl").read_text().splitlines()
        if line.strip()
    ]
    first = expected[0]
    outside = first["caller"] if first["direction"] == "inbound" else first["callee"]
    body = raw[len(BANNER) :] if raw.startswith(BANNER) else raw
    frames: list[bytes] = []
    offsets: list[float] = []
    start: float | None = None
    last = 0.0
    for chunk in body.split(b"\r\n\r\n"):
        if not chunk.strip() or not chunk.startswith(b"Event: "):
            continue  # responses to the capture client's own actions
        if chunk.startswith((b"Event: SuccessfulAuth", b"Event: FullyBooted")):
            continue
        match = _TS.search(chunk)
        if match:
            ts = float(match.group(1))
            start = ts if start is None else start
            last = ts - start
        frames.append(chunk + b"\r\n\r\n")
        offsets.append(last)
    ids = {m.group(2) for f in frames for m in _ID_KEYS.finditer(f)}
    outside_digits = (outside or "").lstrip("+")
    did = (first["did"] or "").lstrip("+") or None
    extension = first["extension"]
    return Trace(
        name=path.stem,
        frames=tuple(frames),
        offsets=tuple(offsets),
        direction=first["direction"],
        outside=outside_digits,
        did=did,
        extension=extension,
        parts=tuple(_template(f, ids, outside_digits, did, extension) for f in frames),
    )


def load_traces(directory: Path = TRACES) -> dict[str, Trace]:
    return {p.stem: _load(p) for p in sorted(directory.glob("*.ami"))}


@dataclass
class _Rewriter:
    """Fresh ids for one replay, consistent across all its frames."""

    ids: dict[bytes, bytes] = field(default_factory=dict)
    chans: dict[bytes, bytes] = field(default_factory=dict)
    # The extension's pattern (inside a channel's name), made at the first channel naming it.
    extension_pattern: re.Pattern[bytes] | None = None


class SimulatedPbx:
    """The AMI server. ``await start()``, then ``play(...)`` calls or let ``run_traffic`` do it."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "cc",
        secret: str = "demo",
        speed: float = 1.0,
        traces: dict[str, Trace] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.speed = speed
        self.traces = traces or load_traces()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._epoch = int(time.time())
        self._seq = itertools.count(1)
        self._chan_seq = itertools.count(0x100)
        self._outbox: list[bytes] = []  # frames broadcast in this event-loop turn

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("simulated PBX listening on %s:%s", self.host, self.port)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in list(self._writers):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ---------------------------------------------------------------- AMI sessions

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        parser = FrameParser()
        authed = False
        try:
            while data := await reader.read(65536):
                for frame in parser.feed(data):
                    action = (frame.get("Action") or "").lower()
                    aid = frame.get("ActionID") or ""
                    if action == "login":
                        ok = (
                            frame.get("Username") == self.username
                            and frame.get("Secret") == self.secret
                        )
                        if not ok:
                            self._reply(writer, aid, "Error", "Authentication failed")
                            continue
                        authed = True
                        self._reply(writer, aid, "Success", "Authentication accepted")
                        writer.write(
                            b"Event: FullyBooted\r\nPrivilege: system,all\r\n"
                            b"Status: Fully Booted\r\n\r\n"
                        )
                        self._writers.add(writer)
                    elif not authed:
                        self._reply(writer, aid, "Error", "Permission denied")
                    elif action == "ping":
                        writer.write(
                            f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\n"
                            f"Timestamp: {time.time():.6f}\r\n\r\n".encode()
                        )
                    elif action == "coreshowchannels":
                        self._reply(writer, aid, "Success", "Channels will follow", "start")
                        writer.write(
                            f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\n"
                            f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                        )
                    elif action in ("status", "queuestatus"):
                        # The simulator's calls are replayed, not tracked: an empty listing.
                        complete = "StatusComplete" if action == "status" else "QueueStatusComplete"
                        self._reply(writer, aid, "Success", "List will follow", "start")
                        writer.write(
                            f"Event: {complete}\r\nActionID: {aid}\r\n"
                            f"EventList: Complete\r\nListItems: 0\r\n\r\n".encode()
                        )
                    elif action == "originate":
                        self._originate(writer, frame, aid)
                    elif action == "logoff":
                        writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                        return
                    else:
                        self._reply(writer, aid, "Success", "")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The session's end at teardown, like any other: a connection handler that ends
            # cancelled is printed by Python 3.11's stream callback as an unhandled error.
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    @staticmethod
    def _reply(
        writer: asyncio.StreamWriter, aid: str, status: str, message: str, event_list: str = ""
    ) -> None:
        extra = f"EventList: {event_list}\r\n" if event_list else ""
        writer.write(
            f"Response: {status}\r\nActionID: {aid}\r\n{extra}Message: {message}\r\n\r\n".encode()
        )

    def _originate(self, writer: asyncio.StreamWriter, frame: Frame, aid: str) -> None:
        channel = frame.get("Channel") or ""
        exten = (frame.get("Exten") or "").lstrip("+")
        extension = channel.split("/", 1)[-1].split("@")[0]
        trace = next((t for t in self.traces.values() if "originate" in t.name), None)
        if trace is None or not extension or not exten.isdigit():
            self._reply(writer, aid, "Error", "Originate failed")
            return
        self._reply(writer, aid, "Success", "Originate successfully queued")
        self.play(trace.name, outside=exten, extension=extension, action_id=aid)

    # ---------------------------------------------------------------- playing calls

    def play(
        self,
        trace_name: str,
        *,
        outside: str,
        did: str | None = None,
        extension: str | None = None,
        action_id: str | None = None,
    ) -> asyncio.Task[None]:
        """Play one call of ``trace_name`` with these numbers; returns its task."""
        trace = self.traces[trace_name]
        task = asyncio.get_running_loop().create_task(
            self._play(
                trace, outside.lstrip("+"), (did or "").lstrip("+") or None, extension, action_id
            )
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _play(
        self,
        trace: Trace,
        outside: str,
        did: str | None,
        extension: str | None,
        action_id: str | None,
    ) -> None:
        rw = _Rewriter()
        loop = asyncio.get_running_loop()
        started = loop.time()
        wall = time.time()
        for index, (frame, offset) in enumerate(zip(trace.frames, trace.offsets, strict=True)):
            delay = started + offset / self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            data = self._rewrite(
                index,
                frame,
                trace,
                rw,
                wall + offset / self.speed,
                outside,
                did,
                extension,
                action_id,
            )
            self.broadcast(data)

    def broadcast(self, data: bytes) -> None:
        """Send ``data`` to every logged-in session: the frames of one event-loop turn go out
        together, in one write (hundreds of calls in progress make thousands of frames a
        second; a system call each would cost the PBX and the server more than the calls)."""
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._send_outbox)
        self._outbox.append(data)

    def _send_outbox(self) -> None:
        data = b"".join(self._outbox)
        self._outbox.clear()
        for writer in list(self._writers):
            if writer.is_closing():
                self._writers.discard(writer)
                continue
            writer.write(data)

    def _rewrite(
        self,
        index: int,
        frame: bytes,
        trace: Trace,
        rw: _Rewriter,
        ts: float,
        outside: str,
        did: str | None,
        extension: str | None,
        action_id: str | None,
    ) -> bytes:
        """Frame ``index`` of ``trace`` as this replay sends it: fresh ids and channel
        suffixes, time ``ts``, its numbers, extension and ActionID (``frame`` is that frame as
        captured; it is sent as it is only when the trace was cut without slots)."""
        parts = trace.parts[index] if trace.parts else (frame,)
        new_ext = extension.encode() if extension and extension != trace.extension else None
        out: list[bytes] = []
        add = out.append
        for part in parts:
            if isinstance(part, bytes):
                add(part)
                continue
            kind, old, prefix = part
            if kind == "id":
                new = rw.ids.get(old)
                if new is None:
                    new = rw.ids[old] = f"{self._epoch}.{next(self._seq)}".encode()
                add(new)
            elif kind == "chan":
                new = rw.chans.get(old)
                if new is None:
                    new = rw.chans[old] = (
                        self._channel_prefix(prefix, trace, rw, outside, did, new_ext)
                        + b"-"
                        + f"{next(self._chan_seq):08x}".encode()
                    )
                add(new)
            elif kind == "ts":
                add(f"{ts:.6f}".encode())
            elif kind == "out":
                add(outside.encode())
            elif kind == "did":
                add(did.encode() if did else old)
            elif kind == "ext":
                add(new_ext or old)
            else:  # "aid"
                add(f"ActionID: {action_id}".encode() if action_id is not None else old)
        return b"".join(out)

    @staticmethod
    def _channel_prefix(
        prefix: bytes,
        trace: Trace,
        rw: _Rewriter,
        outside: str,
        did: str | None,
        extension: bytes | None,
    ) -> bytes:
        """A channel's name before its suffix ("PJSIP/101", "Local/101@from-queue") with
        this replay's extension and numbers."""
        if extension is not None and trace.extension:
            if rw.extension_pattern is None:
                rw.extension_pattern = re.compile(_boundary(trace.extension))
            prefix = rw.extension_pattern.sub(extension, prefix)
        if trace.outside:
            prefix = prefix.replace(trace.outside.encode(), outside.encode())
        if trace.did and did:
            prefix = prefix.replace(trace.did.encode(), did.encode())
        return prefix

    async def run_traffic(
        self,
        *,
        outside_numbers: Iterable[str],
        dids: Iterable[str],
        every_s: float = 20.0,
        seed: int | None = None,
        prefer_did: Callable[[random.Random], Awaitable[str | None]] | None = None,
    ) -> None:
        """Place a realistic mix of calls forever: inbound answered, missed, abandoned, busy and
        outbound, to the given DIDs from the given numbers. ``prefer_did`` may name the DID of
        the next inbound call (the demo: a tracking number a website visitor holds now)."""
        rnd = random.Random(seed)
        numbers, lines = list(outside_numbers), list(dids)
        weights = {
            "a_inbound_queue_answered": 4,
            "c_inbound_short_answered": 3,
            "b_inbound_missed": 2,
            "f_abandoned_in_queue": 1,
            "h_direct_busy": 1,
            "d_outbound_answered": 2,
        }
        names = [n for n in weights if n in self.traces]
        while True:
            name = rnd.choices(names, weights=[weights[n] for n in names])[0]
            trace = self.traces[name]
            did = None
            if trace.direction == "inbound":
                did = (await prefer_did(rnd) if prefer_did else None) or rnd.choice(lines)
            self.play(name, outside=rnd.choice(numbers), did=did)
            await asyncio.sleep(every_s * rnd.uniform(0.5, 1.5))
