"""Client cards API: contacts, companies, legal entities, requisites (with history),
contact-company links, merges and the screen-pop lookup by phone.

Who may do what is the clients service's business (crm_core.access): head and admin
everything; a manager reads and changes the clients he is responsible for (with
``crm.managers_read_all`` he reads the others' too). A client he may not read is 404, one he
may only read is 403. Deleting is for head and admin, and only for clients without history
(merge the others). The handlers here translate HTTP to the service and publish the events it
returns once the unit of work has committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from contact_center.api.common import PageQuery, actor, page, path_id, rules, settings, uow
from contact_center.http.api import Api
from contact_center.keys import LIMITER
from crm_core.clients import service as clients
from crm_core.clients.schemas import (
    CompanyInput,
    CompanyLinkInput,
    CompanyOut,
    CompanyPatch,
    ContactInput,
    ContactOut,
    ContactPatch,
    LegalEntityInput,
    LegalEntityOut,
    LegalEntityPatch,
    LinkOut,
    LinkPatch,
    RequisitesInput,
    RequisitesOut,
)
from crm_core.clients.search import ClientFilter
from crm_core.errors import RateLimited
from crm_core.phones import try_normalize_phone

api = Api()
TAGS = ["clients"]
PRIVILEGED = ["admin", "head"]
DUPLICATE = "duplicate-client: a phone, e-mail, messenger id or INN belongs to another client"
LOOKUP_WINDOW_S = 60


# ---------------------------------------------------------------- shapes


class ContactCreate(ContactInput):
    on_duplicate: Literal["refuse", "merge"] = Field(
        "refuse", description="merge: add the input to the existing duplicate instead of 409"
    )


class CompanyCreate(CompanyInput):
    on_duplicate: Literal["refuse", "merge"] = Field(
        "refuse", description="merge: add the input to the existing duplicate instead of 409"
    )


class ClientMergeInput(BaseModel):
    loser_id: int = Field(description="the duplicate merged into the record of the path")


class ContactPage(BaseModel):
    items: list[ContactOut]
    total: int
    limit: int
    offset: int


class CompanyPage(BaseModel):
    items: list[CompanyOut]
    total: int
    limit: int
    offset: int


class _ClientQuery(PageQuery):
    q: str | None = Field(
        None, description="name, INN, e-mail, phone in any format or its last 4+ digits"
    )
    client_type: str | None = None
    source_id: int | None = None
    region_id: int | None = None
    responsible_id: int | None = None
    created_from: AwareDatetime | None = None
    created_to: AwareDatetime | None = None
    head_id: int | None = Field(None, description="the group of this head organisation")
    include_merged: bool = False

    def filter(self) -> ClientFilter:
        return ClientFilter(
            q=self.q,
            client_type=self.client_type,
            source_id=self.source_id,
            region_id=self.region_id,
            responsible_id=self.responsible_id,
            created_from=self.created_from,
            created_to=self.created_to,
            head_id=self.head_id,
            include_merged=self.include_merged,
            **self._extra(),
        )

    def _extra(self) -> dict[str, Any]:
        return {}


class ContactQuery(_ClientQuery):
    company_id: int | None = Field(None, description="contacts linked to this company")

    def _extra(self) -> dict[str, Any]:
        return {"company_id": self.company_id}


class CompanyQuery(_ClientQuery):
    pass


class GroupOut(BaseModel):
    company_id: int
    top_head_id: int = Field(description="the head organisation at the top of the group")
    company_ids: list[int] = Field(description="this company and its members, recursively")


class ClientMatchOut(BaseModel):
    contact_id: int | None
    company_id: int | None
    lead_id: int | None
    responsible_id: int | None
    name: str
    matched_on: str = Field(description="e164: the exact number; last_digits: its last 10 digits")
    phone: str | None = Field(description="the stored number that matched")


class LookupOut(BaseModel):
    phone: str | None = Field(description="the number in E.164, null if it is not one")
    match: ClientMatchOut | None


class LookupQuery(BaseModel):
    phone: str = Field(min_length=1, max_length=64)


class RequisitesQuery(BaseModel):
    include_retired: bool = True


# ---------------------------------------------------------------- contacts and companies


@dataclass(frozen=True)
class CardKind:
    """What differs between the contact and the company endpoints; the handlers are one."""

    kind: Literal["contact", "company"]
    plural: str
    create_body: type[ContactCreate] | type[CompanyCreate]
    data: type[ContactInput] | type[CompanyInput]
    patch: type[ContactPatch] | type[CompanyPatch]
    out: type[ContactOut] | type[CompanyOut]
    page: type[ContactPage] | type[CompanyPage]
    query: type[ContactQuery] | type[CompanyQuery]
    summaries: dict[str, str]
    save: Callable[..., Awaitable[tuple[clients.SaveResult, list[Any]]]]
    get: Callable[..., Awaitable[Any]]
    update: Callable[..., Awaitable[tuple[Any, list[Any]]]]
    delete: Callable[..., Awaitable[None]]
    merge: Callable[..., Awaitable[tuple[Any, list[Any]]]]
    listing: Callable[..., Awaitable[tuple[list[Any], int]]]
    cards: Callable[..., Awaitable[list[Any]]]

    @property
    def id_name(self) -> str:
        return f"{self.kind}_id"

    async def card(self, session: Any, record: Any) -> Any:
        return (await self.cards(session, [record]))[0]


CONTACTS = CardKind(
    kind="contact",
    plural="contacts",
    create_body=ContactCreate,
    data=ContactInput,
    patch=ContactPatch,
    out=ContactOut,
    page=ContactPage,
    query=ContactQuery,
    summaries={
        "list": "Contacts: search and filters",
        "create": "Create a contact (201), or merge it into its duplicate (200)",
        "get": "A contact's card",
        "update": "Change a contact (only the fields given)",
        "delete": "Delete a contact without history",
        "merge": "Merge another contact into this one (everything moves here)",
    },
    save=clients.save_contact,
    get=clients.get_contact,
    update=clients.update_contact,
    delete=clients.delete_contact,
    merge=clients.merge_contacts,
    listing=clients.list_contacts,
    cards=clients.contact_cards,
)

COMPANIES = CardKind(
    kind="company",
    plural="companies",
    create_body=CompanyCreate,
    data=CompanyInput,
    patch=CompanyPatch,
    out=CompanyOut,
    page=CompanyPage,
    query=CompanyQuery,
    summaries={
        "list": "Companies: search and filters",
        "create": "Create a company with legal entities and requisites (201), or merge it into "
        "its duplicate (200)",
        "get": "A company's card",
        "update": "Change a company (only the fields given)",
        "delete": "Delete a company without history",
        "merge": "Merge another company into this one (legal entities, members, deals... move "
        "here)",
    },
    save=clients.save_company,
    get=clients.get_company,
    update=clients.update_company,
    delete=clients.delete_company,
    merge=clients.merge_companies,
    listing=clients.list_companies,
    cards=clients.company_cards,
)


def _named(name: str, handler: Any) -> Any:
    # The handler's name is the OpenAPI operation id.
    handler.__name__ = handler.__qualname__ = name
    return handler


def card_routes(k: CardKind) -> None:
    """The six endpoints of a card kind: list, create (or merge into a duplicate), get,
    change, delete, merge another record in."""
    one = f"/{k.plural}/{{{k.id_name}}}"

    async def list_(request: web.Request, query: Any) -> dict[str, Any]:
        async with uow(request) as u:
            rows, total = await k.listing(
                u.session,
                query.filter(),
                actor=actor(request),
                rules=rules(request),
                limit=query.limit,
                offset=query.offset,
            )
            cards = await k.cards(u.session, rows)
        return page([c.model_dump(mode="json") for c in cards], total, query)

    async def create(request: web.Request, body: Any) -> Any:
        # Only the fields sent: a merge into a duplicate reports them as what changed.
        data = k.data.model_validate(body.model_dump(exclude={"on_duplicate"}, exclude_unset=True))
        async with uow(request) as u:
            result, events = await k.save(
                u.session,
                data,
                actor=actor(request),
                rules=rules(request),
                on_duplicate=body.on_duplicate,
            )
            u.emit(*events)
            await u.commit()
            out = await k.card(u.session, result.client)
        if result.created:
            return out
        return web.json_response(out.model_dump(mode="json"), status=200)

    async def get(request: web.Request) -> Any:
        record_id = path_id(request, k.id_name)
        async with uow(request) as u:
            record = await k.get(u.session, record_id, actor=actor(request), rules=rules(request))
            return await k.card(u.session, record)

    async def update(request: web.Request, body: Any) -> Any:
        record_id = path_id(request, k.id_name)
        async with uow(request) as u:
            record, events = await k.update(
                u.session, record_id, body, actor=actor(request), rules=rules(request)
            )
            u.emit(*events)
            await u.commit()
            return await k.card(u.session, record)

    async def delete(request: web.Request) -> None:
        record_id = path_id(request, k.id_name)
        async with uow(request) as u:
            await k.delete(u.session, record_id, actor=actor(request), rules=rules(request))
            await u.commit()

    async def merge(request: web.Request, body: ClientMergeInput) -> Any:
        survivor_id = path_id(request, k.id_name)
        async with uow(request) as u:
            survivor, events = await k.merge(
                u.session, survivor_id, body.loser_id, actor=actor(request), rules=rules(request)
            )
            u.emit(*events)
            await u.commit()
            return await k.card(u.session, survivor)

    no_such = f"No such {k.kind}"
    api.route(
        "GET",
        f"/{k.plural}",
        summary=k.summaries["list"],
        query=k.query,
        tags=TAGS,
        response=k.page,
    )(_named(f"list_{k.plural}_", list_))
    api.route(
        "POST",
        f"/{k.plural}",
        summary=k.summaries["create"],
        body=k.create_body,
        response=k.out,
        status=201,
        tags=TAGS,
        errors={409: DUPLICATE},
    )(_named(f"create_{k.kind}", create))
    api.route(
        "GET",
        one,
        summary=k.summaries["get"],
        response=k.out,
        tags=TAGS,
        errors={404: f"{no_such} (or merged: details.merged_into_id)"},
    )(_named(f"get_{k.kind}", get))
    api.route(
        "PATCH",
        one,
        summary=k.summaries["update"],
        body=k.patch,
        response=k.out,
        tags=TAGS,
        errors={403: "Read-only for you", 404: no_such, 409: DUPLICATE},
    )(_named(f"update_{k.kind}", update))
    api.route(
        "DELETE",
        one,
        summary=k.summaries["delete"],
        status=204,
        roles=PRIVILEGED,
        tags=TAGS,
        errors={404: no_such, 409: "client-has-history: merge it instead"},
    )(_named(f"delete_{k.kind}", delete))
    api.route(
        "POST",
        f"{one}/merge",
        summary=k.summaries["merge"],
        body=ClientMergeInput,
        response=k.out,
        tags=TAGS,
        errors={403: "Read-only for you", 404: no_such, 422: "Cannot merge into itself"},
    )(_named(f"merge_{k.plural}", merge))


card_routes(CONTACTS)


# ---------------------------------------------------------------- contact-company links


@api.route(
    "POST",
    "/contacts/{contact_id}/companies",
    summary="Link a contact to a company (optionally as its decision maker)",
    body=CompanyLinkInput,
    response=LinkOut,
    status=201,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such contact or company", 409: "Already linked"},
)
async def add_link(request: web.Request, body: CompanyLinkInput) -> LinkOut:
    contact_id = path_id(request, "contact_id")
    async with uow(request) as u:
        link, events = await clients.add_link(
            u.session,
            contact_id,
            body.company_id,
            actor=actor(request),
            rules=rules(request),
            position=body.position,
            is_decision_maker=body.is_decision_maker,
        )
        u.emit(*events)
        await u.commit()
        return LinkOut.model_validate(link)


@api.route(
    "PATCH",
    "/contacts/{contact_id}/companies/{company_id}",
    summary="Change a link's position or decision-maker flag",
    body=LinkPatch,
    response=LinkOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such contact or link"},
)
async def update_link(request: web.Request, body: LinkPatch) -> LinkOut:
    contact_id = path_id(request, "contact_id")
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        link, events = await clients.update_link(
            u.session,
            contact_id,
            company_id,
            actor=actor(request),
            rules=rules(request),
            position=body.position,
            set_position="position" in body.model_fields_set,
            is_decision_maker=body.is_decision_maker,
        )
        u.emit(*events)
        await u.commit()
        return LinkOut.model_validate(link)


@api.route(
    "DELETE",
    "/contacts/{contact_id}/companies/{company_id}",
    summary="Unlink",
    status=204,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such contact or link"},
)
async def delete_link(request: web.Request) -> None:
    contact_id = path_id(request, "contact_id")
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        events = await clients.unlink_contact_company(
            u.session, contact_id, company_id, actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()


# ---------------------------------------------------------------- companies


card_routes(COMPANIES)


@api.route(
    "GET",
    "/companies/{company_id}/group",
    summary="The company and its member companies, recursively (what reports roll up)",
    response=GroupOut,
    tags=TAGS,
    errors={404: "No such company"},
)
async def company_group(request: web.Request) -> GroupOut:
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        group = await clients.company_group(
            u.session, company_id, actor=actor(request), rules=rules(request)
        )
    return GroupOut(
        company_id=group.company_id, top_head_id=group.top_head_id, company_ids=group.company_ids
    )


# ---------------------------------------------------------------- legal entities, requisites


@api.route(
    "POST",
    "/companies/{company_id}/legal-entities",
    summary="Add a legal entity (with requisites) to a company",
    body=LegalEntityInput,
    response=LegalEntityOut,
    status=201,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such company", 409: DUPLICATE},
)
async def add_legal_entity(request: web.Request, body: LegalEntityInput) -> LegalEntityOut:
    user, crm = actor(request), rules(request)
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        entity, events = await clients.add_legal_entity(
            u.session, company_id, body, actor=user, rules=crm
        )
        reqs = await clients.requisites_history(
            u.session, entity.id, actor=user, rules=crm, include_retired=False
        )
        u.emit(*events)
        await u.commit()
        return clients.legal_entity_out(entity, reqs)


@api.route(
    "PATCH",
    "/legal-entities/{legal_entity_id}",
    summary="Rename or (de)activate a legal entity (deactivating retires its requisites)",
    body=LegalEntityPatch,
    response=LegalEntityOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such legal entity"},
)
async def update_legal_entity(request: web.Request, body: LegalEntityPatch) -> LegalEntityOut:
    user, crm = actor(request), rules(request)
    entity_id = path_id(request, "legal_entity_id")
    async with uow(request) as u:
        entity, events = await clients.update_legal_entity(
            u.session, entity_id, body, actor=user, rules=crm
        )
        reqs = await clients.requisites_history(
            u.session, entity_id, actor=user, rules=crm, include_retired=False
        )
        u.emit(*events)
        await u.commit()
        return clients.legal_entity_out(entity, reqs)


@api.route(
    "GET",
    "/legal-entities/{legal_entity_id}/requisites",
    summary="A legal entity's requisites, oldest first, retired ones included (the history)",
    query=RequisitesQuery,
    tags=TAGS,
    errors={404: "No such legal entity"},
)
async def requisites_history(request: web.Request, query: RequisitesQuery) -> list[Any]:
    entity_id = path_id(request, "legal_entity_id")
    async with uow(request) as u:
        rows = await clients.requisites_history(
            u.session,
            entity_id,
            actor=actor(request),
            rules=rules(request),
            include_retired=query.include_retired,
        )
    return [RequisitesOut.model_validate(r).model_dump(mode="json") for r in rows]


@api.route(
    "POST",
    "/legal-entities/{legal_entity_id}/requisites",
    summary="Add a set of requisites (checksums verified)",
    body=RequisitesInput,
    response=RequisitesOut,
    status=201,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such legal entity", 409: DUPLICATE},
)
async def add_requisites(request: web.Request, body: RequisitesInput) -> RequisitesOut:
    entity_id = path_id(request, "legal_entity_id")
    async with uow(request) as u:
        row, events = await clients.add_requisites(
            u.session, entity_id, body, actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
        return RequisitesOut.model_validate(row)


@api.route(
    "PUT",
    "/requisites/{requisites_id}",
    summary="Change requisites: a new set replaces this one, which is retired and kept",
    body=RequisitesInput,
    response=RequisitesOut,
    status=201,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such requisites", 409: "Already retired"},
)
async def change_requisites(request: web.Request, body: RequisitesInput) -> RequisitesOut:
    requisites_id = path_id(request, "requisites_id")
    async with uow(request) as u:
        row, events = await clients.change_requisites(
            u.session, requisites_id, body, actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
        return RequisitesOut.model_validate(row)


@api.route(
    "POST",
    "/requisites/{requisites_id}/retire",
    summary="Retire requisites (kept in history)",
    response=RequisitesOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such requisites", 409: "Already retired"},
)
async def retire_requisites(request: web.Request) -> RequisitesOut:
    requisites_id = path_id(request, "requisites_id")
    async with uow(request) as u:
        row, events = await clients.retire_requisites(
            u.session, requisites_id, actor=actor(request), rules=rules(request)
        )
        u.emit(*events)
        await u.commit()
        return RequisitesOut.model_validate(row)


# ---------------------------------------------------------------- the screen-pop lookup


async def _check_lookup_rate(request: web.Request, user_id: int) -> None:
    """Each user may look numbers up ``crm.lookups_per_minute`` times a minute: enough for
    a person at a phone, too few to walk the client base number by number."""
    limit = settings(request).crm.lookups_per_minute
    limiter = request.app[LIMITER]
    if not await limiter.hit(f"client-lookup:{user_id}", limit=limit, window_s=LOOKUP_WINDOW_S):
        raise RateLimited(
            "too many number lookups; try again in a minute",
            details={"retry_after_s": LOOKUP_WINDOW_S, "limit": limit},
        )


@api.route(
    "GET",
    "/clients/lookup",
    summary="Who calls from this number (any format), among the clients you may read: the "
    "screen-pop lookup (rate-limited per user)",
    query=LookupQuery,
    response=LookupOut,
    tags=TAGS,
    errors={429: "rate-limited: too many lookups this minute"},
)
async def lookup(request: web.Request, query: LookupQuery) -> LookupOut:
    user, crm = actor(request), rules(request)
    await _check_lookup_rate(request, user.id)
    async with uow(request) as u:
        match = await clients.find_client_by_phone(u.session, query.phone, actor=user, rules=crm)
    return LookupOut(
        phone=try_normalize_phone(query.phone, crm.default_region),
        match=ClientMatchOut(**match.__dict__) if match is not None else None,
    )
