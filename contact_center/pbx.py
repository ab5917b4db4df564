"""The PBXes: one AMI link and one call fold per configured PBX, feeding the telephony service.

Each PBX link runs only while this instance holds the PBX's lease (Redis; always, without
Redis), so exactly one instance consumes each AMI stream. The fold state (the calls in progress)
belongs to the link that reads the stream: frames are folded in the AMI reader and the call
events go to :class:`~contact_center.telephony.Telephony`. After every (re)connect the calls in
memory are reconciled with the PBX's own channel list (``Status``, ``QueueStatus``), so a call
that began or ended during the outage is neither lost nor recorded twice. With Redis the folded
frames of the calls in progress are journalled (:mod:`contact_center.call_journal`), so the
instance that takes the lease over when the holder dies folds them again before it connects:
its resync then also ends the calls that ended while nobody followed the PBX.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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

    @property
    def name(self) -> str:
        return self.pbx.name

    def _new_folder(self) -> fold.CallFolder:
        return fold.CallFolder(
            self.pbx.trunks,
            self.pbx.extension_pattern,
            self._settings.telephony.count_threshold_s,
            region=self._settings.crm.default_region,
        )

    def feed(self, frame: Frame) -> None:
        """Fold one AMI frame; called from the AMI reader, never blocks."""
        events = self.folder.feed(frame)
        if self.journal is not None:
            self.journal.record(frame)
        self._emit(events)

    def _emit(self, events: list[fold.CallEvent]) -> None:
        # A finished call leaves the journal once it is stored (PbxLinks.stored), not here:
        # killed before its call log wrote it, this instance leaves it to the next holder.
        for event in events:
            self.telephony.enqueue(self.pbx.name, event)

    def expire(self) -> None:
        """End the calls whose Hangup never came."""
        self._emit(self.folder.expire(self.clock.now().timestamp(), EXPIRE_AFTER_S))

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
        self._emit(list(ended))
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
        self._emit(ended)

    def provide_status(self) -> dict[str, Any]:
        if not self.keeper.held:
            return {"status": "standby", "detail": "another instance holds this PBX's lease"}
        if self.link is None:
            return {"status": "connecting"}
        status = self.link.provide_status()
        state = status.get("state")
        status["status"] = "ok" if state == "connected" else "fail"
        status["live_calls"] = len(self.folder.live_calls())
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
