"""The PBXes: one AMI link and one call fold per configured PBX, feeding the telephony service.

Each PBX link runs only while this instance holds the PBX's lease (Redis; always, without
Redis), so exactly one instance consumes each AMI stream. The fold state (the calls in progress)
belongs to the link that reads the stream: frames are folded in the AMI reader and the call
events go to :class:`~contact_center.telephony.Telephony`. After every (re)connect the calls in
memory are reconciled with the PBX's own channel list (``Status``, ``QueueStatus``), so a call
that began or ended during the outage is neither lost nor recorded twice.

The channel list cannot tell what happened while nobody listened: with ``pbx[].cdr`` set, the
PBX's CDR (:mod:`ami.cdr`) is read after every reconnect and at start-up for the window not
seen: calls the server never saw are added, calls it saw only partly (answered or ended during
the outage, or before a restart) take the PBX's times, and a call that ends later with times
the fold only estimated is checked against the CDR ``cdr.settle_s`` after its end.

With Redis the folded frames of the calls in progress are journalled
(:mod:`contact_center.call_journal`), so the instance that takes the lease over when the holder
dies folds them again before it connects: its resync then also ends the calls that ended while
nobody followed the PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ami import cdr as cdr_reader
from ami import fold
from ami.connection import AmiLink
from ami.frames import Frame
from ami.resync import resync_calls
from contact_center.call_journal import CallJournal
from contact_center.config import PbxSettings, Settings
from contact_center.leases import LeaseKeeper, RedisLease
from contact_center.telephony import Telephony
from crm_core.clock import Clock
from crm_core.errors import Unavailable

log = logging.getLogger(__name__)

EXPIRE_EVERY_S = 60.0
# A call silent for this long lost its Hangup (RTCP keeps live calls chatty with read=all).
EXPIRE_AFTER_S = 4 * 3600.0
# A CDR that cannot be read after a reconnect is read again: first after this, then doubling.
CDR_RETRY_FIRST_S = 1.0
CDR_RETRY_MAX_S = 60.0


class PbxLink:
    """One PBX: its call fold, its lease keeper and, while the lease is held, its AMI link."""

    def __init__(
        self,
        pbx: PbxSettings,
        *,
        settings: Settings,
        telephony: Telephony,
        clock: Clock,
        lease: RedisLease | None,
        journal: CallJournal | None = None,
    ) -> None:
        self.pbx = pbx
        self.telephony = telephony
        self.clock = clock
        self._settings = settings
        self.folder = self._new_folder()
        self.journal = journal
        self.restored = 0  # calls in progress taken over from the journal, last gain
        self.link: AmiLink | None = None
        self.keeper = LeaseKeeper(lease, on_gain=self._connect, on_loss=self._disconnect)
        self.count_threshold_s = settings.telephony.count_threshold_s
        self.region = settings.crm.default_region
        # The window the AMI link did not see: the wall-clock time of the last frame heard
        # (None before the first), and the link's disconnect count it was heard under.
        self._heard_at: datetime | None = None
        self._heard_under = 0
        self._gap_since: datetime | None = None
        self._followup_since: datetime | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.cdr_reads = 0
        self.cdr_failures = 0
        self.cdr_last_error: str | None = None

    @property
    def name(self) -> str:
        return self.pbx.name

    def _new_folder(self) -> fold.CallFolder:
        return fold.CallFolder(
            self.pbx.trunks,
            self.pbx.extension_pattern,
            self._settings.telephony.count_threshold_s,
            region=self._settings.crm.default_region,
            # Channel lists carry no Timestamp: their times are the server's clock's.
            now=lambda: self.clock.now().timestamp(),
        )

    def feed(self, frame: Frame) -> None:
        """Fold one AMI frame; called from the AMI reader, never blocks."""
        self._note_heard()
        events = self.folder.feed(frame)
        if self.journal is not None:
            self.journal.record(frame)
        for event in events:
            if isinstance(event, fold.CallRinging):
                client = self.folder.click_to_call(event.call_id)
                if client is not None:
                    self.telephony.note_click_to_call(self.pbx.name, event.call_id, client)
            self._emit(event)

    def _emit(self, event: fold.CallEvent) -> None:
        # A finished call leaves the journal once it is stored (PbxLinks.stored), not here:
        # killed before its call log wrote it, this instance leaves it to the next holder.
        if isinstance(event, fold.CallEnded) and event.record.estimated and self.pbx.cdr:
            self._check_later(event.record.started_at)
        self.telephony.enqueue(self.pbx.name, event)

    def _note_heard(self) -> None:
        """Remember when the link last heard the PBX; on the first frame (or resync) of a new
        connection, the gap the CDR must fill starts where the old one went silent."""
        now = self.clock.now()
        link = self.link
        disconnects = link.disconnects if link is not None else 0
        if disconnects != self._heard_under:
            self._heard_under = disconnects
            if self._heard_at is not None and self._gap_since is None:
                # The PBX's own clock too (the last event's Timestamp, not folded anew yet):
                # the CDR is written in its time, and the two clocks may differ.
                last = self.folder.last_timestamp
                pbx_heard = datetime.fromtimestamp(last, UTC) if last else self._heard_at
                self._gap_since = min(self._heard_at, pbx_heard)
        self._heard_at = now

    def expire(self) -> None:
        """End the calls whose Hangup never came."""
        for event in self.folder.expire(self.clock.now().timestamp(), EXPIRE_AFTER_S):
            self._emit(event)

    async def _take_over(self) -> None:
        """On gaining the lease: a fresh fold with the calls in progress the last holder
        journalled (their pop-ups went out already; a call it saw end is finished here)."""
        self.folder = self._new_folder()
        if self.journal is None:
            return
        started = asyncio.get_running_loop().time()
        try:
            async with asyncio.timeout(10.0):
                frames = await self.journal.load()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            log.warning("pbx=%s could not read the call journal (%s)", self.pbx.name, exc)
            return
        ended: list[fold.CallEvent] = []
        for frame in frames:
            ended.extend(e for e in self.folder.feed(frame) if isinstance(e, fold.CallEnded))
        self.restored = len(self.folder.live_calls())
        for event in ended:
            self._emit(event)
        log.info(
            "pbx=%s took over %d call(s) in progress and %d ended one(s) from the journal "
            "(%d frames) in %.2f s",
            self.pbx.name,
            self.restored,
            len(ended),
            len(frames),
            asyncio.get_running_loop().time() - started,
        )

    async def _connect(self) -> None:
        await self._take_over()
        self.link = AmiLink(
            name=self.pbx.name,
            host=self.pbx.host,
            port=self.pbx.port,
            username=self.pbx.username,
            secret=self.pbx.secret.get_secret_value(),
            on_frame=self.feed,
            on_connected=self._resync,
            keep=fold.NEEDED,
        )
        await self.link.start()

    async def _disconnect(self) -> None:
        if self.link is not None:
            link, self.link = self.link, None
            await link.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # Whoever takes the lease next fills the gap from its own start-up window.
        self._heard_at, self._gap_since, self._heard_under = None, None, 0

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resync(self, link: AmiLink) -> None:
        # Status (not CoreShowChannels) reports the number first dialed, so a call that
        # arrived during the outage keeps its DID; QueueStatus keeps waiting callers' queue.
        ended = await resync_calls(
            link,
            self.folder,
            feed=self.feed,
            now=lambda: self.clock.now().timestamp(),
            queues=True,
        )
        for event in ended:
            self._emit(event)
        if self.pbx.cdr is not None:
            self._spawn(self._fill_gap())

    # ---------------------------------------------------------------- the CDR

    async def _fill_gap(self) -> None:
        """After a (re)connect: the calls of the window the link did not hear, from the CDR
        (since it went silent; at start-up since the newest call stored, at most
        ``cdr.lookback_h`` back)."""
        assert self.pbx.cdr is not None
        self._note_heard()
        now = self.clock.now()
        floor = now - timedelta(hours=self.pbx.cdr.lookback_h)
        since, self._gap_since = self._gap_since, None
        if since is None:
            newest = await self.telephony.newest_call_end(self.pbx.name)
            if newest is not None and newest.tzinfo is None:
                newest = newest.replace(tzinfo=UTC)
            # Calls being written when the server stopped: a few minutes of margin.
            since = newest - timedelta(minutes=10) if newest is not None else floor
        else:
            since -= timedelta(seconds=60)  # the last frames heard may have been queued
        await self._reconcile_until_read(max(since, floor))

    async def _reconcile_until_read(self, since: datetime) -> None:
        """Reconcile the CDR from ``since``; while it cannot be read (a share away, the CDR
        database down), again with back-off: nothing else will read this window again. Ends
        when the link is lost (its tasks are cancelled; the next holder reads from its own
        start-up window)."""
        delay = CDR_RETRY_FIRST_S
        while await self._reconcile(since) is None:
            await asyncio.sleep(delay)
            delay = min(delay * 2, CDR_RETRY_MAX_S)

    def _check_later(self, started_at: datetime) -> None:
        """A call ended with times the fold only estimated: read the CDR for it once the PBX
        has written it (``cdr.settle_s`` later; one read for the calls ending meanwhile)."""
        pending = self._followup_since
        self._followup_since = min(pending, started_at) if pending is not None else started_at
        if pending is None:
            self._spawn(self._followup())

    async def _followup(self) -> None:
        assert self.pbx.cdr is not None
        await asyncio.sleep(self.pbx.cdr.settle_s)
        since, self._followup_since = self._followup_since, None
        if since is not None:
            await self._reconcile_until_read(since - timedelta(seconds=1))

    async def reconcile_cdr(self, since: datetime) -> tuple[int, int]:
        """Read the CDR for calls ended since ``since`` and hand the ones the live fold is not
        following to the call log; (added, corrected). A CDR that cannot be read is logged
        and counted (and gives (0, 0)); while our own database is away the call log keeps the
        calls read and stores them once it is back."""
        return await self._reconcile(since) or (0, 0)

    async def _reconcile(self, since: datetime) -> tuple[int, int] | None:
        """:meth:`reconcile_cdr`; None when the CDR could not be read."""
        cdr = self.pbx.cdr
        if cdr is None:
            return 0, 0
        try:
            if cdr.csv is not None:
                columns = tuple(cdr.columns) if cdr.columns else cdr_reader.MASTER_CSV_COLUMNS
                rows = await asyncio.to_thread(
                    cdr_reader.read_master_csv,
                    cdr.csv,
                    timezone=cdr.timezone,
                    columns=columns,
                    since=since,
                )
            else:
                assert cdr.url is not None
                rows = await cdr_reader.read_cdr_table(
                    cdr.url, cdr.table, since, timezone=cdr.timezone
                )
        except Exception as exc:  # a missing share, a database down: the next pass retries
            self.cdr_failures += 1
            error = f"{type(exc).__name__}: {exc}"
            # Once per spell of the same error (the retries back off, /healthz shows it):
            # a Master.csv not written yet (a new PBX, no call ended) fails alike for minutes.
            if error != self.cdr_last_error:
                log.warning("pbx %s: cannot read the CDR (retrying): %s", self.pbx.name, error)
            self.cdr_last_error = error
            return None
        self.cdr_reads += 1
        if self.cdr_last_error is not None:
            log.info("pbx %s: the CDR is read again", self.pbx.name)
        self.cdr_last_error = None
        records = cdr_reader.records_from_cdr(
            rows,
            trunks=self.pbx.trunks,
            extension_pattern=self.pbx.extension_pattern,
            count_threshold_s=self.count_threshold_s,
            region=self.region,
            ended_since=since,
        )
        live = {call.call_id for call in self.folder.live_calls()}
        return await self.telephony.from_cdr(
            self.pbx.name, [r for r in records if r.call_id not in live]
        )

    def provide_status(self) -> dict[str, Any]:
        if not self.keeper.held:
            return {"status": "standby", "detail": "another instance holds this PBX's lease"}
        if self.link is None:
            return {"status": "connecting"}
        status = self.link.provide_status()
        state = status.get("state")
        status["status"] = "ok" if state == "connected" else "fail"
        status["live_calls"] = len(self.folder.live_calls())
        if self.pbx.cdr is not None:
            status["cdr"] = {
                "reads": self.cdr_reads,
                "failures": self.cdr_failures,
                "last_error": self.cdr_last_error,
            }
        return status


class PbxLinks:
    """Every enabled PBX of the settings, by name, in the order configured."""

    def __init__(
        self,
        settings: Settings,
        *,
        telephony: Telephony,
        clock: Clock,
        redis: aioredis.Redis | None,
        instance_id: str,
    ) -> None:
        self.links: dict[str, PbxLink] = {}
        for pbx in settings.pbx:
            if not pbx.enabled:
                continue
            lease = (
                RedisLease(
                    redis,
                    f"{settings.redis.prefix}:ami:{pbx.name}",
                    instance_id,
                    ttl_s=settings.telephony.pbx_lease_ttl_s,
                )
                if redis is not None
                else None
            )
            journal = (
                CallJournal(
                    redis, settings.redis.prefix, pbx.name, ttl_s=EXPIRE_AFTER_S + EXPIRE_EVERY_S
                )
                if redis is not None
                else None
            )
            self.links[pbx.name] = PbxLink(
                pbx,
                settings=settings,
                telephony=telephony,
                clock=clock,
                lease=lease,
                journal=journal,
            )
        self._expirer: asyncio.Task[None] | None = None
        telephony.when_stored(self.stored)

    def stored(self, pbx: str, call_id: str) -> None:
        """A finished call of ``pbx`` is in the call log: it leaves the PBX's journal."""
        link = self.links.get(pbx)
        if link is not None and link.journal is not None:
            link.journal.ended(call_id)

    def __getitem__(self, name: str) -> PbxLink:
        return self.links[name]

    def get(self, name: str | None = None) -> PbxLink:
        """The link of ``name`` (default: the first PBX); Unavailable when there is none."""
        if not self.links:
            raise Unavailable("no PBX is configured")
        link = self.links.get(name) if name else next(iter(self.links.values()))
        if link is None:
            raise Unavailable(f"no PBX named {name!r}")
        return link

    async def start(self) -> None:
        """Start competing for each PBX's lease (taking it at once without Redis)."""
        for link in self.links.values():
            await link.keeper.start()
        self._expirer = asyncio.get_running_loop().create_task(self._expire_loop())

    async def close(self) -> None:
        if self._expirer is not None:
            self._expirer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expirer
            self._expirer = None
        for link in self.links.values():
            await link.keeper.stop()
            if link.journal is not None:
                await link.journal.close()

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRE_EVERY_S)
            for link in self.links.values():
                link.expire()

    def collector(self) -> AmiCollector:
        return AmiCollector(self.links)


class AmiCollector:
    """Each PBX link's figures (``AmiLink.metrics()``) as ``cc_ami_*{pbx=...}``."""

    def __init__(self, links: dict[str, PbxLink]) -> None:
        self._links = links

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, pbx in self._links.items():
            if pbx.link is None:
                continue
            for key, value in pbx.link.metrics().items():
                if key.endswith("_total"):
                    family = families.setdefault(
                        key, CounterMetricFamily(f"cc_ami_{key[:-6]}", f"AMI {key}", labels=["pbx"])
                    )
                else:
                    family = families.setdefault(
                        key, GaugeMetricFamily(f"cc_ami_{key}", f"AMI {key}", labels=["pbx"])
                    )
                family.add_metric([name], value)
        yield from families.values()
