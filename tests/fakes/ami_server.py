"""A fake Asterisk Manager Interface server on 127.0.0.1:0 for the AMI link tests.

It speaks the wire protocol as Asterisk 22 does in ``tests/fixtures/ami/*.ami``: the banner
line, ``Login`` (right or wrong secret; a refused login closes the connection, as Asterisk
does), ``Logoff``, ``Ping`` (answered or ignored), ``Originate`` (queued, then an
``OriginateResponse`` that answered, was busy, was not answered …), and the list actions
``CoreShowChannels``/``Status``/``QueueStatus``, served from a resync capture or, for
``CoreShowChannels``, built from the events this server has sent (:class:`ChannelTable`).

A test drives each connection through its :class:`AmiSession`: send capture bytes in any
chunking, inject garbage, drop the connection at a given byte offset. ``on_login`` runs a
script for every successful login. Parsing here is deliberately independent of
``ami.frames``: the fake must not share the code it checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
END = b"\r\n\r\n"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ami"

_ACTION_ID = re.compile(rb"^ActionID: [^\r\n]*", re.M)

# The channel fields a CoreShowChannel item repeats from the channel's own events.
_CHANNEL_KEYS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


# --------------------------------------------------------------------------- byte helpers


def split_frames(data: bytes) -> list[bytes]:
    """The frames of a raw AMI stream, each ending with its blank line; the banner dropped."""
    if data.startswith(b"Asterisk Call Manager/"):
        data = data[data.index(b"\r\n") + 2 :]
    parts = data.split(END)
    return [part + END for part in parts[:-1] if part.strip()]


def headers_of(frame: bytes) -> dict[str, str]:
    """``Key: Value`` headers of one frame (first occurrence wins)."""
    headers: dict[str, str] = {}
    for line in frame.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep and key not in headers:
            headers[key] = value
    return headers


def encode(headers: Mapping[str, object]) -> bytes:
    """One frame from headers (a list value repeats its header)."""
    lines: list[str] = []
    for key, value in headers.items():
        values = value if isinstance(value, list) else [value]
        lines.extend(f"{key}: {v}\r\n" for v in values)
    return ("".join(lines) + "\r\n").encode("utf-8")


def capture(name: str) -> bytes:
    """The raw bytes of ``tests/fixtures/ami/<name>.ami``."""
    return (FIXTURES / f"{name}.ami").read_bytes()


def event_frames(data: bytes) -> list[bytes]:
    """Only the events of a capture (not the capture client's own responses), byte exact."""
    return [f for f in split_frames(data) if f.startswith(b"Event: ")]


def list_reply(capture_bytes: bytes, action_id: str) -> bytes:
    """The response and list events of a ``resync_*.ami`` capture, re-addressed."""
    frames = split_frames(capture_bytes)
    start = next(i for i, f in enumerate(frames) if b"EventList: start" in f)
    end = next(i for i, f in enumerate(frames) if b"EventList: Complete" in f)
    body = b"".join(frames[start : end + 1])
    return _ACTION_ID.sub(f"ActionID: {action_id}".encode(), body)


# --------------------------------------------------------------------------- live channels


@dataclass
class _Chan:
    fields: dict[str, str]
    created: float
    outgoing: bool
    dnid: str
    bridge: str = ""
    application: str = ""
    app_data: str = ""


class ChannelTable:
    """The PBX's live channels, following the events as they are sent.

    ``core_show_channels`` answers as Asterisk would at that moment: one item per channel
    not hung up, with its current state, bridge, dialplan application and age.
    """

    def __init__(self) -> None:
        self.channels: dict[str, _Chan] = {}
        self.now = 0.0

    def apply(self, frame: bytes) -> None:
        """Follow one event frame."""
        h = headers_of(frame)
        ts = h.get("Timestamp")
        if ts:
            self.now = float(ts)
        event = h.get("Event")
        uid = h.get("Uniqueid")
        if not uid:
            return
        if event == "Newchannel":
            outgoing = h.get("ChannelState") == "0"
            self.channels[uid] = _Chan(
                fields={k: h.get(k, "") for k in _CHANNEL_KEYS},
                created=self.now,
                outgoing=outgoing,
                # What the caller dialled; Asterisk keeps it while Exten moves on.
                dnid="" if outgoing else h.get("Exten", ""),
            )
            return
        chan = self.channels.get(uid)
        if chan is None:
            return
        if event == "Hangup":
            del self.channels[uid]
            return
        for key in _CHANNEL_KEYS:
            if key in h:
                chan.fields[key] = h[key]
        if event == "Rename" and h.get("Newname"):
            chan.fields["Channel"] = h["Newname"]
        elif event == "BridgeEnter":
            chan.bridge = h.get("BridgeUniqueid", "")
        elif event == "BridgeLeave":
            chan.bridge = ""
        elif event == "Newexten":
            chan.application = h.get("Application", "")
            chan.app_data = h.get("AppData", "")

    def apply_all(self, frames: Iterable[bytes]) -> None:
        """Follow many frames (the events a client missed still change the PBX)."""
        for frame in frames:
            self.apply(frame)

    def _application(self, chan: _Chan) -> tuple[str, str]:
        if not chan.application and chan.outgoing:
            return "AppDial", "(Outgoing Line)"
        return chan.application, chan.app_data

    def status(self, action_id: str) -> bytes:
        """The full answer to ``Status`` (all channels) now."""
        out = [
            encode(
                {
                    "Response": "Success",
                    "ActionID": action_id,
                    "EventList": "start",
                    "Message": "Channel status will follow",
                }
            )
        ]
        for chan in self.channels.values():
            application, data = self._application(chan)
            item: dict[str, object] = {"Event": "Status", "Privilege": "Call"}
            item.update(chan.fields)
            item.update(
                {
                    "Type": "PJSIP",
                    "DNID": chan.dnid,
                    "TimeToHangup": 0,
                    "BridgeID": chan.bridge,
                    "Application": application,
                    "Data": data,
                    "Seconds": max(0, int(self.now - chan.created)),
                    "ActionID": action_id,
                }
            )
            out.append(encode(item))
        out.append(
            encode(
                {
                    "Event": "StatusComplete",
                    "ActionID": action_id,
                    "EventList": "Complete",
                    "ListItems": len(self.channels),
                    "Items": len(self.channels),
                }
            )
        )
        return b"".join(out)

    def core_show_channels(self, action_id: str) -> bytes:
        """The full answer to ``CoreShowChannels`` now."""
        out = [
            encode(
                {
                    "Response": "Success",
                    "ActionID": action_id,
                    "EventList": "start",
                    "Message": "Channels will follow",
                }
            )
        ]
        for chan in self.channels.values():
            age = max(0, int(self.now - chan.created))
            application, data = self._application(chan)
            item: dict[str, object] = {"Event": "CoreShowChannel", "ActionID": action_id}
            item.update(chan.fields)
            item.update(
                {
                    "Application": application,
                    "ApplicationData": data,
                    "Duration": f"{age // 3600:02d}:{age // 60 % 60:02d}:{age % 60:02d}",
                    "BridgeId": chan.bridge,
                }
            )
            out.append(encode(item))
        out.append(
            encode(
                {
                    "Event": "CoreShowChannelsComplete",
                    "ActionID": action_id,
                    "EventList": "Complete",
                    "ListItems": len(self.channels),
                }
            )
        )
        return b"".join(out)


# --------------------------------------------------------------------------- the server


_LIST_COMPLETE = {
    "coreshowchannels": ("CoreShowChannelsComplete", "Channels will follow"),
    "status": ("StatusComplete", "Channel status will follow"),
    "queuestatus": ("QueueStatusComplete", "Queue status will follow"),
}

# Originate outcomes: (OriginateResponse Response, Reason, sync reply).
_ORIGINATE = {
    "answer": ("Success", 4),
    "busy": ("Failure", 5),
    "noanswer": ("Failure", 3),
    "congestion": ("Failure", 8),
    "failed": ("Failure", 0),
}


class AmiSession:
    """One client connection, as the fake PBX sees it."""

    def __init__(self, server: FakeAmiServer, index: int, writer: asyncio.StreamWriter):
        self.server = server
        self.index = index
        """0 for the first connection the server accepted, 1 for the next …"""
        self.writer = writer
        self.actions: list[dict[str, str]] = []
        self.logged_in = False
        self.closed = asyncio.Event()
        self.sent_bytes = 0

    def write(self, data: bytes) -> None:
        """Queue bytes for the client (no-op once the connection is closing)."""
        if not self.writer.is_closing():
            self.writer.write(data)
            self.sent_bytes += len(data)

    async def send(
        self,
        data: bytes,
        *,
        chunk_size: int | None = None,
        pause_s: float = 0.0,
        drop_at: int | None = None,
    ) -> None:
        """Send ``data`` in ``chunk_size`` pieces (``pause_s`` apart); with ``drop_at``, close
        the connection after exactly that many of its bytes."""
        if drop_at is not None:
            data = data[:drop_at]
        size = chunk_size or len(data) or 1
        for i in range(0, len(data), size):
            if self.writer.is_closing():
                return
            self.write(data[i : i + size])
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
            elif chunk_size:
                await asyncio.sleep(0)
        if drop_at is not None:
            await self.drop()

    async def send_frames(
        self, frames: Iterable[bytes], *, table: ChannelTable | None = None, batch: int = 64
    ) -> None:
        """Send event frames, letting the table follow each, yielding every ``batch`` frames
        so the client's actions are answered in between, as a live PBX would."""
        for count, frame in enumerate(frames, 1):
            if self.writer.is_closing():
                return
            if table is not None:
                table.apply(frame)
            self.write(frame)
            if count % batch == 0:
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()
                await asyncio.sleep(0)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def drop(self) -> None:
        """Close the connection from the PBX side (after flushing what was written)."""
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    def actions_named(self, name: str) -> list[dict[str, str]]:
        """The actions of this connection with that ``Action`` (case-insensitive)."""
        return [a for a in self.actions if a.get("Action", "").lower() == name.lower()]


Script = Callable[[AmiSession], Coroutine[Any, Any, None]]


@dataclass
class FakeAmiServer:
    """The fake PBX. Options may be changed between connections; they are read live."""

    username: str = "cc"
    secret: str = "s3cret"
    banner: bytes = BANNER
    answer_ping: bool = True
    fully_booted: bool = True
    originate: str = "answer"
    """``answer``, ``busy``, ``noanswer``, ``congestion``, ``failed`` or ``error``."""
    originate_delay_s: float = 0.01
    originate_event_first: bool = False
    """Send the OriginateResponse before the action's own answer (a leg failing at once)."""
    lists: dict[str, bytes] = field(default_factory=dict)
    """Lower-case action name → a ``resync_*.ami`` capture to answer it with."""
    table: ChannelTable | None = None
    """When set, ``CoreShowChannels`` and ``Status`` are answered from it."""
    silent: set[str] = field(default_factory=set)
    """Lower-case action names never answered."""
    delays: dict[str, float] = field(default_factory=dict)
    """Lower-case action name → seconds before the answer."""
    on_login: Script | None = None
    host: str = "127.0.0.1"
    port: int = 0

    sessions: list[AmiSession] = field(default_factory=list)
    login_attempts: int = 0
    failed_logins: int = 0
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _uids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> FakeAmiServer:
        """Listen on ``host:port`` (port 0: any free port, then stored in ``port``)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        """Stop listening and close every connection and script."""
        if self._server is not None:
            self._server.close()
        for session in self.sessions:
            session.writer.close()
        for task in list(self._tasks) + list(self._handlers):
            task.cancel()
        pending = list(self._tasks) + list(self._handlers)
        if pending:
            await asyncio.wait(pending)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def stop_listening(self) -> None:
        """Refuse new connections (existing ones stay) — the PBX is down."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeAmiServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self.sessions)

    def logged_in_sessions(self) -> list[AmiSession]:
        return [s for s in self.sessions if s.logged_in]

    def actions_named(self, name: str) -> list[dict[str, str]]:
        """Every action with that name, over all connections."""
        return [a for s in self.sessions for a in s.actions_named(name)]

    def broadcast(self, data: bytes) -> None:
        """Send bytes to every logged-in open connection."""
        for session in self.sessions:
            if session.logged_in:
                session.write(data)

    # ----------------------------------------------------------------- protocol

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        session = AmiSession(self, len(self.sessions), writer)
        self.sessions.append(session)
        session.write(self.banner)
        buffer = b""
        try:
            while data := await reader.read(65536):
                buffer += data.replace(b"\r\n", b"\n")
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if block.strip():
                        self._handle(session, block.decode("utf-8", "replace"))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            session.closed.set()
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()
            self._handlers.discard(task)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _handle(self, session: AmiSession, block: str) -> None:
        action: dict[str, str] = {}
        variables: list[str] = []
        for line in block.split("\n"):
            key, sep, value = line.partition(": ")
            if not sep:
                continue
            if key == "Variable":
                variables.append(value)
            action.setdefault(key, value)
        if variables:
            action["Variable"] = ",".join(variables)
        session.actions.append(action)
        name = action.get("Action", "").lower()
        aid = action.get("ActionID", "")
        if name in self.silent:
            return
        delay = self.delays.get(name, 0.0)
        if delay:
            self._spawn(self._later(delay, session, name, aid, action))
        else:
            self._answer(session, name, aid, action)

    async def _later(
        self, delay: float, session: AmiSession, name: str, aid: str, action: dict[str, str]
    ) -> None:
        await asyncio.sleep(delay)
        self._answer(session, name, aid, action)

    def _reply(self, session: AmiSession, aid: str, response: str, message: str) -> None:
        session.write(encode({"Response": response, "ActionID": aid, "Message": message}))

    def _answer(self, session: AmiSession, name: str, aid: str, action: dict[str, str]) -> None:
        if name == "login":
            self.login_attempts += 1
            if action.get("Username") != self.username or action.get("Secret") != self.secret:
                self.failed_logins += 1
                self._reply(session, aid, "Error", "Authentication failed")
                # Asterisk ends the session after a failed login.
                self._spawn(session.drop())
                return
            session.logged_in = True
            self._reply(session, aid, "Success", "Authentication accepted")
            if self.fully_booted:
                session.write(
                    b"Event: FullyBooted\r\nPrivilege: system,all\r\nUptime: 75\r\n"
                    b"LastReload: 75\r\nStatus: Fully Booted\r\n\r\n"
                )
            if self.on_login is not None:
                self._spawn(self.on_login(session))
            return
        if not session.logged_in:
            self._reply(session, aid, "Error", "Permission denied")
            return
        if name == "logoff":
            self._reply(session, aid, "Goodbye", "Thanks for all the fish.")
            self._spawn(session.drop())
        elif name == "ping":
            if self.answer_ping:
                session.write(
                    encode(
                        {
                            "Response": "Success",
                            "ActionID": aid,
                            "Ping": "Pong",
                            "Timestamp": f"{time.time():.6f}",
                        }
                    )
                )
        elif name in _LIST_COMPLETE:
            session.write(self._list(name, aid))
        elif name == "originate":
            self._originate(session, aid, action)
        else:
            self._reply(session, aid, "Success", "")

    def _list(self, name: str, aid: str) -> bytes:
        if name == "coreshowchannels" and self.table is not None:
            return self.table.core_show_channels(aid)
        if name == "status" and self.table is not None:
            return self.table.status(aid)
        if name in self.lists:
            return list_reply(self.lists[name], aid)
        complete, message = _LIST_COMPLETE[name]
        return encode(
            {"Response": "Success", "ActionID": aid, "EventList": "start", "Message": message}
        ) + encode({"Event": complete, "ActionID": aid, "EventList": "Complete", "ListItems": 0})

    def _originate(self, session: AmiSession, aid: str, action: dict[str, str]) -> None:
        if self.originate == "error":
            self._reply(session, aid, "Error", "Extension does not exist.")
            return
        if action.get("Async", "false").lower() not in ("true", "yes", "1"):
            # A synchronous Originate answers only once the first leg is up (or failed),
            # and says "successfully queued" even then.
            ok = self.originate == "answer"
            self._spawn(
                self._later_reply(
                    session,
                    aid,
                    "Success" if ok else "Error",
                    "Originate successfully queued" if ok else "Originate failed",
                )
            )
            return
        if self.originate_event_first:
            self._spawn(self._originate_response(session, aid, action, queued_after=True))
            return
        self._reply(session, aid, "Success", "Originate successfully queued")
        self._spawn(self._originate_response(session, aid, action))

    async def _later_reply(self, session: AmiSession, aid: str, response: str, msg: str) -> None:
        await asyncio.sleep(self.originate_delay_s)
        self._reply(session, aid, response, msg)

    async def _originate_response(
        self, session: AmiSession, aid: str, action: dict[str, str], queued_after: bool = False
    ) -> None:
        await asyncio.sleep(self.originate_delay_s)
        response, reason = _ORIGINATE[self.originate]
        channel = action.get("Channel", "")
        answered = response == "Success"
        uid = f"1795800000.{next(self._uids)}"
        session.write(
            encode(
                {
                    "Event": "OriginateResponse",
                    "Privilege": "call,all",
                    "Timestamp": f"{time.time():.6f}",
                    "ActionID": aid,
                    "Response": response,
                    "Channel": f"{channel}-00000009" if answered else channel,
                    "Context": action.get("Context", ""),
                    "Exten": action.get("Exten", ""),
                    "Reason": reason,
                    "Uniqueid": uid if answered else "<null>",
                    "CallerIDNum": "<unknown>",
                    "CallerIDName": "<unknown>",
                }
            )
        )
        if queued_after:
            self._reply(session, aid, "Success", "Originate successfully queued")
