"""The distribution API: region rules and the manual queue (head of sales and admins), the
dialplan's "which extension" endpoint (PBXes), and the website-request funnel statistics."""

from __future__ import annotations

import functools
import hmac
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from contact_center import distribution_service
from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, settings, uow
from contact_center.http import proxies
from contact_center.http.api import Api
from contact_center.keys import DIALPLAN
from crm_core.distribution import requests as web_requests
from crm_core.distribution import rules as rule_book
from crm_core.distribution import stats
from crm_core.distribution.schemas import (
    AssignInput,
    RuleInput,
    RuleOut,
    WebRequestOut,
)
from crm_core.errors import NotAuthenticated

api = Api()
TAGS = ["distribution"]
HEADS = ("head", "admin")
_LOOPBACK = ("127.0.0.0/8", "::1/128")


@functools.cache
def _networks(items: tuple[str, ...]) -> tuple[proxies.Network, ...]:
    # Parsed once per setting, not on every call the dialplan asks about.
    return proxies.networks(items)


# ---------------------------------------------------------------- rules


@api.route("GET", "/distribution/rules", summary="Region rules", roles=HEADS, tags=TAGS)
async def list_rules(request: web.Request) -> dict[str, Any]:
    async with uow(request) as u:
        rows = await rule_book.list_rules(u.session)
    return {"items": [r.model_dump(mode="json") for r in rows]}


def _with_default_strategy(request: web.Request, body: RuleInput) -> RuleInput:
    """A rule that names no strategy gets ``distribution.default_strategy``."""
    if "strategy" in body.model_fields_set:
        return body
    strategy = settings(request).distribution.default_strategy
    return RuleInput.model_validate({**body.model_dump(), "strategy": strategy})


@api.route(
    "POST",
    "/distribution/rules",
    summary="Create a region's rule (region_id null: the default rule)",
    body=RuleInput,
    response=RuleOut,
    status=201,
    roles=HEADS,
    tags=TAGS,
    errors={409: "The region already has a rule"},
)
async def create_rule(request: web.Request, body: RuleInput) -> RuleOut:
    async with uow(request) as u:
        rule, events = await rule_book.create_rule(
            u.session, _with_default_strategy(request, body), now=clock(request).now()
        )
        u.emit(*events)
        await u.commit()
    return rule


@api.route(
    "GET",
    "/distribution/rules/{id}",
    summary="One rule",
    response=RuleOut,
    roles=HEADS,
    tags=TAGS,
    errors={404: "No such rule"},
)
async def get_rule(request: web.Request) -> RuleOut:
    async with uow(request) as u:
        return await rule_book.get_rule(u.session, path_id(request, "id", "rule"))


@api.route(
    "PUT",
    "/distribution/rules/{id}",
    summary="Replace a rule and its managers (the round-robin turn carries on)",
    body=RuleInput,
    response=RuleOut,
    roles=HEADS,
    tags=TAGS,
    errors={404: "No such rule", 409: "The region already has another rule"},
)
async def replace_rule(request: web.Request, body: RuleInput) -> RuleOut:
    rule_id = path_id(request, "id", "rule")
    async with uow(request) as u:
        rule, events = await rule_book.replace_rule(
            u.session, rule_id, _with_default_strategy(request, body), now=clock(request).now()
        )
        u.emit(*events)
        await u.commit()
    return rule


@api.route(
    "DELETE",
    "/distribution/rules/{id}",
    summary="Delete a rule",
    status=204,
    roles=HEADS,
    tags=TAGS,
    errors={404: "No such rule"},
)
async def delete_rule(request: web.Request) -> None:
    rule_id = path_id(request, "id", "rule")
    async with uow(request) as u:
        u.emit(*await rule_book.delete_rule(u.session, rule_id, now=clock(request).now()))
        await u.commit()


# ---------------------------------------------------------------- the manual queue


@api.route(
    "GET",
    "/distribution/queue",
    summary="Website requests waiting to be assigned by hand, oldest first",
    query=PageQuery,
    roles=HEADS,
    tags=TAGS,
)
async def list_queue(request: web.Request, query: PageQuery) -> dict[str, Any]:
    async with uow(request) as u:
        rows, total = await web_requests.list_queue(
            u.session, limit=query.limit, offset=query.offset
        )
    return page([WebRequestOut.of(r).model_dump(mode="json") for r in rows], total, query)


@api.route(
    "POST",
    "/distribution/queue/{id}/assign",
    summary="Assign a queued request: the manager gets its lead and a call-back task",
    body=AssignInput,
    response=WebRequestOut,
    roles=HEADS,
    tags=TAGS,
    errors={404: "No such request", 409: "The request is not in the queue"},
)
async def assign_request(request: web.Request, body: AssignInput) -> WebRequestOut:
    request_id = path_id(request, "id", "web request")
    async with uow(request) as u:
        row, events = await web_requests.assign(
            u.session,
            request_id,
            body.user_id,
            actor=actor(request),
            rules=rules(request),
            policy=distribution_service.policy_of(settings(request)),
            now=clock(request).now(),
        )
        u.emit(*events)
        await u.commit()
    return WebRequestOut.of(row)


# ---------------------------------------------------------------- the dialplan


class DialQuery(BaseModel):
    """Lenient on purpose: the dialplan gets an extension whatever it sends."""

    caller: str = Field("", description="the caller's number, any format (${CALLERID(num)})")
    did: str = Field("", description="the dialed number (${EXTEN} or the trunk's DID)")
    pbx: str | None = Field(None, description="the PBX name (with a token: the token's PBX)")
    format: Literal["text", "json"] = "text"
    token: str | None = Field(None, description="the PBX's dial token, if not in X-PBX-Token")


def _dial_pbx(request: web.Request, query: DialQuery) -> str | None:
    """The PBX allowed to ask: by token (``distribution.dial_tokens``, header ``X-PBX-Token``
    or ``?token=``), else by address (``distribution.dial_allow_from``; loopback when neither
    is configured)."""
    cfg = settings(request).distribution
    token = request.headers.get("X-PBX-Token", "").strip() or (query.token or "")
    for pbx, secret in cfg.dial_tokens.items():
        if token and hmac.compare_digest(token.encode(), secret.get_secret_value().encode()):
            return str(pbx)
    allowed = _networks(tuple(cfg.dial_allow_from or ([] if cfg.dial_tokens else _LOOPBACK)))
    remote = proxies.address(request.remote or "")
    if remote is not None and any(remote in net for net in allowed):
        return query.pbx
    raise NotAuthenticated(
        "a PBX dial token or an allowed address is required (distribution.dial_tokens, "
        "distribution.dial_allow_from)"
    )


@api.route(
    "GET",
    "/routing/dial",
    summary="Which extension for this caller on this DID (plain text for CURL(); ?format=json)",
    query=DialQuery,
    public=True,
    tags=TAGS,
    errors={401: "No or a wrong PBX token, from an address not allowed"},
)
async def dial(request: web.Request, query: DialQuery) -> web.StreamResponse:
    try:
        pbx = _dial_pbx(request, query)
    except NotAuthenticated:
        if query.format == "json":
            raise
        # CURL() puts any body into the dialplan's variable: an error gives it nothing.
        return web.Response(status=401, text="", content_type="text/plain")
    answer = await request.app[DIALPLAN].dial(query.caller, query.did, pbx)
    if query.format == "json":
        return web.json_response(answer.as_dict())
    return web.Response(text=answer.extension, content_type="text/plain")


# ---------------------------------------------------------------- statistics


class StatsQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    start: AwareDatetime = Field(alias="from", description="ISO 8601 with a zone, inclusive")
    end: AwareDatetime = Field(alias="to", description="ISO 8601 with a zone, exclusive")
    group_by: Literal["region", "source"] = "region"

    @model_validator(mode="after")
    def _ordered(self) -> StatsQuery:
        if self.end <= self.start:
            raise ValueError("to: must be after from")
        return self


@api.route(
    "GET",
    "/stats/web-requests",
    summary="Website requests → leads → qualified → deals → won, per region or source",
    query=StatsQuery,
    roles=HEADS,
    tags=["stats"],
)
async def web_request_stats(request: web.Request, query: StatsQuery) -> dict[str, Any]:
    async with uow(request) as u:
        rows = await stats.web_request_funnel(
            u.session,
            start=query.start,
            end=query.end,
            group_by=query.group_by,
            qualified_stages=settings(request).distribution.qualified_stages,
        )
    return {
        "group_by": query.group_by,
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "items": [r.model_dump(mode="json") for r in rows],
    }
