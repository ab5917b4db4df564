"""``POST /api/v1/leads/web``: the website's forms post requests here.

Public, but every request names its site (``site``) and carries the site's form key (header
``X-CC-Site-Key`` or field ``site_key``). Browsers may post from the site's own origins only
(CORS). A filled honeypot field is accepted (202) and stored as spam; requests are limited per
address and per visitor (in Redis when configured, so every instance counts together).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center import distribution_service
from contact_center.api.common import clock, rules, settings, uow
from contact_center.http.api import Api
from contact_center.keys import LIMITER, SETTINGS, TRACKER
from crm_core.distribution import requests as web_requests
from crm_core.distribution.errors import InvalidWebRequest
from crm_core.distribution.schemas import WebForm
from crm_core.errors import NotAuthenticated, RateLimited
from crm_core.tracking import service as tracking
from crm_core.tracking.model import TrackingSite

api = Api()
TAGS = ["leads"]
PATH = "/leads/web"
MAX_BODY = 64 * 1024
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_CORS_HEADERS = "Content-Type, X-CC-Site-Key"
ALLOWED_ORIGIN = web.RequestKey("web_lead_allowed_origin", str)


async def _fields(request: web.Request) -> dict[str, Any]:
    """The posted fields, from JSON or a form (files are ignored)."""
    if (request.content_length or 0) > MAX_BODY:
        raise InvalidWebRequest(f"body: larger than {MAX_BODY} bytes", details={"field": "body"})
    if request.content_type == "application/json":
        try:
            raw = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidWebRequest(
                f"body: not valid JSON ({exc})", details={"field": "body"}
            ) from exc
    elif request.content_type in _FORM_TYPES:
        raw = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    else:
        raise InvalidWebRequest(
            f"body: expected JSON or a form, got {request.content_type}",
            details={"field": "body"},
        )
    if not isinstance(raw, dict):
        raise InvalidWebRequest("body: expected an object of fields", details={"field": "body"})
    return raw


def _allow_origin(request: web.Request, origins: list[str]) -> None:
    """Let the browser read the answer when the page's origin is one of the site's."""
    origin = request.headers.get("Origin")
    if origin and origin in origins:
        request[ALLOWED_ORIGIN] = origin


async def _site(request: web.Request, session: Any, raw: dict[str, Any]) -> TrackingSite:
    code = str(raw.get("site") or request.query.get("site") or "").strip()
    if not code:
        raise InvalidWebRequest("site: the site's code is required", details={"field": "site"})
    site = await tracking.get_site(session, code)
    if site is None:
        raise NotAuthenticated(f"site: no active site {code!r}", details={"field": "site"})
    _allow_origin(request, list(site.origins or []))
    key = request.headers.get("X-CC-Site-Key") or str(raw.get("site_key") or "")
    if not tracking.verify_form_key(site, key.strip()):
        raise NotAuthenticated(
            f"site_key: missing or wrong form key for site {code!r}",
            details={"field": "site_key"},
        )
    return site


async def _check_rate(request: web.Request, visitor_id: str | None) -> None:
    cfg = request.app[SETTINGS].distribution
    limiter = request.app[LIMITER]
    keys = [(f"web-ip:{request.remote}", cfg.requests_per_ip)]
    if visitor_id:
        keys.append((f"web-visitor:{visitor_id}", cfg.requests_per_visitor))
    for key, limit in keys:
        if not await limiter.hit(key, limit=limit, window_s=cfg.rate_window_s):
            raise RateLimited(
                "too many website requests; try again later",
                details={"retry_after_s": cfg.rate_window_s},
            )


async def _ip_region(request: web.Request, raw: dict[str, Any]) -> int | None:
    """The region of the sender's address (``tracking.ip_regions_file``) when the form names
    none. ``request.remote`` is the client's address (behind ``server.trusted_proxies``, the
    one they forwarded)."""
    if str(raw.get("region") or "").strip():
        return None
    tracker = request.app[TRACKER]
    code = tracker.region_of_ip(request.remote)
    return (await tracker.directory()).region_ids.get(code) if code else None


@api.route(
    "POST",
    PATH,
    summary="A website form's request (JSON or form-encoded; site, site_key, name, phone, "
    "email, comment, region, visitor_id, page); 202 when the honeypot was filled",
    public=True,
    status=201,
    tags=TAGS,
    errors={
        401: "Unknown site or wrong form key",
        422: "A field cannot be used (details.field names it)",
        429: "Too many requests from this address or visitor",
    },
)
async def web_lead(request: web.Request) -> web.StreamResponse:
    raw = await _fields(request)
    cfg = settings(request).distribution
    now = clock(request).now()
    async with uow(request) as u:
        site = await _site(request, u.session, raw)
        fields = {k: v for k, v in raw.items() if k != "site_key"}
        visitor_id = str(raw.get("visitor_id") or "").strip()[:64] or None
        await _check_rate(request, visitor_id)
        intake = web_requests.Intake(
            site=site.code,
            site_region_id=site.default_region_id,
            ip_region_id=await _ip_region(request, raw),
            ip=request.remote,
            fields=fields,
        )
        if str(raw.get(cfg.honeypot_field) or "").strip():
            row, events = await web_requests.store_spam(u.session, intake, now=now)
            status = 202
        else:
            form = WebForm.model_validate(raw)
            if visitor_id:
                attribution = await tracking.visitor_attribution(u.session, site.id, visitor_id)
                intake = dataclasses.replace(intake, attribution=attribution)
            row, events = await web_requests.submit(
                u.session,
                form,
                intake,
                rules=rules(request),
                policy=distribution_service.policy_of(settings(request)),
                now=now,
            )
            status = 201
        u.emit(*events)
        await u.commit()
    return web.json_response({"id": row.id, "accepted": True}, status=status)


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight: allowed for the origins of any active site (the site is in the body,
    which a preflight does not carry)."""
    async with uow(request) as u:
        rows = await u.session.execute(select(TrackingSite.origins).where(TrackingSite.is_active))
        origins = [o for (site_origins,) in rows for o in (site_origins or [])]
    _allow_origin(request, origins)
    return web.Response(status=204)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    origin = request.get(ALLOWED_ORIGIN)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Vary"] = "Origin"
    if request.method == "OPTIONS":
        response.headers["Access-Control-Allow-Methods"] = "POST"
        response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"


def routes(app: web.Application) -> None:
    """The preflight route and CORS headers on every answer (errors too)."""
    app.router.add_route("OPTIONS", "/api/v1" + PATH, preflight)
    app.on_response_prepare.append(_cors_headers)
