"""Calls the AMI link did not see, taken from the PBX's CDR (issue 14, findings 1–4).

The CDR rows are the ``Master.csv`` a real Asterisk 22.10.1 wrote during the run of the issue
(``tests/fixtures/cdr/``); the test appends them to the file the server reads as Asterisk did,
each when its call ended, while the fake AMI server plays the same calls as far as the link
heard them. The outage of the run: call A (``pbx-1796184804.5``) and D (``…805.7``) answered
before the AMI link is cut; D ends during the cut; B (``…814.9``) begins and ends during it;
C (``…816.11``) begins during it and ends after; A ends after.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ami.cdr import read_master_csv, records_from_cdr
from contact_center.keys import BUS, PBX, SESSIONS, TELEPHONY
from crm_core.calls.model import Call
from crm_core.clock import ManualClock
from crm_core.recordings.model import Recording
from tests.ami._pbx_script import Chan, Script
from tests.fakes.ami_server import AmiSession, ChannelTable, FakeAmiServer, encode
from tests.helpers import until
from tests.telephony.conftest import pbx_config, server_with_ivan

CDR = Path(__file__).resolve().parents[1] / "fixtures" / "cdr" / "Master.csv"
A, D, B, C = "pbx-1796184804.5", "pbx-1796184805.7", "pbx-1796184814.9", "pbx-1796184816.11"
THRESHOLD = 30.0  # talk that makes a call count, so the outage's calls fall on both sides


def _at(clock_time: str) -> datetime:
    return datetime.fromisoformat(f"2026-12-02T{clock_time}+00:00")


def _ts(clock_time: str) -> float:
    return _at(clock_time).timestamp()


class GrowingCdr:
    """The Master.csv the server reads, written as Asterisk writes it: a call's rows appear
    when it ended (the fixture's lines, unchanged, in their order)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = CDR.read_text(encoding="utf-8").splitlines(keepends=True)
        self.ends = [row.end for row in read_master_csv(CDR)]
        self.written = 0
        path.write_text("", encoding="utf-8")

    def until(self, moment: datetime) -> None:
        with self.path.open("a", encoding="utf-8") as out:
            while self.written < len(self.lines) and self.ends[self.written] <= moment:
                out.write(self.lines[self.written])
                self.written += 1


def _inbound(
    s: Script, lid: str, caller: str, trunk: str, leg: str, start: str, answer: str
) -> tuple[Chan, Chan]:
    """An inbound call straight to 101 (the run's ``Dial(PJSIP/101,30)``), up to its answer."""
    s.now = _ts(start)
    did = "+74951112233"
    first = Chan(f"PJSIP/provider-{trunk}", lid, lid, 4, caller, "", "from-provider", did)
    s.emit("Newchannel", first)
    phone = Chan(f"PJSIP/101-{leg}", f"{lid}-101", lid, 0, "101", "", "from-provider", "s")
    s.emit("Newchannel", phone)
    s.dial_begin(first, phone, "PJSIP/101")
    s.state(phone, 5)
    s.now = _ts(answer)
    s.state(phone, 6)
    s.dial_end(first, phone, "ANSWER")
    s.state(first, 6)
    s.enter(f"bridge-{lid}", first)
    s.enter(f"bridge-{lid}", phone)
    return first, phone


def _hangup(s: Script, at: str, *chans: Chan) -> None:
    s.now = _ts(at)
    for chan in chans:
        s.hangup(chan)


def _bytes(s: Script, table: ChannelTable) -> bytes:
    data = b"".join(encode(f.headers) for f in s.frames)
    for frame in s.frames:
        table.apply(encode(frame.headers))
    s.frames.clear()
    return data


def _tick(table: ChannelTable, at: str) -> None:
    """Time passes on the PBX (the channel list's ages count from its clock)."""
    table.apply(encode({"Event": "Tick", "Timestamp": f"{_ts(at):.6f}"}))


@pytest.fixture
async def fake_pbx() -> Any:
    async with FakeAmiServer(table=ChannelTable()) as server:
        yield server


async def _server(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    clock: ManualClock,
    spool: Path,
    cdr: Path | None,
) -> Any:
    pbx = pbx_config(fake_pbx.port)
    if cdr is not None:
        pbx["cdr"] = {"csv": str(cdr), "settle_s": 0.2, "lookback_h": 1}
    return await server_with_ivan(
        make_settings,
        aiohttp_client_factory,
        pbx,
        clock,
        CC_DATABASE_URL=database_url,
        CC_TELEPHONY_COUNT_THRESHOLD_S=str(THRESHOLD),
        CC_RECORDINGS_SPOOL_DIR=str(spool),
    )


async def _calls(client: Any) -> dict[str, Call]:
    async with client.app[SESSIONS]() as session:
        rows = (await session.scalars(select(Call).order_by(Call.id))).all()
    return {row.call_id: row for row in rows}


async def _outage(client: Any, fake_pbx: FakeAmiServer, clock: ManualClock, cdr: Any) -> None:
    """Plays the run's outage; returns once both calls alive at the reconnect have ended."""
    link = client.app[PBX]["main"]
    await until(lambda: link.link is not None and link.link.connected, timeout=10)
    session: AmiSession = fake_pbx.logged_in_sessions()[-1]
    table = fake_pbx.table
    assert table is not None
    s = Script()
    a = _inbound(s, A, "+79160000001", "00000005", "00000006", "04:13:24", "04:13:27")
    d = _inbound(s, D, "+79160000004", "00000007", "00000008", "04:13:25", "04:13:28")
    await session.send(_bytes(s, table))
    await until(lambda: len([c for c in link.folder.live_calls() if c.answered_ts]) == 2)

    # The AMI link is cut at 04:13:32; the PBX goes on without it.
    clock.set(_at("04:13:32"))
    await session.drop()
    _hangup(s, "04:13:38", *reversed(d))
    _bytes(s, table)
    c = _inbound(s, C, "+79160000003", "0000000b", "0000000c", "04:13:36", "04:13:39")
    _bytes(s, table)  # B begins and ends inside the cut: the PBX's channel list never has it
    _tick(table, "04:13:50")
    clock.set(_at("04:13:50"))
    if cdr is not None:
        cdr.until(clock.now())
    # The link is back (it reconnects on its own); A and C are still up, D is gone.
    await until(lambda: len(fake_pbx.logged_in_sessions()) == 2, timeout=15)
    await client.app[TELEPHONY].drain()
    await until(lambda: {x.call_id for x in link.folder.live_calls()} == {A, C}, timeout=10)

    clock.set(_at("04:14:20"))
    if cdr is not None:
        cdr.until(clock.now())
    _hangup(s, "04:14:07", *reversed(a))
    _hangup(s, "04:14:14", *reversed(c))
    await fake_pbx.logged_in_sessions()[-1].send(_bytes(s, table))
    await until(lambda: not link.folder.live_calls(), timeout=10)


async def test_calls_the_ami_link_missed_take_the_pbxs_record_and_are_stored_once(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> None:
    clock = ManualClock(_at("04:13:20"))
    spool = tmp_path / "spool"
    spool.mkdir()
    # B's MixMonitor file: the guide's MONITOR_FILENAME carries the linkedid.
    b_wav = f"20261202-041334-in-+79160000002-+74951112233-{B}.wav"
    (spool / b_wav).write_bytes(b"RIFF" + bytes(40) + bytes(8000))
    cdr = GrowingCdr(tmp_path / "Master.csv")
    cdr.until(clock.now())
    client = await _server(
        make_settings, database_url, fake_pbx, aiohttp_client_factory, clock, spool, cdr.path
    )
    tel = client.app[TELEPHONY]
    corrected: list[Any] = []
    client.app[BUS].subscribe_inline(corrected.append, name="test", events=["call.corrected"])
    # At start-up the calls of the CDR the server never saw are added (7 calls by then).
    await until(lambda: tel.cdr_added == 7, timeout=10)

    await _outage(client, fake_pbx, clock, cdr)
    await until(lambda: tel.cdr_corrected == 2, timeout=10)  # D at the reconnect, C after
    await tel.drain()
    # The screens that showed D's and C's estimated end are told the PBX's figures.
    told = {e.call_id: (e.talk_seconds, e.counted) for e in corrected}
    assert told == {D: (10.0, False), C: (35.0, True)}
    assert all({"ext:101", "role:head"} <= set(e.audience) for e in corrected)
    calls = await _calls(client)
    assert tel.cdr_added == 8  # ... and B
    assert len(calls) == 11
    async with client.app[SESSIONS]() as session:
        per_call = await session.execute(
            select(Call.call_id, func.count()).group_by(Call.call_id).having(func.count() > 1)
        )
        assert per_call.all() == []

    def times(call: Call) -> tuple[Any, ...]:
        return (call.answered_at, call.ended_at, call.talk_seconds, call.counted, call.estimated)

    # A: seen live from start to end: its own times (the CDR agrees: talk 40 s).
    answered_a = calls[A].answered_at
    assert answered_a is not None and answered_a.replace(microsecond=0) == _at("04:13:27")
    assert calls[A].ended_at.replace(microsecond=0) == _at("04:14:07")
    assert times(calls[A])[2:] == (40.0, True, [])
    # D: answered live, ended during the cut: the CDR's end, not the reconnect's (talk 22 s);
    # within the CDR's second, the live answer plus the billed 10 s.
    assert calls[D].ended_at.replace(microsecond=0) == _at("04:13:38")
    assert calls[D].talk_seconds == 10.0
    assert not calls[D].counted and calls[D].estimated == []
    # B: wholly inside the cut, from the CDR, with its recording.
    assert times(calls[B]) == (_at("04:13:37"), _at("04:13:43"), 6.0, False, [])
    assert (calls[B].disposition, calls[B].caller, calls[B].extension) == (
        "answered",
        "+79160000002",
        "101",
    )
    assert calls[B].recording == b_wav and calls[B].user_id is not None
    async with client.app[SESSIONS]() as session:
        recording = await session.scalar(select(Recording).where(Recording.call_ref == B))
        assert recording is not None and recording.filename == b_wav
    # C: answered during the cut (the reconnect would say 04:13:50 and talk 24 s, not
    # counted); the PBX says 04:13:39 and 35 s: counted.
    answered_c = calls[C].answered_at  # in the CDR's second: the live end less the billed 35 s
    assert answered_c is not None and answered_c.replace(microsecond=0) == _at("04:13:39")
    assert calls[C].talk_seconds == 35.0
    assert calls[C].counted and calls[C].estimated == []
    assert calls[C].started_at == _at("04:13:36")

    # Reading the CDR again (another reconnect) adds nothing and changes nothing.
    assert await client.app[PBX]["main"].reconcile_cdr(_at("04:00:00")) == (0, 0)
    assert len(await _calls(client)) == 11


async def test_without_a_cdr_the_times_not_seen_are_marked_estimated_and_shown_so(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> None:
    clock = ManualClock(_at("04:13:20"))
    client = await _server(
        make_settings, database_url, fake_pbx, aiohttp_client_factory, clock, tmp_path, None
    )
    await _outage(client, fake_pbx, clock, None)
    await client.app[TELEPHONY].drain()
    calls = await _calls(client)
    assert set(calls) == {A, C, D}  # B is lost without a CDR
    assert calls[A].estimated == []
    assert calls[D].estimated == ["ended_at"] and calls[D].ended_at == _at("04:13:50")
    assert calls[C].estimated == ["started_at", "answered_at"]
    assert calls[C].answered_at == _at("04:13:50")

    resp = await client.post("/api/v1/auth/token", json={"login": "ivan", "password": "password1"})
    headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    api = await (await client.get(f"/api/v1/calls/{calls[C].id}", headers=headers)).json()
    assert api["estimated"] == ["started_at", "answered_at"]
    login = await client.post(
        "/login", data={"login": "ivan", "password": "password1"}, allow_redirects=False
    )
    assert login.status in (302, 303)
    page = await (await client.get("/calls")).text()
    assert page.count('class="estimated"') >= 2  # C's ring and talk, D's talk


async def test_a_cdr_that_cannot_be_read_at_the_connect_is_read_again_until_it_can(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The window a connect must fill is read once: a share not mounted yet (or the CDR's
    database down) at that moment must not lose it."""
    caplog.set_level(logging.INFO, logger="contact_center.pbx")
    clock = ManualClock(_at("04:20:00"))
    cdr = tmp_path / "share" / "Master.csv"  # not there yet
    client = await _server(
        make_settings, database_url, fake_pbx, aiohttp_client_factory, clock, tmp_path, cdr
    )
    link = client.app[PBX]["main"]
    await until(lambda: link.cdr_failures >= 3, timeout=15)
    said = [r for r in caplog.records if "cannot read the CDR" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING  # once, not per retry
    cdr.parent.mkdir()
    cdr.write_bytes(CDR.read_bytes())
    expected = records_from_cdr(
        read_master_csv(CDR), trunks=["provider"], extension_pattern=r"^\d{3}$"
    )
    await until(lambda: client.app[TELEPHONY].cdr_added == len(expected), timeout=15)
    assert set(await _calls(client)) == {r.call_id for r in expected}
    assert any("the CDR is read again" in r.getMessage() for r in caplog.records)


def test_the_cdr_fold_gives_the_pbxs_own_answer_and_end() -> None:
    records = {
        r.call_id: r
        for r in records_from_cdr(
            read_master_csv(CDR), trunks=["provider"], extension_pattern=r"^\d{3}$"
        )
    }
    assert len(records) == 16
    queue = records["pbx-1796184698.2"]
    assert (queue.direction, queue.queue, queue.extension, queue.rang) == (
        "inbound",
        "sales",
        "101",
        ("101", "102"),  # as the PBX rang them (channels -00000003, -00000004), both at once
    )
    assert queue.answered_at == _at("04:11:41") and queue.talk_seconds == 45.0
    missed = records["pbx-1796184497.3"]
    assert (missed.disposition, missed.extension, missed.answered_at) == ("missed", None, None)
    out = records["pbx-1796184530.8"]
    assert (out.direction, out.caller, out.callee, out.talk_seconds) == (
        "outbound",
        "101",
        "+79161234567",
        20.0,
    )
    assert records["pbx-1796184605.12"].disposition == "missed"
    assert records[B].ended_at - records[B].started_at == timedelta(seconds=9)
    assert all(r.started_at.tzinfo is UTC for r in records.values())


async def test_a_cdr_table_reads_as_the_master_csv_does(database_url: str) -> None:
    """cdr_pgsql / cdr_adaptive_odbc: a table with start/answer/end and linkedid (here the
    fixture's rows, their uniqueid as linkedid) gives the same calls as Master.csv."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from ami.cdr import read_cdr_table

    rows = read_master_csv(CDR)
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                'CREATE TABLE cdr (start TIMESTAMP, answer TIMESTAMP, "end" TIMESTAMP,'
                " src VARCHAR(80), dst VARCHAR(80), dcontext VARCHAR(80),"
                " channel VARCHAR(80), dstchannel VARCHAR(80), lastapp VARCHAR(80),"
                " lastdata VARCHAR(80), disposition VARCHAR(45), linkedid VARCHAR(150),"
                " billsec BIGINT)"
            )
        )
        for row in rows:
            await conn.execute(
                text(
                    'INSERT INTO cdr (start, answer, "end", src, dst, dcontext, channel,'
                    " dstchannel, lastapp, lastdata, disposition, linkedid, billsec) VALUES"
                    " (:start, :answer, :end, :src, :dst, :dcontext, :channel, :dstchannel,"
                    " :lastapp, :lastdata, :disposition, :linkedid, :billsec)"
                ),
                {
                    **{
                        k: getattr(row, k)
                        for k in (
                            "src",
                            "dst",
                            "dcontext",
                            "channel",
                            "dstchannel",
                            "lastapp",
                            "lastdata",
                            "disposition",
                            "linkedid",
                            "billsec",
                        )
                    },
                    # The PBX writes naive local times (here UTC).
                    "start": row.start.replace(tzinfo=None),
                    "answer": row.answer.replace(tzinfo=None) if row.answer else None,
                    "end": row.end.replace(tzinfo=None),
                },
            )
    await engine.dispose()
    since = _at("04:13:30")
    read = await read_cdr_table(database_url, "cdr", since)
    opts: dict[str, Any] = {"trunks": ["provider"], "extension_pattern": r"^\d{3}$"}
    from_table = records_from_cdr(read, ended_since=since, **opts)
    from_csv = records_from_cdr(rows, ended_since=since, **opts)
    assert from_table == from_csv
    assert [r.call_id for r in from_table][:2] == [D, B]


def test_a_long_master_csv_is_read_from_its_tail(tmp_path: Path) -> None:
    """A CDR of years is not read whole at every reconnect: only back to the rows that ended
    well before the window (and the window's rows are all there)."""
    from ami import cdr as cdr_module

    lines = CDR.read_text(encoding="utf-8").splitlines(keepends=True)
    old = lines[0].replace("2026-12-02", "2025-01-15")
    path = tmp_path / "Master.csv"
    path.write_text(old * 40_000 + "".join(lines), encoding="utf-8")
    assert path.stat().st_size > 3 * cdr_module._TAIL_BLOCK
    since = _at("04:13:30")
    tail = read_master_csv(path, since=since)
    assert len(tail) < 40_000
    opts: dict[str, Any] = {"trunks": ["provider"], "extension_pattern": r"^\d{3}$"}
    assert records_from_cdr(tail, ended_since=since, **opts) == records_from_cdr(
        read_master_csv(CDR), ended_since=since, **opts
    )
    assert len(read_master_csv(path)) == 40_000 + len(lines)


def test_a_click_to_call_in_the_cdr_is_outbound_to_the_client_with_the_failed_leg() -> None:
    """Rows a real Asterisk 22.10.1 wrote for three click-to-calls made from the guide's
    ``[internal]`` context: answered; the manager never picked up (the Originate's own line,
    dst ``s``, the client only in src); the client never answered (the manager's leg has an
    answer time, the trunk leg NO ANSWER, then the ``Hangup()`` row)."""
    rows = read_master_csv(CDR.with_name("click_to_call.csv"))
    records = {
        r.call_id: r
        for r in records_from_cdr(rows, trunks=["provider"], extension_pattern=r"^\d{3}$")
    }
    answered = records["pbx-1796209452.11"]
    assert (answered.direction, answered.caller, answered.callee, answered.disposition) == (
        "outbound",
        "101",
        "+79169998877",
        "answered",
    )
    assert answered.unanswered_by is None
    manager = records["pbx-1796209642.30"]
    assert (manager.direction, manager.caller, manager.callee, manager.extension) == (
        "outbound",
        "101",
        "+79165554433",
        "101",
    )
    assert (manager.disposition, manager.unanswered_by) == ("missed", "manager")
    client = records["pbx-1796209703.31"]
    assert (client.direction, client.callee, client.answered_at, client.talk_seconds) == (
        "outbound",
        "+79163332211",
        None,
        0.0,
    )
    assert (client.disposition, client.unanswered_by) == ("missed", "client")


def test_a_queue_ringing_all_gives_the_phones_in_the_order_the_pbx_rang_them() -> None:
    """Recorded on Asterisk 22 (tests/fixtures/lab): Queue(sales) rang 101 (channel
    -00000016) then 102 (-00000017) in the same second; 102's leg ended first, when 101
    answered. The CDR-only record names them in the order they rang."""
    lab = Path(__file__).resolve().parents[1] / "fixtures" / "lab" / "queue_restart.csv"
    (record,) = records_from_cdr(
        read_master_csv(lab), trunks=["provider"], extension_pattern=r"^\d{3}$"
    )
    assert (record.queue, record.extension, record.rang) == ("sales", "101", ("101", "102"))
