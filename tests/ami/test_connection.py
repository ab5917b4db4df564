"""The AMI link against a fake Asterisk: login, keepalive, reconnect, actions, and each
panoramisk 1.4 defect the link must not have (one test, or a group, per defect)."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ami.connection import (
    AmiActionFailed,
    AmiAuthFailed,
    AmiLink,
    AmiTimeout,
    AmiUnavailable,
    backoff_delay,
    encode_action,
)
from ami.fold import CallEnded, CallFolder
from ami.frames import Frame
from ami.replay import record_json
from crm_core.errors import InvalidInput
from tests.ami._support import COUNT_THRESHOLD_S, EXTENSION_PATTERN, TRUNKS
from tests.fakes.ami_server import AmiSession, FakeAmiServer, capture, event_frames, list_reply
from tests.helpers import until

MakeLink = Callable[..., AmiLink]
ROOT_DIR = Path(__file__).resolve().parents[2]


@pytest.fixture
async def server() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer() as srv:
        yield srv


@pytest.fixture
async def make_link() -> AsyncIterator[MakeLink]:
    """Links with test-sized timings; every one is closed at the end of the test."""
    links: list[AmiLink] = []

    def make(srv: FakeAmiServer, **overrides: Any) -> AmiLink:
        options: dict[str, Any] = {
            "host": srv.host,
            "port": srv.port,
            "username": srv.username,
            "secret": srv.secret,
            "name": "pbx-test",
            "connect_timeout_s": 1.0,
            "login_timeout_s": 1.0,
            "ping_interval_s": 30.0,
            "ping_timeout_s": 1.0,
            "backoff_initial_s": 0.01,
            "backoff_max_s": 0.05,
            "stable_after_s": 10.0,
            "auth_retry_s": 0.2,
            "rnd": random.Random(7),
        }
        options.update(overrides)
        link = AmiLink(**options)
        links.append(link)
        return link

    yield make
    for link in links:
        await link.close()


class Sink:
    """An ``on_frame`` that keeps what it gets."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []

    def __call__(self, frame: Frame) -> None:
        self.frames.append(frame)

    def events(self, name: str) -> list[Frame]:
        return [f for f in self.frames if f.event == name]


def event(name: str, **headers: str) -> bytes:
    lines = [f"Event: {name}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


async def connected(link: AmiLink, srv: FakeAmiServer, sessions: int = 1) -> AmiSession:
    """Start ``link`` (if needed) and wait for its ``sessions``-th logged-in connection."""
    await link.start()
    await until(lambda: len(srv.logged_in_sessions()) >= sessions and link.connected, timeout=3)
    return srv.logged_in_sessions()[-1]


# --------------------------------------------------------------------------- basics


async def test_logs_in_and_reports_connected(server: FakeAmiServer, make_link: MakeLink) -> None:
    link = make_link(server)
    assert link.provide_status()["state"] == "idle"
    session = await connected(link, server)
    login = session.actions_named("Login")[0]
    assert login["Username"] == "cc"
    assert login["Events"] == "on"
    assert login["ActionID"].startswith("cc-pbx-test-")
    status = link.provide_status()
    assert status["state"] == "connected"
    assert status["version"] == "Asterisk Call Manager/11.0.0"
    assert status["reconnects"] == 0
    assert status["last_error"] is None
    assert link.metrics()["connected"] == 1.0


async def test_events_reach_on_frame_in_order(server: FakeAmiServer, make_link: MakeLink) -> None:
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    frames = event_frames(capture("a_inbound_queue_answered"))
    await session.send(b"".join(frames), chunk_size=4096)
    # +1: the FullyBooted the fake sends at login.
    await until(lambda: len(sink.frames) == len(frames) + 1)
    assert [f.event for f in sink.frames[1:]] == [
        f.split(b"\r\n", 1)[0].removeprefix(b"Event: ").decode() for f in frames
    ]
    status = link.provide_status()
    assert status["events_total"] == len(frames) + 1
    assert status["events_per_s"] > 0
    assert 0 <= status["last_event_age_s"] < 5


async def test_wait_connected_times_out_with_a_clear_error(make_link: MakeLink) -> None:
    down = FakeAmiServer()
    await down.start()
    await down.stop_listening()
    link = make_link(down)
    await link.start()
    with pytest.raises(AmiUnavailable, match="pbx-test"):
        await link.wait_connected(0.2)
    assert link.provide_status()["last_error"]
    await down.close()


# --------------------------------------------------------------------------- defect 1: UTF-8


async def test_a_utf8_character_split_across_reads_arrives_whole(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    data = event(
        "Newchannel",
        Channel="PJSIP/provider-00000001",
        CallerIDName="Café Иванов",
        Uniqueid="1.1",
        Linkedid="1.1",
    )
    cut = data.index("é".encode()) + 1  # between the two bytes of "é"
    cyrillic = data.index("в".encode()) + 1  # inside a Cyrillic letter
    for part in (data[:cut], data[cut:cyrillic], data[cyrillic:]):
        await session.send(part)
        await asyncio.sleep(0.02)  # separate reads on the client
    await until(lambda: sink.events("Newchannel"))
    assert sink.events("Newchannel")[0]["CallerIDName"] == "Café Иванов"


async def test_one_byte_reads_keep_every_cyrillic_name(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    names = ["Иван Петров", "Ёлка-Щука", "Zoë Ωmega", "李雷"]
    data = b"".join(event("VarSet", Variable="CALLERNAME", Value=n) for n in names)
    await session.send(data, chunk_size=1)
    await until(lambda: len(sink.events("VarSet")) == len(names))
    assert [f["Value"] for f in sink.events("VarSet")] == names


def test_control_panoramisk_parser_drops_a_split_utf8_character() -> None:
    """Why we read the socket ourselves: panoramisk 1.4 decodes each read on its own."""
    from panoramisk.ami_protocol import AMIProtocol

    seen: list[Any] = []

    class Factory:
        forgetable_actions = ("ping", "login")

        def dispatch(self, message: Any) -> None:
            seen.append(message)

    class Transport:
        def close(self) -> None:
            pass

    protocol = AMIProtocol()
    protocol.connection_made(Transport())
    protocol.factory = Factory()
    protocol.encoding = "utf8"
    data = event("Newchannel", CallerIDName="café")
    cut = data.index("é".encode()) + 1
    protocol.data_received(data[:cut])
    protocol.data_received(data[cut:])
    assert seen[0]["CallerIDName"] == "caf"


# --------------------------------------------------------------------------- defect 2: callbacks


async def test_a_raising_on_frame_is_logged_and_the_link_survives(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[str] = []

    def on_frame(frame: Frame) -> None:
        if frame.event == "Boom":
            raise RuntimeError("subscriber bug")
        got.append(frame.get("Seq", "") or "")

    link = make_link(server, on_frame=on_frame)
    session = await connected(link, server)
    data = b"".join(event("Boom" if i % 3 == 0 else "VarSet", Seq=str(i)) for i in range(1, 31))
    with caplog.at_level(logging.ERROR, logger="ami.connection"):
        await session.send(data)
        await until(lambda: link.on_frame_errors == 10 and "29" in got)
    assert [g for g in got if g] == [str(i) for i in range(1, 31) if i % 3]
    assert link.on_frame_errors == 10
    assert server.connections == 1 and link.reconnects == 0 and link.connected
    assert any("pbx-test" in r.getMessage() and "Boom" in r.getMessage() for r in caplog.records)
    # The link still answers actions on the same connection.
    assert (await link.send_action({"Action": "Ping"}, timeout=1.0))["Ping"] == "Pong"


def test_control_panoramisk_lets_a_callback_error_out_of_data_received() -> None:
    """In panoramisk the exception leaves data_received, and asyncio then closes the
    transport ("Fatal error: protocol.data_received() call failed")."""
    from panoramisk.ami_protocol import AMIProtocol
    from panoramisk.manager import Manager

    class Transport:
        def close(self) -> None:
            pass

    def boom(_manager: Any, _event: Any) -> None:
        raise RuntimeError("subscriber bug")

    manager = Manager()
    manager.register_event("*", boom)
    protocol = AMIProtocol()
    protocol.connection_made(Transport())
    protocol.factory = manager
    with pytest.raises(RuntimeError, match="subscriber bug"):
        protocol.data_received(event("Hangup", Uniqueid="1.1"))


# --------------------------------------------------------------------------- defect 3: watchdog


async def test_an_unanswered_ping_drops_and_reconnects(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    server.answer_ping = False
    link = make_link(server, ping_interval_s=0.05, ping_timeout_s=0.1)
    with caplog.at_level(logging.WARNING, logger="ami.connection"):
        await connected(link, server)
        await until(lambda: server.connections >= 2 and link.connected, timeout=3)
    assert link.ping_timeouts >= 1
    assert link.reconnects >= 1
    status = link.provide_status()
    assert "Ping" in (status["last_disconnect"] or "")  # why it went down, kept while up
    assert status["last_error"] is None  # connected again: no current error
    assert any("pbx-test" in r.getMessage() and "Ping" in r.getMessage() for r in caplog.records)
    # Once the PBX answers again the link stays on one connection.
    server.answer_ping = True
    await until(lambda: link.connected)
    settled = server.connections
    await asyncio.sleep(0.4)
    assert server.connections == settled
    assert len(server.sessions[-1].actions_named("Ping")) >= 3


async def test_a_late_pong_while_events_keep_coming_keeps_the_link(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    """A Pong queued behind events this side has not read yet (it reads behind the PBX on a
    busy machine) is late, but the PBX is there: dropping the link would lose the calls in
    progress. Only a PBX silent for the whole timeout is dropped (the test above)."""
    server.answer_ping = False
    link = make_link(server, ping_interval_s=0.05, ping_timeout_s=0.15)
    session = await connected(link, server)
    for n in range(40):  # events all along, no Pong: 0.8 s, several Pings
        session.write(event("Newexten", Uniqueid=f"1.{n}", Linkedid=f"1.{n}"))
        await asyncio.sleep(0.02)
    assert server.connections == 1 and link.connected
    assert link.ping_timeouts == 0
    assert link.provide_status()["last_disconnect"] is None
    assert link.pings_late >= 2
    # Once the events stop, the silent PBX is dropped as before.
    await until(lambda: link.ping_timeouts >= 1, timeout=3)


async def test_answered_pings_keep_one_connection(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    link = make_link(server, ping_interval_s=0.03, ping_timeout_s=0.2)
    session = await connected(link, server)
    await until(lambda: len(session.actions_named("Ping")) >= 5)
    assert server.connections == 1
    assert link.ping_timeouts == 0


# --------------------------------------------------------------------------- defect 4: close, auth


async def test_close_cancels_a_scheduled_reconnect(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    async def hang_up(session: AmiSession) -> None:
        await session.drop()

    server.on_login = hang_up
    link = make_link(server, backoff_initial_s=0.3, backoff_max_s=0.3, jitter=0.0)
    await link.start()
    await until(lambda: link.state == "disconnected" and server.connections == 1)
    started = time.monotonic()
    await link.close()
    assert time.monotonic() - started < 0.2
    assert link.state == "closed"
    await asyncio.sleep(0.5)  # past the reconnect that was scheduled
    assert server.connections == 1
    with pytest.raises(AmiUnavailable, match="closed"):
        await link.send_action({"Action": "Ping"}, timeout=1.0)


async def test_close_while_connected_logs_off(server: FakeAmiServer, make_link: MakeLink) -> None:
    link = make_link(server)
    session = await connected(link, server)
    await link.close()
    assert session.actions_named("Logoff")
    await until(lambda: session.closed.is_set())
    assert server.connections == 1
    await link.close()  # idempotent


async def test_close_while_the_pbx_is_unreachable(make_link: MakeLink) -> None:
    down = FakeAmiServer()
    await down.start()
    await down.stop_listening()
    link = make_link(down, backoff_initial_s=5.0, backoff_max_s=5.0)
    await link.start()
    await until(lambda: link.state == "disconnected")
    started = time.monotonic()
    await link.close()
    assert time.monotonic() - started < 0.2
    await down.close()


async def test_a_wrong_secret_is_a_clear_error_and_retried_slowly(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link(server, secret="wrong", auth_retry_s=0.4, jitter=0.0)
    with caplog.at_level(logging.ERROR, logger="ami.connection"):
        await link.start()
        await until(lambda: link.state == "auth_failed")
    status = link.provide_status()
    assert status["state"] == "auth_failed"
    assert "authentication failed" in status["last_error"]
    assert "'cc'" in status["last_error"]
    assert link.metrics()["auth_failed"] == 1.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("pbx-test" in m and "refused" in m for m in errors)
    with pytest.raises(AmiAuthFailed, match="auth_failed"):
        await link.send_action({"Action": "Ping"}, timeout=1.0)
    # No hammering: the next attempt waits auth_retry_s.
    await asyncio.sleep(0.2)
    assert server.login_attempts == 1
    # Fixed on the PBX side: the slow retry gets in.
    server.secret = "wrong"
    await until(lambda: link.connected, timeout=3)
    assert server.login_attempts == 2
    assert link.auth_failures == 1


# --------------------------------------------------------------------------- defect 5: actions


async def test_an_action_while_down_fails_at_once_and_is_never_replayed(
    make_link: MakeLink,
) -> None:
    srv = FakeAmiServer()
    await srv.start()
    try:
        link = make_link(srv)
        await connected(link, srv)
        port = srv.port
        await srv.stop_listening()
        await srv.sessions[0].drop()
        await until(lambda: not link.connected)
        started = time.monotonic()
        with pytest.raises(AmiUnavailable, match=r"pbx-test.*(disconnected|connecting)"):
            await link.send_action({"Action": "UserEvent", "UserEvent": "while-down"}, 5.0)
        assert time.monotonic() - started < 0.05
        # The PBX comes back: nothing sent during the outage reaches it.
        srv.port = port
        await srv.start()
        await until(lambda: link.connected and len(srv.logged_in_sessions()) == 2, timeout=3)
        await link.send_action({"Action": "Ping"}, timeout=1.0)
        assert srv.actions_named("UserEvent") == []
    finally:
        await srv.close()


async def test_a_pending_action_fails_when_the_connection_drops(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.delays["userevent"] = 5.0
    link = make_link(server)
    session = await connected(link, server)
    call = asyncio.ensure_future(link.send_action({"Action": "UserEvent"}, timeout=5.0))
    await until(lambda: session.actions_named("UserEvent"))
    started = time.monotonic()
    await session.drop()
    with pytest.raises(AmiUnavailable, match="lost") as info:
        await call
    assert not isinstance(info.value, AmiTimeout)
    assert time.monotonic() - started < 0.5
    await until(lambda: link.connected and server.connections == 2)
    assert len(server.actions_named("UserEvent")) == 1


async def test_actions_work_without_fully_booted(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.fully_booted = False
    link = make_link(server)
    await connected(link, server)
    response = await link.send_action({"Action": "Ping"}, timeout=0.5)
    assert response["Ping"] == "Pong"


async def test_float_timeouts_are_honoured(server: FakeAmiServer, make_link: MakeLink) -> None:
    server.delays["userevent"] = 0.3
    server.delays["command"] = 0.05
    link = make_link(server)
    await connected(link, server)
    started = time.monotonic()
    with pytest.raises(AmiTimeout, match=r"0\.15 s"):
        await link.send_action({"Action": "UserEvent"}, timeout=0.15)
    elapsed = time.monotonic() - started
    assert 0.14 <= elapsed < 0.6
    assert link.action_timeouts == 1
    # Well under a second, and not rounded down to zero.
    response = await link.send_action({"Action": "Command", "Command": "core show uptime"}, 0.5)
    assert response["Response"] == "Success"
    # The late answer to the timed-out action is dropped, not mistaken for another's.
    await until(lambda: link.unmatched_responses == 1)
    assert link.connected


async def test_an_error_response_raises_action_failed(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.originate = "error"
    link = make_link(server)
    await connected(link, server)
    with pytest.raises(AmiActionFailed, match="Extension does not exist") as info:
        await link.send_action(
            {"Action": "Originate", "Channel": "PJSIP/101", "Exten": "1", "Context": "x"}, 1.0
        )
    assert info.value.details["pbx"] == "pbx-test"
    assert info.value.response["Response"] == "Error"
    assert link.connected


async def test_a_line_break_in_a_value_cannot_inject_headers(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    link = make_link(server)
    session = await connected(link, server)
    with pytest.raises(InvalidInput):
        await link.send_action(
            {"Action": "UserEvent", "Body": "x\r\n\r\nAction: Originate\r\nChannel: PJSIP/1"}, 1.0
        )
    assert session.actions_named("Originate") == []
    assert session.actions_named("UserEvent") == []


def test_encode_action_repeats_list_headers() -> None:
    data = encode_action({"Action": "Originate", "Variable": ["A=1", "B=2"], "Async": True})
    assert data == b"Action: Originate\r\nVariable: A=1\r\nVariable: B=2\r\nAsync: true\r\n\r\n"


# --------------------------------------------------------------------------- event lists


async def test_send_action_list_collects_a_real_coreshowchannels_answer(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.lists["coreshowchannels"] = capture("resync_CoreShowChannels")
    server.lists["queuestatus"] = capture("resync_waiting_QueueStatus")
    server.lists["status"] = capture("resync_Status")
    sink = Sink()
    link = make_link(server, on_frame=sink)
    await connected(link, server)
    channels = await link.send_action_list({"Action": "CoreShowChannels"}, timeout=1.0)
    assert [f.event for f in channels] == ["CoreShowChannel", "CoreShowChannel"]
    assert {f["Uniqueid"] for f in channels} == {"1795722788.0", "1795722796.1"}
    queues = await link.send_action_list({"Action": "QueueStatus"}, timeout=1.0)
    assert len(queues) == 34
    assert [f["Uniqueid"] for f in queues if f.event == "QueueEntry"] == ["1795722875.2"]
    status = await link.send_action_list({"Action": "Status"}, timeout=1.0)
    assert [f.event for f in status] == ["Status", "Status"]
    # List items answer our action: they are not live events.
    assert [f.event for f in sink.frames] == ["FullyBooted"]


async def test_list_items_interleaved_with_live_events(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    server.silent.add("coreshowchannels")
    call = asyncio.ensure_future(link.send_action_list({"Action": "CoreShowChannels"}, 1.0))
    await until(lambda: session.actions_named("CoreShowChannels"))
    aid = session.actions_named("CoreShowChannels")[0]["ActionID"]
    reply = list_reply(capture("resync_CoreShowChannels"), aid)
    first, rest = reply.split(b"\r\n\r\n", 1)
    live = event("Hangup", Uniqueid="9.9", Linkedid="9.9")
    await session.send(first + b"\r\n\r\n" + live + rest, chunk_size=50)
    items = await call
    assert len(items) == 2
    assert [f.event for f in sink.frames] == ["FullyBooted", "Hangup"]


# --------------------------------------------------------------------------- defect 6: testing/EOL


def test_the_link_never_imports_panoramisk() -> None:
    """``panoramisk.testing`` flips ``utils.EOL`` for the whole process; we import no part of
    panoramisk at run time, so neither it nor a global of it can touch the link."""
    code = (
        "import sys, ami.connection, ami.resync, ami.fold, ami.frames; "
        "print(sorted(m for m in sys.modules if m.startswith('panoramisk')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


async def test_the_link_is_immune_to_panoramisk_eol(
    server: FakeAmiServer, make_link: MakeLink, monkeypatch: pytest.MonkeyPatch
) -> None:
    import panoramisk.utils

    monkeypatch.setattr(panoramisk.utils, "EOL", "\n")  # what panoramisk.testing does
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    await session.send(event("Newchannel", Uniqueid="1.1"))
    await until(lambda: sink.events("Newchannel"))
    assert (await link.send_action({"Action": "Ping"}, 1.0))["Ping"] == "Pong"


# --------------------------------------------------------------------------- defect 7: originate


async def test_a_synchronous_originate_does_not_kill_the_link(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    """panoramisk issue #90: "Originate successfully queued" without an Async header raised
    KeyError 'async' inside data_received and dropped the connection."""
    link = make_link(server)
    await connected(link, server)
    response = await link.send_action(
        {"Action": "Originate", "Channel": "PJSIP/101", "Exten": "102", "Context": "internal"},
        timeout=1.0,
    )
    assert response["Message"] == "Originate successfully queued"
    assert link.connected and server.connections == 1
    assert (await link.send_action({"Action": "Ping"}, 1.0))["Ping"] == "Pong"


async def test_control_panoramisk_raises_keyerror_async() -> None:
    from panoramisk.actions import Action
    from panoramisk.message import Message

    action = Action({"Action": "Originate", "Channel": "PJSIP/101"})
    reply = Message({"Response": "Success", "Message": "Originate successfully queued"})
    with pytest.raises(KeyError, match="async"):
        action.add_message(reply)


@pytest.mark.parametrize(
    ("outcome", "success", "reason", "text"),
    [
        ("answer", True, 4, "answered"),
        ("busy", False, 5, "busy"),
        ("noanswer", False, 3, "no answer"),
        ("congestion", False, 8, "congestion"),
        ("failed", False, 0, "failed"),
    ],
)
async def test_originate_outcomes_including_null_uniqueids(
    server: FakeAmiServer,
    make_link: MakeLink,
    outcome: str,
    success: bool,
    reason: int,
    text: str,
) -> None:
    server.originate = outcome
    sink = Sink()
    link = make_link(server, on_frame=sink)
    session = await connected(link, server)
    result = await link.originate(
        "PJSIP/101",
        exten="+74951234567",
        context="internal",
        caller_id='"Call +74951234567" <+74951234567>',
        variables={"CRM_TASK_ID": "42", "CLICK2CALL": "1"},
        ring_timeout_s=0.5,
        wait_outcome=True,
    )
    assert result.success is success
    assert result.reason == reason
    assert result.reason_text == text
    if success:
        assert result.uniqueid == "1795800000.1"
        assert result.channel == "PJSIP/101-00000009"
    else:
        assert result.uniqueid is None  # Asterisk sent "<null>"
    sent = session.actions_named("Originate")[0]
    assert sent["Async"] == "true"
    assert sent["Timeout"] == "500"
    assert sent["Variable"] == "CRM_TASK_ID=42,CLICK2CALL=1"
    # OriginateResponse is an event as well: subscribers see it.
    await until(lambda: sink.events("OriginateResponse"))
    assert link.connected and server.connections == 1


async def test_an_outcome_reported_before_the_queued_answer(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.originate = "congestion"
    server.originate_event_first = True
    link = make_link(server)
    await connected(link, server)
    result = await link.originate(
        "PJSIP/provider/+74951234567", exten="101", context="internal", wait_outcome=True
    )
    assert result.success is False and result.reason_text == "congestion"
    assert result.uniqueid is None and result.channel == "PJSIP/provider/+74951234567"
    assert link.unmatched_responses == 0
    assert link.provide_status()["pending_actions"] == 0


async def test_originate_without_waiting_returns_when_queued(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.originate = "busy"
    sink = Sink()
    link = make_link(server, on_frame=sink)
    await connected(link, server)
    result = await link.originate("PJSIP/101", application="Playback", data="hello-world")
    assert result.response["Message"] == "Originate successfully queued"
    assert result.success is None and result.uniqueid is None
    await until(lambda: sink.events("OriginateResponse"))
    assert sink.events("OriginateResponse")[0]["Uniqueid"] == "<null>"


async def test_originate_refused_by_the_pbx(server: FakeAmiServer, make_link: MakeLink) -> None:
    server.originate = "error"
    link = make_link(server)
    await connected(link, server)
    with pytest.raises(AmiActionFailed, match="Originate"):
        await link.originate("PJSIP/101", exten="1", context="internal", wait_outcome=True)
    assert link.connected
    assert link.provide_status()["pending_actions"] == 0


# --------------------------------------------------------------------------- garbage


async def test_garbage_and_malformed_frames_are_skipped(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S)
    sink = Sink()

    def on_frame(frame: Frame) -> None:
        sink(frame)
        folder.feed(frame)

    link = make_link(server, on_frame=on_frame)
    session = await connected(link, server)
    garbage = [
        b"\x00\xff\xfe\x80 binary junk\r\n\r\n",
        b"Event Newchannel without a colon\r\nUniqueid 1\r\n\r\n",
        b"Foo: a frame with neither Event nor Response\r\n\r\n",
        b"Response: Success\r\nActionID: nobody-asked\r\n\r\n",
        event("FooBarUnknown", Uniqueid="x"),
        event("Hangup", Uniqueid="", Linkedid="", Cause="nan"),
        event("Newchannel", Channel="PJSIP/1\xff", Uniqueid="1.1", Timestamp="not-a-time"),
        "Event: VarSet\r\nValue: \udcff\r\n\r\n".encode("utf-8", "surrogateescape"),
        b"\r\n\r\n\r\n",
        event("UserEvent", UserEvent="still-alive"),
    ]
    with caplog.at_level(logging.WARNING, logger="ami.connection"):
        for chunk in garbage:
            await session.send(chunk, chunk_size=3)
        await until(lambda: sink.events("UserEvent"))
    assert link.connected and server.connections == 1 and link.reconnects == 0
    assert link.malformed_lines >= 3
    assert link.skipped_frames >= 1
    assert link.unmatched_responses == 1
    assert sink.events("FooBarUnknown")
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed" in m and "pbx-test" in m for m in messages)
    assert (await link.send_action({"Action": "Ping"}, 1.0))["Ping"] == "Pong"


async def test_a_garbage_flood_does_not_flood_the_log(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(frame: Frame) -> None:
        raise KeyError("async")

    link = make_link(server, on_frame=broken)
    session = await connected(link, server)
    flood = b"Foo: bar\r\n\r\n" * 500 + event("VarSet") * 500
    with caplog.at_level(logging.WARNING, logger="ami.connection"):
        await session.send(flood + event("UserEvent"), chunk_size=4096)
        await until(lambda: link.on_frame_errors == 502)
    assert link.skipped_frames == 500
    assert len(caplog.records) <= 2 * 12
    assert link.connected and server.connections == 1


# --------------------------------------------------------------------------- reconnect, backoff


def test_backoff_is_exponential_capped_and_jittered() -> None:
    rnd = random.Random(3)
    plain = [backoff_delay(a, 0.5, 30.0, 0.0, rnd) for a in range(9)]
    assert plain == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    for attempt in range(12):
        base = min(30.0, 0.5 * 2**attempt)
        delays = {backoff_delay(attempt, 0.5, 30.0, 0.5, rnd) for _ in range(50)}
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(delays) > 1  # jittered
    assert backoff_delay(10_000, 0.5, 30.0, 0.2, rnd) <= 30.0


async def test_reconnects_after_each_drop_and_counts_them(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    async def talk_then_drop(session: AmiSession) -> None:
        await session.send(event("UserEvent", UserEvent=f"session-{session.index}"))
        if session.index < 3:
            await asyncio.sleep(0.05)
            await session.drop()

    server.on_login = talk_then_drop
    sink = Sink()
    hooks: list[int] = []

    async def on_connected(link: AmiLink) -> None:
        hooks.append(link.reconnects)

    link = make_link(server, on_frame=sink, on_connected=on_connected)
    await link.start()
    await until(lambda: server.connections == 4 and link.connected and len(hooks) == 4)
    assert [f["UserEvent"] for f in sink.events("UserEvent")] == [f"session-{i}" for i in range(4)]
    assert hooks == [0, 1, 2, 3]
    status = link.provide_status()
    assert status["reconnects"] == 3
    assert link.metrics()["disconnects_total"] == 3.0
    assert status["resyncs"] == 4


async def test_retries_while_the_pbx_is_down_then_connects(make_link: MakeLink) -> None:
    srv = FakeAmiServer()
    await srv.start()
    port = srv.port
    await srv.stop_listening()
    try:
        link = make_link(srv)
        await link.start()
        await until(lambda: link.connect_failures >= 3)
        assert link.state in ("connecting", "disconnected")
        assert "Connect" in (link.provide_status()["last_error"] or "")
        srv.port = port
        await srv.start()
        await until(lambda: link.connected, timeout=3)
        assert link.reconnects == 0  # the first login
    finally:
        await srv.close()


async def test_a_resync_that_cannot_finish_reconnects(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    server.silent.add("coreshowchannels")
    attempts: list[int] = []

    async def resync(link: AmiLink) -> None:
        attempts.append(1)
        await link.send_action_list({"Action": "CoreShowChannels"}, timeout=0.05)

    link = make_link(server, on_connected=resync)
    await link.start()
    await until(lambda: len(attempts) >= 2 and server.connections >= 2)
    assert link.resync_failures >= 1
    server.silent.clear()
    await until(lambda: link.resyncs >= 1)


async def test_a_buggy_resync_hook_is_logged_and_the_link_stays(
    server: FakeAmiServer, make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    async def resync(link: AmiLink) -> None:
        raise ValueError("bug in the hook")

    link = make_link(server, on_connected=resync)
    with caplog.at_level(logging.ERROR, logger="ami.connection"):
        await connected(link, server)
        await until(lambda: link.resync_failures == 1)
    await asyncio.sleep(0.1)
    assert server.connections == 1 and link.connected
    assert any("on_connected" in r.getMessage() for r in caplog.records)


async def test_metrics_are_plain_numbers(server: FakeAmiServer, make_link: MakeLink) -> None:
    link = make_link(server)
    metrics = link.metrics()
    assert metrics["connected"] == 0.0
    assert metrics["last_event_age_seconds"] != metrics["last_event_age_seconds"]  # NaN
    await connected(link, server)
    await until(lambda: link.events_total == 1)
    metrics = link.metrics()
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["connected"] == 1.0 and metrics["events_total"] == 1.0


async def test_folding_through_the_link_gives_the_expected_record(
    server: FakeAmiServer, make_link: MakeLink
) -> None:
    from tests.ami._support import expected_records, record_mismatches

    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S)
    records: list[dict[str, Any]] = []

    def on_frame(frame: Frame) -> None:
        for ev in folder.feed(frame):
            if isinstance(ev, CallEnded):
                records.append(record_json(ev.record))

    link = make_link(server, on_frame=on_frame)
    session = await connected(link, server)
    await session.send(capture("e_blind_transfer_refer"), chunk_size=1000)
    await until(lambda: records)
    assert record_mismatches(expected_records("e_blind_transfer_refer"), records) == []


async def test_a_login_resets_the_back_off_of_a_long_outage(
    make_link: MakeLink, caplog: pytest.LogCaptureFixture
) -> None:
    """A PBX down for long, then up, then restarted (``core restart now``): the reconnect after
    the restart waits the first back-off step, not the one the outage had grown to (17.3 s
    on a real Asterisk). While connected, /healthz names no old error."""
    srv = FakeAmiServer()
    await srv.start()
    port = srv.port
    await srv.stop_listening()
    link = make_link(srv, backoff_initial_s=0.01, backoff_max_s=30.0)
    try:
        await link.start()
        await until(lambda: link.connect_failures >= 7, timeout=10)
        grown = link.next_retry_s
        assert grown is not None and grown > 0.3  # 0.01 doubled six times, less jitter
        srv.port = port
        await srv.start()
        await until(lambda: link.connected, timeout=10)
        status = link.provide_status()
        assert status["last_error"] is None and status["next_retry_s"] is None
        with caplog.at_level(logging.WARNING, logger="ami.connection"):
            await srv.logged_in_sessions()[-1].drop()  # the PBX restarts
            await until(lambda: link.connected and len(srv.logged_in_sessions()) == 2, timeout=3)
        [lost] = [r.getMessage() for r in caplog.records if "connection lost" in r.getMessage()]
        waited = re.search(r"reconnecting in ([0-9.]+) s", lost)
        assert waited is not None and float(waited.group(1)) <= 0.01
    finally:
        await srv.close()
