"""The PBXes: one AMI link and one call fold per configured PBX, feeding the telephony service.

Each PBX link runs only while this instance holds the PBX's lease (Redis; always, without
Redis), so exactly one instance consumes each AMI stream. The fold state (the calls in progress)
belongs to the link that reads the stream: frames are folded in the AMI reader and the call
events go to :class:`~contact_center.telephony.Telephony`. After every (re)connect the calls in
memory are reconciled with the PBX's own channel list (``Status``, ``QueueStatus``), so a call
that began or ended during the outage is neither lost nor recorded twice.
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
    ) -> None:
        self.pbx = pbx
        self.telephony = telephony
        self.clock = clock
        self.folder = fold.CallFolder(
            pbx.trunks,
            pbx.extension_pattern,
            settings.telephony.count_threshold_s,
            region=settings.crm.default_region,
        )
        self.link: AmiLink | None = None
        self.keeper = LeaseKeeper(lease, on_gain=self._connect, on_loss=self._disconnect)

    @property
    def name(self) -> str:
        return self.pbx.name

    def feed(self, frame: Frame) -> None:
        """Fold one AMI frame; called from the AMI reader, never blocks."""
        for event in self.folder.feed(frame):
            self.telephony.enqueue(self.pbx.name, event)

    def expire(self) -> None:
        """End the calls whose Hangup never came."""
        for event in self.folder.expire(self.clock.now().timestamp(), EXPIRE_AFTER_S):
            self.telephony.enqueue(self.pbx.name, event)

    async def _connect(self) -> None:
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
        for event in ended:
            self.telephony.enqueue(self.pbx.name, event)

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
            self.links[pbx.name] = PbxLink(
                pbx, settings=settings, telephony=telephony, clock=clock, lease=lease
            )
        self._expirer: asyncio.Task[None] | None = None

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
