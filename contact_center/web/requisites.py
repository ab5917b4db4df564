"""A company's structure on its card: the head organisation and member companies, its legal
entities and their requisites (ИНН, КПП, ОГРН, БИК, р/с, к/с, checked by the clients service's
checksums), changed as new sets that retire the old ones, whose history stays visible."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS
from contact_center.web.card_fields import Refusal, duplicate_ids, refusal_of
from contact_center.web.card_subjects import Subject, client_names, load
from contact_center.web.shell import now, page, render, t_of, zone
from crm_core.clients import service as clients
from crm_core.clients.model import Company
from crm_core.clients.schemas import CompanyPatch, LegalEntityInput, RequisitesInput
from crm_core.errors import DomainError, NotFound
from crm_core.users.model import User

REQUISITE_FIELDS = (
    "full_name",
    "inn",
    "kpp",
    "ogrn",
    "legal_address",
    "actual_address",
    "bank_name",
    "bik",
    "settlement_account",
    "correspondent_account",
)


async def company_data(
    request: web.Request, session: AsyncSession, subject: Subject, user: User
) -> dict[str, Any]:
    """The head organisation, members, legal entities with live requisites and their history."""
    rules = request.app[RULES]
    view = subject.view
    head = None
    if view.head_id:
        head_row = await session.get(Company, view.head_id)
        if head_row is not None:
            head = {"id": head_row.id, "name": head_row.name}
    members = []
    if view.member_ids:
        members = [
            {"id": i, "name": n}
            for i, n in await session.execute(
                select(Company.id, Company.name)
                .where(Company.id.in_(view.member_ids))
                .order_by(Company.name)
            )
        ]
    entities = []
    for le in view.legal_entities:
        history = await clients.requisites_history(
            session, le.id, actor=user, rules=rules, include_retired=True
        )
        rows = [
            {
                "id": r.id,
                "label": r.label,
                "retired_at": r.retired_at,
                **{name: getattr(r, name) for name in REQUISITE_FIELDS},
            }
            for r in history
        ]
        entities.append(
            {
                "id": le.id,
                "name": le.name,
                "is_active": le.is_active,
                "live": [r for r in rows if r["retired_at"] is None],
                "retired": sorted(
                    (r for r in rows if r["retired_at"] is not None),
                    key=lambda r: r["retired_at"],
                    reverse=True,
                ),
            }
        )
    return {"head": head, "members": members, "entities": entities}


def _form_values(form: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in REQUISITE_FIELDS:
        raw = str(form.get(name, "")).strip()
        values[name] = raw or None
    values["label"] = str(form.get("label", "")).strip()
    return values


async def _legal_response(
    request: web.Request,
    user: User,
    company_id: int,
    *,
    error: Refusal | None = None,
    error_for: str = "",
    typed: dict[str, Any] | None = None,
) -> web.StreamResponse:
    today = now(request).astimezone(zone(request)).date()
    async with request.app[SESSIONS]() as session:
        subject = await load(
            session, "company", company_id, user=user, rules=request.app[RULES], today=today
        )
        data = await company_data(request, session, subject, user)
    data.update(subject=subject, legal_error=error, error_for=error_for, typed=typed or {})
    resp = await render("cards/_legal.html", request, data, status=422 if error else 200)
    if error is None:
        resp.headers["HX-Trigger"] = json.dumps(
            {"card-changed": None, "cc-toast": {"text": t_of(request)("card.saved")}}
        )
    return resp


async def _refusal(request: web.Request, exc: DomainError) -> Refusal:
    async with request.app[SESSIONS]() as session:
        names = await client_names(session, duplicate_ids(exc.details))
    return refusal_of(exc, names, t_of(request))


@page("cards/_legal.html")
async def save_requisites(request: web.Request, user: User) -> web.StreamResponse:
    """A new legal entity with its requisites, new requisites of an entity, or a new set that
    replaces a live one (the old one is retired and kept in the history)."""
    t = t_of(request)
    company_id = int(request.match_info["id"])
    form = await request.post()
    typed = _form_values(form)
    target = str(form.get("target", "new"))  # new | entity:<id> | replace:<id>
    rules = request.app[RULES]
    try:
        data = RequisitesInput.model_validate(
            {**typed, "full_name": typed["full_name"] or str(form.get("entity_name", "")).strip()}
        )
        async with UnitOfWork(request) as u:
            if target.startswith("replace:"):
                requisites_id = int(target.split(":", 1)[1])
                row = await clients.get_requisites(
                    u.session, requisites_id, actor=user, rules=rules, write=True
                )
                entity = await clients.get_legal_entity(
                    u.session, row.legal_entity_id, actor=user, rules=rules
                )
                if entity.company_id != company_id:
                    raise web.HTTPNotFound()
                _, events = await clients.change_requisites(
                    u.session, requisites_id, data, actor=user, rules=rules
                )
            elif target.startswith("entity:"):
                entity_id = int(target.split(":", 1)[1])
                entity = await clients.get_legal_entity(
                    u.session, entity_id, actor=user, rules=rules
                )
                if entity.company_id != company_id:
                    raise web.HTTPNotFound()
                _, events = await clients.add_requisites(
                    u.session, entity_id, data, actor=user, rules=rules
                )
            else:
                name = str(form.get("entity_name", "")).strip() or data.full_name
                _, events = await clients.add_legal_entity(
                    u.session,
                    company_id,
                    LegalEntityInput(name=name[:300], requisites=[data]),
                    actor=user,
                    rules=rules,
                )
            u.emit(*events)
            await u.commit()
    except ValidationError as exc:
        errors = exc.errors()
        loc = [str(x) for x in errors[0]["loc"]] if errors else []
        label = t("card." + loc[-1]) if loc else t("card.requisites")
        if loc and loc[-1] == "full_name":
            message = t("card.error.required", field=label)
        else:
            message = t("card.error.invalid", field=label)
        return await _legal_response(
            request, user, company_id, error=Refusal(message), error_for=target, typed=typed
        )
    except NotFound:
        raise
    except DomainError as exc:
        return await _legal_response(
            request,
            user,
            company_id,
            error=await _refusal(request, exc),
            error_for=target,
            typed=typed,
        )
    return await _legal_response(request, user, company_id)


@page("cards/_legal.html")
async def set_head(request: web.Request, user: User) -> web.StreamResponse:
    """Make the company a member of a head organisation found by its name (or none)."""
    t = t_of(request)
    company_id = int(request.match_info["id"])
    form = await request.post()
    query = str(form.get("head", "")).strip()
    rules = request.app[RULES]
    head_id: int | None = None
    if query:
        async with request.app[SESSIONS]() as session:
            found, total = await clients.list_companies(
                session,
                clients.ClientFilter(q=query),
                actor=user,
                rules=rules,
                limit=2,
                offset=0,
            )
        exact = [c for c in found if c.name.casefold() == query.casefold()]
        pick = exact[:1] or (found if total == 1 else [])
        if not pick:
            message = t("card.error.head_not_found", name=query)
            return await _legal_response(
                request, user, company_id, error=Refusal(message), error_for="head"
            )
        head_id = pick[0].id
    try:
        async with UnitOfWork(request) as u:
            _, events = await clients.update_company(
                u.session, company_id, CompanyPatch(head_id=head_id), actor=user, rules=rules
            )
            u.emit(*events)
            await u.commit()
    except NotFound:
        raise
    except DomainError as exc:
        return await _legal_response(
            request, user, company_id, error=await _refusal(request, exc), error_for="head"
        )
    return await _legal_response(request, user, company_id)


def routes(app: web.Application) -> None:
    app.router.add_post(r"/card/company/{id:\d{1,18}}/requisites", save_requisites)
    app.router.add_post(r"/card/company/{id:\d{1,18}}/head", set_head)
