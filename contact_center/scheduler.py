"""The durable job scheduler: runs the jobs of ``scheduled_jobs`` when they fall due.

Every ``interval`` seconds (and once at start, so reminders missed while the server was down go
out right away) a :class:`Scheduler` claims due jobs with the application's clock, runs the
handler registered for each job's kind in a transaction of its own, marks the job done in that
same transaction, commits, and only then publishes the events the handler returned. A failing
handler rolls back and the job is retried with backoff until it ends ``failed``; it never holds
up the other jobs. Claims are leases, so with several instances each job runs once, and a job
whose worker died is picked up again when its lease runs out.

Handlers (``crm_core.jobs.service.JobHandler``), one per job kind, are handed to the scheduler
by the composition root (``contact_center.app``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contact_center.background import Periodic
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
        many ran (successfully or not)."""
        ran = 0
        while True:
            now = self._clock.now()
            async with self._sessions() as session:
                claimed = await jobs.claim_due(
                    session, now, limit=self.batch, worker_id=self.worker_id, lease=self.lease
                )
                await session.commit()
            for job in claimed:
                await self._run(job)
            ran += len(claimed)
            if len(claimed) < self.batch or self._loop.stopping:
                break
        self._last_tick = self._clock.now()
        await self._maybe_purge()
        return ran

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
            await self.run_once()
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

    def provide_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "status": "ok" if self._last_error is None else "degraded",
            "worker": self.worker_id,
            "kinds": self.handlers.kinds(),
            "done": self.done,
            "failed": self.failed,
            "last_tick": self._last_tick.isoformat() if self._last_tick else None,
        }
        if self._last_error:
            status["last_error"] = self._last_error
        return status
