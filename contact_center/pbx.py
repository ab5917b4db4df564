"""Wiring of the PBXes: one AMI link per configured PBX feeding the telephony service.

Each PBX link runs only while this instance holds the PBX's lease (Redis; always, without
Redis), so exactly one instance consumes each AMI stream. After every (re)connect the calls in
memory are reconciled with the PBX's own channel list (``CoreShowChannels``), so a call that
began or ended during the outage is neither lost nor recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ami import fold
from ami.connection import AmiLink
from ami.resync import resync_calls
from contact_center.config import PbxSettings
from contact_center.keys import (
    BUS,
    CLOCK,
    HEALTH,
    INSTANCE_ID,
    METRICS,
    REDIS,
    RULES,
    SESSIONS,
    SETTINGS,
)
from contact_center.leases import LeaseKeeper, RedisLease
from contact_center.telephony import Telephony
from contact_center.tracking_service import TRACKER
from crm_core.errors import Unavailable

log = logging.getLogger(__name__)

TELEPHONY = web.AppKey("telephony", Telephony)
LINKS = web.AppKey("pbx_links", dict)

LEASE_TTL_S = 10.0
EXPIRE_EVERY_S = 60.0


class PbxRuntime:
    """One PBX: its lease keeper and, while the lease is held, its AMI link."""

    def __init__(self, app: web.Application, pbx: PbxSettings, telephony: Telephony) -> None:
        self.app = app
        self.pbx = pbx
        self.telephony = telephony
        self.link: AmiLink | None = None
        lease = None
        if REDIS in app:
            prefix = app[SETTINGS].redis.prefix
            lease = RedisLease(
                app[REDIS], f"{prefix}:ami:{pbx.name}", app[INSTANCE_ID], ttl_s=LEASE_TTL_S
            )
        self.keeper = LeaseKeeper(lease, on_gain=self._connect, on_loss=self._disconnect)

    async def _connect(self) -> None:
        self.link = AmiLink(
            name=self.pbx.name,
            host=self.pbx.host,
            port=self.pbx.port,
            username=self.pbx.username,
            secret=self.pbx.secret.get_secret_value(),
            on_frame=lambda frame: self.telephony.feed(self.pbx.name, frame),
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
            self.telephony.folders[self.pbx.name],
            feed=lambda frame: self.telephony.feed(self.pbx.name, frame),
            now=lambda: self.app[CLOCK].now().timestamp(),
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
        return status


class _AmiCollector:
    """Each PBX link's figures (``AmiLink.metrics()``) as ``cc_ami_*{pbx=...}``."""

    def __init__(self, runtimes: dict[str, PbxRuntime]) -> None:
        self._runtimes = runtimes

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, rt in self._runtimes.items():
            if rt.link is None:
                continue
            for key, value in rt.link.metrics().items():
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


def runtime(app: web.Application, pbx_name: str | None = None) -> PbxRuntime:
    """The runtime of ``pbx_name`` (default: the first PBX); Unavailable when none is up."""
    links: dict[str, PbxRuntime] = app[LINKS]
    if not links:
        raise Unavailable("no PBX is configured")
    rt = links.get(pbx_name) if pbx_name else next(iter(links.values()))
    if rt is None:
        raise Unavailable(f"no PBX named {pbx_name!r}")
    return rt


async def _telephony_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    telephony = Telephony(
        settings=settings,
        sessions=app[SESSIONS],
        bus=app[BUS],
        rules=app[RULES],
        clock=app[CLOCK],
        tracker=app.get(TRACKER),
    )
    app[TELEPHONY] = telephony
    app[HEALTH].add("telephony", telephony.provide_status)
    await telephony.start()
    runtimes: dict[str, PbxRuntime] = {}
    app[LINKS] = runtimes
    for pbx in settings.pbx:
        if not pbx.enabled:
            continue
        rt = PbxRuntime(app, pbx, telephony)
        runtimes[pbx.name] = rt
        app[HEALTH].add_to_group("pbx", pbx.name, rt.provide_status)
        await rt.keeper.start()
    app[METRICS].register(_AmiCollector(runtimes))
    expirer = asyncio.get_running_loop().create_task(_expire_loop(telephony))
    yield
    expirer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await expirer
    for rt in runtimes.values():
        await rt.keeper.stop()
    await telephony.close()


async def _expire_loop(telephony: Telephony) -> None:
    while True:
        await asyncio.sleep(EXPIRE_EVERY_S)
        telephony.expire_stale()


def setup(app: web.Application) -> None:
    """Install the telephony service and the PBX links (after the database and the bus)."""
    app.cleanup_ctx.append(_telephony_ctx)
