"""The client timeline API: list activities, record meetings, notes and e-mails by hand."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, uow
from contact_center.http.api import Api
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.schemas import ActivityOut, ActivityPatch, ManualActivityInput, kind_labels
from crm_core.recordings import service as call_recordings

api = Api()
TAGS = ["activities"]


class ActivityQuery(PageQuery):
    model_config = ConfigDict(populate_by_name=True)

    company_id: int | None = Field(None, description="the company and its group")
    contact_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    user_id: int | None = None
    # Literal, not the enum: query parameters are inlined in the OpenAPI document.
    kind: Literal["call", "meeting", "email", "message", "note"] | None = None
    since: datetime | None = Field(None, alias="from")
    until: datetime | None = Field(None, alias="to")


@api.route(
    "GET",
    "/activities",
    summary="A timeline (a company's includes its group), newest first",
    query=ActivityQuery,
    tags=TAGS,
)
async def list_activities(request: web.Request, query: ActivityQuery) -> dict[str, Any]:
    async with uow(request) as u:
        rows, total = await activities.list_activities(
            u.session,
            actor=actor(request),
            rules=rules(request),
            company_id=query.company_id,
            contact_id=query.contact_id,
            deal_id=query.deal_id,
            lead_id=query.lead_id,
            user_id=query.user_id,
            kind=query.kind,
            since=query.since,
            until=query.until,
            limit=query.limit,
            offset=query.offset,
        )
        heard = await call_recordings.for_activities(u.session, [a.id for a in rows])
    items = []
    for a in rows:
        item = ActivityOut.of(a).model_dump(mode="json")
        # A call's recording (the player in the card's timeline), or its state.
        item["recording"] = call_recordings.describe(heard[a.id]) if a.id in heard else None
        items.append(item)
    return page(items, total, query)


@api.route(
    "POST",
    "/activities",
    summary="Record a meeting, note or e-mail by hand",
    body=ManualActivityInput,
    response=ActivityOut,
    status=201,
    tags=TAGS,
    errors={403: "A client of another manager"},
)
async def create_activity(request: web.Request, body: ManualActivityInput) -> ActivityOut:
    async with uow(request) as u:
        activity = await activities.add_activity(
            u.session,
            body.to_input(),
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        u.emit(ActivityRecorded.of(activity))
        await u.commit()
    return ActivityOut.of(activity)


@api.route(
    "GET",
    "/activities/{id}",
    summary="One activity",
    response=ActivityOut,
    tags=TAGS,
    errors={404: "No such activity"},
)
async def get_activity(request: web.Request) -> ActivityOut:
    activity_id = path_id(request, "id", "activity")
    async with uow(request) as u:
        activity = await activities.get_activity(
            u.session, activity_id, actor=actor(request), rules=rules(request)
        )
    return ActivityOut.of(activity)


@api.route(
    "PATCH",
    "/activities/{id}",
    summary="Change a hand-recorded activity",
    body=ActivityPatch,
    response=ActivityOut,
    tags=TAGS,
    errors={403: "Another manager's", 404: "No such activity", 409: "Recorded by the system"},
)
async def update_activity(request: web.Request, body: ActivityPatch) -> ActivityOut:
    activity_id = path_id(request, "id", "activity")
    async with uow(request) as u:
        activity = await activities.update_activity(
            u.session, activity_id, body, actor=actor(request), rules=rules(request)
        )
        await u.commit()
    return ActivityOut.of(activity)


@api.route(
    "DELETE",
    "/activities/{id}",
    summary="Delete a hand-recorded activity",
    status=204,
    tags=TAGS,
    errors={403: "Another manager's", 404: "No such activity", 409: "Recorded by the system"},
)
async def delete_activity(request: web.Request) -> None:
    activity_id = path_id(request, "id", "activity")
    async with uow(request) as u:
        await activities.delete_activity(
            u.session, activity_id, actor=actor(request), rules=rules(request)
        )
        await u.commit()


@api.route(
    "GET", "/activity-kinds", summary="Activity kinds with Russian and English names", tags=TAGS
)
async def activity_kinds(request: web.Request) -> list[dict[str, Any]]:
    return [k.model_dump() for k in kind_labels()]
