"""Dropping the AMI link in the middle of calls loses no call and duplicates none.

The fake PBX plays a real capture, closes the socket at a byte offset (mid-frame), and
plays the rest on the next connection. Either nothing is lost (the PBX resumes with the
frame it was cutting) or a stretch of events happens while the link is down (a *gap*: the
PBX's state moves on, the client never sees those events). On every login the link
resynchronises the fold from ``CoreShowChannels`` (and ``QueueStatus``) — built live by
:class:`~tests.fakes.ami_server.ChannelTable` from what the PBX did, or served from the real
``resync_*.ami`` captures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ami.connection import AmiLink
from ami.fold import CallEnded, CallEvent, CallFolder, CallRinging
from ami.frames import Frame
from ami.replay import record_json
from ami.resync import (
    ChannelsAction,
    channel_uniqueids,
    for_fold,
    linkedids,
    queue_entries,
    resync_calls,
)
from tests.ami._support import (
    COUNT_THRESHOLD_S,
    EXTENSION_PATTERN,
    TRUNKS,
    expected_records,
    meta,
    record_mismatches,
)
from tests.fakes.ami_server import (
    AmiSession,
    ChannelTable,
    FakeAmiServer,
    capture,
    event_frames,
    headers_of,
)
from tests.helpers import until

END_OF_TEST = b"Event: UserEvent\r\nUserEvent: end-of-test\r\n\r\n"
CALL_CAPTURES = [
    "a_inbound_queue_answered",
    "b_inbound_missed",
    "c_inbound_short_answered",
    "d_outbound_answered",
    "d2_click_to_call_originate",
    "e_blind_transfer_refer",
    "f_abandoned_in_queue",
    "g_concurrent_20",
    "h_direct_busy",
]


@dataclass
class Leg:
    """What one connection gets: frames ``[start, stop)``; unless it is the last leg, then
    ``partial`` bytes of frame ``stop`` and the socket closes. Frames from ``stop`` up to
    the next leg's ``start`` happen while the link is down."""

    start: int
    stop: int
    partial: int = 0


class Harness:
    """A link, a fold fed by it, and the fake PBX playing one capture in legs."""

    def __init__(
        self,
        name: str,
        *,
        queues: bool = False,
        wait_resync: bool = False,
        channels_action: ChannelsAction = "Status",
    ) -> None:
        self.name = name
        self.channels_action: ChannelsAction = channels_action
        self.frames = event_frames(capture(name))
        self.table = ChannelTable()
        self.happened = 0
        self.fixed_now: float | None = None
        self.folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=self.now)
        self.records: list[dict[str, Any]] = []
        self.queues = queues
        self.wait_resync = wait_resync
        self.finished = asyncio.Event()
        self.logins = 0
        self.link: AmiLink | None = None
        self.legs: list[Leg] = []
        self.resynced: list[int] = []
        """The login count at each completed resync."""
        self.before_drop: Callable[[int], None] | None = None
        """Called with the leg's index just before its connection is closed."""

    def now(self) -> float:
        """The PBX's clock: when the list was taken / when vanished calls are ended."""
        return self.fixed_now if self.fixed_now is not None else self.table.now

    def happen(self, upto: int) -> None:
        """Frames before ``upto`` have happened on the PBX (whether sent or not)."""
        while self.happened < upto:
            self.table.apply(self.frames[self.happened])
            self.happened += 1

    def collect(self, events: list[CallEvent]) -> None:
        for ev in events:
            if isinstance(ev, CallEnded):
                self.records.append(record_json(ev.record))

    def on_frame(self, frame: Frame) -> None:
        if frame.event == "UserEvent" and frame.get("UserEvent") == "end-of-test":
            self.finished.set()
        self.collect(self.folder.feed(frame))

    async def on_connected(self, link: AmiLink) -> None:
        self.collect(
            await resync_calls(
                link,
                self.folder,
                feed=self.on_frame,
                now=self.now,
                queues=self.queues,
                channels_action=self.channels_action,
            )
        )
        self.resynced.append(link.logins)

    async def script(self, session: AmiSession) -> None:
        index = self.logins
        self.logins += 1
        if index >= len(self.legs):
            return
        leg = self.legs[index]
        if self.wait_resync:
            link = self.link
            assert link is not None
            await until(lambda: link.resyncs > index, timeout=5)
        for count, i in enumerate(range(leg.start, leg.stop), 1):
            self.happen(i + 1)
            session.write(self.frames[i])
            if count % 64 == 0:
                await session.writer.drain()
                await asyncio.sleep(0)
        if index == len(self.legs) - 1:
            self.happen(len(self.frames))
            session.write(END_OF_TEST)
            await session.writer.drain()
            return
        # Everything up to the next leg happens while the link is down.
        self.happen(max(self.legs[index + 1].start, leg.stop + (1 if leg.partial else 0)))
        if leg.partial:
            session.write(self.frames[leg.stop][: leg.partial])
        if self.before_drop is not None:
            self.before_drop(index)
        await session.drop()

    async def run(self, server: FakeAmiServer, legs: list[Leg]) -> list[dict[str, Any]]:
        self.legs = legs
        server.table = self.table
        server.on_login = self.script
        link = AmiLink(
            host=server.host,
            port=server.port,
            username=server.username,
            secret=server.secret,
            name="pbx-resync",
            on_frame=self.on_frame,
            on_connected=self.on_connected,
            backoff_initial_s=0.005,
            backoff_max_s=0.02,
            ping_interval_s=30.0,
            rnd=random.Random(5),
        )
        self.link = link
        await link.start()
        try:
            await asyncio.wait_for(self.finished.wait(), timeout=20)
            # A short leg may end before its resync finished; the last one's must finish.
            await until(lambda: len(legs) in self.resynced, timeout=5)
        finally:
            await link.close()
        assert link.reconnects == len(legs) - 1
        return self.records

    # ----------------------------------------------------------------- expectations

    def byte_cut(self, fraction: float) -> tuple[int, int]:
        """(frame index, bytes of it sent) for a cut at ``fraction`` of the event stream."""
        total = sum(len(f) for f in self.frames)
        target = int(total * fraction)
        offset = 0
        for i, frame in enumerate(self.frames):
            if offset + len(frame) > target:
                return i, target - offset
            offset += len(frame)
        raise AssertionError("cut past the end")

    def index_at(self, fraction: float) -> int:
        return int(len(self.frames) * fraction)

    def gap_calls(self, gaps: list[range]) -> tuple[set[str], set[str]]:
        """(calls with an event outside the gaps, calls with an event inside one)."""
        in_gap = {i for gap in gaps for i in gap}
        seen: set[str] = set()
        touched: set[str] = set()
        for i, frame in enumerate(self.frames):
            lid = headers_of(frame).get("Linkedid")
            if lid:
                (touched if i in in_gap else seen).add(lid)
        return seen, touched


@pytest.fixture
async def server() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer() as srv:
        yield srv


def _ids(records: list[dict[str, Any]]) -> Counter[str]:
    return Counter(r["call_id"] for r in records)


# --------------------------------------------------------------------------- nothing lost


@pytest.mark.parametrize("fraction", [0.13, 0.5, 0.87])
@pytest.mark.parametrize("name", CALL_CAPTURES)
async def test_a_drop_mid_frame_then_resume_gives_exactly_the_expected_calls(
    server: FakeAmiServer, name: str, fraction: float
) -> None:
    harness = Harness(name)
    index, partial = harness.byte_cut(fraction)
    assert partial > 0  # the socket closes inside a frame
    got = await harness.run(server, [Leg(0, index, partial), Leg(index, len(harness.frames))])
    assert record_mismatches(expected_records(name), got) == []


@pytest.mark.parametrize("wait_resync", [False, True])
async def test_three_drops_in_the_concurrent_capture(
    server: FakeAmiServer, wait_resync: bool
) -> None:
    harness = Harness("g_concurrent_20", wait_resync=wait_resync)
    cuts = [harness.byte_cut(f) for f in (0.21, 0.48, 0.74)]
    legs = [Leg(0, cuts[0][0], cuts[0][1])]
    for (start, _), (stop, partial) in itertools.pairwise(cuts):
        legs.append(Leg(start, stop, partial))
    legs.append(Leg(cuts[-1][0], len(harness.frames)))
    got = await harness.run(server, legs)
    assert record_mismatches(expected_records("g_concurrent_20"), got) == []


# --------------------------------------------------------------------------- events lost


def _check_gap_result(harness: Harness, got: list[dict[str, Any]], gaps: list[range]) -> None:
    """No call lost, none twice; calls the gap did not touch are exact; with a listing taken
    at the moment of the reconnect, calls it touched keep their identity."""
    seen, touched = harness.gap_calls(gaps)
    expected = expected_records(harness.name)
    want = Counter(r["call_id"] for r in expected if r["call_id"] in seen)
    assert _ids(got) == want, "a call was lost or recorded twice"
    by_id = {r["call_id"]: r for r in got}
    for record in expected:
        lid = record["call_id"]
        if lid not in want:
            continue
        have = by_id[lid]
        if lid not in touched:
            assert record_mismatches([record], [have]) == [], lid
        elif harness.wait_resync:
            # Events were lost, but what the PBX still listed names the call correctly.
            for key in ("direction", "caller", "callee", "did"):
                assert have[key] == record[key], (lid, key)


@pytest.mark.parametrize("channels_action", ["Status", "CoreShowChannels"])
@pytest.mark.parametrize("wait_resync", [False, True])
@pytest.mark.parametrize(
    ("lost_from", "lost_to"),
    [(0.1, 0.2), (0.45, 0.6), (0.8, 0.95), (0.2, 0.7), (0.0, 0.3), (0.6, 1.0)],
)
async def test_events_lost_during_the_outage_concurrent_calls(
    server: FakeAmiServer,
    lost_from: float,
    lost_to: float,
    wait_resync: bool,
    channels_action: ChannelsAction,
) -> None:
    harness = Harness("g_concurrent_20", wait_resync=wait_resync, channels_action=channels_action)
    start, stop = harness.index_at(lost_from), harness.index_at(lost_to)
    got = await harness.run(server, [Leg(0, start, 9), Leg(stop, len(harness.frames))])
    _check_gap_result(harness, got, [range(start, stop)])


@pytest.mark.parametrize("name", CALL_CAPTURES)
async def test_a_call_that_ended_while_the_link_was_down_is_recorded_once(
    server: FakeAmiServer, name: str
) -> None:
    harness = Harness(name, wait_resync=True)
    # Down from the middle of the capture to its end: every Hangup is missed.
    start = harness.index_at(0.5)
    stop = len(harness.frames)
    got = await harness.run(server, [Leg(0, start, 11), Leg(stop, stop)])
    _check_gap_result(harness, got, [range(start, stop)])
    for record in got:
        # Ended when the resync found the channels gone: the PBX's time at the reconnect.
        assert record["ended_at"] >= record["started_at"]


@pytest.mark.parametrize("wait_resync", [False, True])
@pytest.mark.parametrize("name", CALL_CAPTURES)
async def test_a_call_that_began_while_the_link_was_down_is_recorded_once(
    server: FakeAmiServer, name: str, wait_resync: bool
) -> None:
    """Without ``wait_resync`` the fake streams the rest of a minutes-long capture in
    microseconds, so the listing may come after the call already ended: still recorded
    once, though with less detail."""
    harness = Harness(name, wait_resync=wait_resync)
    first_newchannel = next(
        i for i, f in enumerate(harness.frames) if f.startswith(b"Event: Newchannel")
    )
    stop = harness.index_at(0.4)
    got = await harness.run(server, [Leg(0, first_newchannel, 5), Leg(stop, len(harness.frames))])
    _check_gap_result(harness, got, [range(first_newchannel, stop)])


@pytest.mark.parametrize(
    ("channels_action", "did_kept"), [("Status", True), ("CoreShowChannels", False)]
)
async def test_the_did_of_a_call_transferred_during_the_outage(
    server: FakeAmiServer, channels_action: ChannelsAction, did_kept: bool
) -> None:
    """The call arrived and was transferred to 102 while the link was down: its channel's
    Exten is 102 by now; only Status still says what was dialled (DNID)."""
    name = "e_blind_transfer_refer"
    harness = Harness(name, wait_resync=True, channels_action=channels_action)
    first_newchannel = next(
        i for i, f in enumerate(harness.frames) if f.startswith(b"Event: Newchannel")
    )
    lid = headers_of(harness.frames[first_newchannel])["Linkedid"]
    moved = next(
        i
        for i, f in enumerate(harness.frames)
        if headers_of(f).get("Uniqueid") == lid and headers_of(f).get("Exten") == "102"
    )
    got = await harness.run(
        server, [Leg(0, first_newchannel, 5), Leg(moved + 1, len(harness.frames))]
    )
    (expected,) = expected_records(name)
    assert _ids(got) == Counter([expected["call_id"]])
    assert got[0]["direction"] == "inbound"
    assert got[0]["caller"] == expected["caller"]
    if did_kept:
        assert got[0]["did"] == expected["did"] == "+74951112233"
    else:
        assert got[0]["did"] != expected["did"]


# --------------------------------------------------------------------------- real resync captures


def _first_after(frames: list[bytes], epoch: float) -> int:
    for i, frame in enumerate(frames):
        ts = headers_of(frame).get("Timestamp")
        if ts and float(ts) > epoch:
            return i
    raise AssertionError(f"no frame after {epoch}")


def _answer_as_asterisk_did(
    server: FakeAmiServer, harness: Harness, prefix: str
) -> Callable[[int], None]:
    """From the next connection on, answer with the lists captured on the real PBX."""
    listing = f"{prefix}{harness.channels_action}"

    def switch(_leg: int) -> None:
        server.table = None
        server.lists[harness.channels_action.lower()] = capture(listing)
        server.lists["queuestatus"] = capture(f"{prefix}QueueStatus")
        harness.fixed_now = meta(listing)["connected_at_epoch"]

    return switch


@pytest.mark.parametrize("channels_action", ["Status", "CoreShowChannels"])
@pytest.mark.parametrize("queues", [False, True])
async def test_resync_from_the_real_lists_while_talking(
    server: FakeAmiServer, queues: bool, channels_action: ChannelsAction
) -> None:
    """Down from after the answer until the moment ``resync_*`` were taken (caller and 101
    talking): the PBX's own answers keep the call as it was."""
    name = "a_inbound_queue_answered"
    harness = Harness(name, queues=queues, wait_resync=True, channels_action=channels_action)
    start = _first_after(harness.frames, 1795722802.2)  # after both BridgeEnter
    stop = _first_after(harness.frames, meta(f"resync_{channels_action}")["connected_at_epoch"])
    harness.before_drop = _answer_as_asterisk_did(server, harness, "resync_")
    got = await harness.run(server, [Leg(0, start, 7), Leg(stop, len(harness.frames))])
    assert record_mismatches(expected_records(name), got) == []


@pytest.mark.parametrize("channels_action", ["Status", "CoreShowChannels"])
@pytest.mark.parametrize("queues", [False, True])
async def test_resync_from_the_real_lists_while_the_caller_waits(
    server: FakeAmiServer, queues: bool, channels_action: ChannelsAction
) -> None:
    """Down from before the caller joined the queue until ``resync_waiting_*`` were taken
    (caller waiting in sales, 101 ringing). Only QueueStatus tells the fold about the queue;
    without it the missed call is still recorded once, but without its queue."""
    name = "b_inbound_missed"
    harness = Harness(name, queues=queues, wait_resync=True, channels_action=channels_action)
    start = _first_after(harness.frames, 1795722876.0)  # the caller hears the greeting
    stop = _first_after(
        harness.frames, meta(f"resync_waiting_{channels_action}")["connected_at_epoch"]
    )
    harness.before_drop = _answer_as_asterisk_did(server, harness, "resync_waiting_")
    got = await harness.run(server, [Leg(0, start, 3), Leg(stop, len(harness.frames))])
    expected = expected_records(name)
    if queues:
        assert record_mismatches(expected, got) == []
    else:
        assert _ids(got) == _ids(expected)
        assert got[0]["queue"] is None
        assert got[0]["disposition"] == "missed"


# --------------------------------------------------------------------------- pure helpers


def _frames_of(name: str) -> list[Frame]:
    from ami.frames import FrameParser

    return FrameParser().feed(capture(name))


def test_resync_helpers_read_the_real_lists() -> None:
    channels = _frames_of("resync_CoreShowChannels")
    assert channel_uniqueids(channels) == {"1795722788.0", "1795722796.1"}
    assert linkedids(channels) == {"1795722788.0"}
    status = _frames_of("resync_waiting_Status")
    assert channel_uniqueids(status) == {"1795722875.2", "1795722883.3"}
    entries = queue_entries(_frames_of("resync_waiting_QueueStatus"))
    assert [(f["Queue"], f["Uniqueid"]) for f in entries] == [("sales", "1795722875.2")]
    assert queue_entries(_frames_of("resync_QueueStatus")) == []


def test_for_fold_puts_the_dialled_number_in_place_of_exten() -> None:
    status = [f for f in _frames_of("resync_waiting_Status") if f.event == "Status"]
    trunk, phone = for_fold(status)
    assert trunk["DNID"] == "78125550000" and trunk["Exten"] == "78125550000"
    assert phone["DNID"] == "" and phone["Exten"] == status[1]["Exten"]
    moved = Frame({**status[0].headers, "Exten": "s"})
    assert for_fold([moved])[0]["Exten"] == "78125550000"
    assert moved["Exten"] == "s"  # the input is not modified
    listing = _frames_of("resync_CoreShowChannels")
    assert for_fold(listing) == listing


class _Lists:
    """A list sender answering from captures (a protocol fake for resync_calls)."""

    name = "pbx-fake"

    def __init__(self, answers: dict[str, list[Frame]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def send_action_list(self, action: Any, timeout: float) -> list[Frame]:
        self.asked.append(action["Action"])
        return [f for f in self.answers[action["Action"]] if f.event is not None]


async def test_resync_calls_ends_vanished_calls_and_keeps_new_ones() -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 1795722900.0)
    frames = event_frames(capture("a_inbound_queue_answered"))
    # The call is up (both BridgeEnter seen), then the PBX lists no channel at all.
    cut = _first_after(frames, 1795722802.2)
    events: list[CallEvent] = []
    for frame in _parse(b"".join(frames[:cut])):
        events.extend(folder.feed(frame))
    sender = _Lists({"Status": [], "QueueStatus": []})
    ended = await resync_calls(
        sender, folder, feed=folder.feed, now=lambda: 1795722867.2, queues=True
    )
    assert sender.asked == ["Status", "QueueStatus"]
    assert [type(e).__name__ for e in ended] == ["CallEnded"]
    assert isinstance(ended[0], CallEnded)
    record = record_json(ended[0].record)
    assert record["call_id"] == "1795722788.0"
    assert record["extension"] == "101"
    assert record["disposition"] == "answered"
    assert folder.live_calls() == []
    # A second resync finds nothing more to end: no duplicate.
    assert await resync_calls(sender, folder, feed=folder.feed, now=lambda: 1795722868.0) == []
    json.dumps(record)


def _parse(data: bytes) -> list[Frame]:
    from ami.frames import FrameParser

    return FrameParser().feed(data)


async def test_a_phone_ringing_for_a_queue_caller_at_a_resync_names_the_queue() -> None:
    """The real lists taken while the caller waited in sales and 101 rang: the pop-up the
    resync raises names the queue (QueueStatus is read before the channels are folded)."""
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 1795722890.0)
    sender = _Lists(
        {
            "Status": _frames_of("resync_waiting_Status"),
            "QueueStatus": _frames_of("resync_waiting_QueueStatus"),
        }
    )
    events: list[CallEvent] = []

    def feed(frame: Frame) -> None:
        events.extend(folder.feed(frame))

    await resync_calls(sender, folder, feed=feed, now=lambda: 1795722890.0, queues=True)
    ringing = [e for e in events if isinstance(e, CallRinging)]
    assert [(e.extension, e.queue) for e in ringing] == [("101", "sales")]
