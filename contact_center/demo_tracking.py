"""Call tracking of ``contact-center demo``: the site ``demo`` (its landing page is
``/demo/landing``) with number pools for (source, region) pairs, static numbers and default
numbers per region. The simulated PBX dials these numbers, so calls are attributed to the
visitor sessions that hold them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.reference.model import Region, Source, SourceKind
from crm_core.tracking.model import NumberKind, TrackingNumber, TrackingPool, TrackingSite
from crm_core.tracking.service import hash_form_key

SITE = "demo"
FORM_KEY = "demo-form-key-2026"  # also in the landing page's form: a site's key is public there
ORIGINS = ["http://127.0.0.1:8080", "http://localhost:8080"]

REGIONS = {"RU-MOW": "Москва", "RU-SPE": "Санкт-Петербург"}
# code -> (kind, name)
SOURCES = {
    "yandex_direct": (SourceKind.AD_CHANNEL, "Яндекс Директ"),
    "google_ads": (SourceKind.AD_CHANNEL, "Google Ads"),
    "organic": (SourceKind.WEBSITE, "Поисковые системы"),
    "expo_2026": (SourceKind.EXHIBITION, "Выставка «ПродЭкспо-2026»"),
}
# pool code -> (name, channel, kind, region code, source code, DIDs)
POOLS = {
    "yandex-msk": (
        "Яндекс Директ × Москва",
        "yandex_direct",
        None,
        "RU-MOW",
        "yandex_direct",
        ("+74951112201", "+74951112202", "+74951112203"),
    ),
    "yandex-spb": (
        "Яндекс Директ × Санкт-Петербург",
        "yandex_direct",
        None,
        "RU-SPE",
        "yandex_direct",
        ("+78125550101", "+78125550102"),
    ),
    "google-spb": (
        "Google Ads × Санкт-Петербург",
        "google_ads",
        None,
        "RU-SPE",
        "google_ads",
        ("+78125550201", "+78125550202", "+78125550203"),
    ),
    "organic-any": (
        "Поиск (органика) × любой регион",
        None,
        "organic",
        None,
        "organic",
        ("+74957770001", "+74957770002"),
    ),
}
# DID -> (source code, region code): numbers on billboards, at the exhibition; also the
# pools' fallbacks when a pool runs out (tracking.exhaustion: static).
STATIC = {
    "+74951112233": ("yandex_direct", "RU-MOW"),
    "+78125550000": ("google_ads", "RU-SPE"),
    "+74950000001": ("expo_2026", None),
}
# region code (None: any other) -> the site's default number
DEFAULTS = {"RU-MOW": "+74952220000", "RU-SPE": "+78122220000", None: "+74993330000"}


async def seed(session: AsyncSession) -> bool:
    """Create the demo site with its pools and numbers once; False if it exists already.
    Regions and sources are reused when present (the demo's CRM seed makes some)."""
    if await session.scalar(select(TrackingSite.id).where(TrackingSite.code == SITE)):
        return False
    regions = {code: await _region(session, code, name) for code, name in REGIONS.items()}
    sources = {code: await _source(session, code, *spec) for code, spec in SOURCES.items()}
    site = TrackingSite(
        code=SITE,
        name="Демо-сайт «Продукты оптом»",
        origins=ORIGINS,
        form_key_hash=hash_form_key(FORM_KEY),
        default_region_id=regions["RU-MOW"],
    )
    session.add(site)
    await session.flush()
    for code, (name, channel, kind, region, source, dids) in POOLS.items():
        pool = TrackingPool(
            site_id=site.id,
            code=code,
            name=name,
            channel=channel,
            kind=kind,
            region_id=regions[region] if region else None,
            source_id=sources[source],
        )
        session.add(pool)
        await session.flush()
        session.add_all(
            TrackingNumber(did=did, kind=NumberKind.POOL, site_id=site.id, pool_id=pool.id)
            for did in dids
        )
    session.add_all(
        TrackingNumber(
            did=did,
            kind=NumberKind.STATIC,
            source_id=sources[source],
            region_id=regions[region] if region else None,
        )
        for did, (source, region) in STATIC.items()
    )
    session.add_all(
        TrackingNumber(
            did=did,
            kind=NumberKind.DEFAULT,
            site_id=site.id,
            region_id=regions[region] if region else None,
        )
        for region, did in DEFAULTS.items()
    )
    await session.flush()
    return True


async def _region(session: AsyncSession, code: str, name: str) -> int:
    found = await session.scalar(select(Region.id).where(Region.code == code))
    if found is not None:
        return found
    region = Region(code=code, name=name, timezone="Europe/Moscow")
    session.add(region)
    await session.flush()
    return region.id


async def _source(session: AsyncSession, code: str, kind: SourceKind, name: str) -> int:
    found = await session.scalar(select(Source.id).where(Source.kind == kind, Source.code == code))
    if found is not None:
        return found
    source = Source(kind=kind.value, code=code, name=name)
    session.add(source)
    await session.flush()
    return source.id


def pool_dids() -> list[str]:
    """The pool numbers (E.164), for the simulated carrier to dial."""
    return [did for *_, dids in POOLS.values() for did in dids]
