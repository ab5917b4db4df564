"""Call tracking wired into the server: the lease store (Redis when ``redis.url`` is set, else
memory), number selection for website sessions, the batched history writer, and the call
attributor the screen-pop and the call log ask "whose was this number at ring time?".

A website session costs no database round trip: the configuration is an in-memory
:class:`~crm_core.tracking.directory.Directory` (reloaded on change events and every
``tracking.directory_cache_s``), the lease and the rate limits are one lease-store call, and
visitors and sessions are written by :class:`HistoryWriter` in batches.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import phonenumbers
import redis.asyncio as aioredis
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contact_center import tracking_config
from contact_center.background import Periodic
from contact_center.config import Settings, TrackingSettings
from crm_core.clock import Clock
from crm_core.errors import NotFound, RateLimited
from crm_core.events import DomainEvent
from crm_core.phones import try_normalize_phone
from crm_core.tracking import history
from crm_core.tracking.directory import Directory, PoolInfo, SiteInfo, load_directory
from crm_core.tracking.model import NumberKind
from crm_core.tracking.service import attribution_at, attribution_dict
from routing.circuit import Circuit
from routing.ip_regions import IpRegions
from routing.number_leases import (
    FallbackLeaseStore,
    LeaseRateLimited,
    LeaseStore,
    MemoryLeaseStore,
    PoolStats,
    RateRule,
    RedisLeaseStore,
)
from routing.sources import Touch, classify, clean_tags, host_of

log = logging.getLogger(__name__)

_MAX_BACKLOG = 200_000  # history items kept while the database is down; older ones are dropped
_SAME_VISITOR_S = 300.0  # an unchanged visitor is written again after this
_RECENT_VISITORS = 100_000
_MAX_ATTEMPTS = 5  # a batch refused this often in a row is dropped (one bad row must not jam)


class SiteNotFound(NotFound):
    error_id = "tracking-site-not-found"


@dataclass(frozen=True)
class SessionRequest:
    """What track.js sends: the visitor's (first-touch) tags, referrer and landing page, the
    current page, and the region the site's city selector chose."""

    site: str
    visitor_id: str | None
    page: str | None
    referrer: str | None
    landing_page: str | None
    tags: Mapping[str, str]
    region: str | None
    ip: str


@dataclass(frozen=True)
class SessionAnswer:
    visitor_id: str
    session_id: str
    number: str | None
    display: str | None
    low_confidence: bool
    leased: bool
    heartbeat_s: int
    source: str
    region: str | None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@lru_cache(maxsize=4096)
def display_number(e164: str) -> str:
    """``+74951112233`` → ``+7 (495) 111-22-33``; other countries in international format."""
    try:
        parsed = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return e164
    if parsed.country_code == 7:
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "+7 " + national.removeprefix("8 ").strip()
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


class HistoryWriter:
    """Queues history (visitors, session starts, heartbeats, ends) and writes it in one
    transaction every ``interval_s``. A failed write is retried with the next batch: a
    database that is down loses nothing (up to ``_MAX_BACKLOG`` items), a batch it refuses
    (integrity or data errors) five times in a row is dropped and logged. On shutdown what is
    queued is written."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        self._sessions = sessions
        self._loop = Periodic("tracking-history", self.flush, interval_s, immediately=False)
        self._batch = self._empty()
        self.written = 0
        self.failures = 0
        self._attempts = 0
        self._recent: dict[tuple[int, str], tuple[tuple[Any, ...], float]] = {}

    @staticmethod
    def _empty() -> history.Batch:
        return history.Batch(visitors=[], starts=[], beats={}, ends={})

    def add(
        self,
        *,
        visitor: history.VisitorTouch | None = None,
        start: history.SessionStart | None = None,
        beat: tuple[str, datetime] | None = None,
        end: tuple[str, datetime] | None = None,
    ) -> None:
        batch = self._batch
        if len(batch) >= _MAX_BACKLOG:
            log.error("tracking history backlog full (database down?); dropping the oldest")
            self._batch = batch = self._empty()
        if visitor is not None and self._changed(visitor):
            batch.visitors.append(visitor)
        if start is not None:
            batch.starts.append(start)
        if beat is not None:
            batch.beats[beat[0]] = beat[1]
        if end is not None:
            batch.ends[end[0]] = end[1]

    def _changed(self, visitor: history.VisitorTouch) -> bool:
        """False for a visitor written a moment ago with the same touch (a page view after
        another): ``last_seen_at`` is then up to ``_SAME_VISITOR_S`` late, nothing else."""
        key = (visitor.site_id, visitor.visitor_id)
        touch = (
            visitor.kind,
            visitor.channel,
            visitor.source_id,
            visitor.campaign,
            tuple(sorted(visitor.utm.items())),
            visitor.landing_page,
            visitor.referrer,
            visitor.region_id,
        )
        now = time.monotonic()
        seen = self._recent.get(key)
        if seen is not None and seen[0] == touch and now - seen[1] < _SAME_VISITOR_S:
            return False
        if len(self._recent) >= _RECENT_VISITORS:
            self._recent.clear()
        self._recent[key] = (touch, now)
        return True

    async def flush(self) -> None:
        batch, self._batch = self._batch, self._empty()
        if not len(batch):
            return
        try:
            async with self._sessions() as session:
                await history.store_batch(session, batch)
                await session.commit()
        except Exception as exc:
            self.failures += 1
            if isinstance(exc, IntegrityError | DataError):  # refused, not unreachable
                self._attempts += 1
            if self._attempts >= _MAX_ATTEMPTS:  # a batch the database refuses for good
                log.exception("dropping %d tracking history items after failures", len(batch))
                self._attempts = 0
                return
            log.exception("writing %d tracking history items failed; retrying", len(batch))
            self._requeue(batch)
            return
        self._attempts = 0
        self.written += len(batch)

    def _requeue(self, batch: history.Batch) -> None:
        newer = self._batch
        batch.visitors += newer.visitors
        batch.starts += newer.starts
        batch.beats.update(newer.beats)
        batch.ends.update(newer.ends)
        self._batch = batch

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.stop()
        await self.flush()


@dataclass(frozen=True)
class CallRegion:
    """The region of a call and where it was learnt (``origin``): ``tracking`` (the session
    that held the number at ring time, else the number's own region), ``did``
    (``distribution.did_regions``), ``default`` (``distribution.default_region``), or None
    when nothing names a known region."""

    code: str | None = None
    id: int | None = None
    origin: str | None = None


@dataclass(frozen=True)
class RegionFallbacks:
    """The regions of calls that tracking does not place: ``distribution.did_regions`` (keys
    in E.164) and ``distribution.default_region``."""

    did_regions: Mapping[str, str] = field(default_factory=dict)
    default_region: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> RegionFallbacks:
        cfg = settings.distribution
        phone_region = settings.crm.default_region
        return cls(
            did_regions={
                try_normalize_phone(did, phone_region) or did: code
                for did, code in cfg.did_regions.items()
            },
            default_region=cfg.default_region,
        )

    def unknown_codes(self, d: Directory) -> dict[str, str]:
        """The configured region codes that name no region in ``d``: setting -> code."""
        configured = {
            f"distribution.did_regions.{did}": code for did, code in self.did_regions.items()
        }
        if self.default_region:
            configured["distribution.default_region"] = self.default_region
        return {key: code for key, code in sorted(configured.items()) if code not in d.region_ids}


def region_of_call(
    d: Directory,
    attribution: Mapping[str, Any] | None,
    did: str | None,
    fallbacks: RegionFallbacks,
) -> CallRegion:
    """The one notion of a call's region, for the dialplan and for the CRM alike: tracking
    attribution's region (the session's, then the number's) → ``did_regions[did]`` →
    ``default_region``. A code that names no region falls through to the next. Pure: the
    regions come from the in-memory directory."""
    if attribution:
        region_id = attribution.get("region_id")
        if isinstance(region_id, int) and region_id in d.region_codes:
            return CallRegion(d.region_codes[region_id], region_id, "tracking")
        code = attribution.get("region")
        if isinstance(code, str) and code in d.region_ids:
            return CallRegion(code, d.region_ids[code], "tracking")
    for code, origin in (
        (fallbacks.did_regions.get(did) if did else None, "did"),
        (fallbacks.default_region, "default"),
    ):
        if code and code in d.region_ids:
            return CallRegion(code, d.region_ids[code], origin)
    return CallRegion()


class TrackingService:
    """Sessions of website visitors and the attribution of calls to them."""

    def __init__(
        self,
        cfg: TrackingSettings,
        sessions: async_sessionmaker[AsyncSession],
        store: LeaseStore,
        clock: Clock,
        *,
        fallbacks: RegionFallbacks | None = None,
        ip_regions: IpRegions | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.fallbacks = fallbacks or RegionFallbacks()
        self.ip_regions = ip_regions
        self.writer = HistoryWriter(sessions, cfg.flush_interval_s)
        self._sessions = sessions
        self._clock = clock
        self._directory: Directory | None = None
        self._loaded_at = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()
        self._unknown_codes: dict[str, str] = {}
        self._ttl_s = cfg.lease_minutes * 60.0
        self._cooldown_s = cfg.release_cooldown_minutes * 60.0

    # ---------------------------------------------------------------- configuration

    def invalidate(self) -> None:
        self._directory = None
        self._generation += 1

    async def on_event(self, event: DomainEvent) -> None:
        self.invalidate()

    async def directory(self) -> Directory:
        """The configuration in memory; one reload at a time, however many ask."""
        current = self._directory
        if current is not None and time.monotonic() - self._loaded_at < self.cfg.directory_cache_s:
            return current
        async with self._lock:
            if self._directory is not None and self._directory is not current:
                return self._directory
            generation = self._generation
            async with self._sessions() as session:
                loaded = await load_directory(session)
            if generation == self._generation:
                self._directory, self._loaded_at = loaded, time.monotonic()
            self._check_codes(loaded)
            return loaded

    def _check_codes(self, d: Directory) -> None:
        # A code naming no region is skipped when a call's region is chosen (the next fallback
        # decides): say so once per change, in the log and in /healthz, not on every call.
        unknown = self.fallbacks.unknown_codes(d)
        for key, code in unknown.items():
            if self._unknown_codes.get(key) != code:
                log.warning(
                    "tracking: %s = %r names no region (create it, or fix the setting); "
                    "calls fall through to the next fallback",
                    key,
                    code,
                )
        self._unknown_codes = unknown

    def provide_status(self) -> dict[str, Any]:
        """The ``tracking`` entry of ``/healthz``."""
        entry: dict[str, Any] = {"status": "ok"}
        if isinstance(self.store, FallbackLeaseStore) and self.store.degraded:
            entry["status"] = "degraded"
            entry["leases"] = "in memory while Redis is unreachable (low-confidence attribution)"
        if self._directory is not None:
            entry["sites"] = len(self._directory.sites)
            entry["numbers"] = len(self._directory.numbers)
        if self._unknown_codes:
            entry["status"] = "degraded"
            entry["unknown_region_codes"] = dict(self._unknown_codes)
        return entry

    async def site(self, code: str) -> SiteInfo:
        site = (await self.directory()).sites.get(code)
        if site is None:
            raise SiteNotFound(f"no active tracking site {code!r}", details={"field": "site"})
        return site

    # ---------------------------------------------------------------- website sessions

    def _limits(self, *keys: tuple[str, int]) -> list[RateRule]:
        return [RateRule(key, limit, self.cfg.rate_window_s) for key, limit in keys]

    async def start_session(self, req: SessionRequest) -> SessionAnswer:
        """Choose and lease a number for a page session (see the module's docstring)."""
        d = await self.directory()
        site = await self.site(req.site)
        visitor_id = req.visitor_id or uuid.uuid4().hex
        key = uuid.uuid4().hex
        touch = classify(req.tags, req.referrer, own_hosts=_hosts(req.page))
        if req.region:
            region_id = d.region_ids.get(req.region) or site.default_region_id
        else:  # the page names no region: where its address is, if the IP table knows
            region_id = d.region_ids.get(self.region_of_ip(req.ip) or "") or site.default_region_id
        pool = d.pool_for(site, touch.channel, touch.kind, region_id)
        attribution = self._attribution(d, site, visitor_id, touch, req, region_id, pool)
        limits = self._limits(
            (f"ip:{req.ip}", self.cfg.sessions_per_ip),
            (f"v:{site.code}:{visitor_id}", self.cfg.sessions_per_visitor),
        )
        did, low, leased = await self._number(d, site, pool, key, attribution, limits, region_id)
        now = self._clock.now()
        attribution["low_confidence"] = low
        number = d.numbers.get(did) if did else None
        self.writer.add(
            visitor=history.VisitorTouch(
                site_id=site.id,
                visitor_id=visitor_id,
                kind=touch.kind,
                channel=touch.channel,
                source_id=attribution["source_id"],
                campaign=touch.campaign,
                utm=touch.utm,
                landing_page=attribution["landing_page"],
                referrer=attribution["referrer"],
                region_id=region_id if req.region else None,
                seen_at=now,
                campaign_click=touch.is_campaign_click,
            ),
            start=history.SessionStart(
                key=key,
                site_id=site.id,
                visitor_id=visitor_id,
                number_id=number.id if number else None,
                pool_id=pool.id if leased and pool else None,
                did=did,
                low_confidence=low,
                page=_cut(req.page),
                attribution=attribution,
                started_at=now,
            ),
        )
        return SessionAnswer(
            visitor_id=visitor_id,
            session_id=key,
            number=did,
            display=display_number(did) if did else None,
            low_confidence=low,
            leased=leased,
            heartbeat_s=self.cfg.heartbeat_s,
            source=touch.channel,
            region=d.region_codes.get(region_id) if region_id else None,
        )

    async def _number(
        self,
        d: Directory,
        site: SiteInfo,
        pool: PoolInfo | None,
        key: str,
        attribution: dict[str, Any],
        limits: list[RateRule],
        region_id: int | None,
    ) -> tuple[str | None, bool, bool]:
        """(DID, low confidence, leased): a pool number, else the exhaustion fallback (the
        pool source's static number), else the site's default number for the region."""
        try:
            if pool is None or not pool.dids:
                await self.store.hit(limits)
            else:
                lease = await self.store.acquire(
                    pool.key,
                    pool.dids,
                    key,
                    json.dumps(attribution, ensure_ascii=False),
                    ttl_s=self._ttl_s,
                    cooldown_s=self._cooldown_s,
                    reuse=self.cfg.exhaustion == "reuse",
                    limits=limits,
                )
                if lease is not None:
                    if lease.evicted:
                        self.writer.add(end=(lease.evicted, self._clock.now()))
                    return lease.did, lease.low_confidence, True
                if pool.static_did:
                    return pool.static_did, False, False
        except LeaseRateLimited as exc:
            raise RateLimited(
                "too many tracking sessions; try again later",
                details={"limit": exc.rule.key.split(":", 1)[0], "window_s": exc.rule.window_s},
            ) from exc
        return d.default_did(site, region_id), False, False

    @staticmethod
    def _attribution(
        d: Directory,
        site: SiteInfo,
        visitor_id: str,
        touch: Touch,
        req: SessionRequest,
        region_id: int | None,
        pool: PoolInfo | None,
    ) -> dict[str, Any]:
        source_id = d.source_of(touch.channel, touch.kind) or (pool.source_id if pool else None)
        return attribution_dict(
            visitor_id=visitor_id,
            site=site.code,
            kind=touch.kind,
            channel=touch.channel,
            source_id=source_id,
            source=d.sources.get(source_id, touch.channel) if source_id else touch.channel,
            campaign=touch.campaign,
            utm=touch.utm,
            landing_page=_cut(req.landing_page or req.page),
            referrer=_cut(req.referrer),
            region=d.region_codes.get(region_id) if region_id else None,
            region_id=region_id,
            low_confidence=False,
        )

    async def heartbeat(self, session_key: str, ip: str) -> bool:
        """Keep the session's lease; False when it has none any more (the page asks anew)."""
        await self._hit_session(session_key, ip)
        alive = await self.store.renew(session_key, ttl_s=self._ttl_s, cooldown_s=self._cooldown_s)
        if alive:
            self.writer.add(beat=(session_key, self._clock.now()))
        return alive

    async def release(self, session_key: str, ip: str) -> bool:
        await self._hit_session(session_key, ip)
        released = await self.store.release(session_key, cooldown_s=self._cooldown_s)
        if released:
            self.writer.add(end=(session_key, self._clock.now()))
        return released

    async def _hit_session(self, session_key: str, ip: str) -> None:
        try:
            await self.store.hit(
                self._limits(
                    (f"s:{session_key}", self.cfg.beats_per_session),
                    (f"ip:{ip}", self.cfg.sessions_per_ip),
                )
            )
        except LeaseRateLimited as exc:
            raise RateLimited("too many requests for this session", details={}) from exc

    async def pool_stats(self, pool_id: int) -> PoolStats:
        return await self.store.stats(str(pool_id))

    def region_of_ip(self, ip: str | None) -> str | None:
        """The region code of a visitor's address from ``tracking.ip_regions_file``."""
        return self.ip_regions.lookup(ip) if self.ip_regions is not None else None

    # ---------------------------------------------------------------- calls

    async def attribute_call(
        self, session: AsyncSession, did: str, at: datetime
    ) -> dict[str, Any] | None:
        """What a call to ``did`` ringing at ``at`` carries, or None for an unknown DID.

        A pool number: the attribution of the session that holds it (one lease-store read),
        else from the history (one query); its region, when the session names none, is the
        pool's. A static or default number: its own source and region. A DID configured
        only as a source of kind ``tracking_number``: that source. The directory is in
        memory, so an unknown DID costs nothing."""
        d = await self.directory()
        number = d.number(did)
        if number is None:
            return None
        pool = d.pools.get(number.pool_id) if number.pool_id is not None else None
        if number.region_id is None and pool is not None and pool.region_id is not None:
            number = dataclasses.replace(
                number, region_id=pool.region_id, region=d.region_codes.get(pool.region_id)
            )
        base = {
            **attribution_dict(
                visitor_id=None,
                site=number.site,
                kind=None,
                channel=None,
                source_id=number.source_id,
                source=number.source,
                campaign=number.campaign,
                utm=None,
                landing_page=None,
                referrer=None,
                region=number.region,
                region_id=number.region_id,
                low_confidence=number.kind == NumberKind.POOL,
            ),
            "did": did,
            "number_kind": number.kind,
        }
        if number.kind != NumberKind.POOL:
            return base
        found = await self._holder_attribution(session, did, at)
        if found is None:
            if pool is not None and pool.source_id:
                base.update(source_id=pool.source_id, source=d.sources.get(pool.source_id))
            return base
        merged = {**base, **found, "did": did, "number_kind": number.kind}
        if not found.get("region_id") and not found.get("region"):
            merged.update(region=base["region"], region_id=base["region_id"])
        return merged

    async def call_region(
        self, did: str | None, attribution: Mapping[str, Any] | None
    ) -> CallRegion:
        """The region of a call to ``did`` carrying ``attribution`` (see
        :func:`region_of_call`); no I/O beyond the cached directory."""
        return region_of_call(await self.directory(), attribution, did, self.fallbacks)

    async def locate_call(
        self, session: AsyncSession, did: str, at: datetime
    ) -> tuple[dict[str, Any] | None, CallRegion]:
        """The attribution of a call to ``did`` ringing at ``at`` and its region: what the
        dialplan routes by and what the call's lead is given."""
        attribution = await self.attribute_call(session, did, at)
        return attribution, await self.call_region(did, attribution)

    async def _holder_attribution(
        self, session: AsyncSession, did: str, at: datetime
    ) -> dict[str, Any] | None:
        holder = await self.store.holder(did)
        if holder is not None:
            found: dict[str, Any] = json.loads(holder.payload)
            found["low_confidence"] = found.get("low_confidence") or holder.low_confidence
            found["session_id"] = holder.session
            return found
        return await attribution_at(
            session,
            did,
            at,
            lease=timedelta(seconds=self._ttl_s),
            cooldown=timedelta(seconds=self._cooldown_s),
        )


def _hosts(page: str | None) -> list[str]:
    host = host_of(page)
    return [host] if host else []


def _cut(text: str | None, limit: int = 2000) -> str | None:
    return text[:limit] if text else None


def tags_of(body: Mapping[str, Any]) -> dict[str, str]:
    """The visitor's tags from a request: an ``utm`` object and/or flat ``utm_*`` keys."""
    nested = body.get("utm")
    return clean_tags({**(nested if isinstance(nested, Mapping) else {}), **body})


# ---------------------------------------------------------------- construction


async def open_service(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    redis: aioredis.Redis | None,
    clock: Clock,
) -> tuple[TrackingService, bool]:
    """The tracking service, after ``tracking.sites`` of the config were written to the
    database and the IP-to-region table was read; (service, whether the config changed
    anything — other running instances must then reload their directories)."""
    store: LeaseStore = (
        FallbackLeaseStore(
            RedisLeaseStore(redis, settings.redis.prefix),
            MemoryLeaseStore(),
            Circuit("tracking leases"),
        )
        if redis is not None
        else MemoryLeaseStore()
    )
    async with sessions() as session:
        changed = await tracking_config.sync_config_sites(session, settings)
        table = await tracking_config.load_ip_regions(session, settings)
        await session.commit()
    if table is not None:
        log.info("tracking: %d IP ranges from %s", len(table), settings.tracking.ip_regions_file)
    service = TrackingService(
        settings.tracking,
        sessions,
        store,
        clock,
        fallbacks=RegionFallbacks.of(settings),
        ip_regions=table,
    )
    return service, changed
