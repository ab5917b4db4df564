"""An in-memory snapshot of the tracking configuration: sites, pools, numbers, regions and
sources by code. The website endpoint and the screen-pop read it instead of the database; the
composition root reloads it when the configuration changes.

Choosing a pool for a visitor (:meth:`Directory.pool_for`): among the site's active pools whose
channel and kind match the visitor's source (None matches anything) and whose region is the
visitor's region, one of its parents, or any, the most specific wins: a named channel beats a
kind beats any; then an exact region beats a parent beats any.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.reference.model import Region, Source, SourceKind
from crm_core.tracking.model import NumberKind, TrackingNumber, TrackingPool, TrackingSite

_MAX_REGION_DEPTH = 16


@dataclass(frozen=True)
class NumberInfo:
    """What a call to one DID means before any visitor is known. ``id`` is None for a DID
    known only as a source of kind ``tracking_number`` (static numbers of older setups)."""

    id: int | None
    did: str
    kind: str
    site: str | None
    site_id: int | None
    pool_id: int | None
    source_id: int | None
    source: str | None
    campaign: str | None
    region_id: int | None
    region: str | None


@dataclass(frozen=True)
class PoolInfo:
    id: int
    code: str
    site_id: int
    channel: str | None
    kind: str | None
    region_id: int | None
    source_id: int | None
    dids: tuple[str, ...]
    static_did: str | None  # the static number of the pool's source (exhaustion fallback)

    @property
    def key(self) -> str:
        """The pool's name in the lease store."""
        return str(self.id)


@dataclass(frozen=True)
class SiteInfo:
    id: int
    code: str
    origins: frozenset[str]
    default_region_id: int | None
    pools: tuple[PoolInfo, ...]
    defaults: dict[int | None, str]  # region id (None: any) -> default DID


@dataclass
class Directory:
    sites: dict[str, SiteInfo] = field(default_factory=dict)
    numbers: dict[str, NumberInfo] = field(default_factory=dict)
    region_ids: dict[str, int] = field(default_factory=dict)  # code -> id
    region_codes: dict[int, str] = field(default_factory=dict)
    region_parents: dict[int, int | None] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)  # id -> name
    source_ids: dict[str, int] = field(default_factory=dict)  # code -> id (first by kind order)
    pools: dict[int, PoolInfo] = field(default_factory=dict)  # id -> pool (active sites')
    # DID -> static number declared as a source of kind ``tracking_number`` (code = the DID):
    # known here so that a call to a DID that is in neither table costs no query.
    source_numbers: dict[str, NumberInfo] = field(default_factory=dict)

    def number(self, did: str) -> NumberInfo | None:
        """What ``did`` is: a tracking number, else a ``tracking_number`` source, else None."""
        return self.numbers.get(did) or self.source_numbers.get(did)

    def lineage(self, region_id: int | None) -> list[int]:
        """The region and its parents, nearest first (cycles cut)."""
        out: list[int] = []
        while region_id is not None and region_id not in out and len(out) < _MAX_REGION_DEPTH:
            out.append(region_id)
            region_id = self.region_parents.get(region_id)
        return out

    def pool_for(
        self, site: SiteInfo, channel: str, kind: str, region_id: int | None
    ) -> PoolInfo | None:
        lineage = self.lineage(region_id)
        best: tuple[int, int] | None = None
        chosen = None
        for pool in site.pools:
            if pool.channel is not None and pool.channel != channel:
                continue
            if pool.kind is not None and pool.kind != kind:
                continue
            if pool.region_id is not None and pool.region_id not in lineage:
                continue
            region_rank = (
                len(lineage) - lineage.index(pool.region_id) if pool.region_id is not None else 0
            )
            rank = (2 if pool.channel else 1 if pool.kind else 0, region_rank)
            if best is None or rank > best:
                best, chosen = rank, pool
        return chosen

    def default_did(self, site: SiteInfo, region_id: int | None) -> str | None:
        """The site's default number for the region (or a parent), else its any-region one."""
        for rid in self.lineage(region_id):
            if rid in site.defaults:
                return site.defaults[rid]
        return site.defaults.get(None)

    def source_of(self, channel: str, kind: str) -> int | None:
        """The source a visitor's channel (else its kind) is recorded as, if one exists."""
        return self.source_ids.get(channel) or self.source_ids.get(kind)


# Source kinds whose codes name website channels, by priority when codes collide.
_CHANNEL_SOURCE_KINDS = ("ad_channel", "website", "referral", "campaign", "other")


async def load_directory(session: AsyncSession) -> Directory:
    """Read the whole active tracking configuration (a handful of small queries)."""
    d = Directory()
    for region in await session.scalars(select(Region)):
        d.region_ids[region.code] = region.id
        d.region_codes[region.id] = region.code
        d.region_parents[region.id] = region.parent_id
    every_source = list(await session.scalars(select(Source)))
    sources = [s for s in every_source if s.is_active]
    d.sources = {s.id: s.name for s in sources}
    for kind in reversed(_CHANNEL_SOURCE_KINDS):
        d.source_ids.update({s.code: s.id for s in sources if s.kind == kind})
    d.source_numbers = _source_numbers(every_source)
    numbers = list(
        await session.scalars(select(TrackingNumber).where(TrackingNumber.is_active.is_(True)))
    )
    pools = list(
        await session.scalars(select(TrackingPool).where(TrackingPool.is_active.is_(True)))
    )
    sites = list(
        await session.scalars(select(TrackingSite).where(TrackingSite.is_active.is_(True)))
    )
    site_codes = {s.id: s.code for s in sites}
    for n in numbers:
        d.numbers[n.did] = _number_info(d, n, site_codes)
    for site in sites:
        site_pools = tuple(_pool_info(p, numbers) for p in pools if p.site_id == site.id)
        d.pools.update((p.id, p) for p in site_pools)
        d.sites[site.code] = SiteInfo(
            id=site.id,
            code=site.code,
            origins=frozenset(site.origins or ()),
            default_region_id=site.default_region_id,
            pools=site_pools,
            defaults={
                n.region_id: n.did
                for n in numbers
                if n.kind == NumberKind.DEFAULT and n.site_id == site.id
            },
        )
    return d


def _number_info(d: Directory, n: TrackingNumber, site_codes: dict[int, str]) -> NumberInfo:
    return NumberInfo(
        id=n.id,
        did=n.did,
        kind=n.kind,
        site=site_codes.get(n.site_id) if n.site_id else None,
        site_id=n.site_id,
        pool_id=n.pool_id,
        source_id=n.source_id,
        source=d.sources.get(n.source_id) if n.source_id else None,
        campaign=n.campaign,
        region_id=n.region_id,
        region=d.region_codes.get(n.region_id) if n.region_id else None,
    )


def _source_numbers(sources: Iterable[Source]) -> dict[str, NumberInfo]:
    """Static numbers configured as sources of kind ``tracking_number`` whose code is the DID:
    the call carries the source (named after its parent, the ad channel, when it has one) and
    the source's ``utm_campaign``."""
    by_id = {s.id: s for s in sources}
    out: dict[str, NumberInfo] = {}
    for s in by_id.values():
        if s.kind != SourceKind.TRACKING_NUMBER.value:
            continue
        parent = by_id.get(s.parent_id) if s.parent_id else None
        out[s.code] = NumberInfo(
            id=None,
            did=s.code,
            kind=NumberKind.STATIC,
            site=None,
            site_id=None,
            pool_id=None,
            source_id=s.id,
            source=(parent or s).name,
            campaign=s.utm.get("utm_campaign") if s.utm else None,
            region_id=None,
            region=None,
        )
    return out


def _pool_info(pool: TrackingPool, numbers: Iterable[TrackingNumber]) -> PoolInfo:
    numbers = list(numbers)
    dids = tuple(sorted(n.did for n in numbers if n.pool_id == pool.id))
    static = sorted(
        (n.site_id != pool.site_id, n.did)
        for n in numbers
        if n.kind == NumberKind.STATIC and pool.source_id and n.source_id == pool.source_id
    )
    return PoolInfo(
        id=pool.id,
        code=pool.code,
        site_id=pool.site_id,
        channel=pool.channel,
        kind=pool.kind,
        region_id=pool.region_id,
        source_id=pool.source_id,
        dids=dids,
        static_did=static[0][1] if static else None,
    )


def describe(d: Directory) -> dict[str, Any]:
    """Counts for logs and health."""
    return {
        "sites": len(d.sites),
        "numbers": len(d.numbers),
        "pools": sum(len(s.pools) for s in d.sites.values()),
    }
