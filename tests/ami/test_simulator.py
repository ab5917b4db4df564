"""The demo's simulated PBX produces traffic our fold reads like the real captures."""

from __future__ import annotations

import asyncio
from typing import Any

from ami.fold import CallEnded, CallFolder, CallRinging
from ami.frames import FrameParser
from ami.replay import record_json
from ami.simulator import SimulatedPbx


async def _session(
    pbx: SimulatedPbx, secret: str = "demo"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(pbx.host, pbx.port)
    writer.write(
        f"Action: Login\r\nActionID: 1\r\nUsername: cc\r\nSecret: {secret}\r\n\r\n".encode()
    )
    await writer.drain()
    return reader, writer


async def _collect(
    reader: asyncio.StreamReader, folder: CallFolder, calls: int, events: list[object]
) -> list[dict[str, Any]]:
    parser = FrameParser()
    records: list[dict[str, Any]] = []
    while len(records) < calls:
        data = await reader.read(65536)
        assert data, "simulator closed the connection"
        for frame in parser.feed(data):
            for ev in folder.feed(frame):
                events.append(ev)
                if isinstance(ev, CallEnded):
                    records.append(record_json(ev.record))
    return records


async def test_replayed_calls_carry_the_requested_numbers() -> None:
    pbx = SimulatedPbx(speed=50.0)
    await pbx.start()
    try:
        reader, writer = await _session(pbx)
        folder = CallFolder(["provider"], r"^\d{3}$")
        await asyncio.sleep(0.05)
        pbx.play("c_inbound_short_answered", outside="79161112233", did="78125550000")
        pbx.play("b_inbound_missed", outside="79035556677", did="74951112233")
        events: list[object] = []
        records = await asyncio.wait_for(_collect(reader, folder, 2, events), 10)
        by_caller = {r["caller"]: r for r in records}
        answered, missed = by_caller["+79161112233"], by_caller["+79035556677"]
        assert answered["did"] == "+78125550000" and answered["disposition"] == "answered"
        assert answered["extension"] == "101" and answered["direction"] == "inbound"
        assert missed["did"] == "+74951112233" and missed["disposition"] == "missed"
        assert answered["call_id"] != missed["call_id"]
        assert any(isinstance(e, CallRinging) and e.extension == "101" for e in events)
        writer.close()
    finally:
        await pbx.close()


async def test_originate_plays_a_click_to_call_for_that_extension_and_number() -> None:
    pbx = SimulatedPbx(speed=50.0)
    await pbx.start()
    try:
        reader, writer = await _session(pbx)
        writer.write(
            b"Action: Originate\r\nActionID: c2c-1\r\nChannel: PJSIP/102\r\nContext: internal\r\n"
            b"Exten: +74997654321\r\nPriority: 1\r\nAsync: true\r\n\r\n"
        )
        await writer.drain()
        folder = CallFolder(["provider"], r"^\d{3}$")
        records = await asyncio.wait_for(_collect(reader, folder, 1, []), 10)
        call = records[0]
        assert call["direction"] == "outbound"
        assert call["extension"] == "102" and call["callee"] == "+74997654321"
        writer.close()
    finally:
        await pbx.close()


async def test_wrong_secret_is_refused() -> None:
    pbx = SimulatedPbx()
    await pbx.start()
    try:
        reader, writer = await _session(pbx, secret="nope")
        data = b""
        while b"\r\n\r\n" not in data.split(b"\r\n", 1)[-1]:
            data += await asyncio.wait_for(reader.read(1024), 5)
        assert b"Response: Error" in data and b"Authentication failed" in data
        writer.close()
    finally:
        await pbx.close()


async def test_every_replayed_call_keeps_ids_of_its_own() -> None:
    """The capture rings extension 101; a replay to another extension rewrites "101" in the
    frames, which once also rewrote the fresh id "<epoch>.101" of the 51st call into the id of
    a later call: two calls with one Linkedid (bench/screen_pop.py then saw a pop-up "at
    another manager's socket")."""
    pbx = SimulatedPbx(speed=2000.0)
    await pbx.start()
    try:
        reader, writer = await _session(pbx)
        await asyncio.sleep(0.05)
        calls = 90
        plays = [
            pbx.play("c_inbound_short_answered", outside=f"7916{n:07d}", extension=str(110 + n))
            for n in range(calls)
        ]
        await asyncio.gather(*plays)
        pbx.broadcast(b"Event: End\r\n\r\n")
        data = b""
        while not data.endswith(b"Event: End\r\n\r\n"):
            chunk = await asyncio.wait_for(reader.read(1 << 20), 5)
            assert chunk, "simulator closed the connection"
            data += chunk
        # Every id a frame names belongs to the one call whose caller the frame names.
        callers: dict[str, set[str]] = {}
        linkedids: set[str] = set()
        for frame in FrameParser().feed(data):
            numbers = {
                value
                for key in ("CallerIDNum", "ConnectedLineNum", "DestCallerIDNum")
                if (value := frame.get(key)) and value.startswith("+7916")
            }
            for key in ("Uniqueid", "Linkedid", "DestUniqueid", "DestLinkedid"):
                if value := frame.get(key):
                    callers.setdefault(value, set()).update(numbers)
            linkedids.add(frame.get("Linkedid") or "")
        shared = {id_: numbers for id_, numbers in callers.items() if len(numbers) > 1}
        assert not shared, f"ids shared by calls: {shared}"
        assert len(linkedids - {""}) == calls
        writer.close()
    finally:
        await pbx.close()
