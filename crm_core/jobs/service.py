"""Durable scheduled work: schedule, cancel, claim, complete and fail jobs.

A job is written in the same transaction as the change that asks for it (a task's reminder is
scheduled when the task is saved), so a crash loses nothing. Workers claim due jobs with
``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL, so instances never wait for or double-run
each other's jobs; on SQLite (one writer at a time) the claim is a conditional ``UPDATE`` that
only one writer can win. A claim is a lease: the job is ``running`` until ``locked_until``; a
worker that dies mid-work leaves the lease to expire and the job is claimed again. Delivery is
therefore at least once, and handlers re-check the state they act on.

Every function takes the caller's session; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import rowcount, utcnow
from crm_core.events import DomainEvent
from crm_core.jobs.model import JobStatus, ScheduledJob

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_LEASE = timedelta(minutes=2)
BASE_BACKOFF = timedelta(seconds=30)
MAX_BACKOFF = timedelta(hours=1)

_LIVE = (JobStatus.PENDING.value, JobStatus.RUNNING.value)


class JobHandler(Protocol):
    """Runs one claimed job inside the worker's transaction and returns the events to publish
    once that transaction has committed. Raising fails the job (it is retried with backoff)."""

    async def __call__(
        self, session: AsyncSession, job: ScheduledJob, now: datetime
    ) -> Sequence[DomainEvent]: ...


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"naive {what} {value!r}: pass a timezone-aware value")
    return value


def _claimable(now: datetime) -> Any:
    """Due and pending, or running on a lease that has run out (its worker died)."""
    return or_(
        and_(ScheduledJob.status == JobStatus.PENDING.value, ScheduledJob.due_at <= now),
        and_(ScheduledJob.status == JobStatus.RUNNING.value, ScheduledJob.locked_until < now),
    )


async def find(session: AsyncSession, dedupe_key: str) -> ScheduledJob | None:
    """The job scheduled under ``dedupe_key``, in whatever state."""
    return await session.scalar(
        select(ScheduledJob)
        .where(ScheduledJob.dedupe_key == dedupe_key)
        .execution_options(populate_existing=True)
    )


async def schedule(
    session: AsyncSession,
    kind: str,
    due_at: datetime,
    payload: dict[str, Any],
    dedupe_key: str | None = None,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> ScheduledJob:
    """Schedule ``kind`` at ``due_at``; with ``dedupe_key`` at most one job exists per key.

    Scheduling an existing key again reschedules it: a pending, running or cancelled job becomes
    pending at the new ``due_at`` (a running one's worker then fails to complete it and drops its
    result). A job that already ran (done or failed) runs again only if ``due_at`` moved, so
    saving a task without changing its time does not repeat a reminder that already fired.
    """
    _aware(due_at, "due_at")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if dedupe_key is None:
        job = ScheduledJob(
            kind=kind,
            due_at=due_at,
            payload=payload,
            status=JobStatus.PENDING.value,
            attempts=0,
            max_attempts=max_attempts,
        )
        session.add(job)
        await session.flush()
        return job
    # Insert-if-absent in one statement, so two transactions scheduling the same key never
    # both insert (the unique key decides) and neither fails; the new row comes back as the
    # job itself (RETURNING the entity: no second round trip to load it).
    inserted = await session.scalar(
        _insert(session)(ScheduledJob)
        .values(
            kind=kind,
            due_at=due_at,
            payload=payload,
            status=JobStatus.PENDING.value,
            dedupe_key=dedupe_key,
            attempts=0,
            max_attempts=max_attempts,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(ScheduledJob),
        execution_options={"populate_existing": True},
    )
    if inserted is not None:
        return cast(ScheduledJob, inserted)
    stmt = select(ScheduledJob).execution_options(populate_existing=True)
    existing = await session.scalar(
        stmt.where(ScheduledJob.dedupe_key == dedupe_key).with_for_update()
    )
    assert existing is not None
    job = existing
    job.kind = kind
    job.payload = payload
    job.max_attempts = max_attempts
    already_ran = job.status in (JobStatus.DONE.value, JobStatus.FAILED.value)
    if not already_ran or job.due_at != due_at:
        job.due_at = due_at
        job.status = JobStatus.PENDING.value
        job.attempts = 0
        job.last_error = None
        job.locked_by = None
        job.locked_until = None
        job.finished_at = None
    await session.flush()
    return job


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return postgresql.insert if dialect == "postgresql" else sqlite.insert


async def schedule_many(
    session: AsyncSession,
    kind: str,
    items: Sequence[tuple[datetime, dict[str, Any], str]],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Schedule many keyed jobs ``(due_at, payload, dedupe_key)`` in a few statements (bulk
    assignments); an existing key is reset to pending at the new time. Returns the count."""
    if not items:
        return 0
    now = utcnow()
    rows = [
        {
            "kind": kind,
            "due_at": _aware(due_at, "due_at"),
            "payload": payload,
            "status": JobStatus.PENDING.value,
            "dedupe_key": key,
            "attempts": 0,
            "max_attempts": max_attempts,
            "created_at": now,
        }
        for due_at, payload, key in items
    ]
    stmt = _insert(session)(ScheduledJob)
    stmt = stmt.on_conflict_do_update(
        index_elements=["dedupe_key"],
        set_={
            "kind": stmt.excluded.kind,
            "due_at": stmt.excluded.due_at,
            "payload": stmt.excluded.payload,
            "status": JobStatus.PENDING.value,
            "attempts": 0,
            "max_attempts": stmt.excluded.max_attempts,
            "last_error": None,
            "locked_by": None,
            "locked_until": None,
            "finished_at": None,
        },
    )
    for start in range(0, len(rows), 500):
        await session.execute(stmt.values(rows[start : start + 500]))
    return len(rows)


async def cancel(session: AsyncSession, dedupe_key: str, *, at: datetime | None = None) -> bool:
    """Cancel the pending (or running) job under ``dedupe_key``; False if there was none."""
    result = await session.execute(
        update(ScheduledJob)
        .where(ScheduledJob.dedupe_key == dedupe_key, ScheduledJob.status.in_(_LIVE))
        .values(
            status=JobStatus.CANCELLED.value,
            locked_by=None,
            locked_until=None,
            finished_at=at or utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) > 0


def _prefix_like(prefix: str) -> Any:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return ScheduledJob.dedupe_key.like(escaped + "%", escape="\\")


async def live_keys(session: AsyncSession, prefix: str) -> list[str]:
    """The keys starting with ``prefix`` of jobs still pending or running."""
    keys = await session.scalars(
        select(ScheduledJob.dedupe_key).where(_prefix_like(prefix), ScheduledJob.status.in_(_LIVE))
    )
    return [k for k in keys if k is not None]


async def cancel_prefix(session: AsyncSession, prefix: str, *, at: datetime | None = None) -> int:
    """Cancel every pending or running job whose ``dedupe_key`` starts with ``prefix``
    (e.g. every reminder of one invoice); returns how many."""
    result = await session.execute(
        update(ScheduledJob)
        .where(_prefix_like(prefix), ScheduledJob.status.in_(_LIVE))
        .values(
            status=JobStatus.CANCELLED.value,
            locked_by=None,
            locked_until=None,
            finished_at=at or utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)


async def claim_due(
    session: AsyncSession,
    now: datetime,
    *,
    limit: int,
    worker_id: str,
    lease: timedelta = DEFAULT_LEASE,
) -> list[ScheduledJob]:
    """Claim up to ``limit`` due jobs for ``worker_id``: each becomes ``running`` until
    ``now + lease`` and counts one more attempt. Oldest due first.

    A job whose lease ran out on its last allowed attempt is marked ``failed`` instead of being
    claimed again. The caller commits the claim before running the jobs.
    """
    _aware(now, "now")
    stmt = (
        select(
            ScheduledJob.id, ScheduledJob.status, ScheduledJob.attempts, ScheduledJob.max_attempts
        )
        .where(_claimable(now))
        .order_by(ScheduledJob.due_at, ScheduledJob.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        # Rows another worker is claiming right now are skipped, not waited for.
        stmt = stmt.with_for_update(skip_locked=True)
    rows = (await session.execute(stmt)).all()
    exhausted = [
        r.id for r in rows if r.status == JobStatus.RUNNING.value and r.attempts >= r.max_attempts
    ]
    candidates = [r.id for r in rows if r.id not in exhausted]
    if exhausted:
        await session.execute(
            update(ScheduledJob)
            .where(ScheduledJob.id.in_(exhausted), _claimable(now))
            .values(
                status=JobStatus.FAILED.value,
                last_error="lease expired on the last attempt (worker died or hung)",
                locked_by=None,
                locked_until=None,
                finished_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    if not candidates:
        return []
    # Re-checking the claimable condition in the UPDATE makes the claim safe without row locks
    # too (SQLite): a job another worker claimed meanwhile no longer matches.
    claimed = (
        await session.scalars(
            update(ScheduledJob)
            .where(ScheduledJob.id.in_(candidates), _claimable(now))
            .values(
                status=JobStatus.RUNNING.value,
                locked_by=worker_id,
                locked_until=now + lease,
                attempts=ScheduledJob.attempts + 1,
            )
            .returning(ScheduledJob.id)
            .execution_options(synchronize_session=False)
        )
    ).all()
    if not claimed:
        return []
    jobs = await session.scalars(
        select(ScheduledJob)
        .where(ScheduledJob.id.in_(claimed))
        .order_by(ScheduledJob.due_at, ScheduledJob.id)
        .execution_options(populate_existing=True)
    )
    return list(jobs)


async def complete(session: AsyncSession, job_id: int, *, worker_id: str, now: datetime) -> bool:
    """Mark the job done if ``worker_id`` still holds it. False means it was rescheduled,
    cancelled or re-claimed meanwhile: the caller should roll back what the job did."""
    result = await session.execute(
        update(ScheduledJob)
        .where(
            ScheduledJob.id == job_id,
            ScheduledJob.status == JobStatus.RUNNING.value,
            ScheduledJob.locked_by == worker_id,
        )
        .values(
            status=JobStatus.DONE.value,
            locked_by=None,
            locked_until=None,
            last_error=None,
            finished_at=_aware(now, "now"),
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result) > 0


def retry_delay(
    attempts: int, *, base: timedelta = BASE_BACKOFF, cap: timedelta = MAX_BACKOFF
) -> timedelta:
    """Exponential backoff after the ``attempts``-th failure: base, 2×base, 4×base … capped."""
    delay: timedelta = min(base * (2 ** max(attempts - 1, 0)), cap)
    return delay


async def fail(
    session: AsyncSession,
    job_id: int,
    *,
    worker_id: str,
    error: str,
    now: datetime,
    base_backoff: timedelta = BASE_BACKOFF,
) -> str | None:
    """Record a failed run: retry later with exponential backoff, or end ``failed`` once
    ``max_attempts`` runs have failed. Returns the new status (None if ``worker_id`` no longer
    holds the job)."""
    _aware(now, "now")
    job = await session.scalar(
        select(ScheduledJob)
        .where(
            ScheduledJob.id == job_id,
            ScheduledJob.status == JobStatus.RUNNING.value,
            ScheduledJob.locked_by == worker_id,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if job is None:
        return None
    job.last_error = error[:4000]
    job.locked_by = None
    job.locked_until = None
    if job.attempts >= job.max_attempts:
        job.status = JobStatus.FAILED.value
        job.finished_at = now
    else:
        job.status = JobStatus.PENDING.value
        job.due_at = now + retry_delay(job.attempts, base=base_backoff)
    await session.flush()
    return job.status


async def purge_finished(session: AsyncSession, *, finished_before: datetime) -> int:
    """Delete done and cancelled jobs finished before ``finished_before`` (failed ones stay
    for inspection); returns how many."""
    result = await session.execute(
        delete(ScheduledJob)
        .where(
            ScheduledJob.status.in_((JobStatus.DONE.value, JobStatus.CANCELLED.value)),
            ScheduledJob.finished_at < _aware(finished_before, "finished_before"),
        )
        .execution_options(synchronize_session=False)
    )
    return rowcount(result)
