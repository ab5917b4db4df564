"""The recordings retention cut-off, keep-forever and every kind of legal hold (issue 14:
every purge test backdated its recording by 400 days, so deleting the ``stored_at < cutoff``
clause or the ``retention_days <= 0`` branch left the suite green)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.recordings_service import EMPTY_SPOOL_AFTER_S
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.recordings import service as recordings
from crm_core.recordings.model import Recording, RecordingState
from recordings.intake import EMPTY_WAV_BYTES, sweep_empty_recordings

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)
RETENTION_DAYS = 30


async def _recording(session: AsyncSession, name: str, stored_at: datetime, **links: Any) -> int:
    row = Recording(
        pbx="main",
        call_ref=name,
        filename=f"{name}.wav",
        state=RecordingState.STORED.value,
        ended_at=stored_at,
        stored_at=stored_at,
        storage_key=f"key-{name}",
        **links,
    )
    session.add(row)
    await session.flush()
    return row.id


async def _expired(session: AsyncSession, retention_days: int = RETENTION_DAYS) -> set[str]:
    rows = await recordings.expired(session, now=NOW, retention_days=retention_days)
    return {row.call_ref for row in rows}


async def test_the_cut_off_is_exact_to_the_day(session: AsyncSession) -> None:
    cutoff = NOW - timedelta(days=RETENTION_DAYS)
    await _recording(session, "day-before", cutoff - timedelta(days=1))
    await _recording(session, "second-before", cutoff - timedelta(seconds=1))
    await _recording(session, "on", cutoff)
    await _recording(session, "day-after", cutoff + timedelta(days=1))
    await session.commit()
    assert await _expired(session) == {"day-before", "second-before"}


@pytest.mark.parametrize("retention_days", [0, -1])
async def test_retention_of_zero_or_less_keeps_recordings_forever(
    session: AsyncSession, retention_days: int
) -> None:
    await _recording(session, "ten-years", NOW - timedelta(days=3650))
    await session.commit()
    assert await _expired(session, retention_days) == set()
    assert await _expired(session, 1) == {"ten-years"}  # it would go otherwise


async def _held_object(session: AsyncSession, kind: str) -> Any:
    if kind == "contact":
        obj: Any = Contact(name="Спорный клиент", legal_hold=True)
    elif kind == "company":
        obj = Company(name="ООО Спор", legal_hold=True)
    else:
        pipeline = Pipeline(code="hold", name="Воронка")
        session.add(pipeline)
        await session.flush()
        stage = PipelineStage(pipeline_id=pipeline.id, code="new", name_ru="Новая", name_en="New")
        session.add(stage)
        await session.flush()
        obj = Deal(title="Спорная сделка", pipeline_id=pipeline.id, stage_id=stage.id)
        obj.legal_hold = True
    session.add(obj)
    await session.flush()
    return obj


@pytest.mark.parametrize("kind", ["contact", "company", "deal"])
@pytest.mark.parametrize("through", ["call", "activity"])
async def test_a_legal_hold_keeps_the_recording_until_it_is_released(
    session: AsyncSession, kind: str, through: str
) -> None:
    held = await _held_object(session, kind)
    old = NOW - timedelta(days=400)
    link = {f"{kind}_id": held.id}
    if through == "call":
        call = Call(
            pbx="main",
            call_id="held-call",
            direction="inbound",
            disposition="answered",
            started_at=old,
            ended_at=old,
            **link,
        )
        session.add(call)
        await session.flush()
        await _recording(session, "held", old, call_pk=call.id)
    else:
        activity = Activity(kind="call", subject="Звонок", occurred_at=old, **link)
        session.add(activity)
        await session.flush()
        await _recording(session, "held", old, activity_id=activity.id)
    await _recording(session, "free", old)
    await session.commit()
    assert await _expired(session) == {"free"}
    held.legal_hold = False
    await session.commit()
    assert await _expired(session) == {"free", "held"}


def test_the_empty_wavs_of_unanswered_calls_leave_the_spool(tmp_path: Path) -> None:
    """MixMonitor(…,b) leaves a 44-byte WAV (a header, no sound) for a call nobody answered;
    the server never attaches it. Old ones go; a fresh one (a call still ringing), a WAV with
    sound and other files stay."""
    now = time.time()
    header = b"RIFF" + (36).to_bytes(4, "little") + b"WAVEfmt " + bytes(28)
    assert len(header) == EMPTY_WAV_BYTES
    files = {
        "20261202-041005-in-+79264445566-+74951112233-pbx-1796184605.12.wav": header,
        "old-empty.WAV": header,
        "ringing-now.wav": header,
        "answered.wav": header + bytes(16000),
        "notes.txt": b"",
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        if name != "ringing-now.wav":
            os.utime(tmp_path / name, (now - 7 * 3600, now - 7 * 3600))
    removed = sweep_empty_recordings(tmp_path, now=now, older_than_s=EMPTY_SPOOL_AFTER_S)
    assert removed == sorted(list(files)[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "answered.wav",
        "notes.txt",
        "ringing-now.wav",
    ]
