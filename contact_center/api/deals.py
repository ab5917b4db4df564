"""The pipelines and deals API; at start-up it mirrors ``crm.pipelines`` into the database."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, Field

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, uow
from contact_center.http.api import Api
from crm_core.deals import service as deals
from crm_core.deals.pipelines import list_pipelines
from crm_core.deals.schemas import (
    DealInput,
    DealMove,
    DealOut,
    DealPatch,
    DealStatus,
    PipelinesOut,
)

api = Api()
TAGS = ["deals"]


class DealQuery(PageQuery):
    pipeline: str | None = Field(None, max_length=64, description="pipeline code")
    stage: str | None = Field(None, max_length=64, description="stage code or id")
    status: DealStatus | None = None
    responsible_id: int | None = None
    source_id: int | None = None
    company_id: int | None = None
    contact_id: int | None = None
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = Field(None, description="exclusive")
    closed_from: AwareDatetime | None = None
    closed_to: AwareDatetime | None = Field(None, description="exclusive")
    q: str | None = Field(None, max_length=200, description="in the title")


def _deal_id(request: web.Request) -> int:
    return path_id(request, "id", "deal")


@api.route(
    "GET",
    "/pipelines",
    summary="Pipelines with their stages in order and their labels, and the lost reasons",
    response=PipelinesOut,
    tags=TAGS,
)
async def get_pipelines(request: web.Request) -> PipelinesOut:
    async with uow(request) as u:
        items = await list_pipelines(u.session, rules(request))
    return PipelinesOut(items=items, lost_reasons=list(rules(request).lost_reasons))


@api.route("GET", "/deals", summary="Deals, newest first", query=DealQuery, tags=TAGS)
async def list_deals(request: web.Request, query: DealQuery) -> dict[str, Any]:
    flt = deals.DealFilter(**query.model_dump(exclude={"limit", "offset"}))
    async with uow(request) as u:
        rows, total = await deals.list_deals(
            u.session,
            flt,
            actor=actor(request),
            rules=rules(request),
            limit=query.limit,
            offset=query.offset,
        )
        items = await deals.describe(u.session, rows)
    return page([d.model_dump(mode="json") for d in items], total, query)


@api.route(
    "POST",
    "/deals",
    summary="Create a deal (default pipeline, first stage, yourself responsible)",
    body=DealInput,
    response=DealOut,
    status=201,
    tags=TAGS,
    errors={403: "A manager assigning another manager"},
)
async def create_deal(request: web.Request, body: DealInput) -> DealOut:
    async with uow(request) as u:
        deal, events = await deals.create_deal(
            u.session, body, actor=actor(request), rules=rules(request), now=clock(request).now()
        )
        [out] = await deals.describe(u.session, [deal], with_history=True)
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "GET",
    "/deals/{id}",
    summary="One deal with its stage history",
    response=DealOut,
    tags=TAGS,
    errors={404: "No such deal"},
)
async def get_deal(request: web.Request) -> DealOut:
    async with uow(request) as u:
        deal = await deals.get_deal(
            u.session, _deal_id(request), actor=actor(request), rules=rules(request)
        )
        [out] = await deals.describe(u.session, [deal], with_history=True)
    return out


@api.route(
    "PATCH",
    "/deals/{id}",
    summary="Change a deal: fields, milestones, and (with stage) a move",
    body=DealPatch,
    response=DealOut,
    tags=TAGS,
    errors={403: "Another manager's deal, or a handover by a manager", 404: "No such deal"},
)
async def update_deal(request: web.Request, body: DealPatch) -> DealOut:
    async with uow(request) as u:
        deal, events = await deals.update_deal(
            u.session,
            _deal_id(request),
            body,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        [out] = await deals.describe(u.session, [deal], with_history=True)
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "POST",
    "/deals/{id}/move",
    summary="Move a deal to a stage of its pipeline (lost needs a reason)",
    body=DealMove,
    response=DealOut,
    tags=TAGS,
    errors={403: "Another manager's deal", 404: "No such deal"},
)
async def move_deal(request: web.Request, body: DealMove) -> DealOut:
    async with uow(request) as u:
        deal, events = await deals.move_deal(
            u.session,
            _deal_id(request),
            body.stage,
            reason=body.reason,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        [out] = await deals.describe(u.session, [deal], with_history=True)
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "GET",
    "/deals/{id}/history",
    summary="A deal's stage changes, oldest first",
    tags=TAGS,
    errors={404: "No such deal"},
)
async def deal_history(request: web.Request) -> list[dict[str, Any]]:
    async with uow(request) as u:
        rows = await deals.deal_history(
            u.session, _deal_id(request), actor=actor(request), rules=rules(request)
        )
    return [r.model_dump(mode="json") for r in rows]


@api.route(
    "DELETE",
    "/deals/{id}",
    summary="Delete a deal and its stage history (head and admin)",
    status=204,
    roles=["admin", "head"],
    tags=TAGS,
    errors={404: "No such deal"},
)
async def delete_deal(request: web.Request) -> None:
    async with uow(request) as u:
        events = await deals.delete_deal(
            u.session, _deal_id(request), actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
