"""The call fold on scenarios built event by event: Local-channel queue members, ring
groups, attended transfers, callbacks, expiry, resync, duplicates and bad input."""

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from ami.fold import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallFolder,
    CallRinging,
    parse_channel_name,
)
from ami.frames import Frame, FrameParser
from ami.replay import format_timestamp, record_json
from crm_core.calls.record import CallRecord
from tests.ami._pbx_script import T0, Chan, Script
from tests.ami._support import (
    COUNT_THRESHOLD_S,
    EXTENSION_PATTERN,
    TRUNKS,
    capture_bytes,
    capture_names,
    expected_records,
    frame,
)


def _folder(now: float = T0) -> CallFolder:
    return CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: now)


def _run(script: Script, folder: CallFolder | None = None) -> list[CallEvent]:
    return (folder or _folder()).feed_many(script.frames)


def _records(events: list[CallEvent]) -> list[CallRecord]:
    return [e.record for e in events if isinstance(e, CallEnded)]


def _ts(record_time: datetime | None) -> float | None:
    return None if record_time is None else record_time.timestamp()


def _inbound_caller(s: Script, did: str, name: str = "<unknown>") -> Chan:
    caller = s.channel(
        "provider", state=4, cid="+79161112233", cidname=name, context="from-provider", exten=did
    )
    return caller


# --------------------------------------------------------------------------- scenarios


def _support_queue_with_local_members(s: Script) -> dict[str, Any]:
    """DID 74951112244 → Answer → Queue(support) whose members are Local/2XX@agents/n.

    201 rings 10 s and is given up on; 202 answers after 3 s; Local optimisation then puts
    PJSIP/202 straight into the caller's bridge.
    """
    caller = _inbound_caller(s, "74951112244", name="Иван Петров")
    s.state(caller, 6)
    s.wait(0.5)
    s.emit("QueueCallerJoin", caller, Queue="support", Position="1", Count="1")

    one, two = s.local_pair("Local/201@agents", linked_to=caller)
    s.emit("AgentCalled", caller, one, Queue="support", Interface="Local/201@agents/n")
    s.dial_begin(caller, one, "Local/201@agents/n")
    phone201 = s.channel("201", linked_to=caller)
    s.dial_begin(two, phone201, "PJSIP/201")
    s.state(phone201, 5)
    s.state(one, 5)
    s.wait(10)
    s.emit("AgentRingNoAnswer", caller, one, Queue="support", RingTime="10")
    s.dial_end(caller, one, "NOANSWER")
    s.dial_end(caller, one, "CANCEL")
    s.hangup(one, 0)
    s.dial_end(two, phone201, "CANCEL")
    s.hangup(phone201, 26)
    s.hangup(two, 0)

    s.wait(1)
    one, two = s.local_pair("Local/202@agents", linked_to=caller)
    s.emit("AgentCalled", caller, one, Queue="support", Interface="Local/202@agents/n")
    s.dial_begin(caller, one, "Local/202@agents/n")
    phone202 = s.channel("202", linked_to=caller)
    s.dial_begin(two, phone202, "PJSIP/202")
    s.state(phone202, 5)
    s.state(one, 5)
    s.wait(3)
    s.state(phone202, 6)
    s.dial_end(two, phone202, "ANSWER")
    s.enter("inner-202", phone202)
    s.enter("inner-202", two)
    s.state(one, 6)
    s.dial_end(caller, one, "ANSWER")
    s.varset(caller, "MIXMONITOR_FILENAME", "/var/spool/asterisk/monitor/support-call.wav")
    s.emit("QueueCallerLeave", caller, Queue="support", Position="1", Count="0")
    s.emit("AgentConnect", caller, one, Queue="support", HoldTime="15", RingTime="3")
    s.enter("outer", one)
    answered = s.enter("outer", caller)
    s.optimize_local(one, two, "outer", "inner-202", phone202)
    s.wait(42)
    s.hangup(caller, 16, request=True)
    s.leave("outer", phone202)
    s.hangup(phone202, 16)
    return {"caller": caller, "answered_ts": float(answered["Timestamp"])}


def test_local_channel_queue_members_resolve_to_their_phones() -> None:
    s = Script()
    info = _support_queue_with_local_members(s)
    events = _run(s)
    ringing = [e for e in events if isinstance(e, CallRinging)]
    assert [(r.extension, r.caller, r.did, r.queue) for r in ringing] == [
        ("201", "+79161112233", "+74951112244", "support"),
        ("202", "+79161112233", "+74951112244", "support"),
    ]
    assert {r.caller_name for r in ringing} == {"Иван Петров"}
    answered = [e for e in events if isinstance(e, CallAnswered)]
    assert [(a.extension, a.ts) for a in answered] == [("202", info["answered_ts"])]

    [record] = _records(events)
    data = record_json(record)
    assert data["call_id"] == info["caller"].uid
    assert data["direction"] == "inbound"
    assert (data["caller"], data["callee"], data["did"]) == (
        "+79161112233",
        "+74951112244",
        "+74951112244",
    )
    assert data["queue"] == "support"
    assert data["extension"] == "202"
    assert data["rang"] == ["201", "202"]  # the phones; never the Local halves
    assert data["disposition"] == "answered"
    assert _ts(record.answered_at) == pytest.approx(info["answered_ts"], abs=1e-6)
    assert data["ring_seconds"] == pytest.approx(14.5, abs=0.1)
    assert data["talk_seconds"] == pytest.approx(42.0, abs=0.1)
    assert data["recording"] == "support-call.wav"
    assert data["hangup_cause"] == 16


def test_cyrillic_caller_name_survives_bytes_split_anywhere() -> None:
    """The same scenario serialised to AMI bytes and fed one byte at a time."""
    s = Script()
    _support_queue_with_local_members(s)
    wire = b"Asterisk Call Manager/11.0.0\r\n" + b"".join(
        "".join(f"{k}: {v}\r\n" for k, v in f.headers.items()).encode() + b"\r\n" for f in s.frames
    )
    parser = FrameParser()
    folder = _folder()
    events: list[CallEvent] = []
    for i in range(len(wire)):
        for parsed in parser.feed(wire[i : i + 1]):
            events.extend(folder.feed(parsed))
    names = [e.caller_name for e in events if isinstance(e, CallRinging)]
    assert names == ["Иван Петров", "Иван Петров"]
    assert record_json(_records(events)[0]) == record_json(_records(_run(s))[0])


def _ring_group(s: Script, answer: str | None) -> Chan:
    """DID 74957770000: no Answer, MixMonitor(b), Dial(PJSIP/101&PJSIP/102,30,tT)."""
    caller = _inbound_caller(s, "74957770000")
    s.varset(caller, "MIXMONITOR_FILENAME", "/var/spool/asterisk/monitor/rg.wav")
    s.emit("MixMonitorStart", caller)
    p101 = s.channel("101", linked_to=caller)
    p102 = s.channel("102", linked_to=caller)
    s.dial_begin(caller, p101, "101")
    s.dial_begin(caller, p102, "102")
    s.state(p101, 5)
    s.state(p102, 5)
    s.wait(6)
    if answer is None:
        s.wait(24)
        s.dial_end(caller, p101, "NOANSWER")
        s.dial_end(caller, p102, "NOANSWER")
        s.hangup(p101, 0)
        s.hangup(p102, 0)
        s.varset(caller, "DIALSTATUS", "NOANSWER")
        s.hangup(caller, 16)
        return caller
    winner, loser = (p102, p101) if answer == "102" else (p101, p102)
    s.state(winner, 6)
    s.dial_end(caller, winner, "ANSWER")
    s.dial_end(caller, loser, "CANCEL")
    s.hangup(loser, 26)
    s.state(caller, 6)
    s.enter("rg", winner)
    s.enter("rg", caller)
    s.wait(20)
    s.hangup(winner, 16, request=True)
    s.hangup(caller, 16)
    return caller


def test_ring_group_answered_by_the_second_phone() -> None:
    s = Script()
    _ring_group(s, answer="102")
    [record] = _records(_run(s))
    assert record.extension == "102"
    assert record.rang == ("101", "102")
    assert record.disposition == "answered"
    assert record.ring_seconds == pytest.approx(6.0, abs=0.1)
    assert record.talk_seconds == pytest.approx(20.0, abs=0.1)
    assert record.recording == "rg.wav"


def test_ring_group_nobody_answers() -> None:
    s = Script()
    _ring_group(s, answer=None)
    [record] = _records(_run(s))
    assert (record.disposition, record.extension, record.answered_at) == ("missed", None, None)
    assert record.rang == ("101", "102")
    assert record.recording is None  # option b: nothing was ever bridged
    assert record.talk_seconds == 0.0


def test_attended_transfer_through_a_local_consult_channel() -> None:
    """Inbound to 101; 101 presses *2, consults 102 (Local/102@internal), then hangs up."""
    s = Script()
    caller = _inbound_caller(s, "74951112255")
    p101 = s.channel("101", linked_to=caller)
    s.dial_begin(caller, p101, "101")
    s.state(p101, 5)
    s.wait(3)
    s.state(p101, 6)
    s.dial_end(caller, p101, "ANSWER")
    s.state(caller, 6)
    s.enter("b1", p101)
    first_answer = s.enter("b1", caller)
    s.wait(10)
    one, two = s.local_pair("Local/102@internal", linked_to=p101)
    s.dial_begin(None, one, "102@internal")
    p102 = s.channel("102", linked_to=p101)
    s.dial_begin(two, p102, "PJSIP/102")
    s.state(p102, 5)
    s.state(one, 5)
    s.wait(4)
    s.state(p102, 6)
    s.dial_end(two, p102, "ANSWER")
    s.enter("b3", p102)
    s.enter("b3", two)
    s.state(one, 6)
    s.dial_end(None, one, "ANSWER")
    s.leave("b1", p101)
    s.enter("b2", one)
    s.enter("b2", p101)
    s.wait(5)
    s.leave("b2", p101)
    s.emit("BridgeMerge", ToBridgeUniqueid="b1", FromBridgeUniqueid="b2")
    s.emit(
        "AttendedTransfer",
        Result="Success",
        **p101.headers("OrigTransferer"),
        OrigBridgeUniqueid="b1",
        **p101.headers("SecondTransferer"),
        SecondBridgeUniqueid="b2",
        DestType="Bridge",
        DestBridgeUniqueid="b1",
        **one.headers("TransferTarget"),
        IsExternal="No",
    )
    s.hangup(p101, 16)
    s.optimize_local(one, two, "b1", "b3", p102)
    s.wait(30)
    s.hangup(p102, 16, request=True)
    s.hangup(caller, 16)

    [record] = _records(_run(s))
    assert record.extension == "101"  # the extension that answered first
    assert record.rang == ("101", "102")
    assert record.transfers == ("102",)
    assert _ts(record.answered_at) == pytest.approx(float(first_answer["Timestamp"]), abs=1e-6)
    assert record.talk_seconds == pytest.approx(49.0, abs=0.1)


def test_blind_transfer_to_an_outside_number_is_e164_and_not_duplicated() -> None:
    s = Script()
    p101 = s.channel("101", state=4, cid="101", exten="102")
    p102 = s.channel("102", linked_to=p101)
    s.dial_begin(p101, p102, "102")
    s.state(p102, 6)
    s.enter("b", p102)
    s.enter("b", p101)
    s.wait(5)
    transfer = s.emit(
        "BlindTransfer",
        Result="Success",
        **p102.headers("Transferer"),
        **p101.headers("Transferee"),
        IsExternal="No",
        Context="internal",
        Extension="89161234567",
    )
    s.frames.append(transfer)  # the same event delivered twice
    s.hangup(p102)
    s.hangup(p101)
    [record] = _records(_run(s))
    assert record.direction == "internal"
    assert (record.caller, record.callee, record.extension) == ("101", "102", "101")
    assert record.transfers == ("+79161234567",)


def test_callback_originated_to_the_customer_first_is_outbound() -> None:
    """Originate(PJSIP/+79161234567@provider) → internal/101: the trunk leg is created first."""
    s = Script()
    trunk = s.channel("provider", state=0, context="internal", exten="s")
    s.dial_begin(None, trunk, "+79161234567@provider")
    s.state(trunk, 5)
    s.wait(4)
    s.state(trunk, 6)
    s.dial_end(None, trunk, "ANSWER")
    s.varset(trunk, "MIXMONITOR_FILENAME", "/var/spool/asterisk/monitor/cb.wav")
    p101 = s.channel("101", linked_to=trunk)
    s.dial_begin(trunk, p101, "101")
    s.state(p101, 5)
    s.wait(2)
    s.state(p101, 6)
    s.dial_end(trunk, p101, "ANSWER")
    s.enter("b", p101)
    s.enter("b", trunk)
    s.wait(30)
    s.hangup(trunk, 16, request=True)
    s.hangup(p101, 16)
    events = _run(s)
    [record] = _records(events)
    data = record_json(record)
    assert data["direction"] == "outbound"
    assert (data["caller"], data["callee"], data["did"]) == ("101", "+79161234567", None)
    assert data["extension"] == "101"
    assert data["rang"] == ["101"]
    assert data["ring_seconds"] == pytest.approx(4.0, abs=0.1)
    assert data["talk_seconds"] == pytest.approx(32.0, abs=0.1)
    assert data["recording"] == "cb.wav"
    assert [type(e) for e in events] == [CallAnswered, CallRinging, CallEnded]


def test_click_to_call_through_a_local_channel() -> None:
    """FreePBX-style Originate(Local/101@from-internal) then Dial of the customer."""
    s = Script()
    one, two = s.local_pair("Local/101@from-internal")
    s.dial_begin(None, one, "101@from-internal")
    p101 = s.channel("101", linked_to=one)
    s.dial_begin(two, p101, "PJSIP/101")
    s.state(p101, 5)
    s.state(one, 5)
    s.wait(3)
    s.state(p101, 6)
    s.dial_end(two, p101, "ANSWER")
    s.enter("inner", p101)
    s.enter("inner", two)
    s.state(one, 6)
    s.dial_end(None, one, "ANSWER")
    trunk = s.channel("provider", linked_to=one, context="from-provider")
    s.dial_begin(one, trunk, "+78125550011@provider")
    s.state(trunk, 5)
    s.wait(5)
    s.state(trunk, 6)
    s.dial_end(one, trunk, "ANSWER")
    s.enter("outer", trunk)
    s.enter("outer", one)
    s.optimize_local(one, two, "outer", "inner", p101)
    s.wait(30)
    s.hangup(trunk, 16, request=True)
    s.hangup(p101, 16)
    [record] = _records(_run(s))
    assert record.call_id == one.uid
    assert record.direction == "outbound"
    assert (record.caller, record.callee, record.extension) == ("101", "+78125550011", "101")
    assert record.rang == ("101",)
    assert record.ring_seconds == pytest.approx(8.0, abs=0.1)
    assert record.talk_seconds == pytest.approx(30.0, abs=0.1)


@pytest.mark.parametrize(
    ("dialstatus", "cause", "disposition"),
    [("BUSY", 17, "busy"), ("CONGESTION", 34, "failed"), ("CHANUNAVAIL", 20, "failed")],
)
def test_outbound_that_fails(dialstatus: str, cause: int, disposition: str) -> None:
    s = Script()
    p102 = s.channel("102", state=4, cid="102", exten="84951234567")
    trunk = s.channel("provider", linked_to=p102, context="from-provider")
    s.dial_begin(p102, trunk, "+74951234567@provider")
    s.wait(1)
    s.hangup(trunk, cause)
    s.dial_end(p102, trunk, dialstatus)
    s.varset(p102, "DIALSTATUS", dialstatus)
    s.hangup(p102, cause)
    [record] = _records(_run(s))
    assert (record.direction, record.caller, record.callee) == ("outbound", "102", "+74951234567")
    assert (record.disposition, record.hangup_cause, record.rang) == (disposition, cause, ())
    assert record.answered_at is None


def test_internal_call_to_an_unregistered_phone_fails_without_a_channel() -> None:
    s = Script()
    p101 = s.channel("101", state=4, cid="101", exten="105")
    s.varset(p101, "DIALSTATUS", "")
    s.varset(p101, "DIALSTATUS", "CHANUNAVAIL")
    s.hangup(p101, 20)
    [record] = _records(_run(s))
    assert (record.direction, record.caller, record.callee) == ("internal", "101", "105")
    assert record.disposition == "failed"


def test_queue_that_empties_is_missed_and_a_caller_who_hangs_up_abandons() -> None:
    s = Script()
    caller = _inbound_caller(s, "74951112233")
    s.state(caller, 6)
    s.emit("QueueCallerJoin", caller, Queue="sales", Position="1", Count="1")
    s.wait(5)
    s.emit("QueueCallerLeave", caller, Queue="sales", Position="1", Count="0")
    s.varset(caller, "QUEUESTATUS", "LEAVEEMPTY")
    s.hangup(caller)
    [record] = _records(_run(s))
    assert (record.queue, record.disposition) == ("sales", "missed")

    s = Script()
    caller = _inbound_caller(s, "74951112233")
    s.state(caller, 6)
    s.emit("QueueCallerJoin", caller, Queue="sales", Position="1", Count="1")
    s.wait(5)
    # No HangupRequest and no QueueCallerAbandon reached us: the Hangup alone says it.
    s.hangup(caller)
    [record] = _records(_run(s))
    assert (record.queue, record.disposition) == ("sales", "abandoned")
    assert record.ring_seconds == pytest.approx(5.0, abs=0.1)


def test_counted_threshold_is_configurable() -> None:
    s = Script()
    _ring_group(s, answer="101")
    [short] = _records(CallFolder(TRUNKS, EXTENSION_PATTERN, 20.0).feed_many(s.frames))
    [long] = _records(CallFolder(TRUNKS, EXTENSION_PATTERN, 20.1).feed_many(s.frames))
    assert short.talk_seconds == long.talk_seconds == pytest.approx(20.0, abs=0.05)
    assert (short.counted, long.counted) == (True, False)


def test_rename_moves_a_channel_to_another_phone() -> None:
    s = Script()
    caller = _inbound_caller(s, "74951112255")
    p101 = s.channel("101", linked_to=caller)
    s.dial_begin(caller, p101, "101")
    s.state(p101, 5)
    s.wait(2)
    # Call pickup by 103: the ringing leg now carries 103's phone.
    s.emit("Rename", p101, Newname="PJSIP/103-000000ff")
    p101.name = "PJSIP/103-000000ff"
    s.state(p101, 6)
    s.enter("b", p101)
    s.enter("b", caller)
    s.wait(3)
    s.hangup(p101)
    s.hangup(caller)
    [record] = _records(_run(s))
    assert (record.extension, record.rang) == ("103", ("101",))


# --------------------------------------------------------------------------- lifecycle


def _unfinished_call(s: Script) -> Chan:
    caller = _inbound_caller(s, "74951112233")
    p101 = s.channel("101", linked_to=caller)
    s.dial_begin(caller, p101, "101")
    s.state(p101, 6)
    s.enter("b", p101)
    s.enter("b", caller)
    s.wait(10)
    s.emit("RTCPSent", caller)
    return caller


def test_a_call_whose_hangup_never_comes_expires() -> None:
    s = Script()
    caller = _unfinished_call(s)
    last_ts = s.now - 0.000137
    folder = _folder()
    assert _records(folder.feed_many(s.frames)) == []
    assert [c.call_id for c in folder.live_calls()] == [caller.uid]

    assert folder.expire(now=last_ts + 3600, max_age_s=3600) == []
    events = folder.expire(now=last_ts + 3601, max_age_s=3600)
    [record] = _records(events)
    assert record.call_id == caller.uid
    assert _ts(record.ended_at) == pytest.approx(last_ts, abs=1e-6)
    assert record.hangup_cause is None
    assert record.disposition == "answered"
    assert folder.live_calls() == []
    # The lost Hangup turning up late does not resurrect the call.
    assert folder.feed(frame("Hangup", **caller.headers(), Cause="16")) == []
    assert folder.live_calls() == []


def test_reconcile_hangs_up_channels_the_pbx_no_longer_has() -> None:
    s = Script()
    gone = _unfinished_call(s)
    kept = _inbound_caller(s, "78125550000")
    folder = _folder()
    folder.feed_many(s.frames)
    marker = folder.resync_marker()
    seen = len(s.frames)
    # A call that starts while the channel listing is being produced.
    fresh = _inbound_caller(s, "74950000001")
    folder.feed_many(s.frames[seen:])

    events = folder.reconcile({kept.uid}, now=s.now + 2, since=marker)
    [record] = _records(events)
    assert record.call_id == gone.uid
    assert _ts(record.ended_at) == pytest.approx(s.now + 2, abs=1e-6)
    assert sorted(c.call_id for c in folder.live_calls()) == sorted([kept.uid, fresh.uid])
    # Without a marker the channel created after the listing would be dropped too.
    assert [r.call_id for r in _records(folder.reconcile({kept.uid}, now=s.now + 3))] == [fresh.uid]


def test_duplicate_hangup_and_newchannel_are_ignored() -> None:
    s = Script()
    caller = _inbound_caller(s, "74951112255")
    p102 = s.channel("102", linked_to=caller)
    s.dial_begin(caller, p102, "102")
    s.hangup(p102, 17)
    s.frames.append(s.frames[-1])
    s.varset(caller, "DIALSTATUS", "BUSY")
    s.hangup(caller, 17)
    hangup = s.frames[-1]
    newchannel = s.frames[0]
    s.frames += [hangup, newchannel, hangup]
    events = _run(s)
    [record] = _records(events)
    assert (record.disposition, record.hangup_cause, record.rang) == ("busy", 17, ())
    # The repeated Newchannel starts no second call.
    assert [type(e).__name__ for e in events] == ["CallStarted", "CallEnded"]


def test_hangup_of_an_unknown_channel_creates_nothing() -> None:
    folder = _folder()
    stray = Chan("PJSIP/101-00000001", "1.1", "1.0", state=6)
    assert folder.feed(frame("Hangup", Timestamp="1795800000.0", **stray.headers())) == []
    assert folder.live_calls() == []


def test_times_without_timestamp_come_from_the_injected_clock() -> None:
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, now=lambda: 1_800_000_123.5)
    caller = Chan("PJSIP/provider-00000001", "9.1", "9.1", state=4, cid="+74951234567")
    folder.feed(frame("Newchannel", **caller.headers()))
    [live] = folder.live_calls()
    assert live.started_ts == 1_800_000_123.5
    assert folder.last_timestamp == 0.0


def test_resync_listing_rebuilds_a_call_with_its_age() -> None:
    listing = FrameParser().feed(capture_bytes("resync_CoreShowChannels"))
    folder = _folder(now=1795722807.0)
    # Caller and 101 share a bridge: the listing itself shows the answer we never saw.
    assert folder.feed_many(listing) == [
        CallAnswered(
            "1795722788.0", "101", 1795722807.0, direction="inbound", client="+74951234567"
        )
    ]
    [live] = folder.live_calls()
    assert live.call_id == "1795722788.0"
    assert live.direction == "inbound"
    assert (live.caller, live.did, live.extension) == ("+74951234567", "+74951112233", "101")
    assert live.started_ts == 1795722807.0 - 18
    assert sorted(live.channels) == ["1795722788.0", "1795722796.1"]


def test_resync_queue_entry_marks_the_waiting_caller() -> None:
    folder = _folder(now=1795722888.0)
    folder.feed_many(FrameParser().feed(capture_bytes("resync_waiting_Status")))
    folder.feed_many(FrameParser().feed(capture_bytes("resync_waiting_QueueStatus")))
    [live] = folder.live_calls()
    assert (live.call_id, live.queue, live.answered_ts) == ("1795722875.2", "sales", None)
    assert live.rang == ("101",)  # the member leg was listed Ringing
    # The caller's channel vanished while waiting: a timeout or a hang-up, we cannot tell,
    # so the call is only claimed to be unanswered.
    [record] = _records(folder.reconcile(set(), now=1795722890.0))
    assert (record.queue, record.disposition, record.rang) == ("sales", "missed", ("101",))


# --------------------------------------------------------------------------- robustness


def test_bad_values_are_skipped_without_raising() -> None:
    folder = _folder()
    chan = Chan("PJSIP/provider-00000001", "5.1", "5.1", state=4, cid="+74951234567")
    bad = [
        frame("Newchannel", Timestamp="not-a-number", **chan.headers()),
        frame("Newstate", Timestamp="1795800001.0", **{**chan.headers(), "ChannelState": "x"}),
        frame("DialBegin", Timestamp="1795800001.1", DestUniqueid="nope"),
        frame("DialEnd", Timestamp="1795800001.2"),
        frame("BridgeEnter", Timestamp="1795800001.3", **chan.headers()),
        frame("BridgeMerge", Timestamp="1795800001.4", ToBridgeUniqueid="a"),
        frame("AttendedTransfer", Timestamp="1795800001.5", Result="Success"),
        frame("BlindTransfer", Timestamp="1795800001.6", Result="Success", Extension="1"),
        frame("VarSet", Timestamp="1795800001.7", Variable="DIALSTATUS", Value="BUSY"),
        frame("Rename", Timestamp="1795800001.8", Uniqueid="5.1"),
        frame("CoreShowChannel", Uniqueid="6.1"),
        frame("QueueEntry", Uniqueid="5.1", Queue="sales"),
        frame("Hangup", Timestamp="1795800002.0", **chan.headers(), Cause="sixteen"),
    ]
    events = folder.feed_many(bad)
    [record] = _records(events)
    assert record.call_id == "5.1"
    assert record.hangup_cause is None
    assert folder.skipped_frames == 0


def test_mutated_real_events_never_reach_the_catch_all() -> None:
    """Fuzz: real frames with headers dropped or replaced; handlers must cope on their own."""
    rng = random.Random(7)
    frames = FrameParser().feed(capture_bytes("e_blind_transfer_refer"))
    frames += FrameParser().feed(capture_bytes("resync_CoreShowChannels"))
    junk = ["", "x", "-1", "1e999", "nan", "Иван", "PJSIP/", "Local/;2", "@", "99999999999999"]
    for _ in range(5):
        folder = _folder()
        for original in frames:
            headers = dict(original.headers)
            for key in list(headers):
                roll = rng.random()
                if key != "Event" and roll < 0.08:
                    del headers[key]
                elif key != "Event" and roll < 0.16:
                    headers[key] = rng.choice(junk)
            folder.feed(Frame(headers))
        assert folder.skipped_frames == 0
        for event in folder.expire(now=1e12, max_age_s=0):
            assert isinstance(event, CallEnded)
            assert isinstance(record_json(event.record), dict)
        assert folder.live_calls() == []


# --------------------------------------------------------------------------- helpers


def test_parse_channel_name() -> None:
    assert parse_channel_name("PJSIP/provider-00000002") == ("PJSIP", "provider", None, 0)
    assert parse_channel_name("PJSIP/my-trunk-0000000a") == ("PJSIP", "my-trunk", None, 0)
    assert parse_channel_name("Local/201@agents-0000001a;2") == (
        "Local",
        "201",
        "Local/201@agents-0000001a",
        2,
    )
    assert parse_channel_name("Local/FMPR-201@from-internal-00000003;1")[1] == "FMPR-201"
    assert parse_channel_name("garbage") == ("", "garbage", None, 0)


def test_format_timestamp_truncates_to_milliseconds() -> None:
    moment = datetime(2026, 11, 26, 19, 53, 8, 254999, tzinfo=UTC)
    assert format_timestamp(moment) == "2026-11-26T19:53:08.254Z"


def test_every_capture_folds_with_a_single_folder_in_sequence() -> None:
    """The PBX was not restarted between the traces: one long-lived folder handles them all."""
    folder = _folder()
    ids: list[str] = []
    want: list[str] = []
    for name in capture_names():
        want += [r["call_id"] for r in expected_records(name)]
        for event in folder.feed_many(FrameParser().feed(capture_bytes(name))):
            if isinstance(event, CallEnded):
                ids.append(event.call_id)
    assert ids == want
    assert len(set(ids)) == 28
    # The resync listings were taken during calls that have ended since: nothing revives.
    assert folder.live_calls() == []
