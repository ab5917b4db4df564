"""Telephony application service: AMI frames in, screen-pops and CRM facts out.

Each PBX link (:mod:`contact_center.pbx`) folds its frames (synchronously, in the AMI reader);
the call events it yields go through ordered queues to :class:`Telephony`, which

* on ringing identifies the caller and pushes ``call.ringing`` with the client card summary to
  the extension that rings;
* on answer pushes ``call.answered`` to every extension that rang (their pop-ups update);
* on the end stores the call once, writes the call activity, creates a lead for an unknown
  inbound caller, a call-back task for a missed call (and closes it when a later call with
  that number is answered), and pushes ``call.ended``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ami import fold
from contact_center import crm_hooks, db
from contact_center.bus import EventBus
from contact_center.config import Settings
from crm_core.calls import events as call_events
from crm_core.calls import service as calls
from crm_core.clock import Clock
from crm_core.phones import try_normalize_phone
from crm_core.rules import CrmRules

log = logging.getLogger(__name__)

QUEUE_LIMIT = 100_000
# A card looked up when the call came in is shown as it is if a phone rings within this time;
# after a long queue wait it is looked up again (a colleague may have changed it meanwhile).
PREFETCH_FRESH_S = 30.0
# Longest a finished call waits for the screen-pop lane to go quiet before it is written.
YIELD_MAX_S = 0.5


# Cards looked up ahead of a click-to-call are kept at most this many (oldest dropped first).
PREFETCH_MAX = 1000


# Longest a click-to-call waits for its card before the PBX is asked to ring.
PREFETCH_WAIT_S = 0.3

# Who else sees every call's ringing, answer and end on /ws: the head of sales watches who is
# on a call (his screen pops nothing: app.js pops only for the user's own extensions).
WATCHERS = ("role:head",)


@dataclass(frozen=True)
class _Prefetch:
    """Look up ``number``'s card ahead of a call the server itself places (click-to-call)."""

    number: str  # E.164
    done: asyncio.Future[None]
    call_id: str = ""  # none yet: the PBX has not created the call


@dataclass
class _LiveInfo:
    """What the screen-pop computed for a call, reused for every extension it rings."""

    client: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None
    rang: set[str] = field(default_factory=set)
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
        tracker: crm_hooks.CallAttributor,
    ) -> None:
        self.settings = settings
        self.tracker = tracker  # attributes calls to tracking numbers (website sessions)
        self.sessions = sessions
        self._reader = db.ReadConnection(sessions)
        self.bus = bus
        self.rules = rules
        self.clock = clock
        # Two lanes: ringing/answered only read and push (the screen-pop must not wait behind
        # the database writes of calls that ended); ended calls are written in order.
        self._fast: asyncio.Queue[tuple[str, fold.CallEvent]] = asyncio.Queue(QUEUE_LIMIT)
        self._queue: asyncio.Queue[tuple[str, fold.CallEvent]] = asyncio.Queue(QUEUE_LIMIT)
        self._live: dict[tuple[str, str], _LiveInfo] = {}
        # (pbx, E.164) -> card looked up when a click-to-call was requested, taken at its ring.
        self._prefetched: dict[tuple[str, str], _LiveInfo] = {}
        self._fast_idle = asyncio.Event()
        self._fast_idle.set()
        self._workers: list[asyncio.Task[None]] = []
        self.processed = 0
        self.failures = 0
        self.prefetch_hits = 0  # click-to-call rings that found their card already looked up

    # ---------------------------------------------------------------- intake (sync)

    async def prefetch(self, pbx: str, number: str) -> None:
        """Look the card of ``number`` (E.164) up on the pop-up lane and wait for it (at most
        ``PREFETCH_WAIT_S``): a click-to-call first rings the manager's own phone, showing the
        client, a moment after the Originate, before any event names the call; asked first,
        the card is ready at that ring."""
        done = asyncio.get_running_loop().create_future()
        try:
            self._fast.put_nowait((pbx, _Prefetch(number, done)))  # type: ignore[arg-type]
        except asyncio.QueueFull:
            log.warning("telephony queue full; the card of %s is looked up at the ring", number)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), PREFETCH_WAIT_S)

    def enqueue(self, pbx: str, event: fold.CallEvent) -> None:
        """Queue a folded call event of ``pbx``; called from the AMI reader, never blocks."""
        lane = self._queue if isinstance(event, fold.CallEnded) else self._fast
        try:
            lane.put_nowait((pbx, event))
        except asyncio.QueueFull:
            # Only with a stalled database: the fold keeps state, the pop-up is what is lost.
            log.error(
                "telephony queue full; dropped %s for call %s", type(event).__name__, event.call_id
            )

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._workers = [loop.create_task(self._run(q)) for q in (self._fast, self._queue)]

    async def close(self, drain_timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout):
                await self.drain()
        for worker in self._workers:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []
        await self._reader.close()

    async def drain(self) -> None:
        """Wait until every queued event is handled (tests, replays)."""
        await self._fast.join()
        await self._queue.join()

    async def _run(self, queue: asyncio.Queue[tuple[str, fold.CallEvent]]) -> None:
        """Handle ``queue`` in order. The writing lane starts its next call only while no
        pop-up is being prepared (waiting at most ``YIELD_MAX_S``): its ORM work would otherwise
        run in every gap the pop-up's queries leave on the event loop."""
        fast = queue is self._fast
        while True:
            pbx, event = await queue.get()
            if fast:
                self._fast_idle.clear()
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(YIELD_MAX_S):
                        await self._fast_idle.wait()
            try:
                await self.handle(pbx, event)
            except asyncio.CancelledError:
                queue.task_done()
                raise
            except Exception:
                self.failures += 1
                log.exception(
                    "telephony failed on %s of call %s (pbx %s)",
                    type(event).__name__,
                    event.call_id,
                    pbx,
                )
            self.processed += 1
            queue.task_done()
            if fast and queue.empty():
                self._fast_idle.set()

    # ---------------------------------------------------------------- handling

    async def handle(self, pbx: str, event: fold.CallEvent | _Prefetch) -> None:
        if isinstance(event, _Prefetch):
            try:
                info = _LiveInfo()
                await self._look_up(info, event.number, None)
                cache = self._prefetched
                cache.pop((pbx, event.number), None)
                cache[(pbx, event.number)] = info
                if len(cache) > PREFETCH_MAX:
                    del cache[next(iter(cache))]
            finally:
                if not event.done.done():
                    event.done.set_result(None)
        elif isinstance(event, fold.CallStarted):
            # Identify the caller while the IVR or the queue plays, before any phone rings.
            info = self._live.setdefault((pbx, event.call_id), _LiveInfo())
            await self._look_up(info, event.caller, event.did)
        elif isinstance(event, fold.CallRinging):
            await self._ringing(pbx, event)
        elif isinstance(event, fold.CallAnswered):
            await self._answered(pbx, event)
        elif isinstance(event, fold.CallEnded):
            await self._ended(pbx, event.record)

    async def _ringing(self, pbx: str, event: fold.CallRinging) -> None:
        info = self._live.setdefault((pbx, event.call_id), _LiveInfo())
        info.rang.add(event.extension)
        info.caller = event.caller or info.caller
        loop = asyncio.get_running_loop()
        if info.looked_up is None and self._prefetched and event.did is None:
            self._adopt_prefetched(pbx, info, event.caller)
        if (
            info.looked_up != (event.caller, event.did)
            or loop.time() - info.looked_up_at > PREFETCH_FRESH_S
        ):
            await self._look_up(info, event.caller, event.did)
        # A ringing extension with a DID is an inbound call; otherwise a colleague or a
        # callback is calling it (live_calls() would tell exactly, but costs O(live calls)).
        direction = "inbound" if event.did else "internal"
        await self.bus.publish(
            call_events.CallRinging(
                call_id=event.call_id,
                pbx=pbx,
                caller=event.caller,
                caller_name=event.caller_name,
                did=event.did,
                extension=event.extension,
                queue=event.queue,
                direction=direction,
                client=info.client,
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

    async def _look_up(self, info: _LiveInfo, caller: str | None, did: str | None) -> None:
        """The card summary of ``caller`` and the tracking data of ``did``, into ``info``."""
        async with self._reader.session() as session:
            info.client = await crm_hooks.card_summary_for_number(
                session, caller, rules=self.rules, region=self.settings.crm.default_region
            )
            info.tracking = await crm_hooks.tracking_for_did(
                session, did, tracker=self.tracker, at=self.clock.now()
            )
        info.looked_up = (caller, did)
        info.looked_up_at = asyncio.get_running_loop().time()

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

    async def _ended(self, pbx: str, record: fold.CallRecord) -> None:
        facts = calls.CallFacts.from_record(pbx, record.to_json_dict())
        info = self._live.pop((pbx, facts.call_id), None)
        async with self.sessions() as session:
            outcome = await crm_hooks.record_finished_call(
                session,
                facts,
                rules=self.rules,
                now=self.clock.now(),
                callback_due_minutes=self.settings.telephony.callback_due_minutes,
                region=self.settings.crm.default_region,
                tracking=info.tracking if info else None,
                recordings=self.settings.recordings.enabled,
                tracker=self.tracker,
            )
            await session.commit()
        for event in outcome.events:
            await self.bus.publish(event)
        audience = {f"ext:{e}" for e in facts.rang}
        if facts.extension:
            audience.add(f"ext:{facts.extension}")
        if info:
            audience.update(f"ext:{e}" for e in info.rang)
        if audience:
            audience.update(WATCHERS)
            await self.bus.publish(
                call_events.CallEnded(
                    call_id=facts.call_id,
                    pbx=pbx,
                    extension=facts.extension,
                    caller=facts.outside_number or facts.caller,
                    direction=facts.direction,
                    disposition=facts.disposition,
                    talk_seconds=facts.talk_seconds,
                    counted=facts.counted,
                    recording=facts.recording,
                    occurred_at=facts.ended_at,
                    audience=tuple(sorted(audience)),
                )
            )

    def provide_status(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "queued": self._fast.qsize() + self._queue.qsize(),
            "processed": self.processed,
            "failures": self.failures,
            "prefetch_hits": self.prefetch_hits,
        }


def _ts(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)
