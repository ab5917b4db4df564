"""Every real capture folds into exactly its ``.expected.jsonl``, however it is chunked."""

import json
import re
from typing import Any

import pytest

from ami.fold import NEEDED, CallAnswered, CallEnded, CallFolder, CallRinging, CallStarted
from ami.frames import EventFilter, Frame, FrameParser
from ami.replay import record_json, replay_bytes, replay_chunks, replay_file
from tests.ami._support import (
    COUNT_THRESHOLD_S,
    EXTENSION_PATTERN,
    FIXTURES,
    TRUNKS,
    capture_bytes,
    capture_names,
    expected_records,
    meta,
    record_mismatches,
    recv_chunks,
)

CAPTURES = capture_names()
CONFIG: dict[str, Any] = {
    "trunks": list(TRUNKS),
    "extension_pattern": EXTENSION_PATTERN,
    "count_threshold_s": COUNT_THRESHOLD_S,
}


def _frames(data: bytes) -> list[Frame]:
    parser = FrameParser()
    return parser.feed(data) + parser.flush()


def _fold(frames: list[Frame], folder: CallFolder | None = None) -> list[dict[str, Any]]:
    if folder is None:
        folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    return [
        record_json(event.record)
        for event in folder.feed_many(frames)
        if isinstance(event, CallEnded)
    ]


def test_the_fixture_set_is_complete() -> None:
    assert len(CAPTURES) == 16
    for name in CAPTURES:
        assert (FIXTURES / f"{name}.expected.jsonl").is_file()
        assert (FIXTURES / f"{name}.meta.json").is_file()


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_in_one_chunk(name: str) -> None:
    got = replay_bytes(capture_bytes(name), **CONFIG)
    assert record_mismatches(expected_records(name), got) == []


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_in_one_byte_chunks(name: str) -> None:
    got = replay_bytes(capture_bytes(name), chunk_size=1, **CONFIG)
    assert record_mismatches(expected_records(name), got) == []


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_in_original_recv_chunks(name: str) -> None:
    chunks = recv_chunks(name)
    assert b"".join(chunks) == capture_bytes(name)
    got = replay_chunks(chunks, **CONFIG)
    assert record_mismatches(expected_records(name), got) == []


def _live_and_records(frames: list[Frame]) -> tuple[list[Any], list[dict[str, Any]]]:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(frames)
    live = [e for e in events if isinstance(e, CallStarted | CallRinging | CallAnswered)]
    return live, [record_json(e.record) for e in events if isinstance(e, CallEnded)]


@pytest.mark.parametrize("name", CAPTURES)
def test_events_the_fold_does_not_need_are_dropped_unparsed(name: str) -> None:
    """The live link drops what the fold does not read (fold.NEEDED) before parsing it: the
    same calls and the same live events come out of every real capture, in its recv chunks."""
    filtered = FrameParser(keep=NEEDED)
    frames = [f for chunk in recv_chunks(name) for f in filtered.feed(chunk)] + filtered.flush()
    live, records = _live_and_records(frames)
    assert record_mismatches(expected_records(name), records) == []
    assert live == _live_and_records(_frames(capture_bytes(name)))[0]
    everything = _frames(capture_bytes(name))
    assert len(frames) + filtered.skipped_events == len(everything)
    assert all(
        f.event is None
        or f.event in NEEDED.events
        or f.get("ActionID")
        or (f.event == "VarSet" and f.get("Variable") in NEEDED.variables)
        for f in frames
    )


def test_an_inbound_call_is_mostly_events_the_fold_does_not_need() -> None:
    filtered = FrameParser(keep=NEEDED)
    kept = filtered.feed(capture_bytes("c_inbound_short_answered")) + filtered.flush()
    assert filtered.skipped_events > 3 * len(kept)  # 136 of 177 frames


def test_the_filter_keeps_answers_and_named_variables() -> None:
    keep = EventFilter(frozenset({"Hangup"}), frozenset({"DIALSTATUS"}))
    parser = FrameParser(keep=keep)
    data = (
        b"Event: VarSet\r\nVariable: DIALSTATUS\r\nValue: BUSY\r\n\r\n"
        b"Event: VarSet\r\nVariable: DIALSTATUS_OTHER\r\nValue: x\r\n\r\n"
        b"Event: Newexten\r\nChannel: PJSIP/101-1\r\n\r\n"
        b"Event: CoreShowChannel\r\nActionID: 7\r\nChannel: PJSIP/101-1\r\n\r\n"
        b"Response: Success\r\nActionID: 8\r\n\r\n"
        b"Event: Hangup\r\nCause: 16\r\n\r\n"
        b"Event: VarSet\r\nValue: no variable header\r\n\r\n"
    )
    frames = parser.feed(data)
    assert [(f.event, f.get("Variable") or f.get("ActionID")) for f in frames] == [
        ("VarSet", "DIALSTATUS"),
        ("CoreShowChannel", "7"),
        (None, "8"),
        ("Hangup", None),
    ]
    assert parser.skipped_events == 3


def test_of_a_media_report_only_what_the_fold_reads_is_taken() -> None:
    parser = FrameParser(keep=NEEDED)
    rtcp = (
        b"Event: RTCPSent\r\nPrivilege: reporting,all\r\nChannel: PJSIP/101-1\r\n"
        b"Uniqueid: 17.1\r\nLinkedid: 17.0\r\nSSRC: 0x1\r\nTimestamp: 1795722921.5\r\n"
    )
    frames = parser.feed(
        rtcp
        + b"\r\n"
        + b"Event: RTCPReceived\r\nUniqueid: 17.2\r\nSentNTP: 1\r\n\r\n"
        + rtcp
        + b"ActionID: 9\r\n\r\n"  # an answer to one of our actions: whole
    )
    assert [f.headers for f in frames] == [
        {"Event": "RTCPSent", "Uniqueid": "17.1", "Linkedid": "17.0", "Timestamp": "1795722921.5"},
        {"Event": "RTCPReceived", "Uniqueid": "17.2"},
        _frames(rtcp + b"ActionID: 9\r\n\r\n")[0].headers,
    ]
    assert len(frames[2]) == 8


def test_media_reports_are_most_of_what_the_fold_keeps() -> None:
    """Why they are cut short: in the real captures they are most of the kept frames' bytes."""
    kept = [
        f for name in CAPTURES for f in _frames(capture_bytes(name)) if f.event in NEEDED.events
    ]
    media = [f for f in kept if f.event in NEEDED.partial]
    assert sum(map(len, media)) > sum(map(len, kept)) / 2  # headers, as a stand-in for bytes


@pytest.mark.parametrize("name", CAPTURES)
def test_replay_file_and_its_json_lines(name: str) -> None:
    got = replay_file(FIXTURES / f"{name}.ami", **CONFIG)
    assert record_mismatches(expected_records(name), got) == []
    # What the CLI prints must survive a JSON round trip unchanged.
    for record in got:
        assert json.loads(json.dumps(record, ensure_ascii=False)) == record


@pytest.mark.parametrize("name", CAPTURES)
def test_reconnect_in_the_middle(name: str) -> None:
    """A new connection (fresh parser, banner, login) halfway through; the fold survives."""
    data = capture_bytes(name)
    cut = data.find(b"\r\n\r\n", len(data) // 2) + 4
    assert 4 <= cut <= len(data)
    login = (
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Response: Success\r\nActionID: re-1\r\nMessage: Authentication accepted\r\n\r\n"
        b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
    )
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    first, second = FrameParser(), FrameParser()
    # The first connection dies with half a frame in flight, which is simply lost.
    records = _fold(first.feed(data[:cut] + b"Event: Newst"), folder)
    assert first.pending > 0
    records += _fold(second.feed(login + data[cut:]) + second.flush(), folder)
    assert second.banner == "Asterisk Call Manager/11.0.0"
    assert record_mismatches(expected_records(name), records) == []


@pytest.mark.parametrize("name", CAPTURES)
def test_every_event_delivered_twice(name: str) -> None:
    frames = _frames(capture_bytes(name))
    doubled = [f for frame in frames for f in (frame, frame)]
    assert record_mismatches(expected_records(name), _fold(doubled)) == []


@pytest.mark.parametrize("name", CAPTURES)
def test_a_window_of_events_replayed_after_a_reconnect(name: str) -> None:
    """The last 40 events before the cut arrive again (a client that re-reads its backlog)."""
    frames = _frames(capture_bytes(name))
    cut = len(frames) // 2
    replayed = frames[:cut] + frames[max(0, cut - 40) : cut] + frames[cut:]
    assert record_mismatches(expected_records(name), _fold(replayed)) == []


def test_live_events_of_an_answered_queue_call() -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(_frames(capture_bytes("a_inbound_queue_answered")))
    assert [type(e) for e in events] == [CallStarted, CallRinging, CallAnswered, CallEnded]
    started, ringing, answered, ended = events
    assert isinstance(started, CallStarted)
    assert isinstance(ringing, CallRinging)
    assert isinstance(answered, CallAnswered)
    assert isinstance(ended, CallEnded)
    # The caller is known as the trunk channel appears, 7.8 s of greeting before the ring.
    assert (started.call_id, started.caller, started.did) == (
        "1795722788.0",
        "+74951234567",
        "+74951112233",
    )
    assert started.ts == pytest.approx(ringing.ts - 7.85, abs=0.05)
    assert ringing.call_id == answered.call_id == ended.call_id == "1795722788.0"
    assert (ringing.caller, ringing.did, ringing.extension, ringing.queue) == (
        "+74951234567",
        "+74951112233",
        "101",
        "sales",
    )
    assert ringing.ts == pytest.approx(1795722796.106, abs=0.01)
    assert answered.extension == "101"
    assert ended.record.answered_at is not None
    assert answered.ts == ended.record.answered_at.timestamp()
    assert folder.live_calls() == []


def test_live_events_of_the_blind_transfer_ring_both_phones() -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(_frames(capture_bytes("e_blind_transfer_refer")))
    ringing = [e for e in events if isinstance(e, CallRinging)]
    assert [(r.extension, r.caller) for r in ringing] == [
        ("101", "+74951230001"),
        ("102", "+74951230001"),
    ]
    assert len([e for e in events if isinstance(e, CallAnswered)]) == 1


def test_live_events_of_click_to_call_and_busy() -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(_frames(capture_bytes("d2_click_to_call_originate")))
    ringing = [e for e in events if isinstance(e, CallRinging)]
    # The manager's phone rings showing the client the Originate is for.
    assert [(r.extension, r.caller, r.did) for r in ringing] == [("101", "+74951234567", None)]
    answered = [e for e in events if isinstance(e, CallAnswered)]
    assert [a.extension for a in answered] == ["101"]

    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(_frames(capture_bytes("h_direct_busy")))
    assert [type(e) for e in events] == [CallStarted, CallEnded]
    # An outbound call (the click-to-call's trunk leg is ours, outgoing) starts nothing.
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(_frames(capture_bytes("d_outbound_answered")))
    assert not [e for e in events if isinstance(e, CallStarted)]


def test_concurrent_calls_end_in_order_and_stay_separate() -> None:
    got = replay_bytes(capture_bytes("g_concurrent_20"), **CONFIG)
    ends = [r["ended_at"] for r in got]
    assert ends == sorted(ends)
    assert len({r["call_id"] for r in got}) == 20
    assert len({r["extension"] for r in got}) == 20
    # Cross-check with the plan the simulator played (ground truth independent of events).
    by_caller = {r["caller"]: r for r in got}
    plan = meta("g_concurrent_20")["plan"]["calls"]
    assert sorted(by_caller) == sorted(p["caller"] for p in plan)
    for planned in plan:
        record = by_caller[planned["caller"]]
        assert record["did"] == "+" + planned["did"]
        assert record["queue"] == planned["queue"]
        assert 201 <= int(record["extension"]) <= 220
        assert record["rang"] == [record["extension"]]
        assert record["talk_seconds"] == pytest.approx(planned["talk_s"], abs=1.0)
        assert record["counted"] is (record["talk_seconds"] >= 60)


def test_resync_listing_during_a_call_keeps_it_alive_and_finishes_it_later() -> None:
    """Trace a, connection lost before 101 answered, resync by CoreShowChannels, then the rest.

    The resync capture was taken during trace a, ~5 s after 101 answered: both channels are
    listed, in one bridge. Events between the drop and the listing are lost.
    """
    data = capture_bytes("a_inbound_queue_answered")
    frames = _frames(data)
    resync_at = meta("resync_CoreShowChannels")["connected_at_epoch"]
    timed = [f for f in frames if f.get("Timestamp")]
    before = [f for f in timed if float(f["Timestamp"]) < resync_at - 10]
    after = [f for f in timed if float(f["Timestamp"]) > resync_at]
    assert before and after
    clock = [resync_at]
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: clock[0])
    assert _fold(before, folder) == []
    [live] = folder.live_calls()
    assert live.answered_ts is None  # the answer was among the lost events

    marker = folder.resync_marker()
    listing = _frames(capture_bytes("resync_CoreShowChannels"))
    assert _fold(listing, folder) == []
    active = {f["Uniqueid"] for f in listing if f.event == "CoreShowChannel"}
    assert folder.reconcile(active, resync_at, since=marker) == []
    [live] = folder.live_calls()
    assert live.extension == "101"  # the listing shows caller and 101 in one bridge
    assert live.answered_ts == resync_at

    [record] = _fold(after, folder)
    assert record["call_id"] == "1795722788.0"
    assert record["extension"] == "101"
    assert record["disposition"] == "answered"
    assert record["ended_at"] == expected_records("a_inbound_queue_answered")[0]["ended_at"]


def test_resync_listing_without_the_call_ends_it() -> None:
    frames = _frames(capture_bytes("b_inbound_missed"))
    head = frames[: len(frames) // 2]
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    assert _fold(head, folder) == []
    assert [c.call_id for c in folder.live_calls()] == ["1795722875.2"]
    events = folder.reconcile(set(), now=1795722900.0)
    [ended] = events
    assert isinstance(ended, CallEnded)
    record = ended.record
    assert record.ended_at.timestamp() == 1795722900.0
    assert record.disposition == "missed"
    assert folder.live_calls() == []
    # The rest of the capture (a late Hangup of a call already closed) is ignored.
    assert _fold(frames[len(frames) // 2 :], folder) == []


def test_the_documented_pbx_side_filter_lets_through_what_the_fold_needs() -> None:
    """docs/asterisk.md's manager.conf eventfilter lines name exactly fold.NEEDED (less the
    lists that answer our own actions, which no filter stops; plus the link's own events)."""
    doc = (FIXTURES.parents[2] / "docs" / "asterisk.md").read_text(encoding="utf-8")
    events = re.search(r"^eventfilter = Event: \(([^)]*)\)$", doc, re.M)
    variables = re.search(r"^eventfilter = Variable: \(([^)]*)\)$", doc, re.M)
    assert events is not None and variables is not None
    answers = {"CoreShowChannel", "Status", "QueueEntry"}  # lists answering our actions
    link_own = {"OriginateResponse", "FullyBooted"}
    assert set(events.group(1).split("|")) == (NEEDED.events - answers) | link_own
    assert set(variables.group(1).split("|")) == NEEDED.variables
