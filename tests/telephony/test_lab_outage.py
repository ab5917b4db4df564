"""An AMI outage on a real Asterisk 22.10.1, replayed: the asterisk lab's ``outage_scenario.sh``
(``tests/fixtures/lab/README.md``).

The fake AMI server plays the captured events as far as the server's link heard them: up to
the cut, then, after the reconnect, the rest; the events of the cut only change the PBX's
channel list the resync reads. ``Master.csv`` gets the PBX's own rows of the four calls, each
once its call ended, as Asterisk wrote them.

The CDR's times are whole seconds (truncated); the AMI events' are microseconds. A call the
link saw answered and the CDR saw end (D) talked 10.0 s, not 9.06 s; one the CDR saw answered
and the link saw end (C) 35.0 s, not 35.96 s: the PBX's billsec says which second.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ami.cdr import read_master_csv, records_from_cdr
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS, TELEPHONY
from crm_core.calls.model import Call
from crm_core.clock import ManualClock
from tests.fakes.ami_server import ChannelTable, FakeAmiServer, event_frames, headers_of
from tests.helpers import until
from tests.telephony.conftest import pbx_config, server_with_ivan

LAB = Path(__file__).resolve().parents[1] / "fixtures" / "lab"
META = json.loads((LAB / "outage_subsecond.meta.json").read_text(encoding="utf-8"))
A, D, B, C = (c["id"] for c in META["plan"]["calls"])
THRESHOLD = 10.0  # D talked exactly 10 s: it counts only if its talk is measured right


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _ts(frame: bytes) -> float:
    return float(headers_of(frame)["Timestamp"])


@pytest.fixture
async def fake_pbx() -> Any:
    async with FakeAmiServer(table=ChannelTable()) as server:
        yield server


async def _replay_cut(
    name: str,
    live_at_back: set[str],
    corrected: int,
    *,
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> tuple[dict[str, Call], Any]:
    """Play ``lab/<name>.ami`` as the server's link heard it around the cut of its
    ``.meta.json``, with ``<name>.csv`` written as the PBX wrote it; wait until the calls
    ``live_at_back`` are followed again after the reconnect, every call has ended and the
    CDR corrected ``corrected`` of them. The calls stored, and the telephony service."""
    meta = json.loads((LAB / f"{name}.meta.json").read_text(encoding="utf-8"))
    cut, back = meta["cut_epoch"], meta["back_epoch"]
    frames = event_frames((LAB / f"{name}.ami").read_bytes())
    heard = [f for f in frames if _ts(f) < cut]
    unheard = [f for f in frames if cut <= _ts(f) < back]
    later = [f for f in frames if _ts(f) >= back]
    rows = (LAB / f"{name}.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    ends = [row.end for row in read_master_csv(LAB / f"{name}.csv")]
    master = tmp_path / "Master.csv"
    master.write_text("", encoding="utf-8")

    def cdr_until(moment: datetime) -> None:
        master.write_text("".join(r for r, end in zip(rows, ends, strict=True) if end <= moment))

    clock = ManualClock(_at(_ts(frames[0]) - 1))
    pbx = pbx_config(
        fake_pbx.port,
        cdr={"csv": str(master), "settle_s": 0.2, "lookback_h": 1, "timezone": "UTC"},
    )
    client = await server_with_ivan(
        make_settings,
        aiohttp_client_factory,
        pbx,
        clock,
        CC_DATABASE_URL=database_url,
        CC_TELEPHONY_COUNT_THRESHOLD_S=str(THRESHOLD),
        CC_RECORDINGS_SPOOL_DIR=str(tmp_path),
    )
    link = client.app[PBX]["main"]
    tel = client.app[TELEPHONY]
    table = fake_pbx.table
    assert table is not None
    await until(lambda: link.link is not None and link.link.connected, timeout=10)

    await fake_pbx.logged_in_sessions()[-1].send_frames(heard, table=table)
    await until(lambda: len([c for c in link.folder.live_calls() if c.answered_ts]) >= 1)
    clock.set(_at(cut))
    await fake_pbx.logged_in_sessions()[-1].drop()
    table.apply_all(unheard)  # what the PBX did while nobody listened
    clock.set(_at(back))
    cdr_until(clock.now())
    await until(lambda: len(fake_pbx.logged_in_sessions()) == 2, timeout=15)
    await until(lambda: {x.call_id for x in link.folder.live_calls()} == live_at_back, timeout=10)

    clock.set(_at(max(_ts(frames[-1]), back) + 1))
    cdr_until(clock.now())
    await fake_pbx.logged_in_sessions()[-1].send_frames(later, table=table)
    await until(lambda: not link.folder.live_calls(), timeout=10)
    await until(lambda: tel.cdr_corrected == corrected, timeout=10)
    await tel.drain()
    async with client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(Call))).all()
        twice = await session.execute(
            select(Call.call_id).group_by(Call.call_id).having(func.count() > 1)
        )
        assert twice.all() == []
    return {c.call_id: c for c in stored}, tel


async def test_an_outage_on_a_real_pbx_gives_each_call_the_talk_the_pbx_billed(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> None:
    calls, tel = await _replay_cut(
        "outage_subsecond",
        {A, C},
        2,  # D at the reconnect, C after its end
        make_settings=make_settings,
        database_url=database_url,
        fake_pbx=fake_pbx,
        aiohttp_client_factory=aiohttp_client_factory,
        tmp_path=tmp_path,
    )
    assert tel.cdr_added == 1  # B
    assert set(calls) == {A, B, C, D}
    talk = {name: calls[cid].talk_seconds for name, cid in zip("ADBC", (A, D, B, C), strict=True)}
    # What the callers did (byeN: N s after the answer) and the PBX billed (billsec).
    assert talk == {"A": 40.0, "D": 10.0, "B": 6.0, "C": 35.0}
    assert [calls[cid].counted for cid in (A, D, B, C)] == [True, True, False, True]
    assert all(c.estimated == [] and c.disposition == "answered" for c in calls.values())
    # D's end moved into the second the CDR wrote (17:26:49), answer + the billed 10 s.
    d_end = calls[D].ended_at
    assert d_end.replace(microsecond=0) == _at(1796232409) and d_end.microsecond > 900_000
    # C's answer likewise into the CDR's second (17:26:50), its live end less 35 s.
    c_answer = calls[C].answered_at
    assert c_answer is not None and c_answer.replace(microsecond=0) == _at(1796232410)


async def test_a_click_to_call_ended_in_an_outage_talks_from_the_clients_answer(
    make_settings: Any,
    database_url: str,
    fake_pbx: FakeAmiServer,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> None:
    """The CDR bills a click-to-call from the manager's answer (17:23:06, billsec 69); the
    link saw the client answer at 17:23:10.197: the talk runs from there to the CDR's end
    (17:24:15), not the billed 69 s."""
    calls, _tel = await _replay_cut(
        "click_to_call",
        set(),
        1,
        make_settings=make_settings,
        database_url=database_url,
        fake_pbx=fake_pbx,
        aiohttp_client_factory=aiohttp_client_factory,
        tmp_path=tmp_path,
    )
    (call,) = calls.values()
    assert (call.direction, call.caller, call.callee) == ("outbound", "101", "+79161234567")
    assert call.answered_at == datetime(2026, 12, 2, 17, 23, 10, 197424, UTC)
    assert call.ended_at == datetime(2026, 12, 2, 17, 24, 15, tzinfo=UTC)
    assert (call.talk_seconds, call.estimated) == (64.8, [])


def test_a_call_the_cdr_alone_knows_talked_what_the_pbx_billed(tmp_path: Path) -> None:
    """B's row of the run, answered 0.9 s into its second and ended 0.1 s into another: its
    times are 60 s apart, but it talked 59.2 s and the PBX billed 59 (not counted)."""
    row = (LAB / "outage_subsecond.csv").read_text(encoding="utf-8").splitlines()[1]
    row = row.replace('"2026-12-02 17:26:54",9,6,', '"2026-12-02 17:27:48",63,59,')
    master = tmp_path / "Master.csv"
    master.write_text(row + "\n", encoding="utf-8")
    (record,) = records_from_cdr(
        read_master_csv(master), trunks=["provider"], extension_pattern=r"^\d{3}$"
    )
    assert record.call_id == B and record.billsec == 59
    assert record.answered_at is not None
    assert (record.ended_at - record.answered_at).total_seconds() == 60
    assert (record.talk_seconds, record.counted) == (59.0, False)


def test_a_fresh_pbx_has_an_empty_cdr_until_its_first_call_ends(tmp_path: Path) -> None:
    """The lab's PBX had no Master.csv until a call ended: the server warned "cannot read the
    CDR" at every retry (1 s, 2 s … every minute) and counted failures on /healthz. A folder
    without the file is an empty CDR; a missing folder (a share not mounted) still fails."""
    assert read_master_csv(tmp_path / "Master.csv") == []
    with pytest.raises(FileNotFoundError):
        read_master_csv(tmp_path / "share" / "Master.csv")


async def test_a_queue_call_in_progress_at_a_restart_keeps_its_queue_and_who_rang(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any, tmp_path: Path
) -> None:
    """The server starts while a queue call is talking (the lab's server restarted 5 s into
    the talk): the channel list has no queue and no phone that rang, only 101 talking. The
    call was stored with queue null and rang ["101"]; the CDR says Queue(sales), 102 rang."""
    meta = json.loads((LAB / "queue_restart.meta.json").read_text(encoding="utf-8"))
    call_id = meta["plan"]["calls"][0]["id"]
    master = tmp_path / "Master.csv"
    master.write_text("", encoding="utf-8")
    clock = ManualClock(_at(meta["status_epoch"]))
    fake = FakeAmiServer(
        lists={
            "status": (LAB / "queue_restart_status.ami").read_bytes(),
            "queuestatus": (LAB / "queue_restart_queuestatus.ami").read_bytes(),
        }
    )
    async with fake:
        pbx = {
            "name": "main",
            "host": "127.0.0.1",
            "port": fake.port,
            "username": "cc",
            "secret": "s3cret",
            "trunks": ["provider"],
            "extension_pattern": "^\\d{3}$",
            "cdr": {"csv": str(master), "settle_s": 0.2, "lookback_h": 1, "timezone": "UTC"},
        }
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_PBX=json.dumps([pbx]),
            CC_RECORDINGS_SPOOL_DIR=str(tmp_path),
        )
        client = await aiohttp_client_factory(
            create_app(settings, announce=lambda _t: None, clock=clock)
        )
        link = client.app[PBX]["main"]
        tel = client.app[TELEPHONY]
        await until(lambda: {c.call_id for c in link.folder.live_calls()} == {call_id})
        later = [
            f
            for f in event_frames((LAB / "queue_restart.ami").read_bytes())
            if _ts(f) > meta["queuestatus_epoch"]
        ]
        clock.set(_at(_ts(later[-1]) + 1))
        master.write_bytes((LAB / "queue_restart.csv").read_bytes())
        await fake.logged_in_sessions()[-1].send_frames(later)
        await until(lambda: tel.cdr_corrected == 1, timeout=10)
        await tel.drain()
        async with client.app[SESSIONS]() as session:
            call = (await session.scalars(select(Call))).one()
    assert (call.call_id, call.disposition, call.extension) == (call_id, "answered", "101")
    assert (call.queue, call.rang) == ("sales", ["101", "102"])
    assert call.started_at == _at(1796233871) and call.estimated == []
    assert call.talk_seconds == 20.0
