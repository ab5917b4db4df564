"""Recordings in the server: a finished call's MixMonitor file is found, converted, stored,
attached and served with Range, access control and audit; pushed uploads; retention and legal
hold; every failure path. Real audio (the fixture WAV of a real call, tones from pydub), real
ffmpeg, both databases."""

from __future__ import annotations

import dataclasses
import json
import shutil
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import func, select, update

from ami.simulator import SimulatedPbx
from contact_center import recordings_service
from contact_center.app import create_app
from contact_center.call_outcomes import CallOutcomes
from contact_center.config import ConfigError, load_settings
from contact_center.keys import CLOCK, PBX, RECORDINGS, SCHEDULER, SESSIONS, TRACKER
from crm_core.activities.model import Activity
from crm_core.audit.model import AuditEntry
from crm_core.calls import screen_pop
from crm_core.calls.record import CallRecord
from crm_core.clients.model import Contact, Phone
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.phones import digits_reversed
from crm_core.recordings.model import Recording
from crm_core.rules import CrmRules
from crm_core.users import service as users
from crm_core.users.model import User
from tests.ami._support import folded_call
from tests.helpers import until
from tests.recordings import FIXTURE_CALL_ID, FIXTURE_WAV, write_wav
from tests.telephony.conftest import pbx_setting

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ami"
RECORD = folded_call("c_inbound_short_answered")
assert RECORD.caller is not None  # an inbound call from a known number
CALLER = RECORD.caller


@pytest.fixture
async def app_client(
    make_settings: Any, database_url: str, tmp_path: Path, aiohttp_client_factory: Any
) -> Any:
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_RECORDINGS_SPOOL_DIR=str(tmp_path / "spool"),
        CC_RECORDINGS_WORK_DIR=str(tmp_path / "work"),
        CC_RECORDINGS_UPLOAD_TOKENS='{"main": "pbx-secret-token"}',
        CC_RECORDINGS_WORKERS="1",
    )
    (tmp_path / "spool").mkdir()
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as s:
        for login, role, ext in (
            ("ivan", "manager", "101"),
            ("anna", "manager", "102"),
            ("petr", "manager", "103"),
            ("boss", "head", None),
        ):
            await users.create_user(
                s,
                login=login,
                role=role,
                password="password1",
                extensions=[ext] if ext else [],
                scrypt_n=1024,
            )
        await s.commit()
    client.spool = tmp_path / "spool"
    client.store = tmp_path / "recordings"
    return client


async def _user_id(client: Any, login: str) -> int:
    async with client.app[SESSIONS]() as s:
        user_id = await s.scalar(select(User.id).where(User.login == login))
        assert user_id is not None
        return user_id


async def _auth(client: Any, login: str) -> dict[str, str]:
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _finish_call(client: Any, record: CallRecord = RECORD) -> None:
    """The call ends the way the telephony service stores it (call, activity, recording job)."""
    outcomes = CallOutcomes(
        tracker=client.app[TRACKER], rules=CrmRules(), callback_due_minutes=30, recordings=True
    )
    async with client.app[SESSIONS]() as s:
        await outcomes.record(s, "main", record, now=client.app[CLOCK].now())
        await s.commit()


async def _find(client: Any, call_ref: str) -> Recording | None:
    async with client.app[SESSIONS]() as s:
        return await s.scalar(select(Recording).where(Recording.call_ref == call_ref))


async def _row(client: Any, call_ref: str = FIXTURE_CALL_ID) -> Recording:
    row = await _find(client, call_ref)
    assert row is not None
    return row


async def _settle(client: Any, call_ref: str, *states: str) -> Recording:
    """Run the scheduler until the call's recording exists and reaches one of ``states``."""

    async def reached() -> bool:
        await client.app[SCHEDULER].run_once()
        row = await _find(client, call_ref)
        return row is not None and row.state in states

    await until(reached, timeout=60)
    return await _row(client, call_ref)


async def _stored(client: Any) -> Recording:
    shutil.copy(FIXTURE_WAV, client.spool / FIXTURE_WAV.name)
    await _finish_call(client)
    return await _settle(client, FIXTURE_CALL_ID, "stored")


async def test_a_finished_call_is_stored_attached_and_streamed_with_ranges(app_client: Any) -> None:
    client = app_client
    row = await _stored(client)
    assert row.format == "mp3" and row.size and row.sha256
    assert row.duration_s == pytest.approx(RECORD.talk_seconds, abs=1.5)
    assert not (client.spool / FIXTURE_WAV.name).exists()  # deleted after the verified copy
    stored_files = [p for p in client.store.rglob("*.mp3")]
    assert len(stored_files) == 1 and FIXTURE_CALL_ID not in str(stored_files[0])
    async with client.app[SESSIONS]() as s:
        activity = await s.get(Activity, row.activity_id)
        assert activity is not None and activity.external_id == f"call:main:{FIXTURE_CALL_ID}"
        assert activity.lead_id is not None  # an unknown caller became a lead

    ivan = await _auth(client, "ivan")  # extension 101 answered the call
    listing = await (
        await client.get(f"/api/v1/recordings?call_id={FIXTURE_CALL_ID}", headers=ivan)
    ).json()
    assert [r["id"] for r in listing] == [row.id] and listing[0]["state"] == "stored"
    # The card's timeline and the next pop-up for this caller carry the player's source.
    timeline = await (
        await client.get(f"/api/v1/activities?lead_id={activity.lead_id}", headers=ivan)
    ).json()
    [item] = timeline["items"]
    assert item["recording"]["id"] == row.id and item["recording"]["url"] == listing[0]["url"]
    async with client.app[SESSIONS]() as s:
        card = await screen_pop.card_summary(s, CALLER, rules=CrmRules())
    assert card is not None and card["activities"][0]["recording"]["id"] == row.id

    url = listing[0]["url"]
    whole = await client.get(url, headers=ivan)
    assert whole.status == 200
    assert whole.headers["Content-Type"] == "audio/mpeg"
    assert whole.headers["Accept-Ranges"] == "bytes"
    body = await whole.read()
    assert len(body) == row.size and body == stored_files[0].read_bytes()

    first = await client.get(url, headers={**ivan, "Range": "bytes=0-99"})
    assert first.status == 206 and await first.read() == body[:100]
    assert first.headers["Content-Range"] == f"bytes 0-99/{row.size}"
    middle = await client.get(url, headers={**ivan, "Range": "bytes=1000-1999"})
    assert middle.status == 206 and await middle.read() == body[1000:2000]
    suffix = await client.get(url, headers={**ivan, "Range": "bytes=-500"})
    assert suffix.status == 206 and await suffix.read() == body[-500:]
    open_end = await client.get(url, headers={**ivan, "Range": f"bytes={row.size - 10}-"})
    assert await open_end.read() == body[-10:]
    outside = await client.get(url, headers={**ivan, "Range": f"bytes={row.size}-"})
    assert outside.status == 416 and outside.headers["Content-Range"] == f"bytes */{row.size}"

    async with client.app[SESSIONS]() as s:
        audits = (
            await s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.listen"))
        ).all()
    assert len(audits) == 5  # every access that was served, none for the 416
    assert {a.user_id for a in audits} == {await _user_id(client, "ivan")}
    assert {a.object_id for a in audits} == {str(row.id)}
    assert [a.details["range"] for a in audits][:2] == [None, [0, 99]]


async def test_who_may_listen(app_client: Any) -> None:
    client = app_client
    async with client.app[SESSIONS]() as s:
        anna = await s.scalar(select(User).where(User.login == "anna"))
        assert anna is not None
        contact = Contact(name="Клиент Анны", responsible_id=anna.id)
        s.add(contact)
        await s.flush()
        s.add(Phone(contact_id=contact.id, e164=CALLER, digits_rev=digits_reversed(CALLER)))
        await s.commit()
    row = await _stored(client)
    assert row.size is not None
    url = f"/api/v1/recordings/{row.id}"
    # Took it, owns the client; petr's 404 is the answer for a recording that is not there.
    expected = {"ivan": 200, "anna": 200, "petr": 404, "boss": 200}
    got = {
        login: (await client.get(url, headers=await _auth(client, login))).status
        for login in expected
    }
    assert got == expected
    assert (await client.get(url)).status == 401
    petr = await _auth(client, "petr")
    assert (
        await (
            await client.get(f"/api/v1/recordings?call_id={FIXTURE_CALL_ID}", headers=petr)
        ).json()
        == []
    )
    async with client.app[SESSIONS]() as s:
        denied = (
            await s.scalars(select(AuditEntry).where(AuditEntry.action == "recording.denied"))
        ).all()
    assert [(a.user_id, a.object_id) for a in denied] == [
        (await _user_id(client, "petr"), str(row.id))
    ]
    missing = await client.get("/api/v1/recordings/999999", headers=petr)
    assert missing.status == 404
    assert (await client.get("/api/v1/recordings/..%2Fetc", headers=petr)).status == 404
    # Not his and not there read the same: nothing tells a manager probing ids which exist.
    not_his = await (await client.get(url, headers=petr)).json()
    absent = await missing.json()
    assert not_his["error"] == absent["error"] == "not-found"
    assert not_his["message"].replace(str(row.id), "N") == absent["message"].replace("999999", "N")
    for huge in ("2147483648", "9" * 30, "0"):
        resp = await client.get(f"/api/v1/recordings/{huge}", headers=petr)
        assert resp.status == 404 and (await resp.json())["error"] == "not-found"

    # A 5,000-digit Range: past the end (416), or to "the end" (the rest), never a 500.
    boss = await _auth(client, "boss")
    digits = "9" * 5000
    past = await client.get(url, headers={**boss, "Range": f"bytes={digits}-"})
    assert past.status == 416
    rest = await client.get(url, headers={**boss, "Range": f"bytes=1-{digits}"})
    assert rest.status == 206 and len(await rest.read()) == row.size - 1
    tail = await client.get(url, headers={**boss, "Range": f"bytes=-{digits}"})
    assert tail.status == 206 and len(await tail.read()) == row.size


async def test_retention_purges_except_under_legal_hold(app_client: Any) -> None:
    client = app_client
    async with client.app[SESSIONS]() as s:
        contact = Contact(name="Спорный клиент")
        s.add(contact)
        await s.flush()
        s.add(Phone(contact_id=contact.id, e164=CALLER, digits_rev=digits_reversed(CALLER)))
        await s.commit()
        contact_id = contact.id
    row = await _stored(client)
    runtime = client.app[RECORDINGS]
    now = client.app[CLOCK].now()
    async with client.app[SESSIONS]() as s:
        await s.execute(
            update(Recording)
            .values(stored_at=now - timedelta(days=400))
            .where(Recording.id == row.id)
        )
        await s.commit()
    boss = await _auth(client, "boss")
    hold = {"object_type": "contact", "id": contact_id, "hold": True}
    assert (await client.post("/api/v1/legal-holds", json=hold, headers=boss)).status == 200
    ivan = await _auth(client, "ivan")
    assert (await client.post("/api/v1/legal-holds", json=hold, headers=ivan)).status == 403

    async def purge() -> None:
        async with client.app[SESSIONS]() as s:
            await recordings_service.purge(runtime, s, client.app[CLOCK].now())
            await s.commit()

    await purge()
    assert (await _row(client)).state == "stored"
    assert len(list(client.store.rglob("*.mp3"))) == 1

    assert (
        await client.post("/api/v1/legal-holds", json={**hold, "hold": False}, headers=boss)
    ).status == 200
    await purge()
    purged = await _row(client)
    assert purged.state == "purged" and purged.purged_at is not None and purged.storage_key is None
    assert list(client.store.rglob("*.mp3")) == []
    assert (await client.get(f"/api/v1/recordings/{row.id}", headers=boss)).status == 409
    async with client.app[SESSIONS]() as s:
        actions = set(await s.scalars(select(AuditEntry.action)))
    assert {"legal_hold.set", "legal_hold.release"} <= actions


async def test_missing_corrupt_and_unavailable_storage(app_client: Any, tmp_path: Path) -> None:
    client = app_client
    # No file ever came (the call ended longer ago than recordings.wait_minutes): missing.
    await _finish_call(client)
    missing = await _settle(client, FIXTURE_CALL_ID, "missing", "stored", "failed")
    assert missing.state == "missing" and "no " in (missing.error or "")
    boss = await _auth(client, "boss")
    [listed] = await (
        await client.get(f"/api/v1/recordings?call_id={FIXTURE_CALL_ID}", headers=boss)
    ).json()
    assert listed["state"] == "missing" and listed["url"] is None and listed["error"]
    assert (await client.get(f"/api/v1/recordings/{missing.id}", headers=boss)).status == 409
    metrics = await (await client.get("/metrics")).text()
    assert 'cc_recordings_total{outcome="missing"} 1.0' in metrics

    # Corrupt audio: failed, the original kept for a person to look at.
    bad = dataclasses.replace(
        RECORD, call_id="1795722999.1", recording="20261126-bad-1795722999.1.wav"
    )
    assert bad.recording is not None
    (client.spool / bad.recording).write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" * 20)
    await _finish_call(client, bad)
    failed = await _settle(client, bad.call_id, "failed", "stored", "missing")
    assert failed.state == "failed" and failed.error
    assert (client.spool / bad.recording).exists()


async def test_storage_down_keeps_the_original_and_retries(
    make_settings: Any, database_url: str, tmp_path: Path, aiohttp_client_factory: Any
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the storage folder should be")
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_RECORDINGS_SPOOL_DIR=str(tmp_path / "spool"),
        CC_RECORDINGS_WORK_DIR=str(tmp_path / "work"),
        CC_RECORDINGS_STORAGE_DIR=str(blocked),
        CC_RECORDINGS_WORKERS="1",
    )
    (tmp_path / "spool").mkdir()
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    client.spool = tmp_path / "spool"
    shutil.copy(FIXTURE_WAV, client.spool / FIXTURE_WAV.name)
    await _finish_call(client)
    await client.app[SCHEDULER].run_once()
    row = await _row(client)
    assert row.state == "pending" and row.error and row.next_attempt_at is not None
    assert (client.spool / FIXTURE_WAV.name).exists()
    async with client.app[SESSIONS]() as s:
        live = await s.scalar(
            select(func.count(ScheduledJob.id)).where(
                ScheduledJob.kind == "recording.process", ScheduledJob.status == "pending"
            )
        )
    assert live == 1  # the retry is scheduled, durable


async def test_a_pbx_pushes_its_file(app_client: Any, tmp_path: Path) -> None:
    client = app_client
    await _finish_call(client)  # the call is known; its file is not in the spool
    wav = write_wav(tmp_path / "push" / FIXTURE_WAV.name, 3.0)

    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("call_id", FIXTURE_CALL_ID)
        data.add_field("file", wav.read_bytes(), filename=wav.name, content_type="audio/wav")
        return data

    token = {"X-PBX-Token": "pbx-secret-token"}
    assert (await client.post("/api/v1/recordings", data=form())).status == 401
    wrong = {"X-PBX-Token": "nope"}
    assert (await client.post("/api/v1/recordings", data=form(), headers=wrong)).status == 401
    first = await client.post("/api/v1/recordings", data=form(), headers=token)
    assert first.status == 202
    doc = await first.json()
    again = await (await client.post("/api/v1/recordings", data=form(), headers=token)).json()
    assert again["recording_id"] == doc["recording_id"] and again["sha256"] == doc["sha256"]
    row = await _settle(client, FIXTURE_CALL_ID, "stored")
    assert row.duration_s == pytest.approx(3.0, abs=0.5)

    other = aiohttp.FormData()
    other.add_field("call_id", FIXTURE_CALL_ID)
    other.add_field("file", b"x", filename="../../etc/passwd")
    bad = await client.post("/api/v1/recordings", data=other, headers=token)
    assert bad.status == 422 and "etc" not in {p.name for p in client.spool.iterdir()}

    # A one-character call id is in almost every file name; it must name the call exactly.
    for call_id in ("1", "5", FIXTURE_CALL_ID.split(".")[0]):
        short = aiohttp.FormData()
        short.add_field("call_id", call_id)
        short.add_field("file", b"RIFF", filename=wav.name, content_type="audio/wav")
        resp = await client.post("/api/v1/recordings", data=short, headers=token)
        assert resp.status == 422, call_id
        assert (await resp.json())["error"] in ("recording-invalid-name", "invalid-input")

    # Not multipart at all: a 4xx saying so, not a 500.
    for body, ctype in ((b'{"call_id": "x"}', "application/json"), (b"", "text/plain")):
        resp = await client.post(
            "/api/v1/recordings", data=body, headers={**token, "Content-Type": ctype}
        )
        assert resp.status == 422 and (await resp.json())["details"] == {"field": "body"}

    # The spool cannot be written: the answer does not show where it is.
    shutil.rmtree(client.spool)
    client.spool.write_text("not a directory")
    resp = await client.post("/api/v1/recordings", data=form(), headers=token)
    assert resp.status == 503
    text = await resp.text()
    assert str(client.spool) not in text and str(tmp_path) not in text
    assert "recordings.spool_dir" in (await resp.json())["message"]


async def test_health_says_when_ffmpeg_is_missing(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_RECORDINGS_FFMPEG="/nonexistent/ffmpeg"
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    doc = await (await client.get("/healthz")).json()
    assert doc["recordings"]["status"] == "degraded"
    assert doc["recordings"]["format"] == "wav" and "ffmpeg" in doc["recordings"]["detail"]
    metrics = await (await client.get("/metrics")).text()
    assert "cc_recordings_converter_available 0.0" in metrics


async def test_a_late_file_is_looked_for_again_with_backoff(app_client: Any) -> None:
    client = app_client
    now = client.app[CLOCK].now()
    await _finish_call(client, dataclasses.replace(RECORD, ended_at=now))
    await client.app[SCHEDULER].run_once()
    first = await _row(client)
    assert first.state == "pending" and first.attempts == 1 and first.next_attempt_at is not None
    assert first.next_attempt_at > now  # looked for again later, not at once
    # The file turns up; the retry (made due, as if its backoff had passed) stores it.
    shutil.copy(FIXTURE_WAV, client.spool / FIXTURE_WAV.name)
    async with client.app[SESSIONS]() as s:
        await s.execute(
            update(ScheduledJob)
            .values(due_at=now)
            .where(ScheduledJob.kind == "recording.process", ScheduledJob.status == "pending")
        )
        await s.commit()
    stored = await _settle(client, FIXTURE_CALL_ID, "stored", "missing", "failed")
    assert stored.state == "stored" and stored.attempts == 2 and stored.error is None


async def test_legal_hold_on_a_deal_keeps_its_recordings(app_client: Any) -> None:
    client = app_client
    row = await _stored(client)
    async with client.app[SESSIONS]() as s:
        pipeline = Pipeline(code="rec-hold", name="Воронка")
        s.add(pipeline)
        await s.flush()
        stage = PipelineStage(pipeline_id=pipeline.id, code="new", name_ru="Новая", name_en="New")
        s.add(stage)
        await s.flush()
        deal = Deal(title="Спорная поставка", pipeline_id=pipeline.id, stage_id=stage.id)
        s.add(deal)
        await s.flush()
        await s.execute(
            update(Activity).values(deal_id=deal.id).where(Activity.id == row.activity_id)
        )
        await s.execute(
            update(Recording)
            .values(stored_at=client.app[CLOCK].now() - timedelta(days=400))
            .where(Recording.id == row.id)
        )
        await s.commit()
        deal_id = deal.id
    boss = await _auth(client, "boss")
    hold = {"object_type": "deal", "id": deal_id, "hold": True}
    assert (await client.post("/api/v1/legal-holds", json=hold, headers=boss)).status == 200

    async def purge_job_runs() -> str:
        """The pending daily retention job (the stored recording started the chain), run now;
        it schedules the next day's."""
        async with client.app[SESSIONS]() as s:
            [job] = (await s.scalars(select(ScheduledJob).where(*purge_pending))).all()
            key = job.dedupe_key
            await jobs.schedule(s, job.kind, client.app[CLOCK].now(), job.payload, key)
            await s.commit()
        await client.app[SCHEDULER].run_once()
        async with client.app[SESSIONS]() as s:
            ran = await jobs.find(s, key or "")
            assert ran is not None and ran.status == "done"
            [following] = (await s.scalars(select(ScheduledJob).where(*purge_pending))).all()
            assert (following.dedupe_key or "") > (key or "")
        return (await _row(client)).state

    purge_pending = (ScheduledJob.kind == "recording.purge", ScheduledJob.status == "pending")
    async with client.app[SESSIONS]() as s:
        [job] = (await s.scalars(select(ScheduledJob).where(*purge_pending))).all()
    # Due at recordings.purge_at (03:00) local time (Europe/Moscow, UTC+3) of tomorrow.
    tomorrow = client.app[CLOCK].now().astimezone(ZoneInfo("Europe/Moscow")).date() + timedelta(1)
    due = job.due_at if job.due_at.tzinfo else job.due_at.replace(tzinfo=UTC)
    assert due == datetime.combine(tomorrow, time(0, 0), tzinfo=UTC)
    assert job.payload == {"day": tomorrow.isoformat()}
    assert await purge_job_runs() == "stored"
    assert (
        await client.post("/api/v1/legal-holds", json={**hold, "hold": False}, headers=boss)
    ).status == 200
    assert await purge_job_runs() == "purged"
    assert list(client.store.rglob("*.mp3")) == []


async def test_without_ffmpeg_the_wav_is_kept_and_said_once(
    make_settings: Any,
    database_url: str,
    tmp_path: Path,
    aiohttp_client_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_RECORDINGS_SPOOL_DIR=str(tmp_path / "spool"),
        CC_RECORDINGS_WORK_DIR=str(tmp_path / "work"),
        CC_RECORDINGS_STORAGE_DIR=str(tmp_path / "recordings"),
        CC_RECORDINGS_FFMPEG="/nonexistent/ffmpeg",
        CC_RECORDINGS_WORKERS="1",
    )
    (tmp_path / "spool").mkdir()
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    client.spool = tmp_path / "spool"
    second = dataclasses.replace(
        RECORD, call_id="1795722999.7", recording="20261126-x-1795722999.7.wav"
    )
    for record in (RECORD, second):
        assert record.recording is not None
        write_wav(client.spool / record.recording, 2.0)
        await _finish_call(client, record)
        row = await _settle(client, record.call_id, "stored", "failed", "missing")
        assert row.state == "stored" and row.format == "wav"
        assert row.duration_s == pytest.approx(2.0, abs=0.1)
    said = [r for r in caplog.records if "ffmpeg not found" in r.getMessage()]
    assert len(said) == 1
    async with client.app[SESSIONS]() as s:
        await users.create_user(s, login="boss", role="head", password="password1", scrypt_n=1024)
        await s.commit()
    resp = await client.get(f"/api/v1/recordings/{row.id}", headers=await _auth(client, "boss"))
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    assert (await resp.read())[:4] == b"RIFF"


async def test_end_to_end_a_pbx_call_with_mixmonitor_is_stored_and_streamed(
    make_settings: Any, database_url: str, tmp_path: Path, aiohttp_client_factory: Any
) -> None:
    """Simulated PBX over real AMI → the call ends with a MixMonitor file in the spool → the
    durable job converts and stores it → the manager who took the call streams it."""
    pbx = SimulatedPbx(speed=8.0, username="cc", secret="s3cret")
    await pbx.start()
    try:
        spool = tmp_path / "spool"
        spool.mkdir()
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_PBX=pbx_setting(pbx),
            CC_RECORDINGS_SPOOL_DIR=str(spool),
            CC_RECORDINGS_WORK_DIR=str(tmp_path / "work"),
            CC_RECORDINGS_STORAGE_DIR=str(tmp_path / "recordings"),
            CC_RECORDINGS_WORKERS="1",
        )
        client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
        async with client.app[SESSIONS]() as s:
            await users.create_user(
                s,
                login="ivan",
                role="manager",
                password="password1",
                extensions=["101"],
                scrypt_n=1024,
            )
            await s.commit()
        await until(
            lambda: (
                client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected
            ),
            timeout=10,
        )
        ivan = await _auth(client, "ivan")
        ws = await client.ws_connect("/ws", headers=ivan)
        pbx.play("c_inbound_short_answered", outside="74957654321", did="74950000001")
        while (ringing := json.loads((await ws.receive(timeout=10)).data))["type"] != (
            "call.ringing"
        ):
            pass
        # Asterisk's MixMonitor writes the file while the call is up (the dialplan's name).
        call_id = ringing["call_id"]
        write_wav(spool / f"20261126-195521-in-74957654321-74950000001-{call_id}.wav", 2.5)
        await ws.close()

        row = await _settle(client, call_id, "stored", "missing", "failed")
        assert row.state == "stored" and row.duration_s == pytest.approx(2.5, abs=0.2)
        assert row.call_pk is not None and row.activity_id is not None
        [listed] = await (
            await client.get(f"/api/v1/recordings?call_id={call_id}", headers=ivan)
        ).json()
        resp = await client.get(listed["url"], headers={**ivan, "Range": "bytes=0-1"})
        assert resp.status == 206 and resp.headers["Content-Type"] == "audio/mpeg"
        assert len(await resp.read()) == 2
    finally:
        await pbx.close()


def test_purge_at_is_a_time_of_day(make_settings: Any, tmp_path: Path) -> None:
    assert make_settings(CC_RECORDINGS_PURGE_AT="22:30").recordings.purge_at == time(22, 30)
    # An unquoted 22:30 in YAML is the number 1350 (base 60): refused, not read as seconds.
    unquoted = tmp_path / "config.yaml"
    unquoted.write_text("recordings:\n  purge_at: 22:30\n")
    with pytest.raises(ConfigError, match=r"recordings\.purge_at.*quoted time of day"):
        load_settings(unquoted, env={})
