"""Client cards API: contacts, companies, legal entities, requisites (with history),
contact-company links, merges and the screen-pop lookup by phone.

Who may do what (crm_core.access): head and admin everything; a manager reads and changes the
clients he is responsible for (with ``crm.managers_read_all`` he reads the others' too). A
client he may not read is 404, one he may only read is 403. Deleting is for head and admin,
and only for clients without history (merge the others).
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, Field

from contact_center.api.common import PageQuery, actor, page, path_id, rules, uow
from contact_center.http.api import Api
from crm_core.clients import events
from crm_core.clients import service as clients
from crm_core.clients.errors import CompanyNotFound
from crm_core.clients.model import Company, Contact
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
from crm_core.clients.search import ClientFilter, list_companies, list_contacts
from crm_core.errors import NotFound
from crm_core.phones import try_normalize_phone
from crm_core.rules import CrmRules
from crm_core.users.model import User

api = Api()
TAGS = ["clients"]
PRIVILEGED = ["admin", "head"]
DUPLICATE = "duplicate-client: a phone, e-mail, messenger id or INN belongs to another client"


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

    def filter(self, **extra: Any) -> ClientFilter:
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
            **extra,
        )


class ContactQuery(_ClientQuery):
    company_id: int | None = Field(None, description="contacts linked to this company")


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


# ---------------------------------------------------------------- helpers


async def _contact_out(session: Any, contact: Contact) -> ContactOut:
    return (await clients.contact_cards(session, [contact]))[0]


async def _company_out(session: Any, company: Company) -> CompanyOut:
    return (await clients.company_cards(session, [company]))[0]


def _changed(model: BaseModel, *skip: str) -> tuple[str, ...]:
    return tuple(sorted(set(model.model_fields_set) - set(skip)))


async def _company_of_entity(
    session: Any, legal_entity_id: int, user: User, crm: CrmRules, *, write: bool
) -> Company:
    entity = await clients.get_legal_entity(session, legal_entity_id)
    try:
        return await clients.get_company(
            session, entity.company_id, actor=user, rules=crm, write=write
        )
    except CompanyNotFound:
        raise NotFound(f"no legal entity {legal_entity_id}") from None


# ---------------------------------------------------------------- contacts


@api.route(
    "GET",
    "/contacts",
    summary="Contacts: search and filters",
    query=ContactQuery,
    tags=TAGS,
    response=ContactPage,
)
async def list_contacts_(request: web.Request, query: ContactQuery) -> dict[str, Any]:
    user, crm = actor(request), rules(request)
    async with uow(request) as u:
        rows, total = await list_contacts(
            u.session,
            query.filter(company_id=query.company_id),
            actor=user,
            rules=crm,
            limit=query.limit,
            offset=query.offset,
        )
        cards = await clients.contact_cards(u.session, rows)
    return page([c.model_dump(mode="json") for c in cards], total, query)


@api.route(
    "POST",
    "/contacts",
    summary="Create a contact (201), or merge it into its duplicate (200)",
    body=ContactCreate,
    response=ContactOut,
    status=201,
    tags=TAGS,
    errors={409: DUPLICATE},
)
async def create_contact(request: web.Request, body: ContactCreate) -> Any:
    user, crm = actor(request), rules(request)
    data = ContactInput.model_validate(body.model_dump(exclude={"on_duplicate"}))
    async with uow(request) as u:
        result = await clients.save_contact(
            u.session, data, actor=user, rules=crm, on_duplicate=body.on_duplicate
        )
        contact: Contact = result.client
        if result.created:
            u.emit(
                events.created("contact", contact.id, contact.name, contact.responsible_id, user.id)
            )
        else:
            u.emit(
                events.updated(
                    "contact",
                    contact.id,
                    _changed(body, "on_duplicate"),
                    contact.responsible_id,
                    user.id,
                )
            )
        await u.commit()
        out = await _contact_out(u.session, contact)
    if result.created:
        return out
    return web.json_response(out.model_dump(mode="json"), status=200)


@api.route(
    "GET",
    "/contacts/{contact_id}",
    summary="A contact's card",
    response=ContactOut,
    tags=TAGS,
    errors={404: "No such contact (or merged: details.merged_into_id)"},
)
async def get_contact(request: web.Request) -> ContactOut:
    contact_id = path_id(request, "contact_id")
    async with uow(request) as u:
        contact = await clients.get_contact(
            u.session, contact_id, actor=actor(request), rules=rules(request)
        )
        return await _contact_out(u.session, contact)


@api.route(
    "PATCH",
    "/contacts/{contact_id}",
    summary="Change a contact (only the fields given)",
    body=ContactPatch,
    response=ContactOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such contact", 409: DUPLICATE},
)
async def update_contact(request: web.Request, body: ContactPatch) -> ContactOut:
    user, contact_id = actor(request), path_id(request, "contact_id")
    async with uow(request) as u:
        contact = await clients.update_contact(
            u.session, contact_id, body, actor=user, rules=rules(request)
        )
        u.emit(
            events.updated("contact", contact.id, _changed(body), contact.responsible_id, user.id)
        )
        await u.commit()
        return await _contact_out(u.session, contact)


@api.route(
    "DELETE",
    "/contacts/{contact_id}",
    summary="Delete a contact without history",
    status=204,
    roles=PRIVILEGED,
    tags=TAGS,
    errors={404: "No such contact", 409: "client-has-history: merge it instead"},
)
async def delete_contact(request: web.Request) -> None:
    contact_id = path_id(request, "contact_id")
    async with uow(request) as u:
        await clients.delete_contact(u.session, contact_id, actor=actor(request))
        await u.commit()


@api.route(
    "POST",
    "/contacts/{contact_id}/merge",
    summary="Merge another contact into this one (everything moves here)",
    body=ClientMergeInput,
    response=ContactOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such contact", 422: "Cannot merge into itself"},
)
async def merge_contacts(request: web.Request, body: ClientMergeInput) -> ContactOut:
    user, crm = actor(request), rules(request)
    survivor_id = path_id(request, "contact_id")
    async with uow(request) as u:
        await clients.get_contact(u.session, survivor_id, actor=user, rules=crm, write=True)
        loser = await clients.get_contact(
            u.session, body.loser_id, actor=user, rules=crm, write=True
        )
        loser_responsible = loser.responsible_id
        survivor = await clients.merge_contacts(u.session, survivor_id, body.loser_id, actor=user)
        u.emit(
            events.merged(
                "contact",
                survivor.id,
                body.loser_id,
                survivor.responsible_id,
                user.id,
                loser_responsible,
            )
        )
        await u.commit()
        return await _contact_out(u.session, survivor)


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
    user, crm = actor(request), rules(request)
    contact_id = path_id(request, "contact_id")
    async with uow(request) as u:
        contact = await clients.get_contact(
            u.session, contact_id, actor=user, rules=crm, write=True
        )
        await clients.get_company(u.session, body.company_id, actor=user, rules=crm)
        link = await clients.add_link(
            u.session,
            contact_id,
            body.company_id,
            position=body.position,
            is_decision_maker=body.is_decision_maker,
        )
        u.emit(
            events.updated("contact", contact_id, ("companies",), contact.responsible_id, user.id)
        )
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
    user, crm = actor(request), rules(request)
    contact_id = path_id(request, "contact_id")
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        contact = await clients.get_contact(
            u.session, contact_id, actor=user, rules=crm, write=True
        )
        link = await clients.update_link(
            u.session,
            contact_id,
            company_id,
            position=body.position,
            set_position="position" in body.model_fields_set,
            is_decision_maker=body.is_decision_maker,
        )
        u.emit(
            events.updated("contact", contact_id, ("companies",), contact.responsible_id, user.id)
        )
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
    user, crm = actor(request), rules(request)
    contact_id = path_id(request, "contact_id")
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        contact = await clients.get_contact(
            u.session, contact_id, actor=user, rules=crm, write=True
        )
        await clients.unlink_contact_company(u.session, contact_id, company_id)
        u.emit(
            events.updated("contact", contact_id, ("companies",), contact.responsible_id, user.id)
        )
        await u.commit()


# ---------------------------------------------------------------- companies


@api.route(
    "GET",
    "/companies",
    summary="Companies: search and filters",
    query=CompanyQuery,
    tags=TAGS,
    response=CompanyPage,
)
async def list_companies_(request: web.Request, query: CompanyQuery) -> dict[str, Any]:
    user, crm = actor(request), rules(request)
    async with uow(request) as u:
        rows, total = await list_companies(
            u.session,
            query.filter(),
            actor=user,
            rules=crm,
            limit=query.limit,
            offset=query.offset,
        )
        cards = await clients.company_cards(u.session, rows)
    return page([c.model_dump(mode="json") for c in cards], total, query)


@api.route(
    "POST",
    "/companies",
    summary="Create a company with legal entities and requisites (201), or merge it into its "
    "duplicate (200)",
    body=CompanyCreate,
    response=CompanyOut,
    status=201,
    tags=TAGS,
    errors={409: DUPLICATE},
)
async def create_company(request: web.Request, body: CompanyCreate) -> Any:
    user, crm = actor(request), rules(request)
    data = CompanyInput.model_validate(body.model_dump(exclude={"on_duplicate"}))
    async with uow(request) as u:
        result = await clients.save_company(
            u.session, data, actor=user, rules=crm, on_duplicate=body.on_duplicate
        )
        company: Company = result.client
        if result.created:
            u.emit(
                events.created("company", company.id, company.name, company.responsible_id, user.id)
            )
        else:
            u.emit(
                events.updated(
                    "company",
                    company.id,
                    _changed(body, "on_duplicate"),
                    company.responsible_id,
                    user.id,
                )
            )
        await u.commit()
        out = await _company_out(u.session, company)
    if result.created:
        return out
    return web.json_response(out.model_dump(mode="json"), status=200)


@api.route(
    "GET",
    "/companies/{company_id}",
    summary="A company's card",
    response=CompanyOut,
    tags=TAGS,
    errors={404: "No such company (or merged: details.merged_into_id)"},
)
async def get_company(request: web.Request) -> CompanyOut:
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        company = await clients.get_company(
            u.session, company_id, actor=actor(request), rules=rules(request)
        )
        return await _company_out(u.session, company)


@api.route(
    "PATCH",
    "/companies/{company_id}",
    summary="Change a company (only the fields given)",
    body=CompanyPatch,
    response=CompanyOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such company", 409: DUPLICATE},
)
async def update_company(request: web.Request, body: CompanyPatch) -> CompanyOut:
    user, company_id = actor(request), path_id(request, "company_id")
    async with uow(request) as u:
        company = await clients.update_company(
            u.session, company_id, body, actor=user, rules=rules(request)
        )
        u.emit(
            events.updated("company", company.id, _changed(body), company.responsible_id, user.id)
        )
        await u.commit()
        return await _company_out(u.session, company)


@api.route(
    "DELETE",
    "/companies/{company_id}",
    summary="Delete a company without history",
    status=204,
    roles=PRIVILEGED,
    tags=TAGS,
    errors={404: "No such company", 409: "client-has-history: merge it instead"},
)
async def delete_company(request: web.Request) -> None:
    company_id = path_id(request, "company_id")
    async with uow(request) as u:
        await clients.delete_company(u.session, company_id, actor=actor(request))
        await u.commit()


@api.route(
    "POST",
    "/companies/{company_id}/merge",
    summary="Merge another company into this one (legal entities, members, deals... move here)",
    body=ClientMergeInput,
    response=CompanyOut,
    tags=TAGS,
    errors={403: "Read-only for you", 404: "No such company", 422: "Cannot merge into itself"},
)
async def merge_companies(request: web.Request, body: ClientMergeInput) -> CompanyOut:
    user, crm = actor(request), rules(request)
    survivor_id = path_id(request, "company_id")
    async with uow(request) as u:
        await clients.get_company(u.session, survivor_id, actor=user, rules=crm, write=True)
        loser = await clients.get_company(
            u.session, body.loser_id, actor=user, rules=crm, write=True
        )
        loser_responsible = loser.responsible_id
        survivor = await clients.merge_companies(u.session, survivor_id, body.loser_id, actor=user)
        u.emit(
            events.merged(
                "company",
                survivor.id,
                body.loser_id,
                survivor.responsible_id,
                user.id,
                loser_responsible,
            )
        )
        await u.commit()
        return await _company_out(u.session, survivor)


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
        await clients.get_company(u.session, company_id, actor=actor(request), rules=rules(request))
        return GroupOut(
            company_id=company_id,
            top_head_id=await clients.top_head_id(u.session, company_id),
            company_ids=await clients.group_company_ids(u.session, company_id),
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
        company = await clients.get_company(
            u.session, company_id, actor=user, rules=crm, write=True
        )
        entity = await clients.add_legal_entity(u.session, company_id, body, actor=user)
        reqs = await clients.requisites_history(u.session, entity.id, include_retired=False)
        u.emit(
            events.updated(
                "company", company_id, ("legal_entities",), company.responsible_id, user.id
            )
        )
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
        company = await _company_of_entity(u.session, entity_id, user, crm, write=True)
        entity = await clients.update_legal_entity(u.session, entity_id, body)
        reqs = await clients.requisites_history(u.session, entity_id, include_retired=False)
        u.emit(
            events.updated(
                "company", company.id, ("legal_entities",), company.responsible_id, user.id
            )
        )
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
    user, crm = actor(request), rules(request)
    entity_id = path_id(request, "legal_entity_id")
    async with uow(request) as u:
        await _company_of_entity(u.session, entity_id, user, crm, write=False)
        rows = await clients.requisites_history(
            u.session, entity_id, include_retired=query.include_retired
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
    user, crm = actor(request), rules(request)
    entity_id = path_id(request, "legal_entity_id")
    async with uow(request) as u:
        company = await _company_of_entity(u.session, entity_id, user, crm, write=True)
        row = await clients.add_requisites(u.session, entity_id, body, actor=user)
        u.emit(
            events.updated("company", company.id, ("requisites",), company.responsible_id, user.id)
        )
        await u.commit()
        return RequisitesOut.model_validate(row)


async def _requisites_company(
    session: Any, requisites_id: int, user: User, crm: CrmRules
) -> Company:
    row = await clients.get_requisites(session, requisites_id)
    return await _company_of_entity(session, row.legal_entity_id, user, crm, write=True)


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
    user, crm = actor(request), rules(request)
    requisites_id = path_id(request, "requisites_id")
    async with uow(request) as u:
        company = await _requisites_company(u.session, requisites_id, user, crm)
        row = await clients.change_requisites(u.session, requisites_id, body, actor=user)
        u.emit(
            events.updated("company", company.id, ("requisites",), company.responsible_id, user.id)
        )
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
    user, crm = actor(request), rules(request)
    requisites_id = path_id(request, "requisites_id")
    async with uow(request) as u:
        company = await _requisites_company(u.session, requisites_id, user, crm)
        row = await clients.retire_requisites(u.session, requisites_id)
        u.emit(
            events.updated("company", company.id, ("requisites",), company.responsible_id, user.id)
        )
        await u.commit()
        return RequisitesOut.model_validate(row)


# ---------------------------------------------------------------- the screen-pop lookup


@api.route(
    "GET",
    "/clients/lookup",
    summary="Who calls from this number (any format): the screen-pop lookup",
    query=LookupQuery,
    response=LookupOut,
    tags=TAGS,
)
async def lookup(request: web.Request, query: LookupQuery) -> LookupOut:
    crm = rules(request)
    async with uow(request) as u:
        match = await clients.find_client_by_phone(
            u.session, query.phone, region=crm.default_region, rules=crm
        )
    return LookupOut(
        phone=try_normalize_phone(query.phone, crm.default_region),
        match=ClientMatchOut(**match.__dict__) if match is not None else None,
    )
