"""The call-tracking part of ``config.yaml`` brought into the database at start: sites with
their static numbers, default numbers and pools (``tracking.sites``), and the optional local
IP-to-region table (``tracking.ip_regions_file``).

The sync creates what is missing and updates what changed; it never deletes: pools and
numbers added through the API stay. Sources and regions are named by code (a source also by
name); one that does not exist stops the start with a line naming the entry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, cast, get_args

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.config import (
    ConfigError,
    Settings,
    TrackingPoolSettings,
    TrackingSiteSettings,
)
from crm_core.reference.model import Region, Source, SourceKind
from crm_core.tracking.model import NumberKind, TrackingNumber, TrackingPool, TrackingSite
from crm_core.tracking.schemas import KINDS, normalize_origin
from routing import ip_regions
from routing.ip_regions import IpRegions

ANY_REGION = "*"  # the key of a site's default number for every other region
# Source codes that name a class of visitors' sources rather than a channel (organic ...).
_KINDS = frozenset(get_args(KINDS))
# A code names the source of this kind first when several share it.
_SOURCE_KIND_ORDER = (
    SourceKind.AD_CHANNEL,
    SourceKind.WEBSITE,
    SourceKind.REFERRAL,
    SourceKind.CAMPAIGN,
    SourceKind.EXHIBITION,
    SourceKind.OTHER,
    SourceKind.COLD_CALL,
    SourceKind.TRACKING_NUMBER,
)


class _Names:
    """Regions and sources by the names config.yaml may use; collects what is unknown."""

    def __init__(self, regions: Sequence[Region], sources: Sequence[Source]) -> None:
        self.regions = {r.code: r for r in regions}
        rank = {kind.value: i for i, kind in enumerate(_SOURCE_KIND_ORDER)}
        ordered = sorted(sources, key=lambda s: (rank.get(s.kind, len(rank)), s.id))
        self.sources: dict[str, Source] = {}
        for s in ordered:  # a code first, then an exact name; the preferred kind wins
            self.sources.setdefault(s.code, s)
        for s in ordered:
            self.sources.setdefault(s.name, s)
        self.problems: list[str] = []

    def region(self, where: str, code: str | None) -> Region | None:
        if code is None or code == ANY_REGION:
            return None
        region = self.regions.get(code)
        if region is None:
            self.problems.append(
                f"config: {where} = {code!r}: no such region (create it under "
                "/api/v1/regions first)"
            )
        return region

    def source(self, where: str, name: str) -> Source | None:
        source = self.sources.get(name)
        if source is None:
            self.problems.append(
                f"config: {where} = {name!r}: no source with this code or name (create it "
                "under /api/v1/sources first)"
            )
        return source


def _set(row: Any, **values: Any) -> bool:
    """Assign the values that differ; True when something changed."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def pool_code(source: Source, region: Region | None) -> str:
    """``<source code>-<region code or any>`` as a pool code (``yandex_direct-ru-spe``)."""
    raw = f"{source.code}-{region.code if region else 'any'}".lower()
    code = re.sub(r"[^a-z0-9_-]+", "-", raw).strip("-")[:64]
    return code or f"source{source.id}-{region.id if region else 'any'}"


async def sync_config_sites(session: AsyncSession, settings: Settings) -> bool:
    """Create or update the sites of ``tracking.sites`` with their numbers and pools (see
    the module's docstring); True when anything changed. Flushes; the caller commits.
    Raises :class:`ConfigError` naming every entry whose source or region does not exist."""
    entries = settings.tracking.sites
    if not entries:
        return False
    names = _Names(
        list(await session.scalars(select(Region))), list(await session.scalars(select(Source)))
    )
    codes = [e.code for e in entries]
    sites = {
        s.code: s
        for s in await session.scalars(select(TrackingSite).where(TrackingSite.code.in_(codes)))
    }
    dids = [
        did
        for e in entries
        for did in (
            *(n.did for n in e.numbers),
            *e.defaults.values(),
            *(d for p in e.pools for d in p.numbers),
        )
    ]
    numbers = {
        n.did: n
        for n in await session.scalars(select(TrackingNumber).where(TrackingNumber.did.in_(dids)))
    }
    changed = False
    for i, entry in enumerate(entries):
        site = sites.get(entry.code)
        if site is None:
            site = sites[entry.code] = TrackingSite(code=entry.code, is_active=True)
            session.add(site)
            changed = True
        changed |= _set(
            site, name=entry.name, origins=sorted({normalize_origin(o) for o in entry.origins})
        )
        await session.flush()
        changed |= await _sync_site(session, f"tracking.sites[{i}]", site, entry, names, numbers)
    if names.problems:
        raise ConfigError(names.problems)
    await session.flush()
    return changed


async def _sync_site(
    session: AsyncSession,
    where: str,
    site: TrackingSite,
    entry: TrackingSiteSettings,
    names: _Names,
    numbers: dict[str, TrackingNumber],
) -> bool:
    changed = False

    def number(did: str, **values: Any) -> None:
        nonlocal changed
        row = numbers.get(did)
        if row is None:
            row = numbers[did] = TrackingNumber(did=did, is_active=True)
            session.add(row)
            changed = True
        changed |= _set(row, is_active=True, **values)

    for j, n in enumerate(entry.numbers):
        source = names.source(f"{where}.numbers[{j}].source", n.source)
        region = names.region(f"{where}.numbers[{j}].region", n.region)
        if source is None or (n.region is not None and region is None):
            continue
        number(
            n.did,
            kind=NumberKind.STATIC.value,
            site_id=site.id,
            pool_id=None,
            source_id=source.id,
            region_id=region.id if region else None,
            campaign=n.campaign,
        )
    for region_code, did in entry.defaults.items():
        region = names.region(f"{where}.defaults.{region_code}", region_code)
        if region is None and region_code != ANY_REGION:
            continue
        number(
            did,
            kind=NumberKind.DEFAULT.value,
            site_id=site.id,
            pool_id=None,
            source_id=None,
            region_id=region.id if region else None,
        )
    pool_codes: dict[str, int] = {}
    for j, p in enumerate(entry.pools):
        pool = await _sync_pool(session, f"{where}.pools[{j}]", site, p, names, pool_codes, j)
        if pool is None:
            continue
        changed |= pool[1]
        for did in p.numbers:
            number(
                did,
                kind=NumberKind.POOL.value,
                site_id=site.id,
                pool_id=pool[0].id,
                source_id=None,
                region_id=None,
            )
    return changed


async def _sync_pool(
    session: AsyncSession,
    where: str,
    site: TrackingSite,
    p: TrackingPoolSettings,
    names: _Names,
    codes: dict[str, int],
    index: int,
) -> tuple[TrackingPool, bool] | None:
    source = names.source(f"{where}.source", p.source)
    region = names.region(f"{where}.region", p.region)
    if source is None or (p.region not in (None, ANY_REGION) and region is None):
        return None
    code = p.code or pool_code(source, region)
    if code in codes:
        names.problems.append(
            f"config: {where}: its code {code!r} is also the code of pools[{codes[code]}]; "
            "give one of them its own code"
        )
        return None
    codes[code] = index
    pool = await session.scalar(
        select(TrackingPool).where(TrackingPool.site_id == site.id, TrackingPool.code == code)
    )
    created = pool is None
    if pool is None:
        pool = TrackingPool(site_id=site.id, code=code)
        session.add(pool)
    channel, kind = p.channel, p.kind
    if channel is None and kind is None:
        if source.code in _KINDS:
            kind = cast(KINDS, source.code)
        else:
            channel = source.code
    changed = _set(
        pool,
        name=p.name or (f"{source.name} × {region.name}" if region else source.name),
        channel=channel,
        kind=kind,
        region_id=region.id if region else None,
        source_id=source.id,
        is_active=True,
    )
    await session.flush()
    return pool, created or changed


async def load_ip_regions(session: AsyncSession, settings: Settings) -> IpRegions | None:
    """The table of ``tracking.ip_regions_file`` (None when unset). Raises
    :class:`ConfigError` naming the file and line of a bad line or of a region code that
    no region has."""
    path = settings.tracking.ip_regions_file
    if not path:
        return None
    try:
        table = ip_regions.load(path)
    except ip_regions.IpRegionsError as exc:
        raise ConfigError([f"config: tracking.ip_regions_file: {exc}"]) from exc
    known = set(await session.scalars(select(Region.code)))
    unknown = sorted(table.codes - known, key=lambda c: table.lines[c])
    if unknown:
        raise ConfigError(
            [
                f"config: tracking.ip_regions_file: {table.source}:{table.lines[code]}: "
                f"no region with the code {code!r}"
                for code in unknown
            ]
        )
    return table
