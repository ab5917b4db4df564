"""The leads API: the funnel with its gate, moves, conversion and history."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import AwareDatetime, Field

from contact_center.api.common import PageQuery, actor, clock, page, path_id, rules, uow
from contact_center.http.api import Api
from crm_core.leads import gate
from crm_core.leads import service as leads
from crm_core.leads.schemas import (
    ConversionOut,
    ConvertInput,
    DuplicateOut,
    LeadInput,
    LeadMove,
    LeadOut,
    LeadPatch,
    LeadStageChangeOut,
    LeadStageOut,
    LeadStagesOut,
    Origin,
)
from crm_core.rules import GATE_REQUIREMENTS

api = Api()
TAGS = ["leads"]
_GATE_ERRORS = {
    403: "Another manager's lead",
    404: "No such lead",
    409: "The lead is converted",
    422: "The gate refuses (lead-gate-missing-fields), or a junk reason is missing",
}


class LeadQuery(PageQuery):
    stage: str | None = Field(None, max_length=32)
    origin: Origin | None = None
    source_id: int | None = None
    region_id: int | None = None
    responsible_id: int | None = None
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = Field(None, description="exclusive")
    q: str | None = Field(
        None, max_length=200, description="name, phone in any format or its last digits, e-mail"
    )


def _lead_id(request: web.Request) -> int:
    return path_id(request, "id", "lead")


@api.route(
    "GET",
    "/lead-stages",
    summary="Lead stages with labels and their gates, the requirement names, junk reasons",
    response=LeadStagesOut,
    tags=TAGS,
)
async def lead_stages(request: web.Request) -> LeadStagesOut:
    crm = rules(request)
    return LeadStagesOut(
        stages=[
            LeadStageOut(
                code=s.code,
                name_ru=s.name_ru,
                name_en=s.name_en,
                kind=s.kind,
                requires=gate.requirements_for(crm, s.code),
            )
            for s in crm.lead_stages
        ],
        requirements=dict(GATE_REQUIREMENTS),
        junk_reasons=list(crm.junk_reasons),
    )


@api.route("GET", "/leads", summary="Leads, newest first", query=LeadQuery, tags=TAGS)
async def list_leads(request: web.Request, query: LeadQuery) -> dict[str, Any]:
    flt = leads.LeadFilter(**query.model_dump(exclude={"limit", "offset"}))
    async with uow(request) as u:
        rows, total = await leads.list_leads(
            u.session,
            flt,
            actor=actor(request),
            rules=rules(request),
            limit=query.limit,
            offset=query.offset,
        )
        items = await leads.describe(u.session, rows, rules(request), actor=actor(request))
    return page([lead.model_dump(mode="json") for lead in items], total, query)


@api.route(
    "POST",
    "/leads",
    summary="Create a lead (first stage unless another one's gate is met)",
    body=LeadInput,
    response=LeadOut,
    status=201,
    tags=TAGS,
    errors={403: "A manager assigning another manager", 422: "Invalid field or gate refused"},
)
async def create_lead(request: web.Request, body: LeadInput) -> LeadOut:
    async with uow(request) as u:
        lead, events = await leads.create_lead(
            u.session, body, actor=actor(request), rules=rules(request), now=clock(request).now()
        )
        [out] = await leads.describe(
            u.session, [lead], rules(request), actor=actor(request), with_duplicates=True
        )
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "GET",
    "/leads/{id}",
    summary="One lead, what it lacks for each later stage, and known clients it matches",
    response=LeadOut,
    tags=TAGS,
    errors={404: "No such lead"},
)
async def get_lead(request: web.Request) -> LeadOut:
    async with uow(request) as u:
        lead = await leads.get_lead(
            u.session, _lead_id(request), actor=actor(request), rules=rules(request)
        )
        [out] = await leads.describe(
            u.session, [lead], rules(request), actor=actor(request), with_duplicates=True
        )
    return out


@api.route(
    "PATCH",
    "/leads/{id}",
    summary="Change a lead; with stage, also move it (the gate applies)",
    body=LeadPatch,
    response=LeadOut,
    tags=TAGS,
    errors=_GATE_ERRORS,
)
async def update_lead(request: web.Request, body: LeadPatch) -> LeadOut:
    async with uow(request) as u:
        lead, events = await leads.update_lead(
            u.session,
            _lead_id(request),
            body,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        [out] = await leads.describe(
            u.session, [lead], rules(request), actor=actor(request), with_duplicates=True
        )
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "POST",
    "/leads/{id}/move",
    summary="Move a lead to a stage (forward only through the gate; junk needs a reason)",
    body=LeadMove,
    response=LeadOut,
    tags=TAGS,
    errors=_GATE_ERRORS,
)
async def move_lead(request: web.Request, body: LeadMove) -> LeadOut:
    async with uow(request) as u:
        lead, events = await leads.move_lead(
            u.session,
            _lead_id(request),
            body.stage,
            reason=body.reason,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        [out] = await leads.describe(u.session, [lead], rules(request), actor=actor(request))
        u.emit(*events)
        await u.commit()
    return out


@api.route(
    "POST",
    "/leads/{id}/convert",
    summary="Convert a lead into a contact and a company (found or created) and maybe a deal",
    body=ConvertInput,
    response=ConversionOut,
    tags=TAGS,
    errors={
        **_GATE_ERRORS,
        403: "Another manager's lead, or its client belongs to another manager",
    },
)
async def convert_lead(request: web.Request, body: ConvertInput) -> ConversionOut:
    async with uow(request) as u:
        result, events = await leads.convert_lead(
            u.session,
            _lead_id(request),
            body,
            actor=actor(request),
            rules=rules(request),
            now=clock(request).now(),
        )
        [lead] = await leads.describe(
            u.session, [result.lead], rules(request), actor=actor(request)
        )
        u.emit(*events)
        await u.commit()
    return ConversionOut(
        lead=lead,
        contact_id=result.contact.id if result.contact else None,
        company_id=result.company.id if result.company else None,
        deal_id=result.deal.id if result.deal else None,
        contact_created=result.contact_created,
        company_created=result.company_created,
        linked=[DuplicateOut(**d.as_dict()) for d in result.linked],
    )


@api.route(
    "GET",
    "/leads/{id}/history",
    summary="A lead's stage changes, oldest first",
    tags=TAGS,
    errors={404: "No such lead"},
)
async def lead_history(request: web.Request) -> list[dict[str, Any]]:
    async with uow(request) as u:
        rows = await leads.lead_history(
            u.session, _lead_id(request), actor=actor(request), rules=rules(request)
        )
    return [LeadStageChangeOut.model_validate(r).model_dump(mode="json") for r in rows]


@api.route(
    "DELETE",
    "/leads/{id}",
    summary="Delete a lead that was not converted",
    status=204,
    tags=TAGS,
    errors={403: "Another manager's lead", 404: "No such lead", 409: "The lead is converted"},
)
async def delete_lead(request: web.Request) -> None:
    async with uow(request) as u:
        events = await leads.delete_lead(
            u.session, _lead_id(request), actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
