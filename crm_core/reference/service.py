"""Use cases of the reference data: regions and sources (where clients come from).

Deleting a region or source deactivates it: clients, leads, deals and calls keep pointing at
it (reports by source must not lose history), but it is no longer offered for new records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.errors import Conflict, InvalidInput, NotFound
from crm_core.reference.model import Region, Source, SourceKind


class RegionNotFound(NotFound):
    error_id = "region-not-found"


class SourceNotFound(NotFound):
    error_id = "source-not-found"


class ReferenceTaken(Conflict):
    """The code (of a region) or the kind and code (of a source) is already used."""

    error_id = "reference-code-taken"


class InvalidReferenceData(InvalidInput):
    error_id = "invalid-reference-data"


SOURCE_KIND_LABELS: dict[str, tuple[str, str]] = {
    SourceKind.AD_CHANNEL: ("Рекламный канал", "Ad channel"),
    SourceKind.CAMPAIGN: ("Рекламная кампания", "Campaign"),
    SourceKind.EXHIBITION: ("Выставка", "Exhibition"),
    SourceKind.TRACKING_NUMBER: ("Номер коллтрекинга", "Call tracking number"),
    SourceKind.WEBSITE: ("Сайт", "Website"),
    SourceKind.REFERRAL: ("Рекомендация", "Referral"),
    SourceKind.COLD_CALL: ("Холодный звонок", "Cold call"),
    SourceKind.OTHER: ("Другое", "Other"),
}


# ---------------------------------------------------------------- regions


async def get_region(session: AsyncSession, region_id: int) -> Region:
    region = await session.get(Region, region_id)
    if region is None:
        raise RegionNotFound(f"no region {region_id}", details={"region_id": region_id})
    return region


async def list_regions(session: AsyncSession, *, include_inactive: bool = False) -> list[Region]:
    stmt = select(Region)
    if not include_inactive:
        stmt = stmt.where(Region.is_active.is_(True))
    return list(await session.scalars(stmt.order_by(Region.name, Region.id)))


async def create_region(
    session: AsyncSession,
    *,
    code: str,
    name: str,
    parent_id: int | None = None,
    timezone: str | None = None,
) -> Region:
    """A new region; its ``code`` is unique (409 otherwise)."""
    code = code.strip()
    await _region_code_free(session, code)
    if parent_id is not None:
        await _parent(session, Region, parent_id)
    region = Region(code=code, name=name.strip(), parent_id=parent_id, timezone=timezone)
    session.add(region)
    await session.flush()
    return region


async def update_region(
    session: AsyncSession, region_id: int, changes: Mapping[str, Any]
) -> Region:
    """Change the given fields (code, name, parent_id, timezone, is_active)."""
    region = await get_region(session, region_id)
    _required(changes, "code", "name", "is_active")
    if "code" in changes and changes["code"] != region.code:
        await _region_code_free(session, changes["code"].strip())
        region.code = changes["code"].strip()
    if "parent_id" in changes:
        await _check_parent(session, Region, region_id, changes["parent_id"])
        region.parent_id = changes["parent_id"]
    if "name" in changes:
        region.name = changes["name"].strip()
    for key in ("timezone", "is_active"):
        if key in changes:
            setattr(region, key, changes[key])
    await session.flush()
    return region


async def deactivate_region(session: AsyncSession, region_id: int) -> Region:
    region = await get_region(session, region_id)
    region.is_active = False
    await session.flush()
    return region


async def _region_code_free(session: AsyncSession, code: str) -> None:
    if await session.scalar(select(Region.id).where(Region.code == code)) is not None:
        raise ReferenceTaken(
            f"region code {code!r} is taken", details={"field": "code", "value": code}
        )


# ---------------------------------------------------------------- sources


async def get_source(session: AsyncSession, source_id: int) -> Source:
    source = await session.get(Source, source_id)
    if source is None:
        raise SourceNotFound(f"no source {source_id}", details={"source_id": source_id})
    return source


async def list_sources(
    session: AsyncSession, *, kind: str | None = None, include_inactive: bool = False
) -> list[Source]:
    stmt = select(Source)
    if kind is not None:
        stmt = stmt.where(Source.kind == kind)
    if not include_inactive:
        stmt = stmt.where(Source.is_active.is_(True))
    return list(await session.scalars(stmt.order_by(Source.kind, Source.name, Source.id)))


# Built once: the inbox asks it in every batch with a new sender, and building the statement
# (and its cache key) cost more than running it.
_FIND_SOURCE = select(Source).where(
    Source.kind == bindparam("kind"), Source.code == bindparam("code")
)


async def find_source(session: AsyncSession, kind: str, code: str) -> Source | None:
    """The source of ``kind`` with ``code`` (e.g. a tracking number's E.164), or None."""
    return await session.scalar(_FIND_SOURCE, {"kind": kind, "code": code})


async def create_source(
    session: AsyncSession,
    *,
    kind: str,
    code: str,
    name: str,
    parent_id: int | None = None,
    utm: Mapping[str, str] | None = None,
) -> Source:
    """A new source; ``(kind, code)`` is unique (409 otherwise)."""
    _check_kind(kind)
    code = code.strip()
    await _source_code_free(session, kind, code)
    if parent_id is not None:
        await _parent(session, Source, parent_id)
    source = Source(
        kind=kind, code=code, name=name.strip(), parent_id=parent_id, utm=dict(utm) if utm else None
    )
    session.add(source)
    await session.flush()
    return source


async def update_source(
    session: AsyncSession, source_id: int, changes: Mapping[str, Any]
) -> Source:
    """Change the given fields (kind, code, name, parent_id, utm, is_active)."""
    source = await get_source(session, source_id)
    _required(changes, "kind", "code", "name", "is_active")
    kind = changes.get("kind", source.kind)
    code = changes["code"].strip() if "code" in changes else source.code
    _check_kind(kind)
    if (kind, code) != (source.kind, source.code):
        await _source_code_free(session, kind, code)
        source.kind, source.code = kind, code
    if "parent_id" in changes:
        await _check_parent(session, Source, source_id, changes["parent_id"])
        source.parent_id = changes["parent_id"]
    if "utm" in changes:
        source.utm = dict(changes["utm"]) if changes["utm"] else None
    if "name" in changes:
        source.name = changes["name"].strip()
    if "is_active" in changes:
        source.is_active = changes["is_active"]
    await session.flush()
    return source


async def deactivate_source(session: AsyncSession, source_id: int) -> Source:
    source = await get_source(session, source_id)
    source.is_active = False
    await session.flush()
    return source


def _required(changes: Mapping[str, Any], *keys: str) -> None:
    for key in keys:
        if key in changes and changes[key] is None:
            raise InvalidReferenceData(
                f"{key}: may not be null", details={"field": key, "value": None}
            )


def _check_kind(kind: str) -> None:
    if kind not in {k.value for k in SourceKind}:
        raise InvalidReferenceData(
            f"kind: one of {', '.join(k.value for k in SourceKind)}",
            details={"field": "kind", "value": kind},
        )


async def _source_code_free(session: AsyncSession, kind: str, code: str) -> None:
    if await find_source(session, kind, code) is not None:
        raise ReferenceTaken(
            f"a {kind} source with code {code!r} exists", details={"field": "code", "value": code}
        )


# ---------------------------------------------------------------- hierarchy


async def _parent(
    session: AsyncSession, model: type[Region] | type[Source], parent_id: int
) -> None:
    if await session.get(model, parent_id) is None:
        raise InvalidReferenceData(
            f"parent_id: no such {model.__tablename__[:-1]} {parent_id}",
            details={"field": "parent_id", "value": parent_id},
        )


async def _check_parent(
    session: AsyncSession, model: type[Region] | type[Source], record_id: int, parent_id: int | None
) -> None:
    """The parent exists and is not the record itself nor one of its descendants."""
    if parent_id is None:
        return
    await _parent(session, model, parent_id)
    current: int | None = parent_id
    seen: set[int] = set()
    while current is not None and current not in seen:
        if current == record_id:
            raise InvalidReferenceData(
                "parent_id: a record cannot be its own ancestor",
                details={"field": "parent_id", "value": parent_id},
            )
        seen.add(current)
        current = await session.scalar(select(model.parent_id).where(model.id == current))
