"""The durable job scheduler: runs the jobs of ``scheduled_jobs`` when they fall due.

Every ``interval`` seconds (and once at start, so reminders missed while the server was down go
out right away) a :class:`Scheduler` claims due jobs with the application's clock, runs the
handler registered for each job's kind in a transaction of its own, marks the job done in that
same transaction, commits, and only then publishes the events the handler returned. A failing
handler rolls back and the job is retried with backoff until it ends ``failed``; it never holds
up the other jobs. Claims are leases, so with several instances each job runs once, and a job
whose worker died is picked up again when its lease runs out.

Up to ``concurrency`` jobs run at once, so one slow job (a provider that takes 30 s to answer)
holds up neither the reminders nor the other sends; the loop goes on claiming while jobs run.
Jobs that share a ``lane`` in their payload (the messages of one conversation) run one after
the other in the order they were claimed, so a client gets a manager's messages in order.

Handlers (``crm_core.jobs.service.JobHandler``), one per job kind, are handed to the scheduler
by the composition root (``contact_center.app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contact_center.background import STOP_TIMEOUT_S, Periodic
from crm_core.clock import Clock
from crm_core.events import DomainEvent
from crm_core.jobs import service as jobs
from crm_core.jobs.model import ScheduledJob
from crm_core.notifications import service as notifications
from crm_core.ports import EventPublisher

log = logging.getLogger(__name__)

PURGE_EVERY = timedelta(hours=1)
KEEP_FINISHED = timedelta(days=30)


class UnknownJobKind(Exception):
    """No handler is registered for a job's kind (it is retried: a newer instance may know)."""


class JobHandlers:
    """Job kind -> handler."""

    def __init__(self, handlers: Mapping[str, jobs.JobHandler] | None = None) -> None:
        self._handlers: dict[str, jobs.JobHandler] = {}
        for kind, handler in (handlers or {}).items():
            self.register(kind, handler)

    def register(self, kind: str, handler: jobs.JobHandler) -> None:
        existing = self._handlers.get(kind)
        if existing is not None and existing is not handler:
            raise ValueError(f"job kind {kind!r} already has handler {existing!r}")
        self._handlers[kind] = handler

    def get(self, kind: str) -> jobs.JobHandler | None:
        return self._handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self._handlers)


class Scheduler:
    """Polls the job table and runs due jobs; one per instance."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventPublisher,
        clock: Clock,
        handlers: JobHandlers | None = None,
        worker_id: str | None = None,
        interval: float = 1.0,
        batch: int = 20,
        concurrency: int = 8,
        lease: timedelta = jobs.DEFAULT_LEASE,
        base_backoff: timedelta = jobs.BASE_BACKOFF,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._sessions = sessions
        self._bus = bus
        self._clock = clock
        self.handlers = handlers or JobHandlers()
        self.worker_id = (worker_id or f"pid{os.getpid()}")[:64]
        self.batch = batch
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.concurrency = concurrency
        self._running: set[asyncio.Task[None]] = set()
        self._lanes: dict[str, asyncio.Task[None]] = {}  # lane -> its last job's task
        self.lease = lease
        self.base_backoff = base_backoff
        self._loop = Periodic("scheduler", self._tick, interval)
        self._last_purge: datetime | None = None
        self._last_tick: datetime | None = None
        self._last_error: str | None = None
        self.done = 0
        self.failed = 0
        self._runs: Counter | None = None
        if registry is not None:
            self._runs = Counter(
                "cc_scheduler_job_runs_total",
                "Scheduled job runs by kind and outcome",
                ["kind", "outcome"],
                registry=registry,
            )

    def register(self, kind: str, handler: jobs.JobHandler) -> None:
        """Run ``handler`` for jobs of ``kind``."""
        self.handlers.register(kind, handler)

    async def run_once(self) -> int:
        """One tick: claim due jobs (batch after batch while full) and run them; returns how
        many ran (successfully or not), once they all have."""
        started = await self._claim_and_start()
        if started:
            await asyncio.gather(*started)
        return len(started)

    async def _claim_and_start(self) -> list[asyncio.Task[None]]:
        """Claim due jobs while there is room for them (``concurrency`` running at most) and
        start each; returns the started tasks without waiting for them."""
        started: list[asyncio.Task[None]] = []
        while True:
            room = self.concurrency - len(self._running)
            if room <= 0 or self._loop.stopping:
                break
            limit = min(self.batch, room)
            now = self._clock.now()
            async with self._sessions() as session:
                claimed = await jobs.claim_due(
                    session, now, limit=limit, worker_id=self.worker_id, lease=self.lease
                )
                await session.commit()
            started.extend(self._start(job) for job in claimed)
            if len(claimed) < limit:
                break
        self._last_tick = self._clock.now()
        await self._maybe_purge()
        return started

    def _start(self, job: ScheduledJob) -> asyncio.Task[None]:
        lane = job.payload.get("lane") if isinstance(job.payload, dict) else None
        before = self._lanes.get(str(lane)) if lane is not None else None
        task = asyncio.get_running_loop().create_task(
            self._run_after(before, job), name=f"job-{job.id}"
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        if lane is not None:
            key = str(lane)
            self._lanes[key] = task

            def _free(done: asyncio.Task[None]) -> None:
                if self._lanes.get(key) is done:
                    del self._lanes[key]

            task.add_done_callback(_free)
        return task

    async def _run_after(self, before: asyncio.Task[None] | None, job: ScheduledJob) -> None:
        if before is not None and not before.done():
            await asyncio.wait((before,))  # its lane's earlier job first
        await self._run(job)

    async def _run(self, job: ScheduledJob) -> None:
        handler = self.handlers.get(job.kind)
        events: list[DomainEvent] = []
        try:
            if handler is None:
                raise UnknownJobKind(f"no handler for job kind {job.kind!r}")
            async with self._sessions() as session:
                events = list(await handler(session, job, self._clock.now()))
                events += await notifications.record(session, events, now=self._clock.now())
                held = await jobs.complete(
                    session, job.id, worker_id=self.worker_id, now=self._clock.now()
                )
                if not held:
                    # Rescheduled, cancelled or re-claimed meanwhile: its new run decides.
                    await session.rollback()
                    log.info("job %s (%s) changed while running; result dropped", job.id, job.kind)
                    self._count(job.kind, "dropped")
                    return
                await session.commit()
        except Exception as exc:
            await self._fail(job, exc)
            return
        self.done += 1
        self._count(job.kind, "done")
        for event in events:
            await self._bus.publish(event)
        log.debug("job %s (%s) done, %d events", job.id, job.kind, len(events))

    async def _fail(self, job: ScheduledJob, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        try:
            async with self._sessions() as session:
                status = await jobs.fail(
                    session,
                    job.id,
                    worker_id=self.worker_id,
                    error=error,
                    now=self._clock.now(),
                    base_backoff=self.base_backoff,
                )
                await session.commit()
        except Exception:
            # The lease runs out and the job is claimed again; nothing else to do here.
            log.exception("could not record the failure of job %s (%s)", job.id, job.kind)
            return
        self.failed += 1
        self._count(job.kind, "failed" if status == "failed" else "retry")
        log.warning(
            "job %s (%s) attempt %d of %d failed (%s): %s",
            job.id,
            job.kind,
            job.attempts,
            job.max_attempts,
            status,
            error,
        )

    def _count(self, kind: str, outcome: str) -> None:
        if self._runs is not None:
            self._runs.labels(kind, outcome).inc()

    async def _maybe_purge(self) -> None:
        now = self._clock.now()
        if self._last_purge is not None and now - self._last_purge < PURGE_EVERY:
            return
        self._last_purge = now
        async with self._sessions() as session:
            purged = await jobs.purge_finished(session, finished_before=now - KEEP_FINISHED)
            await session.commit()
        if purged:
            log.info("purged %d finished jobs", purged)

    async def _tick(self) -> None:
        try:
            await self._claim_and_start()  # the jobs run on while the loop claims more
            self._last_error = None
        except Exception as exc:  # the database may be away for a while; keep polling
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning("scheduler tick failed: %s", self._last_error)

    def start(self) -> None:
        """Start polling in the background (once; the first tick at once)."""
        self._loop.start()

    async def close(self) -> None:
        """Stop polling: the jobs already claimed are finished first (for a bounded time),
        then the loop ends; a job still running after that is abandoned to its lease."""
        await self._loop.stop()
        running = set(self._running)
        if not running:
            return
        _, late = await asyncio.wait(running, timeout=STOP_TIMEOUT_S)
        for task in late:
            log.warning("%s still running at stop; left to its lease", task.get_name())
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def provide_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "status": "ok" if self._last_error is None else "degraded",
            "worker": self.worker_id,
            "kinds": self.handlers.kinds(),
            "done": self.done,
            "failed": self.failed,
            "running": len(self._running),
            "last_tick": self._last_tick.isoformat() if self._last_tick else None,
        }
        if self._last_error:
            status["last_error"] = self._last_error
        return status
