"""Telephony application service: AMI frames in, screen-pops and CRM facts out.

Each PBX link (:mod:`contact_center.pbx`) folds its frames (synchronously, in the AMI reader);
the call events it yields go, in order, through two lanes to :class:`Telephony`:

* the pop-up lane (live calls, only reads and pushes): when a call comes in the caller is
  identified; on ringing ``call.ringing`` is pushed with the client card summary, as the owner
  of the ringing extension may see it (:mod:`crm_core.calls.screen_pop`), to that extension;
  on answer ``call.answered`` goes to every extension that rang (their pop-ups update);
  click-to-call's card lookups ahead of the ring (:class:`CardPrefetch`) share the lane;
* the call-log lane (finished calls, writes): the call's outcome is stored once
  (:mod:`contact_center.call_outcomes`: the call, a lead for an unknown inbound caller, the
  activity, call-back tasks, the recording job), then ``call.ended`` is pushed.

A call that ends while the database is away is not lost: the call log keeps it at the head of
its lane and tries again with back-off (the calls after it wait in the lane, bounded by
``QUEUE_LIMIT``) until the database is back; the outage is logged once, and ``/healthz``
shows the call log degraded with the number of calls waiting.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ami import fold
from contact_center import db
from contact_center.bus import EventBus
from contact_center.call_attribution import CallAttributor, call_tracking
from contact_center.call_outcomes import CallOutcome, CallOutcomes
from contact_center.config import Settings
from crm_core.calls import events as call_events
from crm_core.calls import screen_pop
from crm_core.calls import service as calls
from crm_core.calls.record import CallRecord
from crm_core.clock import Clock
from crm_core.phones import try_normalize_phone
from crm_core.rules import CrmRules
from recordings.intake import find_call_recording

log = logging.getLogger(__name__)

_T = TypeVar("_T")

QUEUE_LIMIT = 100_000
# A card looked up when the call came in is shown as it is if a phone rings within this time;
# after a long queue wait it is looked up again (a colleague may have changed it meanwhile).
PREFETCH_FRESH_S = 30.0
# Longest a finished call waits for the pop-up lane to go quiet before it is written.
YIELD_MAX_S = 0.5
# ... unless this many finished calls wait already: then the call log writes without waiting,
# or under steady load (the pop-up lane never quiet) it would fall behind without bound.
CALL_LOG_BACKLOG = 20
# Finished calls waiting together are written in one transaction, at most this many: one
# BEGIN and one COMMIT for them all, where each call's own was a fifth of its round trips.
CALL_LOG_BATCH = 20
# Pop-up workers (PostgreSQL; one on SQLite, whose reads are serialised anyway): a lookup is
# a few round trips (the card two, the number's tracking one), and one worker caps the
# pop-ups at one lookup per those round trips.
POPUP_WORKERS = 4


# Cards looked up ahead of a click-to-call are kept at most this many (oldest dropped first).
PREFETCH_MAX = 1000


# Longest a click-to-call waits for its card before the PBX is asked to ring.
PREFETCH_WAIT_S = 0.3

# Back-off of the call log while the database is away: first retry, then doubling to the cap.
STORE_RETRY_FIRST_S = 0.25
STORE_RETRY_MAX_S = 10.0
# The pop-up lane says the database is away at most this often.
POPUP_AWAY_LOG_EVERY_S = 60.0

# Who else sees every call's ringing, answer and end on /ws: the head of sales watches who is
# on a call (his screen pops nothing: app.js pops only for the user's own extensions).
WATCHERS = ("role:head",)


@dataclass(frozen=True)
class CardPrefetch:
    """Look up ``number``'s card ahead of a call the server itself places (click-to-call);
    ``done`` is resolved once it is looked up (or the lookup failed)."""

    number: str  # E.164
    done: asyncio.Future[None]


@dataclass(frozen=True)
class CdrCalls:
    """Finished calls read from the PBX's CDR (:mod:`ami.cdr`) for a window the AMI link did
    not see: stored unless stored already, or correcting the times a stored call only
    estimated. ``done`` gets (calls added, calls corrected)."""

    records: list[CallRecord]
    done: asyncio.Future[tuple[int, int]]

    @property
    def call_id(self) -> str:
        return ",".join(r.call_id for r in self.records[:3])


# What the call-log lane carries: finished calls, live or from the CDR, written in order.
LogWork = fold.CallEnded | CdrCalls


class _Lane(asyncio.Queue[_T]):
    """A queue whose next item can be looked at without taking it."""

    def _init(self, maxsize: int) -> None:
        self._queue: collections.deque[_T] = collections.deque()

    def peek(self) -> _T:
        """The next item (the queue must not be empty)."""
        return self._queue[0]


class _OneByOne:
    """A batch of the call log that must be written call by call (see _store_batch)."""


_ONE_BY_ONE = _OneByOne()

# What the pop-up lane carries: a live call's events and click-to-call's card lookups.
PopupWork = fold.CallStarted | fold.CallRinging | fold.CallAnswered | CardPrefetch


@dataclass
class _LiveInfo:
    """What the screen-pop computed for a call, reused for every extension it rings."""

    client: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    rang: set[str] = field(default_factory=set)
    # The card each ringing extension was shown: a queue retry ringing it again updates the
    # pop-up only when the card changed, never pops a second one.
    shown: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    caller: str | None = None  # the client's number, as the ringing named it
    # (caller, did) the lookup was made for, and when (loop time); None: not looked up yet.
    looked_up: tuple[str | None, str | None] | None = None
    looked_up_at: float = 0.0


class Telephony:
    """Consumes folded call events of every PBX, in order."""

    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        bus: EventBus,
        rules: CrmRules,
        clock: Clock,
        tracker: CallAttributor,
    ) -> None:
        self.settings = settings
        self.tracker = tracker  # attributes calls to tracking numbers (website sessions)
        self.sessions = sessions
        bind = sessions.kw.get("bind")
        workers = POPUP_WORKERS if bind is not None and bind.dialect.name == "postgresql" else 1
        self._readers = [db.ReadConnection(sessions) for _ in range(workers)]
        self._reader = self._readers[0]  # the call log's and the CDR's reads
        self.bus = bus
        self.rules = rules
        self.clock = clock
        self.outcomes = CallOutcomes(
            tracker=tracker,
            rules=rules,
            callback_due_minutes=settings.telephony.callback_due_minutes,
            region=settings.crm.default_region,
            recordings=settings.recordings.enabled,
            count_threshold_s=settings.telephony.count_threshold_s,
        )
        self.cdr_added = 0  # calls the AMI link never saw, stored from the CDR
        self.cdr_corrected = 0  # stored calls whose estimated times the CDR replaced
        # Two lanes: the pop-ups only read and push (a screen-pop must not wait behind the
        # database writes of calls that ended); the call log writes finished calls in order.
        self._popup_lanes: list[asyncio.Queue[tuple[str, PopupWork]]] = [
            asyncio.Queue(QUEUE_LIMIT) for _ in self._readers
        ]
        self._popups_busy = 0  # pop-up items queued or in hand, over all workers
        self._call_log: _Lane[tuple[str, LogWork]] = _Lane(QUEUE_LIMIT)
        self._live: dict[tuple[str, str], _LiveInfo] = {}
        # (pbx, E.164) -> card looked up when a click-to-call was requested, taken at its ring.
        self._prefetched: dict[tuple[str, str], _LiveInfo] = {}
        # (pbx, call id) -> the client's number of a click-to-call in progress ("" unknown).
        self._click_to_call: dict[tuple[str, str], str] = {}
        # Who owns each extension (a pop-up is cut for him), and when that was read (loop time).
        self._viewers: screen_pop.Viewers = {}
        self._viewers_read_at: float | None = None
        self._popups_idle = asyncio.Event()
        self._popups_idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self._stored_hooks: list[Callable[[str, str], None]] = []
        self.processed = 0
        self.failures = 0
        self.prefetch_hits = 0  # click-to-call rings that found their card already looked up
        self.repeated_rings = 0  # a queue retry ringing an extension again: no second pop-up
        self.dropped = 0  # events refused by a full lane
        # The call log: finished calls not yet stored (queued or being stored), attempts that
        # found the database away, and since when (loop time) it has been away.
        self.calls_waiting = 0
        self.cdr_waiting = 0  # calls read from the CDR, not yet stored
        self.store_retries = 0
        self._store_failing_since: float | None = None
        self._storing: list[str] = []  # the calls being stored
        self._popup_db_away_logged = -float("inf")

    # ---------------------------------------------------------------- intake (sync)

    async def prefetch(self, pbx: str, number: str) -> None:
        """Look the card of ``number`` (E.164) up on the pop-up lane and wait for it (at most
        ``PREFETCH_WAIT_S``): a click-to-call first rings the manager's own phone, showing the
        client, a moment after the Originate, before any event names the call; asked first,
        the card is ready at that ring."""
        done = asyncio.get_running_loop().create_future()
        try:
            self._put_popup(pbx, number, CardPrefetch(number, done))
        except asyncio.QueueFull:
            log.warning("telephony queue full; the card of %s is looked up at the ring", number)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), PREFETCH_WAIT_S)

    def note_click_to_call(self, pbx: str, call_id: str, client: str) -> None:
        """Call ``call_id`` of ``pbx`` is a click-to-call to ``client`` (E.164, "" unknown):
        its pop-ups show the client and say outbound. Called from the AMI reader before the
        ringing is queued."""
        cache = self._click_to_call
        cache[(pbx, call_id)] = client
        if len(cache) > PREFETCH_MAX:
            del cache[next(iter(cache))]

    def enqueue(self, pbx: str, event: fold.CallEvent) -> None:
        """Queue a folded call event of ``pbx`` on its lane; called from the AMI reader, never
        blocks."""
        try:
            if isinstance(event, fold.CallEnded):
                self._call_log.put_nowait((pbx, event))
                self.calls_waiting += 1
            else:
                self._put_popup(pbx, event.call_id, event)
        except asyncio.QueueFull:
            # Only with a database away for hours: the fold keeps state, this event is lost.
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error(
                    "telephony queue full; dropped %s for call %s (%d dropped so far)",
                    type(event).__name__,
                    event.call_id,
                    self.dropped,
                )

    def when_stored(self, hook: Callable[[str, str], None]) -> None:
        """Call ``hook(pbx, call_id)`` once each finished call is stored (committed)."""
        self._stored_hooks.append(hook)

    def _put_popup(self, pbx: str, key: str, work: PopupWork) -> None:
        """Queue ``work`` on the pop-up worker of ``key`` (a call, or a number looked up)."""
        lanes = self._popup_lanes
        lane = lanes[hash(key) % len(lanes)] if len(lanes) > 1 else lanes[0]
        lane.put_nowait((pbx, work))
        self._popups_busy += 1
        self._popups_idle.clear()

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [
            loop.create_task(self._run(lane, reader))
            for lane, reader in zip(self._popup_lanes, self._readers, strict=True)
        ]
        self._workers.append(loop.create_task(self._run(self._call_log, None)))

    async def close(self, drain_timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self.drain()
        unsaved = list(self._storing)
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        while not self._call_log.empty():
            work = self._call_log.get_nowait()[1]
            if isinstance(work, CdrCalls):
                unsaved.extend(r.call_id for r in work.records)
                if not work.done.done():
                    work.done.cancel()
            else:
                unsaved.append(work.call_id)
            self._call_log.task_done()
        if unsaved:
            # Kept in memory only: say which, so they can be found in the PBX's CDRs.
            log.error(
                "stopping with %d finished calls not stored (database away): %s",
                len(unsaved),
                ", ".join(unsaved[:100]),
            )
        for reader in self._readers:
            await reader.close()

    async def drain(self) -> None:
        """Wait until every queued event is handled (tests, replays)."""
        for lane in self._popup_lanes:
            await lane.join()
        await self._call_log.join()

    async def from_cdr(self, pbx: str, records: list[CallRecord]) -> tuple[int, int]:
        """Hand calls read from ``pbx``'s CDR to the call log (in order with the live calls'
        ends) and wait until they are written; (added, corrected)."""
        if not records:
            return 0, 0
        done: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        await self._call_log.put((pbx, CdrCalls(records, done)))
        return await asyncio.shield(done)

    async def newest_call_end(self, pbx: str) -> datetime | None:
        """When the newest call of ``pbx`` in the call log ended (None: no call yet)."""
        async with self._reader.session() as session:
            return await calls.newest_end(session, pbx)

    async def _run(
        self,
        lane: asyncio.Queue[tuple[str, PopupWork]] | asyncio.Queue[tuple[str, LogWork]],
        reader: db.ReadConnection | None,
    ) -> None:
        """Handle ``lane`` in order (a pop-up worker reads through ``reader``; the call log has
        none). The call log starts its next call only while no pop-up is being prepared
        (waiting at most ``YIELD_MAX_S``, and not at all with ``CALL_LOG_BACKLOG`` calls
        waiting): its ORM work would otherwise run in every gap the pop-up's queries leave on
        the event loop."""
        popups = reader is not None
        while True:
            pbx, work = await lane.get()
            if not popups and lane.qsize() < CALL_LOG_BACKLOG:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(YIELD_MAX_S):
                        await self._popups_idle.wait()
            if isinstance(lane, _Lane) and isinstance(work, fold.CallEnded):
                batch = self._batch_of(lane, pbx, work)
                if len(batch) > 1:
                    await self._log_batch(lane, batch)
                    continue
            try:
                await self.handle(pbx, work, reader)
            except asyncio.CancelledError:
                self._done(lane, popups)
                raise
            except Exception as exc:
                if popups and db.unavailable(exc):
                    # A pop-up without its card; said once a minute, not once per event.
                    now = asyncio.get_running_loop().time()
                    if now - self._popup_db_away_logged > POPUP_AWAY_LOG_EVERY_S:
                        self._popup_db_away_logged = now
                        log.warning(
                            "database away: pop-ups go without cards (%s, first on %s)",
                            db.describe_error(exc),
                            _describe(work),
                        )
                else:
                    self.failures += 1
                    log.exception("telephony failed on %s (pbx %s)", _describe(work), pbx)
            finally:
                if isinstance(work, fold.CallEnded):
                    self.calls_waiting -= 1
            self.processed += 1
            self._done(lane, popups)

    @staticmethod
    def _batch_of(
        lane: _Lane[tuple[str, LogWork]], pbx: str, first: fold.CallEnded
    ) -> list[tuple[str, fold.CallEnded]]:
        """``first`` with the finished calls queued right behind it (up to CALL_LOG_BATCH; a
        CDR batch behind them stays in the lane, for its turn)."""
        batch = [(pbx, first)]
        while len(batch) < CALL_LOG_BATCH and not lane.empty():
            item = lane.peek()
            if not isinstance(item[1], fold.CallEnded):
                break
            lane.get_nowait()
            batch.append((item[0], item[1]))
        return batch

    async def _log_batch(
        self, lane: asyncio.Queue[Any], batch: list[tuple[str, fold.CallEnded]]
    ) -> None:
        """Store ``batch`` (finished calls, in order) in one transaction, then tell of each as
        :meth:`_ended` does; should the batch fail for another reason than the database being
        away, each call is stored on its own, so one bad call costs no other."""
        done = 0
        try:
            infos = [
                (
                    self._live.pop((pbx, ended.call_id), None),
                    self._click_to_call.pop((pbx, ended.call_id), None),
                )
                for pbx, ended in batch
            ]
            outcomes = await self._store_batch(
                [
                    (pbx, ended.record, info.tracking if info else None)
                    for (pbx, ended), (info, _) in zip(batch, infos, strict=True)
                ]
            )
            for (pbx, ended), (info, _), outcome in zip(batch, infos, outcomes, strict=True):
                try:
                    if isinstance(outcome, _OneByOne):
                        if info is not None:
                            self._live[(pbx, ended.call_id)] = info
                        await self._ended(pbx, ended.record)
                    else:
                        await self._tell_ended(pbx, ended.record, info, outcome)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.failures += 1
                    log.exception("telephony failed on %s (pbx %s)", _describe(ended), pbx)
                finally:
                    done += 1
                    self.calls_waiting -= 1
                    self.processed += 1
                    self._done(lane, False)
        finally:
            for _ in batch[done:]:  # cancelled midway: the lane still counts them done
                self.calls_waiting -= 1
                self._done(lane, False)

    def _done(self, lane: asyncio.Queue[Any], popups: bool) -> None:
        lane.task_done()
        if popups:
            self._popups_busy -= 1
            if not self._popups_busy:
                self._popups_idle.set()

    # ---------------------------------------------------------------- handling

    async def handle(
        self,
        pbx: str,
        work: PopupWork | LogWork,
        reader: db.ReadConnection | None = None,
    ) -> None:
        """Do what one lane item of ``pbx`` asks (the lanes' workers call this in order; a
        pop-up item reads through ``reader``, by default the first pop-up worker's)."""
        reader = reader or self._readers[0]
        match work:
            case CardPrefetch():
                await self._prefetch_card(pbx, work, reader)
            case fold.CallStarted():
                # Identify the caller while the IVR or the queue plays, before any phone rings.
                info = self._live.setdefault((pbx, work.call_id), _LiveInfo())
                await self._look_up(reader, info, work.caller, work.did)
            case fold.CallRinging():
                await self._ringing(pbx, work, reader)
            case fold.CallAnswered():
                await self._answered(pbx, work)
            case fold.CallEnded():
                await self._ended(pbx, work.record)
            case CdrCalls():
                try:
                    result = await self._from_cdr(pbx, work.records)
                except BaseException as exc:
                    if not work.done.done():
                        work.done.set_exception(exc)
                    raise
                if not work.done.done():
                    work.done.set_result(result)

    async def _prefetch_card(self, pbx: str, work: CardPrefetch, reader: db.ReadConnection) -> None:
        try:
            info = _LiveInfo()
            await self._look_up(reader, info, work.number, None)
            cache = self._prefetched
            cache.pop((pbx, work.number), None)
            cache[(pbx, work.number)] = info
            if len(cache) > PREFETCH_MAX:
                del cache[next(iter(cache))]
        finally:
            if not work.done.done():
                work.done.set_result(None)

    async def _ringing(self, pbx: str, event: fold.CallRinging, reader: db.ReadConnection) -> None:
        info = self._live.setdefault((pbx, event.call_id), _LiveInfo())
        repeat = event.extension in info.rang
        info.rang.add(event.extension)
        caller, caller_name = event.caller, event.caller_name
        # A ringing extension with a DID is an inbound call; otherwise a colleague or a
        # callback is calling it (live_calls() would tell exactly, but costs O(live calls)).
        direction = "inbound" if event.did else "internal"
        click_to_call = self._click_to_call.get((pbx, event.call_id))
        if click_to_call is not None:
            # The manager's own phone rings first for his call to the client: the pop-up
            # names the client (never the manager himself) and says outbound.
            caller, caller_name, direction = click_to_call or caller, None, "outbound"
        info.caller = caller or info.caller
        loop = asyncio.get_running_loop()
        if info.looked_up is None and self._prefetched and event.did is None:
            self._adopt_prefetched(pbx, info, caller)
        if (
            info.looked_up != (caller, event.did)
            or loop.time() - info.looked_up_at > PREFETCH_FRESH_S
        ):
            await self._look_up(reader, info, caller, event.did)
        client = await self._card_for(reader, pbx, event.extension, info.client)
        if repeat and info.shown.get(event.extension) == client:
            self.repeated_rings += 1  # the pop-up is up already and shows this card
            return
        info.shown[event.extension] = client
        await self.bus.publish(
            call_events.CallRinging(
                call_id=event.call_id,
                pbx=pbx,
                caller=caller,
                caller_name=caller_name,
                did=event.did,
                extension=event.extension,
                queue=event.queue,
                direction=direction,
                client=client,
                tracking=info.tracking,
                occurred_at=_ts(event.ts),
                audience=(f"ext:{event.extension}", *WATCHERS),
            )
        )

    def _adopt_prefetched(self, pbx: str, info: _LiveInfo, caller: str | None) -> None:
        """Use the card looked up when this click-to-call was requested, if still fresh."""
        number = try_normalize_phone(caller, self.settings.crm.default_region) if caller else None
        found = self._prefetched.pop((pbx, number), None) if number else None
        if (
            found is None
            or asyncio.get_running_loop().time() - found.looked_up_at > PREFETCH_FRESH_S
        ):
            return
        self.prefetch_hits += 1
        info.client, info.tracking = found.client, found.tracking
        info.looked_up, info.looked_up_at = (caller, None), found.looked_up_at

    async def _look_up(
        self, reader: db.ReadConnection, info: _LiveInfo, caller: str | None, did: str | None
    ) -> None:
        """The whole card summary of ``caller`` and the tracking data of ``did``, into
        ``info``: looked up once per call, cut down per ringing phone (:meth:`_card_for`)."""
        async with reader.session() as session:
            info.client = await screen_pop.card_summary(
                session, caller, rules=self.rules, region=self.settings.crm.default_region
            )
            info.tracking = await call_tracking(self.tracker, session, did, self.clock.now())
            if info.client is not None and self._must_cut_cards() and self._viewers_stale():
                # Before any phone rings: the ring itself then needs no query for it.
                await self._read_viewers(session)
        info.looked_up = (caller, did)
        info.looked_up_at = asyncio.get_running_loop().time()

    async def _card_for(
        self, reader: db.ReadConnection, pbx: str, extension: str, card: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """``card`` as the owner of ``extension`` may see it (the pop-up goes to him)."""
        if card is None or not self._must_cut_cards():
            return card
        if self._viewers_stale():
            async with reader.session() as session:
                await self._read_viewers(session)
        viewer = screen_pop.viewer_of(self._viewers, pbx, extension)
        return screen_pop.card_as_seen_by(card, viewer, self.rules)

    def _must_cut_cards(self) -> bool:
        """Whether a card may reach someone who may not read it: not when every user may
        read every card (then nobody needs to know who owns a phone)."""
        return not self.rules.managers_read_all

    def _viewers_stale(self) -> bool:
        """The extensions' owners are read again when older than a card may be when it is
        shown (``PREFETCH_FRESH_S``): whose card it is may be that old anyway."""
        read_at = self._viewers_read_at
        return read_at is None or asyncio.get_running_loop().time() - read_at > PREFETCH_FRESH_S

    async def _read_viewers(self, session: AsyncSession) -> None:
        self._viewers = await screen_pop.extension_viewers(session)
        self._viewers_read_at = asyncio.get_running_loop().time()

    async def _answered(self, pbx: str, event: fold.CallAnswered) -> None:
        info = self._live.get((pbx, event.call_id))
        audience = {f"ext:{e}" for e in (info.rang if info else ())}
        if event.extension:
            audience.add(f"ext:{event.extension}")
        if not audience:
            return
        audience.update(WATCHERS)
        await self.bus.publish(
            call_events.CallAnswered(
                call_id=event.call_id,
                pbx=pbx,
                extension=event.extension,
                caller=event.client or (info.caller if info else None),
                direction=event.direction,
                occurred_at=_ts(event.ts),
                audience=tuple(sorted(audience)),
            )
        )

    async def _ended(self, pbx: str, record: CallRecord) -> None:
        info = self._live.pop((pbx, record.call_id), None)
        self._click_to_call.pop((pbx, record.call_id), None)
        outcome = await self._store(pbx, record, info.tracking if info else None)
        await self._tell_ended(pbx, record, info, outcome)

    async def _tell_ended(
        self, pbx: str, record: CallRecord, info: _LiveInfo | None, outcome: CallOutcome | None
    ) -> None:
        """After ``record`` is stored (``outcome``; None: by another instance): the hooks,
        the outcome's events, ``call.ended`` to the phones it rang."""
        for hook in self._stored_hooks:
            hook(pbx, record.call_id)
        if outcome is None:
            return  # stored by another instance, which also tells
        for event in outcome.events:
            await self.bus.publish(event)
        audience = {f"ext:{e}" for e in record.rang}
        if record.extension:
            audience.add(f"ext:{record.extension}")
        if info:
            audience.update(f"ext:{e}" for e in info.rang)
        if audience:
            audience.update(WATCHERS)
            await self.bus.publish(
                call_events.CallEnded(
                    call_id=record.call_id,
                    pbx=pbx,
                    extension=record.extension,
                    caller=record.outside_number or record.caller,
                    direction=record.direction,
                    disposition=record.disposition,
                    talk_seconds=record.talk_seconds,
                    counted=record.counted,
                    recording=record.recording,
                    occurred_at=record.ended_at,
                    audience=tuple(sorted(audience)),
                )
            )

    async def _store(
        self, pbx: str, record: CallRecord, tracking: dict[str, Any] | None
    ) -> CallOutcome | None:
        """Store the call's outcome; while the database is away, try again with back-off
        until it is back (the outcome is written once per call: a retry after a commit whose
        answer was lost finds the call stored and adds nothing)."""

        async def attempt() -> CallOutcome | None:
            try:
                async with self.sessions() as session:
                    outcome = await self.outcomes.record(
                        session, pbx, record, now=self.clock.now(), tracking=tracking
                    )
                    await session.commit()
            except IntegrityError:
                # Another instance stored it at the same moment (the PBX's lease changing
                # hands while both still wrote their calls): stored once, by that one.
                if not await self._stored_already(pbx, record.call_id):
                    raise
                log.info("call %s of pbx %s was stored by another instance", record.call_id, pbx)
                return None
            return outcome

        return await self._until_stored(f"call {record.call_id}", [record.call_id], attempt)

    async def _store_batch(
        self, items: list[tuple[str, CallRecord, dict[str, Any] | None]]
    ) -> list[CallOutcome | _OneByOne | None]:
        """Store the outcomes of ``items`` in one transaction (as :meth:`_store` each); while
        the database is away, again with back-off. Any other failure (another instance
        storing one of them, a call that cannot be stored) rolls it all back and says
        ``_ONE_BY_ONE`` for every call: :meth:`_store` then tells which."""

        async def attempt() -> list[CallOutcome | _OneByOne | None]:
            try:
                async with self.sessions() as session:
                    outcomes: list[CallOutcome | _OneByOne | None] = []
                    for pbx, record, tracking in items:
                        outcomes.append(
                            await self.outcomes.record(
                                session, pbx, record, now=self.clock.now(), tracking=tracking
                            )
                        )
                    await session.commit()
            except Exception as exc:
                if db.unavailable(exc):
                    raise
                return [_ONE_BY_ONE] * len(items)
            return outcomes

        return await self._until_stored(
            f"{len(items)} calls", [record.call_id for _, record, _ in items], attempt
        )

    async def _until_stored(
        self, what: str, call_ids: list[str], attempt: Callable[[], Awaitable[_T]]
    ) -> _T:
        """Run ``attempt`` (storing ``what``: ``call_ids``) until the database takes it:
        while the database is away, again with back-off (said once in the log, shown on
        ``/healthz``); any other error propagates. The attempt must be idempotent."""
        delay = STORE_RETRY_FIRST_S
        self._storing = call_ids
        try:
            while True:
                try:
                    result = await attempt()
                except Exception as exc:
                    if not db.unavailable(exc):
                        raise
                    self.store_retries += 1
                    if self._store_failing_since is None:
                        self._store_failing_since = asyncio.get_running_loop().time()
                        log.warning(
                            "database away (%s): the call log waits, %s first; retrying"
                            " with back-off up to %.0f s",
                            db.describe_error(exc),
                            what,
                            STORE_RETRY_MAX_S,
                        )
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, STORE_RETRY_MAX_S)
                    continue
                if self._store_failing_since is not None:
                    away = asyncio.get_running_loop().time() - self._store_failing_since
                    self._store_failing_since = None
                    log.info(
                        "database back after %.1f s: the call log resumes with %s"
                        " (%d calls waiting)",
                        away,
                        what,
                        self.calls_waiting,
                    )
                return result
        finally:
            self._storing = []

    async def _from_cdr(self, pbx: str, records: list[CallRecord]) -> tuple[int, int]:
        """Store the CDR's calls the call log lacks; give the stored calls whose times were
        estimated the PBX's times. A call both know is never stored twice (one row per
        (pbx, call id), and a call stored with exact times is left as it is). While the
        database is away the batch waits at the head of the call log and is tried again
        (:meth:`_until_stored`): the calls stored before the outage are known by then."""
        self.cdr_waiting += len(records)
        tally = [0, 0]  # over every pass: a pass cut by an outage keeps what it stored
        try:
            await self._until_stored(
                f"{len(records)} call(s) from the CDR ({records[0].call_id if records else ''}…)",
                [r.call_id for r in records],
                lambda: self._from_cdr_once(pbx, records, tally),
            )
        finally:
            self.cdr_waiting -= len(records)
        added, corrected = tally
        if added or corrected:
            log.info("pbx %s: from the CDR %d call(s) added, %d corrected", pbx, added, corrected)
        return added, corrected

    async def _from_cdr_once(self, pbx: str, records: list[CallRecord], tally: list[int]) -> None:
        """One pass of :meth:`_from_cdr`: each call in its own transaction, so a pass cut by an
        outage keeps what it stored (counted in ``tally``: added, corrected), and the next
        pass skips it."""
        async with self._reader.session() as session:
            known = await calls.estimates_of(session, pbx, [r.call_id for r in records])
        for record in records:
            if record.call_id in known and not known[record.call_id]:
                continue  # stored with the times the fold saw happen
            recording = None
            if self.settings.recordings.enabled and record.answered_at is not None:
                recording = await asyncio.to_thread(
                    find_call_recording, Path(self.settings.recordings.spool_dir), record.call_id
                )
            async with self.sessions() as session:
                if record.call_id not in known:
                    if recording is not None:
                        record = dataclasses.replace(record, recording=recording)
                    outcome = await self.outcomes.record(session, pbx, record, now=self.clock.now())
                    events = outcome.events
                    new, fixed = int(outcome.created), 0
                else:
                    events = await self.outcomes.correct(
                        session, pbx, record, now=self.clock.now(), recording=recording
                    )
                    new, fixed = 0, 1
                await session.commit()
            # Counted once committed: a pass cut after this call does not count it again.
            tally[0] += new
            tally[1] += fixed
            self.cdr_added += new
            self.cdr_corrected += fixed
            for event in events:
                await self.bus.publish(event)

    async def _stored_already(self, pbx: str, call_id: str) -> bool:
        async with self.sessions() as session:
            return await calls.get_call(session, pbx, call_id) is not None

    def provide_status(self) -> dict[str, Any]:
        failing = self._store_failing_since
        call_log: dict[str, Any] = {
            "waiting": self.calls_waiting,
            "cdr_waiting": self.cdr_waiting,
            "retries": self.store_retries,
        }
        if failing is not None:
            call_log["waiting_s"] = round(asyncio.get_running_loop().time() - failing, 1)
        return {
            "status": "ok" if failing is None else "degraded",
            "queued": sum(lane.qsize() for lane in self._popup_lanes) + self._call_log.qsize(),
            "processed": self.processed,
            "failures": self.failures,
            "dropped": self.dropped,
            "prefetch_hits": self.prefetch_hits,
            "repeated_rings": self.repeated_rings,
            "cdr_added": self.cdr_added,
            "cdr_corrected": self.cdr_corrected,
            "call_log": call_log,
        }


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _describe(work: PopupWork | LogWork) -> str:
    """A lane item for the log: what it is and which call (or number) it is about."""
    if isinstance(work, CardPrefetch):
        return f"the card lookup of {work.number}"
    return f"{type(work).__name__} of call {work.call_id}"
