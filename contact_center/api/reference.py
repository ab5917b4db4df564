"""Reference data API: regions and sources. Everyone signed in reads; head and admin write.
A write tells every instance to reload what it keeps of them in memory (the tracking
directory, the dialplan's rule book) at once, not after its cache period.
Deleting deactivates (records keep pointing at it; reports by source keep their history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from contact_center.api.common import path_id, uow
from contact_center.http.api import Api
from crm_core.reference import service as reference
from crm_core.reference.model import Region, Source, SourceKind
from crm_core.tracking.events import TrackingChanged

api = Api()
TAGS = ["reference"]
WRITERS = ["admin", "head"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegionInput(_Strict):
    code: str = Field(min_length=1, max_length=32, description='"RU-MOW", "RU-SPE", "kazan"')
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = None
    timezone: str | None = Field(None, max_length=64, description='"Europe/Moscow"')


class RegionPatch(_Strict):
    code: str | None = Field(None, min_length=1, max_length=32)
    name: str | None = Field(None, min_length=1, max_length=200)
    parent_id: int | None = None
    timezone: str | None = Field(None, max_length=64)
    is_active: bool | None = None


class RegionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    code: str
    name: str
    parent_id: int | None
    timezone: str | None
    is_active: bool


class SourceInput(_Strict):
    kind: SourceKind
    code: str = Field(min_length=1, max_length=100, description="unique within the kind")
    name: str = Field(min_length=1, max_length=200)
    parent_id: int | None = Field(None, description="e.g. a campaign's ad channel")
    utm: dict[str, str] | None = Field(None, description="utm_source, utm_medium, utm_campaign")


class SourcePatch(_Strict):
    kind: SourceKind | None = None
    code: str | None = Field(None, min_length=1, max_length=100)
    name: str | None = Field(None, min_length=1, max_length=200)
    parent_id: int | None = None
    utm: dict[str, str] | None = None
    is_active: bool | None = None


class SourceOut(BaseModel):
    id: int
    kind: str
    kind_name_ru: str
    kind_name_en: str
    code: str
    name: str
    parent_id: int | None
    utm: dict[str, str] | None
    is_active: bool
    created_at: datetime

    @classmethod
    def of(cls, source: Source) -> SourceOut:
        ru, en = reference.SOURCE_KIND_LABELS.get(source.kind, (source.kind, source.kind))
        return cls(
            id=source.id,
            kind=source.kind,
            kind_name_ru=ru,
            kind_name_en=en,
            code=source.code,
            name=source.name,
            parent_id=source.parent_id,
            utm=source.utm,
            is_active=source.is_active,
            created_at=source.created_at,
        )


class ListQuery(BaseModel):
    include_inactive: bool = False


class SourceQuery(ListQuery):
    kind: SourceKind | None = None


def _region(region: Region) -> RegionOut:
    return RegionOut.model_validate(region)


def _changes(body: BaseModel) -> dict[str, Any]:
    return {k: getattr(body, k) for k in body.model_fields_set}


# ---------------------------------------------------------------- regions


@api.route("GET", "/regions", summary="Regions", query=ListQuery, tags=TAGS)
async def list_regions(request: web.Request, query: ListQuery) -> list[Any]:
    async with uow(request) as u:
        rows = await reference.list_regions(u.session, include_inactive=query.include_inactive)
    return [_region(r).model_dump(mode="json") for r in rows]


@api.route(
    "GET",
    "/regions/{region_id}",
    summary="A region",
    response=RegionOut,
    tags=TAGS,
    errors={404: "No such region"},
)
async def get_region(request: web.Request) -> RegionOut:
    async with uow(request) as u:
        return _region(await reference.get_region(u.session, path_id(request, "region_id")))


@api.route(
    "POST",
    "/regions",
    summary="Create a region",
    body=RegionInput,
    response=RegionOut,
    status=201,
    roles=WRITERS,
    tags=TAGS,
    errors={409: "The code is taken"},
)
async def create_region(request: web.Request, body: RegionInput) -> RegionOut:
    async with uow(request) as u:
        region = await reference.create_region(
            u.session,
            code=body.code,
            name=body.name,
            parent_id=body.parent_id,
            timezone=body.timezone,
        )
        u.emit(TrackingChanged(entity="region", entity_id=region.id))
        await u.commit()
        return _region(region)


@api.route(
    "PATCH",
    "/regions/{region_id}",
    summary="Change a region",
    body=RegionPatch,
    response=RegionOut,
    roles=WRITERS,
    tags=TAGS,
    errors={404: "No such region", 409: "The code is taken"},
)
async def update_region(request: web.Request, body: RegionPatch) -> RegionOut:
    async with uow(request) as u:
        region = await reference.update_region(
            u.session, path_id(request, "region_id"), _changes(body)
        )
        u.emit(TrackingChanged(entity="region", entity_id=region.id))
        await u.commit()
        return _region(region)


@api.route(
    "DELETE",
    "/regions/{region_id}",
    summary="Deactivate a region",
    status=204,
    roles=WRITERS,
    tags=TAGS,
    errors={404: "No such region"},
)
async def delete_region(request: web.Request) -> None:
    async with uow(request) as u:
        region_id = path_id(request, "region_id")
        await reference.deactivate_region(u.session, region_id)
        u.emit(TrackingChanged(entity="region", entity_id=region_id))
        await u.commit()


# ---------------------------------------------------------------- sources


@api.route(
    "GET", "/sources", summary="Sources (where clients come from)", query=SourceQuery, tags=TAGS
)
async def list_sources(request: web.Request, query: SourceQuery) -> list[Any]:
    async with uow(request) as u:
        rows = await reference.list_sources(
            u.session,
            kind=query.kind.value if query.kind else None,
            include_inactive=query.include_inactive,
        )
    return [SourceOut.of(s).model_dump(mode="json") for s in rows]


@api.route(
    "GET",
    "/sources/{source_id}",
    summary="A source",
    response=SourceOut,
    tags=TAGS,
    errors={404: "No such source"},
)
async def get_source(request: web.Request) -> SourceOut:
    async with uow(request) as u:
        return SourceOut.of(await reference.get_source(u.session, path_id(request, "source_id")))


@api.route(
    "POST",
    "/sources",
    summary="Create a source",
    body=SourceInput,
    response=SourceOut,
    status=201,
    roles=WRITERS,
    tags=TAGS,
    errors={409: "The kind and code are taken"},
)
async def create_source(request: web.Request, body: SourceInput) -> SourceOut:
    async with uow(request) as u:
        source = await reference.create_source(
            u.session,
            kind=body.kind.value,
            code=body.code,
            name=body.name,
            parent_id=body.parent_id,
            utm=body.utm,
        )
        u.emit(TrackingChanged(entity="source", entity_id=source.id))
        await u.commit()
        return SourceOut.of(source)


@api.route(
    "PATCH",
    "/sources/{source_id}",
    summary="Change a source",
    body=SourcePatch,
    response=SourceOut,
    roles=WRITERS,
    tags=TAGS,
    errors={404: "No such source", 409: "The kind and code are taken"},
)
async def update_source(request: web.Request, body: SourcePatch) -> SourceOut:
    changes = _changes(body)
    if changes.get("kind") is not None:
        changes["kind"] = changes["kind"].value
    async with uow(request) as u:
        source = await reference.update_source(u.session, path_id(request, "source_id"), changes)
        u.emit(TrackingChanged(entity="source", entity_id=source.id))
        await u.commit()
        return SourceOut.of(source)


@api.route(
    "DELETE",
    "/sources/{source_id}",
    summary="Deactivate a source",
    status=204,
    roles=WRITERS,
    tags=TAGS,
    errors={404: "No such source"},
)
async def delete_source(request: web.Request) -> None:
    async with uow(request) as u:
        source_id = path_id(request, "source_id")
        await reference.deactivate_source(u.session, source_id)
        u.emit(TrackingChanged(entity="source", entity_id=source_id))
        await u.commit()
