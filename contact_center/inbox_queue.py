"""Webhook deliveries stored before they are answered and processed in batches after.

A verified webhook delivery is handed to :meth:`DeliveryQueue.put`: it is stored as it arrived
(method, headers, query, raw body) by a group commit — the deliveries of every webhook request
waiting at that moment go in one multi-row INSERT, idempotent on ``(channel, sha256(body))`` —
and the request waits (at most ``ack_wait`` seconds) for it to be processed, so the provider
is answered once its messages are in the CRM, or once they are stored when processing lags.

One worker task takes the due deliveries, oldest first, up to ``batch`` at a time, and
processes them in ONE transaction (the caller's ``process``), deleting them in it; the events
go on the bus after the commit. A batch that fails is taken again one delivery per
transaction, so one bad delivery holds up nobody: it is retried with back-off and, after
``MAX_ATTEMPTS``, kept with its error (``next_at`` NULL) and logged — never dropped
silently. A delivery stored and not processed (kill -9, the database away) is processed when
the server starts again. On PostgreSQL the batch is locked ``FOR UPDATE SKIP LOCKED``, so
several instances share the work and never process one delivery twice.

The deliveries are not stored first while the worker keeps up: each batch takes those waiting
in memory with the stored ones due, in one transaction that is their storing — messages,
statuses, and the ones to take again written as stored deliveries —, and they are answered
after its commit. That spares a statement and a commit each way (the row's insert, its
deletion) and a hop between two tasks: the message reaches the manager sooner. When it does
not keep up — ``direct_below`` deliveries wait (as they come, or when the worker comes to
take them), or one has waited ``direct_wait`` seconds — they are stored and answered at once,
and the worker takes them in batches as large as the backlog (up to ``batch``), which is what
carries a high rate (the providers' connections are freed instead of waiting for the
worker). A batch that fails is rolled back: the deliveries of it never stored are stored
then, for the worker; a kill before the commit leaves them unanswered, and the provider
delivers them again. One task does all the processing, so this instance's batches never wait
for each other's locks. ``direct_below`` 0: every delivery is stored first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import delete, select, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from channels.base import WebhookRequest
from contact_center import db
from crm_core.clock import Clock
from crm_core.conversations.model import Delivery
from crm_core.db import UnnestInsert, fetch_pg, is_postgresql, transient
from crm_core.events import DomainEvent
from crm_core.ports import EventPublisher

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BACKOFF = timedelta(seconds=2)
SWEEP_S = 5.0  # how often due deliveries nobody announced are looked for (retries, restarts)


@dataclass(frozen=True)
class Outcome:
    """What processing a batch did: the events to publish after the commit, and the
    deliveries to take again later (``retry``: id -> why), which stay stored."""

    events: list[DomainEvent]
    retry: dict[int, str]


Process = Callable[[AsyncSession, Sequence[Delivery], datetime], Awaitable[Outcome]]


def delivery_key(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


T = TypeVar("T")

# PostgreSQL: one statement for any number of deliveries (a row per array element).
_INSERT = UnnestInsert(
    Delivery.__table__,
    (
        "channel",
        "kind",
        "key",
        "method",
        "headers",
        "query",
        "body",
        "received_at",
        "next_at",
        "attempts",
    ),
    conflict="ON CONFLICT (channel, key) DO NOTHING",
    returning=("id", "channel", "key"),
)
_DELETE = text("DELETE FROM webhook_deliveries WHERE id = ANY(CAST(:ids AS INTEGER[]))")
# PostgreSQL: the due deliveries taken and deleted by one statement (the transaction that
# processes them commits the deletion, or a failure rolls it back); the ones to take again
# are written back (_settle). SKIP LOCKED: another worker's batch is not waited for.
_COLUMNS = sa_inspect(Delivery).column_attrs  # a taken row written back as it was
_TAKE = text(
    "DELETE FROM webhook_deliveries WHERE id IN (SELECT id FROM webhook_deliveries "
    "WHERE next_at <= :now ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED) RETURNING *"
)


class _Held:
    """The one connection a loop that works serially keeps between its transactions, on
    PostgreSQL. A pooled session pays a checkout and a pre-ping (three round trips) before its
    first statement: a batch of a few deliveries, many times a second, paid that every time.
    A connection found broken is dropped and the work done once more on a fresh one (what the
    pre-ping was for: a server restarted meanwhile). Elsewhere (SQLite): a pooled session."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, autocommit: bool = False
    ) -> None:
        self._sessions = sessions
        self._autocommit = autocommit  # work of one statement: no BEGIN and COMMIT to wait for
        self._conn: AsyncConnection | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in a session of its own on the kept connection; it commits what it keeps
        (the rest is rolled back)."""
        engine: AsyncEngine = self._sessions.kw["bind"]
        if engine.dialect.name != "postgresql":
            async with self._sessions() as session:
                return await work(session)

        async def in_session(conn: AsyncConnection) -> T:
            session = AsyncSession(bind=conn, expire_on_commit=False)
            try:
                return await work(session)
            finally:
                with contextlib.suppress(Exception):
                    await session.close()

        return await self.on_connection(in_session)

    async def on_connection(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` on the kept connection itself (PostgreSQL only): a statement that needs
        no session spares its setup."""
        engine: AsyncEngine = self._sessions.kw["bind"]
        for again in (True, False):
            kept = self._conn is not None and not self._conn.closed
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                conn = await engine.connect()
                if self._autocommit:
                    conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                self._conn = conn
            try:
                return await work(self._conn)
            except (DBAPIError, ConnectionError, OSError) as exc:
                broken = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if broken or db.unavailable(exc):
                    await self.close()
                    if kept and again:
                        continue  # a connection that went stale while kept: once more
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


PROCESSED = 0  # what a delivery processed at once was "stored" as (ids start at 1)
DIRECT_BELOW = 16  # deliveries waiting in memory from which they are stored (a burst)
DIRECT_WAIT = 0.01  # seconds a delivery waits in memory for the worker, then it is stored


@dataclass
class _Pending:
    values: dict[str, Any]
    stored: asyncio.Future[int | None]  # its id; None: stored already; PROCESSED
    parsed: Any = None
    since: float = 0.0  # the loop's clock when it came


def _fail(pendings: Sequence[_Pending], exc: BaseException) -> None:
    """The webhooks still waiting for ``pendings`` fail with ``exc`` (answered 5xx): the
    provider delivers them again."""
    for pending in pendings:
        if not pending.stored.done():
            pending.stored.set_exception(exc)


def _stopping(pendings: Sequence[_Pending]) -> None:
    _fail(pendings, ConnectionError("the server is stopping"))


PARSED_MAX = 10_000  # deliveries whose parsed form is held for the worker (a cache)


class DeliveryQueue:
    """The stored deliveries of the webhooks and the worker that processes them."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        process: Process,
        *,
        bus: EventPublisher,
        clock: Clock,
        batch: int = 200,
        ack_wait: float = 0.0,
        direct_below: int = DIRECT_BELOW,
        direct_wait: float = DIRECT_WAIT,
    ) -> None:
        self._sessions = sessions
        self._process = process
        self._bus = bus
        self._clock = clock
        self.batch = batch
        self.ack_wait = ack_wait
        self.direct_below = direct_below
        self.direct_wait = direct_wait
        self._incoming: list[_Pending] = []
        self._wake_store = asyncio.Event()
        self._wake_work = asyncio.Event()
        self._done: dict[int, asyncio.Future[None]] = {}
        self._sweep = False  # the worker is to look for stored deliveries due
        self._tasks: list[asyncio.Task[None]] = []
        # What the webhook parsed of a delivery, by its id, for the worker not to parse the
        # body again (a delivery taken after a restart, or by another instance, is parsed).
        self.parsed: dict[int, Any] = {}
        # Each loop keeps its own connection between batches; the store loop, one INSERT a
        # batch, in autocommit.
        self._store_conn = _Held(sessions, autocommit=True)
        self._store_lock = asyncio.Lock()
        self._work_conn = _Held(sessions)
        self.processed = 0
        self.batches = 0  # transactions that processed deliveries (processed / batches: size)
        self.failed = 0
        self.stored_first = 0  # deliveries written to the table before being processed

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """The storing and the processing tasks; the worker first takes what a previous run
        left stored."""
        if self._tasks:
            return
        self._sweep = True  # what a previous run left stored
        self._wake_work.set()
        self._tasks = [
            asyncio.create_task(self._store_loop(), name="deliveries:store"),
            asyncio.create_task(self._work_loop(), name="deliveries:work"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._store_conn.close()
        await self._work_conn.close()
        _stopping(self._incoming)
        self._incoming.clear()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def provide_status(self) -> dict[str, int]:
        """/healthz: deliveries processed and the batches that did it, stored first (the
        worker lagged: a burst), failed to process one by one, and waiting in memory now."""
        return {
            "processed": self.processed,
            "batches": self.batches,
            "stored_first": self.stored_first,
            "failed": self.failed,
            "waiting": len(self._incoming),
        }

    # ---------------------------------------------------------------- in

    async def put(
        self, kind: str, code: str, request: WebhookRequest, *, parsed: Any = None
    ) -> bool:
        """Store one (verified) delivery; wait until it is processed, at most ``ack_wait``
        seconds. True: processed; False: stored, to be processed. A storing failure (the
        database away) propagates: the provider is answered 5xx and delivers again.
        ``parsed``: what the caller read of it, handed to the worker with it."""
        if not self._tasks:
            self.start()
        now = request.received_at or self._clock.now()
        pending = _Pending(
            {
                "channel": code,
                "kind": kind,
                "key": delivery_key(request.body),
                "method": request.method[:8],
                "headers": _headers(request.headers),
                "query": dict(request.query),
                "body": request.body,
                "received_at": now,
                "next_at": now,
                "attempts": 0,
            },
            asyncio.get_running_loop().create_future(),
            parsed,
            asyncio.get_running_loop().time(),
        )
        self._incoming.append(pending)
        if not self.direct_below:
            self._wake_store.set()  # every delivery stored first
        else:
            self._wake_work.set()  # it takes them at once when it is free
            if len(self._incoming) in (1, self.direct_below):
                self._wake_store.set()  # the first's clock starts, or they are stored now
        delivery_id = await pending.stored
        if delivery_id == PROCESSED:
            return True
        if delivery_id is None:
            return False  # the same delivery is stored already and waits: processed once
        done = self._done.get(delivery_id)
        if done is None:
            return True  # processed before we looked
        try:
            async with asyncio.timeout(self.ack_wait):
                await asyncio.shield(done)
        except TimeoutError:
            return False
        return True

    async def _store_loop(self) -> None:
        """Stores the deliveries waiting in memory once ``direct_below`` of them wait, or the
        oldest has waited ``direct_wait`` (the worker is busy); with ``direct_below`` 0, all."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake_store.wait()
            self._wake_store.clear()
            while self._incoming:
                if self.direct_below and len(self._incoming) < self.direct_below:
                    if not self.direct_wait:
                        break
                    left = self._incoming[0].since + self.direct_wait - loop.time()
                    if left > 0:
                        # The worker may take them meanwhile; direct_below reached wakes it.
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(left):
                                await self._wake_store.wait()
                        self._wake_store.clear()
                        continue
                taken, self._incoming = self._incoming, []
                await self._store_taken(taken)

    async def _store_taken(self, taken: list[_Pending]) -> None:
        """``taken`` stored in one statement, each told its id (or its failure), and the
        worker woken for them."""
        try:
            ids = await self._store([p.values for p in taken])
        except asyncio.CancelledError:
            _stopping(taken)
            raise
        except Exception as exc:
            log.exception("storing %d webhook deliveries failed", len(taken))
            _fail(taken, exc)
            return
        self.stored_first += len(ids)
        loop = asyncio.get_running_loop()
        for p in taken:
            delivery_id = ids.get((p.values["channel"], p.values["key"]))
            if delivery_id is not None and delivery_id not in self._done:
                self._done[delivery_id] = loop.create_future()
                if p.parsed is not None:
                    if len(self.parsed) >= PARSED_MAX:
                        self.parsed.clear()  # others' (another instance took them)
                    self.parsed[delivery_id] = p.parsed
            if not p.stored.done():
                p.stored.set_result(delivery_id)
        self._sweep = True
        self._wake_work.set()

    async def _store(self, rows: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
        """One INSERT for every delivery waiting; a redelivery of one still stored (or twice
        in the same batch) is not stored again. (channel, key) -> id of the new ones."""
        unique = list({(r["channel"], r["key"]): r for r in rows}.values())
        engine: AsyncEngine = self._sessions.kw["bind"]
        # The store loop and the worker (a burst it found waiting, a failed batch's deliveries
        # never stored) share the connection.
        async with self._store_lock:
            if engine.dialect.name == "postgresql":
                return await self._store_conn.on_connection(
                    lambda conn: self._insert_pg(conn, unique)
                )
            return await self._store_conn.run(lambda session: self._insert(session, unique))

    @staticmethod
    async def _insert_pg(
        conn: AsyncConnection, unique: list[dict[str, Any]]
    ) -> dict[tuple[str, str], int]:
        """One statement in autocommit, on the connection itself (no session to set up for
        every webhook at a steady rate)."""
        rows = await fetch_pg(conn, _INSERT.statement, _INSERT.params(unique))
        return {(channel, key): row_id for row_id, channel, key in rows}

    @staticmethod
    async def _insert(
        session: AsyncSession, unique: list[dict[str, Any]]
    ) -> dict[tuple[str, str], int]:
        # SQLite: one statement with a row per delivery (executemany: its SQL compiled once).
        result = await session.execute(
            sqlite.insert(Delivery)
            .on_conflict_do_nothing(index_elements=["channel", "key"])
            .returning(Delivery.id, Delivery.channel, Delivery.key),
            unique,
        )
        ids = {(r.channel, r.key): r.id for r in result}
        await session.commit()
        return ids

    # ---------------------------------------------------------------- work

    async def _work_loop(self) -> None:
        """One task processes everything, so two batches of this instance never wait for each
        other's locks: each batch takes the stored deliveries due (they arrived first) and
        those waiting in memory (direct) together, in one transaction. The stored ones due
        (retries, another instance's leftovers) are looked for at least every ``SWEEP_S``: a
        steady stream of deliveries processed at once must not starve them."""
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):  # then swept below: SWEEP_S went by
                async with asyncio.timeout(SWEEP_S):
                    await self._wake_work.wait()
            self._wake_work.clear()
            try:
                while True:
                    if loop.time() - swept >= SWEEP_S:
                        self._sweep = True
                    direct: list[_Pending] = []
                    if self.direct_below and len(self._incoming) >= self.direct_below:
                        # A burst: stored (their webhooks answered) before it takes them.
                        taken, self._incoming = self._incoming, []
                        await self._store_taken(taken)
                    elif self.direct_below and self._incoming:
                        direct = self._incoming[: self.batch]
                        del self._incoming[: self.batch]
                    stored, self._sweep = self._sweep, False
                    if not stored and not direct:
                        break
                    if stored:
                        swept = loop.time()
                    # A batch short of the limit took every due delivery; what is stored
                    # meanwhile sets _sweep again.
                    if await self._batch(direct, stored=stored) >= self.batch:
                        self._sweep = True
            except asyncio.CancelledError:
                raise
            except Exception:  # the database away: keep the worker alive, try again later
                log.exception("processing webhook deliveries failed")
                self._sweep = True
                await asyncio.sleep(1)

    async def run_once(self) -> int:
        """Process one batch of due stored deliveries; how many were taken (0: nothing due)."""
        return await self._batch([], stored=True)

    async def _batch(self, direct: list[_Pending], *, stored: bool) -> int:
        """One transaction: up to ``batch`` stored deliveries due (``stored``), oldest first,
        and ``direct``, never stored (see the module's docstring): the ones of these to take
        again are stored in it, and they are answered after its commit. How many stored ones
        were taken. A failed batch is rolled back: ``direct`` is stored, the stored ones are
        taken one by one."""
        now = self._clock.now()
        first: dict[tuple[str, str], _Pending] = {}
        for pending in direct:  # one delivery twice in a batch: processed once
            first.setdefault((pending.values["channel"], pending.values["key"]), pending)
        fresh: list[Delivery] = []
        for number, pending in enumerate(first.values(), start=1):
            # Transient, never added: an id below 0 only names it to _process's outcome.
            row = transient(Delivery, {"id": -number, "error": None, **pending.values})
            fresh.append(row)
            if pending.parsed is not None:
                self.parsed[row.id] = pending.parsed

        async def work(session: AsyncSession) -> tuple[list[Delivery], Outcome | None]:
            taken = is_postgresql(session)
            due: list[Delivery] = []
            if stored and taken:
                taken_rows = await fetch_pg(session, _TAKE, {"now": now, "limit": self.batch})
                # Transient rows (never in the session): plain values, no ORM load.
                due = sorted((transient(Delivery, r) for r in taken_rows), key=lambda r: r.id)
            elif stored:
                due = await self._due(session, now, self.batch)
            keys = {(r.channel, r.key) for r in due}  # stored and redelivered meanwhile
            rows = [*due, *(r for r in fresh if (r.channel, r.key) not in keys)]
            if not rows:
                return rows, None
            outcome = await self._process(session, rows, now)
            await self._settle(session, due, outcome, now, taken=taken)
            session.add_all(
                self._again(row, why, now, keep_id=False)
                for row in fresh
                if (why := outcome.retry.get(row.id)) is not None
            )
            await session.commit()
            return rows, outcome

        try:
            rows, outcome = await self._work_conn.run(work)
        except asyncio.CancelledError:
            _stopping(direct)
            raise
        except Exception:
            log.exception(
                "a batch of webhook deliveries failed; storing the %d not stored yet, "
                "taking the stored ones one by one",
                len(direct),
            )
            if direct:
                await self._store_taken(direct)  # their parsed forms go with their new ids
            return await self._one_by_one(now)
        finally:
            for row in fresh:
                self.parsed.pop(row.id, None)  # the ids below 0 are used again
        if outcome is not None:
            await self._after(rows, outcome)
        for pending in direct:
            if not pending.stored.done():
                pending.stored.set_result(PROCESSED)
        return sum(1 for row in rows if row.id > 0)

    async def _one_by_one(self, now: datetime) -> int:
        async with self._sessions() as session:
            ids = [r.id for r in await self._due(session, now, self.batch, lock=False)]
        for delivery_id in ids:
            try:
                async with self._sessions() as session:
                    rows = await self._due(session, now, 1, ids=[delivery_id])
                    if not rows:
                        continue
                    outcome = await self._process(session, rows, now)
                    await self._settle(session, rows, outcome, now)
                    await session.commit()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("webhook delivery %s failed", delivery_id)
                await self._failed(delivery_id, f"{type(exc).__name__}: {exc}", now)
                continue
            await self._after(rows, outcome)
        return len(ids)

    async def _due(
        self,
        session: AsyncSession,
        now: datetime,
        limit: int,
        *,
        ids: Sequence[int] | None = None,
        lock: bool = True,
    ) -> list[Delivery]:
        stmt = select(Delivery).where(Delivery.next_at <= now)
        if ids is not None:
            stmt = stmt.where(Delivery.id.in_(ids))
        stmt = stmt.order_by(Delivery.id).limit(limit)
        if lock and session.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return list(await session.scalars(stmt))

    async def _settle(
        self,
        session: AsyncSession,
        rows: Sequence[Delivery],
        outcome: Outcome,
        now: datetime,
        *,
        taken: bool = False,
    ) -> None:
        """Processed ones deleted; the ones to take again stay with their next time.
        ``taken``: the rows were deleted when taken; the ones to take again are written back
        (with their ids)."""
        if taken:
            for row in rows:
                why = outcome.retry.get(row.id)
                if why is None:
                    continue
                session.add(self._again(row, why, now))  # the taken rows are transient
            await session.flush()
            return
        done = [r.id for r in rows if r.id not in outcome.retry]
        if done and is_postgresql(session):
            await session.execute(_DELETE, {"ids": done})  # the same SQL for any batch
        elif done:
            await session.execute(delete(Delivery).where(Delivery.id.in_(done)))
        for row in rows:
            why = outcome.retry.get(row.id)
            if why is not None:
                self._schedule_again(row, why, now)
        await session.flush()

    def _again(self, row: Delivery, why: str, now: datetime, *, keep_id: bool = True) -> Delivery:
        """A new row of ``row`` (one taken and deleted, or never stored), to be taken again."""
        again = Delivery(
            **{a.key: getattr(row, a.key) for a in _COLUMNS if keep_id or a.key != "id"}
        )
        self._schedule_again(again, why, now)
        return again

    def _schedule_again(self, row: Delivery, why: str, now: datetime) -> None:
        row.attempts += 1
        row.error = why[:500]
        if row.attempts >= MAX_ATTEMPTS:
            row.next_at = None
            log.error(
                "webhook %s/%s delivery %s kept unprocessed after %d attempts: %s",
                row.kind,
                row.channel,
                row.id,
                row.attempts,
                why,
            )
        else:
            row.next_at = now + BACKOFF * 2 ** (row.attempts - 1)

    async def _failed(self, delivery_id: int, error: str, now: datetime) -> None:
        self.failed += 1
        async with self._sessions() as session:
            row = await session.get(Delivery, delivery_id)
            if row is not None:
                self._schedule_again(row, error, now)
                await session.commit()

    async def _after(self, rows: Sequence[Delivery], outcome: Outcome) -> None:
        self.processed += sum(1 for r in rows if r.id not in outcome.retry)
        self.batches += 1
        for row in rows:  # a delivery to take again was processed as far as it goes now
            self.parsed.pop(row.id, None)
            done = self._done.pop(row.id, None)
            if done is not None and not done.done():
                done.set_result(None)
        for event in outcome.events:
            await self._bus.publish(event)

    async def pending(self) -> int:
        """How many deliveries are stored and due (the health page; tests)."""
        async with self._sessions() as session:
            rows = await session.execute(
                select(Delivery.id).where(Delivery.next_at.is_not(None)).limit(100_000)
            )
            return len(rows.all())


def _headers(headers: Any) -> dict[str, str]:
    """The headers an adapter verifies a delivery by (all but hop-by-hop noise), as strings."""
    skip = {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "accept-encoding",
        "host",
        "cookie",
        "authorization",
    }
    return {str(k): str(v) for k, v in dict(headers).items() if str(k).lower() not in skip}
