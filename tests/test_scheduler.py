"""The scheduler delivers reminders at the right time with a controllable clock, once, across
restarts and failures, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from contact_center import db
from contact_center.scheduler import JobHandlers, Scheduler
from crm_core.clock import ManualClock
from crm_core.events import DomainEvent
from crm_core.jobs import service as jobs
from crm_core.jobs.model import JobStatus, ScheduledJob
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.schemas import TaskInput
from tests.crm_core.tasks.world import T0, Recorder, build_world
from tests.helpers import until

MIN = timedelta(minutes=1)


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return db.sessionmaker(engine)


def make_scheduler(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, bus: Recorder, **kw: Any
) -> Scheduler:
    scheduler = Scheduler(sessions=sessions, bus=bus, clock=clock, worker_id="test", **kw)
    scheduler.register(tasks.REMINDER_JOB, tasks.remind_task)
    return scheduler


async def _task(sessions: async_sessionmaker[AsyncSession], **kw: Any) -> int:
    async with sessions() as s:
        w = await build_world(s)
        data = TaskInput(title="Call Ivan Co", kind="call_back", **kw)
        task, _ = await tasks.create_task(s, data, actor=w.user("ivan"), rules=CrmRules(), now=T0)
        await s.commit()
        return task.id


async def test_a_task_reminder_fires_at_its_time_not_before(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    bus = Recorder()
    task_id = await _task(sessions, due_at=T0 + 30 * MIN, remind_at=T0 + 20 * MIN)
    scheduler = make_scheduler(sessions, clock, bus)
    assert await scheduler.run_once() == 0
    clock.advance(20 * MIN - timedelta(seconds=1))
    assert await scheduler.run_once() == 0
    assert bus.events == []
    clock.advance(timedelta(seconds=1))
    assert await scheduler.run_once() == 1
    [event, notice] = bus.events  # the reminder, and its notification stored with the job
    assert event.name == "task.due" and event.task_id == task_id
    assert (notice.name, notice.kind, notice.audience) == (
        "notification.created",
        "task.due",
        event.audience,
    )
    assert event.due_at == T0 + 30 * MIN and event.remind_at == T0 + 20 * MIN
    assert event.audience[0].startswith("user:")
    clock.advance(timedelta(hours=1))
    assert await scheduler.run_once() == 0  # once only
    assert len(bus.events) == 2


async def test_a_new_scheduler_on_the_same_database_still_fires(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    await _task(sessions, due_at=T0 + 5 * MIN)
    first = make_scheduler(sessions, clock, Recorder())
    await first.run_once()
    await first.close()
    clock.advance(10 * MIN)  # the server was down when the reminder fell due
    bus = Recorder()
    restarted = make_scheduler(sessions, clock, bus)
    assert await restarted.run_once() == 1
    assert [e.name for e in bus.events] == ["task.due", "notification.created"]


async def test_a_worker_that_died_mid_job_is_taken_over_after_its_lease(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    await _task(sessions, due_at=T0)
    async with sessions() as s:  # a worker claims, then crashes before running the job
        [job] = await jobs.claim_due(s, T0, limit=5, worker_id="crashed", lease=2 * MIN)
        await s.commit()
    bus = Recorder()
    scheduler = make_scheduler(sessions, clock, bus)
    assert await scheduler.run_once() == 0
    clock.advance(3 * MIN)
    assert await scheduler.run_once() == 1
    assert [e.name for e in bus.events] == ["task.due", "notification.created"]
    async with sessions() as s:
        done = await s.get(ScheduledJob, job.id)
        assert done is not None and done.status == JobStatus.DONE and done.attempts == 2


async def test_a_failing_handler_retries_with_backoff_and_ends_failed(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    calls: list[int] = []

    async def flaky(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[DomainEvent]:
        calls.append(job.attempts)
        raise RuntimeError("provider down")

    async def fine(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[DomainEvent]:
        return [DomainEvent(audience=("user:1",))]

    async with sessions() as s:
        await jobs.schedule(s, "flaky", T0, {}, "flaky", max_attempts=3)
        await jobs.schedule(s, "fine", T0, {}, "fine-1")
        await s.commit()
    bus = Recorder()
    scheduler = Scheduler(
        sessions=sessions,
        bus=bus,
        clock=clock,
        worker_id="w",
        base_backoff=timedelta(seconds=10),
    )
    scheduler.register("flaky", flaky)
    scheduler.register("fine", fine)
    assert await scheduler.run_once() == 2
    assert len(bus.events) == 1  # the other job was not held up
    assert calls == [1]
    clock.advance(timedelta(seconds=9))
    await scheduler.run_once()
    assert calls == [1]  # not before the backoff
    clock.advance(timedelta(seconds=1))
    await scheduler.run_once()
    assert calls == [1, 2]
    clock.advance(timedelta(seconds=20))  # second backoff: 2 x 10 s
    await scheduler.run_once()
    assert calls == [1, 2, 3]
    clock.advance(timedelta(hours=1))
    await scheduler.run_once()
    assert calls == [1, 2, 3]
    async with sessions() as s:
        job = await jobs.find(s, "flaky")
        assert job is not None and job.status == JobStatus.FAILED
        assert job.last_error == "RuntimeError: provider down"
    assert scheduler.failed == 3 and scheduler.done == 1


async def test_an_unknown_kind_fails_without_blocking(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    async with sessions() as s:
        await jobs.schedule(s, "robot.step", T0, {}, "r", max_attempts=1)
        await s.commit()
    scheduler = Scheduler(sessions=sessions, bus=Recorder(), clock=clock)
    assert await scheduler.run_once() == 1
    async with sessions() as s:
        job = await jobs.find(s, "r")
        assert job is not None and job.status == JobStatus.FAILED
        assert "no handler" in (job.last_error or "")


async def test_a_job_rescheduled_while_running_drops_its_result(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    bus = Recorder()

    async def moved_meanwhile(
        session: AsyncSession, job: ScheduledJob, now: Any
    ) -> Sequence[DomainEvent]:
        async with sessions() as other:  # a user moves the reminder while it runs
            await jobs.schedule(other, "k", T0 + 5 * MIN, {}, "k1")
            await other.commit()
        return [DomainEvent()]

    async with sessions() as s:
        await jobs.schedule(s, "k", T0, {}, "k1")
        await s.commit()
    scheduler = Scheduler(sessions=sessions, bus=bus, clock=clock)
    scheduler.register("k", moved_meanwhile)
    await scheduler.run_once()
    assert bus.events == []
    async with sessions() as s:
        job = await jobs.find(s, "k1")
        assert job is not None and job.status == JobStatus.PENDING


async def test_batches_run_until_no_due_job_is_left(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    seen: list[int] = []

    async def handler(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[Any]:
        seen.append(job.payload["i"])
        return []

    async with sessions() as s:
        for i in range(7):
            await jobs.schedule(s, "k", T0 + i * timedelta(seconds=1), {"i": i}, f"k{i}")
        await s.commit()
    scheduler = Scheduler(sessions=sessions, bus=Recorder(), clock=clock, batch=3)
    scheduler.register("k", handler)
    clock.advance(MIN)
    assert await scheduler.run_once() == 7
    assert seen == list(range(7))


async def test_the_background_loop_polls_and_stops(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    bus = Recorder()
    await _task(sessions, due_at=T0 + MIN)
    scheduler = make_scheduler(sessions, clock, bus, interval=0.02)
    scheduler.start()
    try:
        clock.advance(MIN)
        await until(lambda: bus.named("task.due"))
        status = scheduler.provide_status()
        assert status["status"] == "ok" and status["done"] == 1
        assert "task.remind" in status["kinds"]
    finally:
        await scheduler.close()
    async with sessions() as s:
        assert (await s.scalars(select(ScheduledJob.status))).all() == ["done"]


def test_a_kind_has_one_handler() -> None:
    registry = JobHandlers()

    async def a(session: Any, job: Any, now: Any) -> list[Any]:
        return []

    async def b(session: Any, job: Any, now: Any) -> list[Any]:
        return []

    registry.register("k", a)
    registry.register("k", a)  # the same again is fine (setup may run twice)
    with pytest.raises(ValueError, match="already"):
        registry.register("k", b)


async def test_a_slow_job_holds_up_no_other_job(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A provider that does not answer keeps its own job running, and only it: the reminders
    and sends due after it run meanwhile (they waited behind it one at a time before)."""
    clock = ManualClock(T0)
    release = asyncio.Event()
    finished: list[str] = []

    async def slow(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[DomainEvent]:
        await release.wait()
        finished.append("slow")
        return []

    async def fast(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[DomainEvent]:
        finished.append(job.payload["name"])
        return []

    async with sessions() as s:
        await jobs.schedule(s, "slow", T0, {}, "slow")  # due first: claimed first
        for i in range(3):
            await jobs.schedule(s, "fast", T0 + timedelta(seconds=1), {"name": f"f{i}"}, f"f{i}")
        await s.commit()
    scheduler = Scheduler(sessions=sessions, bus=Recorder(), clock=clock, interval=0.02)
    scheduler.register("slow", slow)
    scheduler.register("fast", fast)
    clock.advance(MIN)
    scheduler.start()
    try:
        await until(lambda: len(finished) == 3)
        assert finished == ["f0", "f1", "f2"]
        await until(lambda: scheduler.provide_status()["running"] == 1)  # the slow one
        # Jobs falling due while it still runs are taken too.
        async with sessions() as s:
            await jobs.schedule(s, "fast", T0 + 2 * MIN, {"name": "later"}, "later")
            await s.commit()
        clock.advance(2 * MIN)
        await until(lambda: "later" in finished)
        release.set()
        await until(lambda: "slow" in finished)
    finally:
        release.set()
        await scheduler.close()
    async with sessions() as s:
        statuses = (await s.scalars(select(ScheduledJob.status))).all()
        assert set(statuses) == {"done"} and len(statuses) == 5


async def test_jobs_of_one_lane_run_in_order_and_at_most_concurrency_at_once(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    clock = ManualClock(T0)
    gate = asyncio.Event()
    running = 0
    most = 0
    order: list[str] = []

    async def handler(session: AsyncSession, job: ScheduledJob, now: Any) -> Sequence[Any]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        order.append(f"start {job.payload['name']}")
        await gate.wait()
        await asyncio.sleep(0.01 if job.payload["name"] == "a1" else 0)
        order.append(f"end {job.payload['name']}")
        running -= 1
        return []

    async with sessions() as s:
        # Lane "a": three messages of one conversation; the rest one job each.
        for i in range(3):
            await jobs.schedule(
                s, "k", T0 + i * timedelta(seconds=1), {"name": f"a{i}", "lane": "c:1"}, f"a{i}"
            )
        for i in range(6):
            await jobs.schedule(s, "k", T0 + timedelta(seconds=10 + i), {"name": f"x{i}"}, f"x{i}")
        await s.commit()
    scheduler = Scheduler(sessions=sessions, bus=Recorder(), clock=clock, concurrency=4)
    scheduler.register("k", handler)
    clock.advance(MIN)
    ran = asyncio.create_task(scheduler.run_once())
    await until(lambda: running == 2)  # a0 and x0; a1 waits behind a0 though it is claimed
    assert order == ["start a0", "start x0"]
    gate.set()
    assert await ran == 4  # room for four at a time: a0, a1, a2, x0
    assert await scheduler.run_once() == 4
    assert await scheduler.run_once() == 1
    assert most <= 4
    lane = [step for step in order if step.split()[1].startswith("a")]
    assert lane == ["start a0", "end a0", "start a1", "end a1", "start a2", "end a2"]
    assert sum(step.startswith("end") for step in order) == 9
