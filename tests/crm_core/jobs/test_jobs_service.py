"""The durable job table: scheduling, claiming with leases, retries, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contact_center import db
from crm_core.jobs import service as jobs
from crm_core.jobs.model import JobStatus, ScheduledJob

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


async def _job(session: AsyncSession, key: str) -> ScheduledJob:
    job = await jobs.find(session, key)
    assert job is not None
    return job


async def test_schedule_is_idempotent_on_the_key_and_reschedules(session: AsyncSession) -> None:
    first = await jobs.schedule(session, "k", T0, {"n": 1}, "a")
    again = await jobs.schedule(session, "k", T0 + MIN, {"n": 2}, "a")
    await session.commit()
    assert again.id == first.id
    rows = (await session.scalars(select(ScheduledJob))).all()
    assert len(rows) == 1
    assert rows[0].due_at == T0 + MIN and rows[0].payload == {"n": 2}
    assert rows[0].status == JobStatus.PENDING


async def test_a_new_keyed_job_is_one_statement(session: AsyncSession) -> None:
    """Every finished call with a recording schedules one (the call log's hot path): the
    insert returns the job itself, no second round trip to load it."""
    statements: list[str] = []

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    engine = (await session.connection()).engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        job = await jobs.schedule(session, "k", T0, {"n": 1}, "new")
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert len(statements) == 1, statements
    assert (job.kind, job.due_at, job.payload, job.status) == ("k", T0, {"n": 1}, "pending")
    assert job.id is not None and job.attempts == 0 and job.dedupe_key == "new"
    await session.commit()
    assert (await _job(session, "new")).id == job.id


async def test_schedule_refuses_naive_times(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="naive"):
        await jobs.schedule(session, "k", datetime(2026, 1, 1), {}, "a")


async def test_a_job_that_ran_runs_again_only_when_moved(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a")
    [job] = await jobs.claim_due(session, T0, limit=5, worker_id="w")
    assert await jobs.complete(session, job.id, worker_id="w", now=T0)
    await jobs.schedule(session, "k", T0, {"edited": True}, "a")  # same time: stays done
    assert (await _job(session, "a")).status == JobStatus.DONE
    await jobs.schedule(session, "k", T0 + MIN, {}, "a")  # moved: runs again
    job = await _job(session, "a")
    assert job.status == JobStatus.PENDING and job.attempts == 0 and job.finished_at is None


async def test_cancelled_job_is_revived_by_scheduling_again(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a")
    assert await jobs.cancel(session, "a", at=T0)
    assert not await jobs.cancel(session, "a", at=T0)  # nothing live any more
    assert await jobs.claim_due(session, T0 + MIN, limit=5, worker_id="w") == []
    await jobs.schedule(session, "k", T0, {}, "a")
    assert (await _job(session, "a")).status == JobStatus.PENDING


async def test_cancel_prefix_and_live_keys(session: AsyncSession) -> None:
    for key in ("invoice:1:remind:3d", "invoice:1:remind:0d", "invoice:12:remind:0d"):
        await jobs.schedule(session, "k", T0, {}, key)
    assert sorted(await jobs.live_keys(session, "invoice:1:")) == [
        "invoice:1:remind:0d",
        "invoice:1:remind:3d",
    ]
    assert await jobs.cancel_prefix(session, "invoice:1:", at=T0) == 2
    assert (await _job(session, "invoice:12:remind:0d")).status == JobStatus.PENDING


async def test_claim_takes_only_due_jobs_oldest_first(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0 + 2 * MIN, {}, "later")
    await jobs.schedule(session, "k", T0 + MIN, {}, "sooner")
    await jobs.schedule(session, "k", T0 + 10 * MIN, {}, "future")
    await session.commit()
    assert await jobs.claim_due(session, T0, limit=10, worker_id="w") == []
    claimed = await jobs.claim_due(session, T0 + 5 * MIN, limit=10, worker_id="w")
    assert [j.dedupe_key for j in claimed] == ["sooner", "later"]
    assert all(j.status == JobStatus.RUNNING and j.attempts == 1 for j in claimed)
    assert claimed[0].locked_by == "w"
    assert claimed[0].locked_until == T0 + 5 * MIN + jobs.DEFAULT_LEASE
    # Claimed jobs are not claimed again while their lease holds.
    assert await jobs.claim_due(session, T0 + 6 * MIN, limit=10, worker_id="x") == []


async def test_claim_respects_the_limit(session: AsyncSession) -> None:
    for i in range(5):
        await jobs.schedule(session, "k", T0, {"i": i}, f"j{i}")
    first = await jobs.claim_due(session, T0, limit=2, worker_id="w")
    second = await jobs.claim_due(session, T0, limit=10, worker_id="w")
    assert len(first) == 2 and len(second) == 3
    assert {j.id for j in first}.isdisjoint(j.id for j in second)


async def test_an_expired_lease_is_claimed_again(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a")
    lease = timedelta(seconds=30)
    [job] = await jobs.claim_due(session, T0, limit=5, worker_id="dead", lease=lease)
    await session.commit()
    assert (
        await jobs.claim_due(session, T0 + lease - timedelta(seconds=1), limit=5, worker_id="w2")
        == []
    )
    [again] = await jobs.claim_due(
        session, T0 + lease + timedelta(seconds=1), limit=5, worker_id="w2"
    )
    assert again.id == job.id and again.locked_by == "w2" and again.attempts == 2
    # The dead worker's late completion is refused: the job is not his any more.
    assert not await jobs.complete(session, job.id, worker_id="dead", now=T0 + MIN)
    assert await jobs.complete(session, job.id, worker_id="w2", now=T0 + MIN)


async def test_fail_retries_with_backoff_then_ends_failed(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a", max_attempts=3)
    now = T0
    delays = []
    for attempt in (1, 2):
        [job] = await jobs.claim_due(session, now, limit=5, worker_id="w")
        assert job.attempts == attempt
        status = await jobs.fail(session, job.id, worker_id="w", error="boom", now=now)
        assert status == JobStatus.PENDING
        job = await _job(session, "a")
        delays.append(job.due_at - now)
        assert job.last_error == "boom"
        assert (
            await jobs.claim_due(session, job.due_at - timedelta(seconds=1), limit=5, worker_id="w")
            == []
        )
        now = job.due_at
    assert delays == [jobs.BASE_BACKOFF, 2 * jobs.BASE_BACKOFF]
    [job] = await jobs.claim_due(session, now, limit=5, worker_id="w")
    assert await jobs.fail(session, job.id, worker_id="w", error="boom", now=now) == "failed"
    job = await _job(session, "a")
    assert job.status == JobStatus.FAILED and job.attempts == 3 and job.finished_at == now
    assert await jobs.claim_due(session, now + timedelta(days=1), limit=5, worker_id="w") == []


def test_retry_delay_is_exponential_and_capped() -> None:
    assert jobs.retry_delay(1) == timedelta(seconds=30)
    assert jobs.retry_delay(3) == timedelta(minutes=2)
    assert jobs.retry_delay(30) == jobs.MAX_BACKOFF


async def test_a_lease_expiring_on_the_last_attempt_ends_failed(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a", max_attempts=1)
    await jobs.claim_due(session, T0, limit=5, worker_id="dead", lease=MIN)
    assert await jobs.claim_due(session, T0 + 2 * MIN, limit=5, worker_id="w") == []
    job = await _job(session, "a")
    assert job.status == JobStatus.FAILED and "lease expired" in (job.last_error or "")


async def test_rescheduling_a_running_job_voids_the_running_claim(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "a")
    [job] = await jobs.claim_due(session, T0, limit=5, worker_id="w")
    await jobs.schedule(session, "k", T0 + MIN, {}, "a")
    assert not await jobs.complete(session, job.id, worker_id="w", now=T0)
    assert await jobs.fail(session, job.id, worker_id="w", error="x", now=T0) is None
    job = await _job(session, "a")
    assert job.status == JobStatus.PENDING and job.due_at == T0 + MIN


async def test_schedule_many_inserts_and_resets(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, "b0")
    [job] = await jobs.claim_due(session, T0, limit=5, worker_id="w")
    await jobs.complete(session, job.id, worker_id="w", now=T0)
    items = [(T0 + MIN, {"i": i}, f"b{i}") for i in range(3)]
    assert await jobs.schedule_many(session, "k", items) == 3
    await session.commit()
    session.expunge_all()
    rows = (await session.scalars(select(ScheduledJob).order_by(ScheduledJob.dedupe_key))).all()
    assert [(r.dedupe_key, r.status, r.payload) for r in rows] == [
        ("b0", "pending", {"i": 0}),
        ("b1", "pending", {"i": 1}),
        ("b2", "pending", {"i": 2}),
    ]
    assert all(r.due_at == T0 + MIN for r in rows)


async def test_purge_keeps_failed_and_recent_jobs(session: AsyncSession) -> None:
    for key in ("old", "new", "bad"):
        await jobs.schedule(session, "k", T0, {}, key, max_attempts=1)
    claimed = {j.dedupe_key: j for j in await jobs.claim_due(session, T0, limit=5, worker_id="w")}
    await jobs.complete(session, claimed["old"].id, worker_id="w", now=T0)
    await jobs.complete(session, claimed["new"].id, worker_id="w", now=T0 + timedelta(days=40))
    await jobs.fail(session, claimed["bad"].id, worker_id="w", error="x", now=T0)
    assert await jobs.purge_finished(session, finished_before=T0 + timedelta(days=10)) == 1
    assert await jobs.find(session, "old") is None
    assert await jobs.find(session, "new") is not None
    assert await jobs.find(session, "bad") is not None


async def test_unkeyed_jobs_are_independent(session: AsyncSession) -> None:
    await jobs.schedule(session, "k", T0, {}, None)
    await jobs.schedule(session, "k", T0, {}, None)
    assert len(await jobs.claim_due(session, T0, limit=5, worker_id="w")) == 2


async def test_two_workers_never_claim_the_same_job(engine: AsyncEngine) -> None:
    """PostgreSQL: while one worker's claim is uncommitted, SKIP LOCKED hides its rows from
    the other; SQLite has one writer, so there the second claim follows the first."""
    sessions = db.sessionmaker(engine)
    async with sessions() as s:
        for i in range(4):
            await jobs.schedule(s, "k", T0, {"i": i}, f"j{i}")
        await s.commit()
    async with sessions() as a, sessions() as b:
        got_a = await jobs.claim_due(a, T0, limit=2, worker_id="a")
        if engine.dialect.name == "postgresql":
            got_b = await jobs.claim_due(b, T0, limit=10, worker_id="b")
            await a.commit()
            await b.commit()
        else:
            await a.commit()
            got_b = await jobs.claim_due(b, T0, limit=10, worker_id="b")
            await b.commit()
    ids_a = {j.id for j in got_a}
    ids_b = {j.id for j in got_b}
    assert len(ids_a) == 2 and len(ids_b) == 2 and ids_a.isdisjoint(ids_b)
    async with sessions() as s:
        owners: dict[str, Any] = {
            j.dedupe_key: j.locked_by for j in await s.scalars(select(ScheduledJob))
        }
    assert sorted(owners.values()) == ["a", "a", "b", "b"]


async def test_schedule_of_the_same_key_from_two_sessions_makes_one_job(
    engine: AsyncEngine,
) -> None:
    sessions = db.sessionmaker(engine)
    async with sessions() as a:
        await jobs.schedule(a, "k", T0, {"by": "a"}, "same")
        await a.commit()
    async with sessions() as b:
        await jobs.schedule(b, "k", T0 + MIN, {"by": "b"}, "same")
        await b.commit()
    async with sessions() as s:
        rows = (await s.scalars(select(ScheduledJob))).all()
    assert len(rows) == 1 and rows[0].payload == {"by": "b"} and rows[0].due_at == T0 + MIN
