"""The call-tracking API.

Public, for the website script (``track.js``): ``POST /tracking/session`` gives a page session
a number; ``…/{id}/heartbeat`` keeps it; ``…/{id}/release`` lets it go (works with
``navigator.sendBeacon``). Browsers may call these only from the site's configured origins
(CORS, preflight included); bodies may be sent as ``text/plain`` so that no preflight is
needed at all. Rate limited per IP address, visitor and session.

For the head of sales and admins: sites, pools, numbers and pool statistics (exhaustion and
the pool size that would have covered the peak). Also ``GET /track.js`` and the demo landing
page ``GET /demo/landing``.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import path_id, uow
from contact_center.http.api import Api
from contact_center.keys import TRACKER
from contact_center.tracking_service import SessionRequest, TrackingService, tags_of
from crm_core.errors import InvalidInput
from crm_core.tracking import service as tracking
from crm_core.tracking.events import TrackingChanged
from crm_core.tracking.model import (
    SITE_CODE_PATTERN,
    TrackingNumber,
    TrackingPool,
    TrackingSite,
)
from crm_core.tracking.schemas import (
    NumberInput,
    NumberOut,
    PoolInput,
    PoolOut,
    PoolStatsOut,
    SiteInput,
    SiteOut,
)

api = Api()
TAGS = ["tracking"]
HEADS = ("head", "admin")
STATIC = Path(__file__).parent.parent / "web" / "static"
CORS_SITE = web.RequestKey("tracking_cors_site", str)
_PUBLIC_PREFIX = "/api/v1/tracking/session"


def tracker(request: web.Request) -> TrackingService:
    return request.app[TRACKER]


# ---------------------------------------------------------------- website sessions


class SessionInput(BaseModel):
    """The page's session request. ``utm``/``referrer``/``landing_page`` are the visitor's
    first touch as track.js keeps it (or this page's, for a new visitor)."""

    model_config = ConfigDict(extra="allow")  # flat utm_* / yclid / gclid keys are accepted

    site: str = Field(pattern=SITE_CODE_PATTERN)
    visitor_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{8,64}$")
    page: str | None = Field(None, max_length=4000)
    referrer: str | None = Field(None, max_length=4000)
    landing_page: str | None = Field(None, max_length=4000)
    utm: dict[str, str] | None = None
    region: str | None = Field(None, max_length=32, description="a region code (RU-SPE)")


class SessionOut(BaseModel):
    visitor_id: str
    session_id: str
    number: str | None = Field(description="E.164; null: keep the page's own number")
    display: str | None = Field(description='e.g. "+7 (495) 111-22-33"')
    low_confidence: bool
    leased: bool = Field(description="a pool number: send heartbeats and a release")
    heartbeat_s: int
    source: str
    region: str | None


def _site_of_query(request: web.Request) -> None:
    site = request.query.get("site")
    if site:
        request[CORS_SITE] = site


@api.route(
    "POST",
    "/tracking/session",
    summary="A number for a website page session (track.js)",
    body=SessionInput,
    response=SessionOut,
    public=True,
    tags=TAGS,
    errors={404: "No such site", 429: "Rate limited"},
)
async def start_session(request: web.Request, body: SessionInput) -> dict[str, Any]:
    request[CORS_SITE] = body.site
    answer = await tracker(request).start_session(
        SessionRequest(
            site=body.site,
            visitor_id=body.visitor_id,
            page=body.page,
            referrer=body.referrer,
            landing_page=body.landing_page,
            tags=tags_of(body.model_dump()),
            region=body.region,
            ip=request.remote or "unknown",
        )
    )
    return answer.as_dict()


def _session_key(request: web.Request) -> str:
    key = request.match_info["id"]
    if not (8 <= len(key) <= 64 and key.isalnum()):
        raise InvalidInput("not a session id", details={"field": "id"})
    return key


@api.route(
    "POST",
    "/tracking/session/{id}/heartbeat",
    summary="Keep a session's number (every heartbeat_s while the page is visible)",
    public=True,
    tags=TAGS,
    errors={429: "Rate limited"},
)
async def heartbeat(request: web.Request) -> dict[str, Any]:
    _site_of_query(request)
    alive = await tracker(request).heartbeat(_session_key(request), request.remote or "unknown")
    return {"active": alive}


@api.route(
    "POST",
    "/tracking/session/{id}/release",
    summary="Give a session's number back (page closed; navigator.sendBeacon works)",
    public=True,
    tags=TAGS,
    errors={429: "Rate limited"},
)
async def release(request: web.Request) -> dict[str, Any]:
    _site_of_query(request)
    released = await tracker(request).release(_session_key(request), request.remote or "unknown")
    return {"released": released}


async def _preflight(request: web.Request) -> web.Response:
    """CORS preflight: any active site's origin may ask; each answer is checked per site."""
    origin = request.headers.get("Origin", "")
    directory = await tracker(request).directory()
    if not any(origin in site.origins for site in directory.sites.values()):
        return web.Response(status=403, text="origin not allowed")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "POST",
            "Access-Control-Allow-Headers": "Content-Type",
            "Access-Control-Max-Age": "86400",
            "Vary": "Origin",
        },
    )


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """An answer to a site's page carries CORS headers when the page is of its origins."""
    if not request.path.startswith(_PUBLIC_PREFIX):
        return
    origin = request.headers.get("Origin")
    site = request.get(CORS_SITE)
    if not origin or site is None:
        return
    info = (await tracker(request).directory()).sites.get(site)
    response.headers["Vary"] = "Origin"
    if info is not None and origin in info.origins:
        response.headers["Access-Control-Allow-Origin"] = origin


# ---------------------------------------------------------------- track.js and the demo


class StaticScript:
    """track.js read once, with its gzip form and a strong ETag."""

    def __init__(self, path: Path) -> None:
        self.body = path.read_bytes()
        self.gzipped = gzip.compress(self.body, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    async def handle(self, request: web.Request) -> web.Response:
        headers = {
            "ETag": self.etag,
            "Cache-Control": "public, max-age=3600, stale-while-revalidate=86400",
            "Content-Type": "application/javascript; charset=utf-8",
            "Vary": "Accept-Encoding",
            "Access-Control-Allow-Origin": "*",
        }
        if self.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=self.gzipped, headers={**headers, "Content-Encoding": "gzip"})
        return web.Response(body=self.body, headers=headers)


async def demo_landing(request: web.Request) -> web.Response:
    page = (STATIC / "demo_landing.html").read_text(encoding="utf-8")
    return web.Response(text=page, content_type="text/html")


# ---------------------------------------------------------------- management

_WRITE_ERRORS = {404: "No such record", 409: "Code or DID taken", 422: "Invalid field"}
Out = Callable[[AsyncSession, Any], Awaitable[BaseModel]]
Save = Callable[[AsyncSession, Any, int | None], Awaitable[tuple[Any, list[TrackingChanged]]]]


async def _site_out(_session: AsyncSession, site: TrackingSite) -> BaseModel:
    return SiteOut.of(site)


async def _pool_out(session: AsyncSession, pool: TrackingPool) -> BaseModel:
    return PoolOut.of(pool, (await tracking.pool_dids(session, [pool.id]))[pool.id])


async def _number_out(_session: AsyncSession, number: TrackingNumber) -> BaseModel:
    return NumberOut.of(number)


def _resource(
    what: str,
    model: type[Any],
    body: type[BaseModel],
    response: type[BaseModel],
    save: Save,
    out: Out,
) -> None:
    """List, create, replace and delete of one kind of configuration (head and admin)."""
    path = f"/tracking/{what}s"

    async def listing(request: web.Request) -> dict[str, Any]:
        async with uow(request) as u:
            rows = await tracking.list_entities(u.session, model)
            items = [(await out(u.session, row)).model_dump(mode="json") for row in rows]
        return {"items": items}

    async def write(request: web.Request, data: BaseModel) -> BaseModel:
        entity_id = path_id(request, "id", what) if "id" in request.match_info else None
        async with uow(request) as u:
            row, events = await save(u.session, data, entity_id)
            result = await out(u.session, row)
            u.emit(*events)
            await u.commit()
        tracker(request).invalidate()  # here at once; other instances by the event
        return result

    async def create(request: web.Request, data: BaseModel) -> BaseModel:
        return await write(request, data)

    async def replace(request: web.Request, data: BaseModel) -> BaseModel:
        return await write(request, data)

    async def delete(request: web.Request) -> None:
        async with uow(request) as u:
            u.emit(*await tracking.delete_entity(u.session, model, path_id(request, "id", what)))
            await u.commit()
        tracker(request).invalidate()

    common: dict[str, Any] = {"roles": HEADS, "tags": TAGS}
    for handler in (listing, create, replace, delete):  # the OpenAPI operation ids
        handler.__name__ = f"{handler.__name__}_{what}"
    api.route("GET", path, summary=f"Tracking {what}s", **common)(listing)
    for method, route, summary, status, handler in (
        ("POST", path, f"Create a tracking {what}", 201, create),
        ("PUT", path + "/{id}", f"Replace a tracking {what}", 200, replace),
    ):
        api.route(
            method,
            route,
            summary=summary,
            body=body,
            response=response,
            status=status,
            errors=_WRITE_ERRORS,
            **common,
        )(handler)
    api.route(
        "DELETE",
        path + "/{id}",
        summary=f"Delete a tracking {what} (a site or pool with its numbers)",
        status=204,
        errors={404: f"No such {what}"},
        **common,
    )(delete)


_resource("site", TrackingSite, SiteInput, SiteOut, tracking.save_site, _site_out)
_resource("pool", TrackingPool, PoolInput, PoolOut, tracking.save_pool, _pool_out)
_resource("number", TrackingNumber, NumberInput, NumberOut, tracking.save_number, _number_out)


@api.route(
    "GET",
    "/tracking/pools/{id}/stats",
    summary="A pool's leases, peaks and exhaustion count",
    response=PoolStatsOut,
    roles=HEADS,
    tags=TAGS,
    errors={404: "No such pool"},
)
async def pool_stats(request: web.Request) -> PoolStatsOut:
    pool_id = path_id(request, "id", "pool")
    async with uow(request) as u:
        pool = await tracking.get_entity(u.session, TrackingPool, pool_id)
        size = len((await tracking.pool_dids(u.session, [pool_id]))[pool_id])
    stats = await tracker(request).pool_stats(pool_id)
    return PoolStatsOut(
        pool_id=pool_id,
        code=pool.code,
        size=size,
        leased=stats.leased,
        peak_leased=stats.peak_leased,
        peak_sessions=stats.peak_sessions,
        exhausted=stats.exhausted,
        size_to_cover_peak=max(size, stats.peak_sessions),
    )


def routes(app: web.Application) -> None:
    """track.js, the demo landing page and the public session endpoints' CORS."""
    script = StaticScript(STATIC / "track.js")
    app.router.add_get("/track.js", script.handle)
    app.router.add_get("/demo/landing", demo_landing)
    app.router.add_route("OPTIONS", _PUBLIC_PREFIX, _preflight)
    app.router.add_route("OPTIONS", _PUBLIC_PREFIX + "/{id}/{action}", _preflight)
    app.on_response_prepare.append(_cors_headers)
