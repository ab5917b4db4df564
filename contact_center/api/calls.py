"""The call log API: list and read calls (click-to-call lives with the telephony wiring)."""

from __future__ import annotations

import typing
from datetime import datetime
from typing import Any, Literal, Self

from aiohttp import web
from pydantic import BaseModel, Field, create_model
from sqlalchemy.orm import Mapped

from contact_center.api.common import PageQuery, actor, page, path_id, rules, uow
from contact_center.http.api import Api
from contact_center.keys import PBX, SETTINGS, TELEPHONY
from crm_core import access
from crm_core.calls import service as calls
from crm_core.calls.model import Call
from crm_core.errors import NotFound, PermissionDenied, Unavailable
from crm_core.phones import normalize_phone, try_normalize_phone

api = Api()


def _stored_fields(model: type[Any], *, exclude: frozenset[str]) -> dict[str, Any]:
    """Pydantic field definitions (all required) of ``model``'s mapped columns, in their
    declaration order: the response model reads what the table holds, declared once."""
    hints = typing.get_type_hints(model)  # resolves the Mapped[...] annotations
    return {
        name: (typing.get_args(hint)[0], ...)
        for name, hint in hints.items()
        if typing.get_origin(hint) is Mapped and name not in exclude
    }


class _StoredCall(BaseModel):
    @classmethod
    def of(cls, call: Call) -> Self:
        return cls.model_validate(call, from_attributes=True)


# A call of the call log: the finished call's record (crm_core.calls.record.CallRecord), the
# PBX and its links to the manager, the client and the source: every column of ``Call`` but
# its bookkeeping ``created_at``.
CallOut = create_model(
    "CallOut",
    __base__=_StoredCall,
    **_stored_fields(Call, exclude=frozenset({"created_at"})),
)


class CallQuery(PageQuery):
    user_id: int | None = None
    direction: Literal["inbound", "outbound", "internal"] | None = None
    disposition: Literal["answered", "missed", "abandoned", "busy", "failed"] | None = None
    counted: bool | None = None
    contact_id: int | None = None
    company_id: int | None = None
    number: str | None = Field(None, description="a phone number in any format")
    since: datetime | None = None
    until: datetime | None = None


@api.route("GET", "/calls", summary="The call log, newest first", query=CallQuery, tags=["calls"])
async def list_calls(request: web.Request, query: CallQuery) -> dict[str, Any]:
    user = actor(request)
    user_ids: list[int] | None
    if access.is_privileged(user) or rules(request).managers_read_all:
        user_ids = [query.user_id] if query.user_id is not None else None
    else:  # a manager's own calls only
        user_ids = [user.id] if query.user_id in (None, user.id) else []
    number = try_normalize_phone(query.number) if query.number else None
    async with uow(request) as u:
        rows, total = await calls.list_calls(
            u.session,
            user_ids=user_ids,
            direction=query.direction,
            disposition=query.disposition,
            counted=query.counted,
            contact_id=query.contact_id,
            company_id=query.company_id,
            number=number or query.number,
            since=query.since,
            until=query.until,
            limit=query.limit,
            offset=query.offset,
        )
    return page([CallOut.of(c).model_dump(mode="json") for c in rows], total, query)


@api.route(
    "GET",
    "/calls/{id}",
    summary="One call",
    response=CallOut,
    tags=["calls"],
    errors={404: "No such call"},
)
async def get_call(request: web.Request) -> _StoredCall:
    user = actor(request)
    call_pk = path_id(request, "id", "call")
    async with uow(request) as u:
        call = await u.session.get(Call, call_pk)
    if call is None:
        raise NotFound(f"no call {call_pk}")
    access.check(user, call.user_id, rules(request), write=False, what=f"call {call_pk}")
    return CallOut.of(call)


class ClickToCall(BaseModel):
    to: str = Field(min_length=3, max_length=40, description="the client's number, any format")
    from_extension: str | None = Field(
        None, pattern=r"^[0-9*#+]{1,32}$", description="default: the caller's own extension"
    )
    pbx: str | None = Field(None, description="default: the PBX of that extension")


class ClickToCallOut(BaseModel):
    action_id: str
    pbx: str
    extension: str
    to: str
    status: str = "originating"


@api.route(
    "POST",
    "/calls",
    summary="Click-to-call: ring my phone, then the client",
    body=ClickToCall,
    response=ClickToCallOut,
    status=202,
    tags=["calls"],
    errors={403: "Not your extension", 503: "The PBX link is down"},
)
async def click_to_call(request: web.Request, body: ClickToCall) -> ClickToCallOut:
    user = actor(request)
    settings = request.app[SETTINGS]
    number = normalize_phone(body.to, settings.crm.default_region)
    own = {e.extension: e.pbx for e in user.extensions}
    extension = body.from_extension or next(iter(own), None)
    if extension is None:
        raise PermissionDenied("you own no extension to call from; pass from_extension")
    if extension not in own and not access.is_privileged(user):
        raise PermissionDenied(f"extension {extension} is not yours")
    rt = request.app[PBX].get(body.pbx or own.get(extension) or None)
    link = rt.link
    if link is None or not link.connected:
        raise Unavailable(f"PBX {rt.pbx.name} is not connected; try again shortly")
    # The card is looked up first, so it is ready when the manager's phone rings.
    await request.app[TELEPHONY].prefetch(rt.pbx.name, number)
    result = await link.originate(
        f"{rt.pbx.originate_tech}/{extension}",
        exten=rt.pbx.originate_exten.format(e164=number, digits=number.lstrip("+")),
        context=rt.pbx.originate_context,
        caller_id=f'"{number}" <{number}>',
        # CLICK2CALL names the client: the call is recorded as outbound to him from its first
        # event, even when the manager's own phone never picks up.
        variables={"CC_USER_ID": str(user.id), "CLICK2CALL": number},
        timeout=5.0,
    )
    return ClickToCallOut(
        action_id=result.action_id, pbx=rt.pbx.name, extension=extension, to=number
    )
