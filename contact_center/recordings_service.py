"""Recordings in the running server: the call-end job, the conversion worker step, storage,
retention, health and metrics.

A finished call with a MixMonitor file gets a ``recordings`` row and a durable
``recording.process`` job in the same transaction as the call itself, so a crash cannot lose
it. The job's handler reads the row, ends the transaction (conversion takes seconds and must
not hold a database connection in a transaction), runs one step of
:class:`recordings.intake.RecordingProcessor`, and writes the outcome back: ``stored`` with
its metadata and the link to the call's activity, or a retry due later (a new job), or
``missing``/``failed``. The spool file is deleted only after the row saying ``stored`` has
committed. A daily ``recording.purge`` job applies ``recordings.retention_days`` (legal hold
exempts); it is a durable job like the others, so it runs once a day across all instances. The
first stored recording starts the daily chain (each run schedules the next day's), and every
stored recording schedules the next day's run again, so a run lost for good heals itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.config import RecordingsSettings
from crm_core.clock import Clock
from crm_core.events import DomainEvent
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.recordings import service as recordings
from crm_core.recordings.model import Recording, RecordingState
from recordings.convert import find_ffmpeg
from recordings.errors import RecordingError
from recordings.intake import (
    JobState,
    RecordingJob,
    RecordingProcessor,
    RetryPolicy,
    recording_basename,
    sweep_empty_recordings,
)
from recordings.pool import ConverterPool
from recordings.storage import LocalStorage, S3Storage, Storage

log = logging.getLogger(__name__)

PROCESS_JOB = "recording.process"
PURGE_JOB = "recording.purge"
# A sound-less MixMonitor file untouched this long is an unanswered call's (no call rings for
# hours; an answered one's file grows): the daily retention run removes it from the spool.
EMPTY_SPOOL_AFTER_S = 6 * 3600.0


class RecordingsRuntime:
    """The storage, converter pool and processor of this instance."""

    def __init__(
        self,
        settings: RecordingsSettings,
        *,
        storage: Storage,
        pool: ConverterPool,
        clock: Clock,
        timezone: str = "Europe/Moscow",
    ) -> None:
        self.settings = settings
        self.zone = ZoneInfo(timezone)
        self.storage = storage
        self.pool = pool
        self.clock = clock
        self.spool_dir = Path(settings.spool_dir)
        self.processor = RecordingProcessor(
            spool_dir=self.spool_dir,
            work_dir=Path(settings.work_dir),
            converter=pool,
            storage=storage,
            policy=RetryPolicy(wait_minutes=settings.wait_minutes),
            # The source is deleted here, after the row saying "stored" has committed.
            keep_original=True,
            clock=clock.now,
        )
        self.outcomes: Counter | None = None

    def local_day(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def count(self, state: str, n: int = 1) -> None:
        if self.outcomes is not None:
            self.outcomes.labels(state).inc(n)

    async def close(self) -> None:
        await self.pool.close()

    def provide_status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        self.pool.provide_status(doc)
        entry: dict[str, Any] = doc["recordings_converter"]
        entry["storage"] = self.settings.storage
        entry["spool_dir"] = str(self.spool_dir)
        return entry


def build_storage(settings: RecordingsSettings) -> Storage:
    """Local folders by default; an S3-compatible bucket with ``storage: s3``."""
    if settings.storage == "local":
        return LocalStorage(Path(settings.storage_dir))
    s3 = settings.s3
    if not s3.bucket:
        raise ValueError("recordings.s3.bucket must be set when recordings.storage is s3")
    import boto3  # the optional "s3" extra

    client = boto3.client(
        "s3",
        endpoint_url=s3.endpoint_url,
        region_name=s3.region,
        aws_access_key_id=s3.access_key_id,
        aws_secret_access_key=(
            s3.secret_access_key.get_secret_value() if s3.secret_access_key else None
        ),
    )
    return S3Storage(client, s3.bucket, prefix=s3.prefix)


# ---------------------------------------------------------------- the call-end hook


async def schedule_for_call(
    session: AsyncSession,
    *,
    pbx: str,
    call_ref: str,
    call_pk: int | None,
    filename: str,
    ended_at: datetime,
) -> Recording | None:
    """Register a finished call's file and schedule its processing, in the caller's
    transaction. A name that cannot be a recording is logged and skipped."""
    try:
        name = recording_basename(filename)
    except RecordingError as exc:
        log.warning("recordings: call %s: %s", call_ref, exc.message)
        return None
    row, created = await recordings.register(
        session, pbx=pbx, call_ref=call_ref, call_pk=call_pk, filename=name, ended_at=ended_at
    )
    if created:
        await _schedule_step(session, row, ended_at)
    return row


async def file_arrived(
    session: AsyncSession,
    *,
    pbx: str,
    call_ref: str,
    call_pk: int | None,
    filename: str,
    now: datetime,
) -> Recording:
    """A PBX pushed the file of a call: process it now. A stored recording stays as it is (a
    retried upload); one given up as missing or failed gets a fresh wait from now."""
    row, _ = await recordings.register(
        session, pbx=pbx, call_ref=call_ref, call_pk=call_pk, filename=filename, ended_at=now
    )
    if row.call_pk is None:
        row.call_pk = call_pk
    if row.state in (RecordingState.MISSING.value, RecordingState.FAILED.value):
        row.state = RecordingState.PENDING.value
        row.ended_at = now
        row.error = None
    if row.state == RecordingState.PENDING.value:
        row.next_attempt_at = now
        await _schedule_step(session, row, now)
    return row


async def _schedule_step(session: AsyncSession, row: Recording, due_at: datetime) -> None:
    # A key per attempt: rescheduling the running job's own key would drop its result.
    await jobs.schedule(
        session,
        PROCESS_JOB,
        due_at,
        {"recording_id": row.id},
        dedupe_key=f"recording:{row.id}:{row.attempts}",
    )


# ---------------------------------------------------------------- job handlers


def _job_of(row: Recording) -> RecordingJob:
    return RecordingJob(
        call_id=row.call_ref,
        filename=row.filename,
        ended_at=row.ended_at,
        state=JobState.PENDING,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
    )


async def process(
    runtime: RecordingsRuntime, session: AsyncSession, job: ScheduledJob, now: datetime
) -> Sequence[DomainEvent]:
    """One step of a recording's processing (the handler of ``recording.process``)."""
    recording_id = int(job.payload["recording_id"])
    row = await session.get(Recording, recording_id)
    if row is None or row.state != RecordingState.PENDING.value:
        return []
    before = _job_of(row)
    await session.commit()  # no transaction held open across the conversion
    outcome = await runtime.processor.step(before)
    row = await session.get(Recording, recording_id, populate_existing=True)
    if row is None or row.state != RecordingState.PENDING.value:
        return []  # purged or handled meanwhile; a stored copy is then an orphan at worst
    after = outcome.job
    row.attempts = after.attempts
    row.next_attempt_at = after.next_attempt_at
    row.error = after.error[:500] if after.error else None
    if after.state is JobState.STORED and outcome.stored is not None:
        stored = outcome.stored
        row.state = RecordingState.STORED.value
        row.storage_key = stored.key
        row.format = stored.format
        row.size = stored.size
        row.duration_s = stored.duration_s
        row.sha256 = stored.sha256
        row.stored_at = stored.created_at
        row.original_kept = runtime.settings.keep_original
        await recordings.link_activity(session, row)
        if runtime.settings.retention_days > 0:
            await schedule_purge(session, runtime, runtime.local_day(now) + timedelta(days=1))
    elif after.state in (JobState.MISSING, JobState.FAILED):
        row.state = after.state.value
    else:
        await _schedule_step(session, row, after.next_attempt_at or now)
    await session.commit()
    runtime.count(row.state if row.state != RecordingState.PENDING.value else "retry")
    if row.state == RecordingState.STORED.value and not runtime.settings.keep_original:
        source = runtime.spool_dir / (outcome.stored.source_name if outcome.stored else "")
        await asyncio.to_thread(source.unlink, missing_ok=True)
    return []


async def purge(runtime: RecordingsRuntime, session: AsyncSession, now: datetime) -> int:
    """Retention: delete expired recordings that are not on legal hold and mark their rows,
    batch after batch until none is left. Idempotent: deleting a deleted object is no error, so
    a run that fails midway (its marks rolled back) is simply repeated."""
    purged = 0
    while batch := await recordings.expired(
        session, now=now, retention_days=runtime.settings.retention_days
    ):
        for row in batch:
            if row.storage_key:
                await runtime.storage.delete(row.storage_key)
            recordings.mark_purged(row, now=now)
        purged += len(batch)
        await session.flush()
    if purged:
        log.info("recordings: retention purged %d recordings", purged)
        runtime.count(RecordingState.PURGED.value, purged)
    return purged


async def schedule_purge(session: AsyncSession, runtime: RecordingsRuntime, day: date) -> None:
    """The retention run of ``day`` (a local date), due at ``recordings.purge_at`` local time.
    One key per day, so scheduling it again (another recording stored, another instance) makes
    no second run."""
    start = datetime.combine(day, runtime.settings.purge_at, tzinfo=runtime.zone).astimezone(UTC)
    await jobs.schedule(
        session, PURGE_JOB, start, {"day": day.isoformat()}, f"{PURGE_JOB}:{day.isoformat()}"
    )


async def run_purge(
    runtime: RecordingsRuntime, session: AsyncSession, job: ScheduledJob, now: datetime
) -> Sequence[DomainEvent]:
    """The handler of ``recording.purge``: today's retention, then tomorrow's run scheduled in
    the same transaction (a failed run is retried by the scheduler with backoff)."""
    await purge(runtime, session, now)
    removed = await asyncio.to_thread(
        sweep_empty_recordings,
        runtime.spool_dir,
        now=now.timestamp(),
        older_than_s=EMPTY_SPOOL_AFTER_S,
    )
    if removed:
        log.info(
            "recordings: removed %d empty MixMonitor file(s) of unanswered calls", len(removed)
        )
    # The day after this run's own day (never this job's own key: rescheduling a running job
    # would drop its result).
    day = date.fromisoformat(job.payload["day"])
    await schedule_purge(session, runtime, max(day, runtime.local_day(now)) + timedelta(days=1))
    return []


# ---------------------------------------------------------------- construction


def open_runtime(
    settings: RecordingsSettings,
    *,
    clock: Clock,
    timezone: str,
    registry: CollectorRegistry,
) -> RecordingsRuntime:
    """The storage, the converter pool (started lazily) and the processor, with their metrics
    in ``registry``. Close it with :meth:`RecordingsRuntime.close`."""
    pool = ConverterPool(
        workers=settings.workers,
        format=settings.format,
        bitrate=settings.bitrate,
        ffmpeg=find_ffmpeg(settings.ffmpeg),
        niceness=settings.niceness,
    )
    runtime = RecordingsRuntime(
        settings, storage=build_storage(settings), pool=pool, clock=clock, timezone=timezone
    )
    runtime.outcomes = Counter(
        "cc_recordings_total",
        "Recording jobs by outcome (stored, missing, failed, retry, purged)",
        ["outcome"],
        registry=registry,
    )
    Gauge(
        "cc_recordings_converter_available",
        "1 when ffmpeg is there to convert recordings; 0 when they are kept as WAV",
        registry=registry,
    ).set(1 if pool.converter_available else 0)
    return runtime


def job_handlers(runtime: RecordingsRuntime) -> dict[str, jobs.JobHandler]:
    """The scheduler's handlers of the recordings' durable jobs, bound to ``runtime``."""

    async def run_process(session: AsyncSession, job: ScheduledJob, now: datetime) -> Any:
        return await process(runtime, session, job, now)

    async def run_purge_job(session: AsyncSession, job: ScheduledJob, now: datetime) -> Any:
        return await run_purge(runtime, session, job, now)

    return {PROCESS_JOB: run_process, PURGE_JOB: run_purge_job}
