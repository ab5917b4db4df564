"""A call that ends while the database is down is not lost: the call log keeps it (in order,
in bounded memory), retries with back-off, says so once in the log and on /healthz, and
stores it exactly once when the database is back. Each test owns its PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ami.cdr import read_master_csv, records_from_cdr
from ami.simulator import SimulatedPbx
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS, TELEPHONY
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.leads.model import Lead
from tests.helpers import until
from tests.services import OwnPostgres, own_postgres, postgres_cluster_template  # noqa: F401
from tests.telephony.conftest import pbx_setting

CDR_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "cdr" / "Master.csv"
# How the server folds the fixture's rows with the settings below (trunk provider, 3 digits).
CDR_FOLD: dict[str, Any] = {
    "trunks": ["provider"],
    "extension_pattern": "^\\d{3}$",
    "count_threshold_s": 60.0,
    "region": "RU",
}


async def _count(client: Any, model: Any) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


@pytest.mark.timeout(90)
async def test_calls_ending_while_the_database_is_down_are_stored_once_it_is_back(
    make_settings: Any,
    own_postgres: OwnPostgres,  # noqa: F811
    pbx: SimulatedPbx,
    aiohttp_client_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(CC_DATABASE_URL=own_postgres.url("cc"), CC_PBX=pbx_setting(pbx))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    telephony = client.app[TELEPHONY]
    # One call stored before: the pool holds connections the restart will break.
    await pbx.play("c_inbound_short_answered", outside="79161110000", did="74950000001")
    await until(lambda: _count(client, Call), timeout=10)

    await asyncio.to_thread(own_postgres.stop, "immediate")
    callers = [f"7916111{i:04d}" for i in range(1, 4)]
    for caller in callers:
        await pbx.play("c_inbound_short_answered", outside=caller, did="74950000001")

    def waiting() -> bool:
        return bool(telephony.provide_status()["call_log"]["waiting"] == len(callers))

    await until(waiting, timeout=15)
    health = await (await client.get("/healthz")).json()
    assert health["telephony"]["status"] == "degraded", health["telephony"]
    # Several attempts fail meanwhile; the log says so once, not once per attempt.
    await asyncio.sleep(1.5)
    assert telephony.provide_status()["call_log"]["retries"] >= 2
    waits = [r for r in caplog.records if "call log waits" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in waits]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "telephony" in r.name]

    await asyncio.to_thread(own_postgres.start)
    await until(lambda: telephony.provide_status()["call_log"]["waiting"] == 0, timeout=30)
    async with client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(Call.caller).order_by(Call.id))).all()
    assert stored == ["+79161110000", *(f"+{c}" for c in callers)]  # each once, in order
    # The whole outcome of each call, once: its lead and its activity.
    assert await _count(client, Lead) == 4
    assert await _count(client, Activity) == 4
    health = await (await client.get("/healthz")).json()
    assert health["telephony"]["status"] == "ok"
    assert telephony.failures == 0


@pytest.mark.timeout(60)
async def test_stopping_while_the_database_is_down_names_the_calls_not_stored(
    make_settings: Any,
    own_postgres: OwnPostgres,  # noqa: F811
    pbx: SimulatedPbx,
    aiohttp_client_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The call log is memory: a server stopped before the database came back cannot store
    its waiting calls, and says which ones (to be found in the PBX's records)."""
    settings = make_settings(CC_DATABASE_URL=own_postgres.url("cc"), CC_PBX=pbx_setting(pbx))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    telephony = client.app[TELEPHONY]
    await asyncio.to_thread(own_postgres.stop, "fast")
    for caller in ("79161110001", "79161110002"):
        await pbx.play("c_inbound_short_answered", outside=caller, did="74950000001")
    await until(lambda: telephony.calls_waiting == 2, timeout=15)
    await telephony.close(drain_timeout=0.2)
    lost = [r.getMessage() for r in caplog.records if "not stored" in r.getMessage()]
    assert len(lost) == 1 and lost[0].startswith("stopping with 2 finished calls not stored")


@pytest.mark.timeout(90)
async def test_calls_read_from_the_cdr_while_the_database_is_down_are_stored_once_it_is_back(
    make_settings: Any,
    own_postgres: OwnPostgres,  # noqa: F811
    pbx: SimulatedPbx,
    aiohttp_client_factory: Any,
    tmp_path: Path,
) -> None:
    """A CDR batch (the calls a reconnect finds the AMI link missed) read while our database
    is away waits in the call log like a live call's end, and is stored once it is back."""
    master = tmp_path / "Master.csv"
    master.write_text("", encoding="utf-8")
    setting = json.loads(pbx_setting(pbx))
    setting[0]["cdr"] = {"csv": str(master), "lookback_h": 1}
    settings = make_settings(CC_DATABASE_URL=own_postgres.url("cc"), CC_PBX=json.dumps(setting))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    link = client.app[PBX]["main"]
    await until(lambda: link.cdr_reads >= 1, timeout=10)  # the start-up read: nothing yet
    telephony = client.app[TELEPHONY]

    await asyncio.to_thread(own_postgres.stop, "immediate")
    master.write_bytes(CDR_FIXTURE.read_bytes())  # the calls the link never heard
    expected = {r.call_id for r in records_from_cdr(read_master_csv(CDR_FIXTURE), **CDR_FOLD)}
    reconcile = asyncio.create_task(link.reconcile_cdr(datetime(2026, 12, 2, tzinfo=UTC)))
    await until(lambda: telephony.provide_status()["call_log"]["retries"] >= 2, timeout=20)
    assert not reconcile.done()
    status = telephony.provide_status()
    assert status["status"] == "degraded" and status["call_log"]["cdr_waiting"] == len(expected)

    await asyncio.to_thread(own_postgres.start)
    added, corrected = await asyncio.wait_for(reconcile, timeout=30)
    assert (added, corrected) == (len(expected), 0)
    async with client.app[SESSIONS]() as session:
        stored = (await session.scalars(select(Call.call_id))).all()
    assert sorted(stored) == sorted(expected)  # each once
    assert telephony.provide_status()["status"] == "ok"
    assert telephony.failures == 0
    # Read again: nothing added, nothing changed.
    assert await link.reconcile_cdr(datetime(2026, 12, 2, tzinfo=UTC)) == (0, 0)
