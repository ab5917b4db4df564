"""The client card (contact, company or lead), rendered on the server and edited in place with
htmx: every field opens its own small form, saved through the crm_core service the REST API
uses (so validation, duplicates, access and events are the API's), and a refusal is shown in
Russian next to the field. A lead's card has the stage bar with the gate explained before the
click, and the conversion with a duplicate preview."""

from __future__ import annotations

import contextlib
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from multidict import MultiDict
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS
from contact_center.web import card_fields as cf
from contact_center.web import card_links, listing, requisites, timeline
from contact_center.web.card_subjects import Subject, change, client_names, load
from contact_center.web.leads import client_type_options, potential_options, stage_names
from contact_center.web.shell import (
    HEADS,
    Formatter,
    allowed,
    hx_redirect,
    is_partial,
    language,
    now,
    page,
    render,
    render_error,
    t_of,
    zone,
)
from crm_core.clients.errors import ClientMerged
from crm_core.clients.service import ClientFilter, list_companies, list_contacts
from crm_core.conversations import service as conversations
from crm_core.deals import service as deals
from crm_core.errors import DomainError, NotFound
from crm_core.leads import service as leads
from crm_core.leads.errors import LeadGateMissingFields
from crm_core.leads.schemas import ConvertInput
from crm_core.rules import CrmRules
from crm_core.users.model import User

MENU = ()
CARD_KINDS = ("contact", "company", "lead")
INTERESTS = ("none", "low", "medium", "high")

# Which field of the card fills each requirement of the lead gate (the links under the bar).
REQUIREMENT_FIELD = {
    "name": "contact_name",
    "contact": "phones",
    "source": "source_id",
    "client_type": "client_type",
    "potential": "potential",
    "region": "region_id",
    "decision_maker": "decision_maker",
    "needs": "needs_products",
    "responsible": "responsible_id",
    "inn": "inn",
}


# ---------------------------------------------------------------- fields


class FieldContext:
    """What showing a field needs: the names of the reference tables, formats, options."""

    def __init__(
        self, names: listing.Names, t: Any, fmt: Formatter, rules: CrmRules, user: User
    ) -> None:
        self.names = names
        self.t = t
        self.fmt = fmt
        self.rules = rules
        self.user = user
        self.clients: dict[tuple[str, int], str] = {}  # names of the deal's contact and company
        # addresses our mail could not reach, by lower-cased address (the e-mail field)
        self.bounces: dict[str, Any] = {}

    def options(self, source: str) -> tuple[tuple[str, str], ...]:
        t = self.t
        if source == "client_type":
            return client_type_options(self.rules, t)
        if source == "region":
            return self.names.region_options()
        if source == "source":
            return self.names.source_options()
        if source == "user":
            return self.names.user_options()
        if source == "interest":
            return tuple((i, t("interest." + i)) for i in INTERESTS)
        if source == "purchase":
            return potential_options(t)
        if source == "pipeline":
            return tuple(
                (p.code, (p.name_en or p.name_ru) if self.fmt.lang == "en" else p.name_ru)
                for p in self.rules.pipelines
            )
        if source.startswith("custom:"):
            f = self.rules.custom_field(source.removeprefix("custom:"))
            if f is None:
                return ()
            return tuple((o, cf.option_label(t, f.name, o)) for o in f.options)
        return ()

    def option_text(self, source: str, value: Any) -> str:
        if value is None or value == "":
            return ""
        for key, text in self.options(source):
            if key == str(value):
                return text
        if source == "user":
            return self.names.user(value)
        return str(value)


def _money_input(value: Any) -> str:
    if value is None:
        return ""
    amount = Decimal(str(value))
    return str(amount.quantize(Decimal(1))) if amount == amount.to_integral() else str(amount)


def _yes_no(v: Any) -> str:
    return "yes" if v is True else "no" if v is False else ""


def _custom_stored(spec: cf.FieldSpec, view: Any) -> Any:
    """A configured field's stored value: a date as a date, the rest as stored."""
    assert spec.custom is not None
    value = (getattr(view, "custom", None) or {}).get(spec.custom.name)
    if spec.custom.type == "date" and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return date.fromisoformat(value)
    return value


def stored_values(spec: cf.FieldSpec, view: Any, ctx: FieldContext) -> dict[str, Any]:
    """The field's inputs as they are stored (what the edit form starts from)."""
    t = ctx.t
    yes_no = _yes_no
    if spec.custom is not None:
        value = _custom_stored(spec, view)
        if spec.kind == cf.BOOL:
            return {spec.key: yes_no(value)}
        if isinstance(value, date):
            return {spec.key: value.strftime("%d.%m.%Y")}
        return {spec.key: "" if value is None else str(value)}

    if spec.kind == cf.CLIENT:
        return {spec.key: shown(spec, view, ctx)[0]}
    if spec.kind in (cf.PHONES,):
        return {spec.key: [ctx.fmt.phone(p) for p in getattr(view, spec.key)]}
    if spec.kind == cf.EMAILS:
        return {spec.key: list(getattr(view, spec.key))}
    if spec.kind == cf.MESSENGERS:
        return {"messengers": [(m.channel, m.external_id) for m in view.messengers]}
    if spec.kind == cf.POTENTIAL:
        return {
            "potential_amount": _money_input(view.potential_amount),
            "purchase_mode": view.purchase_mode or "",
        }
    if spec.kind == cf.DECISION_MAKER:
        return {
            "decision_maker_reached": yes_no(view.decision_maker_reached),
            "decision_maker_name": view.decision_maker_name or "",
        }
    value = getattr(view, spec.key, None)
    if spec.kind == cf.BOOL:
        return {spec.key: yes_no(value)}
    if spec.kind == cf.MONEY:
        return {spec.key: _money_input(value)}
    if spec.kind == cf.DATE:
        if isinstance(value, datetime):
            value = value.astimezone(ctx.fmt.tz).date()
        return {spec.key: value.strftime("%d.%m.%Y") if value else ""}
    del t
    return {spec.key: "" if value is None else str(value)}


def typed_values(spec: cf.FieldSpec, form: MultiDict[str]) -> dict[str, Any]:
    """What the person typed, to show it again next to the refusal."""
    if spec.kind in (cf.PHONES, cf.EMAILS):
        return {spec.key: [v for v in form.getall(spec.key, []) if v.strip()]}
    if spec.kind == cf.MESSENGERS:
        pairs = zip(form.getall("channel", []), form.getall("external_id", []), strict=False)
        return {"messengers": [(c, e) for c, e in pairs if e.strip()]}
    return {k: v for k, v in form.items() if k != "csrf_token"}


def shown(spec: cf.FieldSpec, view: Any, ctx: FieldContext) -> tuple[str, list[Any]]:
    """The field as the card shows it: a text, or items (phones, e-mails, messenger ids)."""
    t, fmt = ctx.t, ctx.fmt
    if spec.kind == cf.CLIENT:
        ref = getattr(view, spec.key, None)
        if ref is None:
            return "", []
        return ctx.clients.get((spec.options, ref), ""), [(spec.options, ref)]
    if spec.custom is not None:
        value = _custom_stored(spec, view)
        if value is None or value == "":
            return "", []
        if spec.kind == cf.BOOL:
            return (t("card.yes") if value else t("card.no")), []
        if isinstance(value, date):
            return fmt.day(value), []
        if spec.custom.type == "enum":
            return cf.option_label(t, spec.custom.name, str(value)), []
        return str(value), []
    if spec.kind in (cf.PHONES, cf.EMAILS):
        return "", list(getattr(view, spec.key))
    if spec.kind == cf.MESSENGERS:
        return "", [(m.channel, m.external_id) for m in view.messengers]
    if spec.kind == cf.POTENTIAL:
        parts = [fmt.money(view.potential_amount) if view.potential_amount is not None else ""]
        if view.purchase_mode:
            parts.append(t("purchase." + view.purchase_mode))
        return " · ".join(p for p in parts if p), []
    if spec.kind == cf.DECISION_MAKER:
        reached = view.decision_maker_reached
        head = (
            t("card.dm_reached")
            if reached is True
            else t("card.dm_not_reached")
            if reached is False
            else ""
        )
        return " — ".join(p for p in (head, view.decision_maker_name or "") if p), []
    value = getattr(view, spec.key, None)
    if spec.kind == cf.BOOL:
        return (t("card.yes") if value else t("card.no")) if value is not None else "", []
    if spec.kind == cf.MONEY:
        return fmt.money(value) if value is not None else "", []
    if spec.kind == cf.DATE:
        if isinstance(value, datetime):
            value = value.astimezone(fmt.tz).date()
        return fmt.day(value) if value else "", []
    if spec.kind == cf.SELECT:
        return ctx.option_text(spec.options, value), []
    return "" if value is None else str(value), []


def field_view(
    spec: cf.FieldSpec,
    subject: Subject,
    ctx: FieldContext,
    *,
    editing: bool = False,
    values: dict[str, Any] | None = None,
    error: cf.Refusal | None = None,
) -> dict[str, Any]:
    text, items = shown(spec, subject.view, ctx)
    may = subject.can_write and (not spec.heads_only or allowed(ctx.user, HEADS))
    if subject.kind == "invoice" and subject.view.status != "issued":
        may = False
    options: tuple[tuple[str, str], ...] = ()
    if spec.custom is not None and spec.kind == cf.SELECT:
        options = ctx.options("custom:" + spec.custom.name)
    elif spec.kind == cf.SELECT:
        options = ctx.options(spec.options)
    elif spec.kind == cf.POTENTIAL:
        options = ctx.options("purchase")
    return {
        "key": spec.key,
        "label": spec.label,
        "kind": spec.kind,
        "maxlength": spec.maxlength,
        "text": text,
        "entries": items,
        "can_edit": may,
        "editing": editing and may,
        "url": f"{subject.base}/field/{spec.key}",
        "inputs": values if values is not None else stored_values(spec, subject.view, ctx),
        "options": options,
        "refers_to": spec.options if spec.kind == cf.CLIENT else "",  # contact or company
        "channels": cf.MESSENGER_CHANNELS,
        "error": error,
        "bounces": {
            address: ctx.bounces[address.lower()]
            for address in (items if spec.kind == cf.EMAILS else ())
            if isinstance(address, str) and address.lower() in ctx.bounces
        },
    }


async def field_context(
    request: web.Request, session: AsyncSession, user: User, subject: Subject | None = None
) -> FieldContext:
    ctx = FieldContext(
        await listing.names(session),
        t_of(request),
        Formatter(language(request), zone(request), now(request)),
        request.app[RULES],
        user,
    )
    if subject is not None and subject.kind == "deal":
        view = subject.view
        refs = [
            (k, i) for k, i in (("contact", view.contact_id), ("company", view.company_id)) if i
        ]
        ctx.clients = await client_names(session, refs)
    addresses = getattr(subject.view, "emails", None) if subject is not None else None
    if addresses:
        ctx.bounces = await conversations.bounces(session, list(addresses))
    return ctx


async def _client_ref(
    request: web.Request, spec: cf.FieldSpec, form: MultiDict[str], user: User
) -> dict[str, Any]:
    """The contact or company typed by name as the patch's id: the exact name among those the
    reader may see, else the only one the search finds; none or several is a refusal."""
    t = t_of(request)
    name = str(form.get(spec.key, "")).strip()
    if not name:
        return {spec.key: None}
    search = list_contacts if spec.options == "contact" else list_companies
    async with request.app[SESSIONS]() as session:
        found, total = await search(
            session, ClientFilter(q=name), actor=user, rules=request.app[RULES], limit=20
        )
    exact = [c for c in found if c.name.casefold() == name.casefold()]
    if len(exact) == 1 or (not exact and total == 1):
        return {spec.key: (exact or found)[0].id}
    key = "card.error.client_ambiguous" if exact or total > 1 else "card.error.client_not_found"
    raise cf.FieldError(t(key + "." + spec.options, name=name))


@page("cards/_suggest.html")
async def suggest(request: web.Request, user: User) -> dict[str, Any]:
    """Names of the contacts or companies the reader may see that match what he types (the
    options of a deal's contact and company fields)."""
    kind = request.match_info["kind"]
    typed = next((v for v in request.query.values() if v.strip()), "").strip()[:200]
    names: list[str] = []
    if len(typed) >= 2:
        search = list_contacts if kind == "contact" else list_companies
        async with request.app[SESSIONS]() as session:
            found, _ = await search(
                session, ClientFilter(q=typed), actor=user, rules=request.app[RULES], limit=10
            )
        names = [c.name for c in found]
    return {"names": names}


async def _subject(request: web.Request, session: AsyncSession, user: User) -> Subject:
    kind = request.match_info["kind"]
    record_id = int(request.match_info["id"])
    today = now(request).astimezone(zone(request)).date()
    return await load(session, kind, record_id, user=user, rules=request.app[RULES], today=today)


def _spec(request: web.Request) -> cf.FieldSpec:
    spec = cf.spec_of(request.match_info["kind"], request.match_info["field"], request.app[RULES])
    if spec is None:
        raise web.HTTPNotFound()
    return spec


@page("cards/_field.html")
async def field_get(request: web.Request, user: User) -> dict[str, Any]:
    """The field as shown (also the "cancel" of its form)."""
    spec = _spec(request)
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user)
        ctx = await field_context(request, session, user, subject)
    return {"field": field_view(spec, subject, ctx)}


@page("cards/_field.html")
async def field_edit(request: web.Request, user: User) -> dict[str, Any]:
    """The field's form."""
    spec = _spec(request)
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user)
        ctx = await field_context(request, session, user, subject)
    return {"field": field_view(spec, subject, ctx, editing=True)}


@page("cards/_field.html")
async def field_save(request: web.Request, user: User) -> web.StreamResponse:
    """Save one field through the service; 422 with the form and the refusal next to it."""
    spec = _spec(request)
    t = t_of(request)
    form = MultiDict((k, v) for k, v in (await request.post()).items() if isinstance(v, str))
    kind = request.match_info["kind"]
    record_id = int(request.match_info["id"])
    refusal: cf.Refusal | None = None
    try:
        if spec.kind == cf.CLIENT:
            values = await _client_ref(request, spec, form, user)
        else:
            values = cf.values_from_form(spec, form, t)
        async with UnitOfWork(request) as u:
            events = await change(
                u.session,
                kind,
                record_id,
                values,
                user=user,
                rules=request.app[RULES],
                now=now(request),
                tz=zone(request),
            )
            u.emit(*events)
            await u.commit()
    except cf.FieldError as exc:
        refusal = cf.Refusal(exc.message)
    except ValidationError as exc:
        refusal = cf.Refusal(cf.validation_message(exc, spec, t))
    except NotFound:
        raise
    except DomainError as exc:
        async with request.app[SESSIONS]() as session:
            names = await client_names(session, cf.duplicate_ids(exc.details))
        refusal = cf.refusal_of(exc, names, t)
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user)
        ctx = await field_context(request, session, user, subject)
    if refusal is not None:
        view = field_view(
            spec, subject, ctx, editing=True, values=typed_values(spec, form), error=refusal
        )
        return await render("cards/_field.html", request, {"field": view}, status=422)
    data: dict[str, Any] = {"field": field_view(spec, subject, ctx)}
    if kind != "invoice":
        # The header names the record by these fields: it follows the edit, no reload.
        data["card_title"] = subject.name or t("pop.no_name")
    resp = await render("cards/_field.html", request, data)
    if spec is cf.PIPELINE:  # another pipeline: other stages, the page is read again
        resp.headers["HX-Refresh"] = "true"
    resp.headers["HX-Trigger"] = json.dumps(
        {"card-changed": None, "cc-toast": {"text": t("card.saved")}}
    )
    return resp


# ---------------------------------------------------------------- the lead's stage bar


def lead_bar(
    subject: Subject, rules: CrmRules, lang: str, t: Any, *, refused: str | None = None
) -> dict[str, Any]:
    """The lead's stages with what each later stage still needs (the gate, before the click).
    After the gate refused a move to ``refused``, the gate line speaks of that stage (the one
    sentence of the refusal, its fields to fill)."""
    view = subject.view
    names = stage_names(rules, lang)
    funnel = [s for s in rules.lead_stages if s.kind != "lost"]
    codes = [s.code for s in funnel]
    current = codes.index(view.stage) if view.stage in codes else -1
    converted = view.converted_at is not None or (current >= 0 and funnel[current].kind == "won")
    stages = []
    for i, s in enumerate(funnel):
        missing = view.gate.get(s.code, [])
        stages.append(
            {
                "code": s.code,
                "name": names[s.code],
                "kind": s.kind,
                "state": "done" if i < current else "current" if i == current else "todo",
                "missing": [t("requirement." + m) for m in missing],
            }
        )
    next_stage = None
    target = codes.index(refused) if refused in codes and view.gate.get(refused) else current + 1
    if not converted and 0 <= current < len(funnel) - 1:
        nxt = funnel[target]
        missing = view.gate.get(nxt.code, [])
        next_stage = {
            "refused": refused == nxt.code,
            "code": nxt.code,
            "name": names[nxt.code],
            "missing": [
                {
                    "label": t("requirement." + m),
                    "field": cf.requirement_field(m, REQUIREMENT_FIELD),
                }
                for m in missing
            ],
        }
    junk = [s for s in rules.lead_stages if s.kind == "lost"]
    lost = view.stage in {s.code for s in junk}
    return {
        "stages": stages,
        "next": next_stage,
        "converted": converted,
        "lost": lost,
        "lost_name": names.get(view.stage, view.stage) if lost else "",
        "junk_reason": t("junk_reason." + view.junk_reason) if view.junk_reason else "",
        "junk_stages": [(s.code, names[s.code]) for s in junk],
        "junk_reasons": [(r, t("junk_reason." + r)) for r in rules.junk_reasons],
    }


async def _bar_response(
    request: web.Request, user: User, *, error: str | None = None, refused: str | None = None
) -> web.StreamResponse:
    """The bar; after a refusal (422) either ``error`` under it or, for the gate, the gate line
    naming the ``refused`` stage's missing fields (said once, not twice)."""
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user)
    bar = lead_bar(subject, request.app[RULES], language(request), t_of(request), refused=refused)
    if refused and not (bar["next"] and bar["next"]["refused"]):
        refused = None  # the gate line cannot say it: the sentence under the bar does
    data = {"subject": subject, "bar": bar, "bar_error": None if refused else error}
    status = 422 if error or refused else 200
    return await render("cards/_lead_bar.html", request, data, status=status)


@page("cards/_lead_bar.html")
async def lead_bar_get(request: web.Request, user: User) -> web.StreamResponse:
    return await _bar_response(request, user)


@page("cards/_lead_bar.html")
async def lead_move(request: web.Request, user: User) -> web.StreamResponse:
    """Move the lead from the bar; the gate's refusal names the missing fields in Russian."""
    from contact_center.i18n import error_text

    form = await request.post()
    stage = str(form.get("stage", ""))
    reason = str(form.get("reason", "")) or None
    t = t_of(request)
    try:
        async with UnitOfWork(request) as u:
            _, events = await leads.move_lead(
                u.session,
                int(request.match_info["id"]),
                stage,
                reason=reason,
                actor=user,
                rules=request.app[RULES],
                now=now(request),
            )
            u.emit(*events)
            await u.commit()
    except NotFound:
        raise
    except LeadGateMissingFields as exc:
        text = error_text(t, exc.error_id, exc.details)
        return await _bar_response(request, user, error=text, refused=stage)
    except DomainError as exc:
        return await _bar_response(request, user, error=error_text(t, exc.error_id, exc.details))
    resp = await _bar_response(request, user)
    resp.headers["HX-Trigger"] = json.dumps(
        {"card-changed": None, "cc-toast": {"text": t("card.moved")}}
    )
    return resp


# ---------------------------------------------------------------- conversion


async def _convert_data(
    request: web.Request, session: AsyncSession, subject: Subject
) -> dict[str, Any]:
    """The conversion dialog: which existing contact and company the lead will be attached to
    (the duplicates its phones, e-mails and INN point at), or what will be created."""
    t = t_of(request)
    view = subject.view
    dups = view.duplicates or []
    names = await client_names(
        session, [(d.type, d.id) for d in dups if d.id is not None and d.type in CARD_KINDS]
    )
    choices: dict[str, list[dict[str, Any]]] = {"contact": [], "company": []}
    hidden: list[str] = []
    seen: set[tuple[str, int]] = set()
    fmt = Formatter(language(request), zone(request), now(request))
    for d in sorted(dups, key=lambda d: (d.matched_on != "inn", d.id or 0)):
        value = fmt.phone(d.value) if d.matched_on == "phone" else d.value
        what = t("card.matched." + d.matched_on)
        if d.id is None:
            hidden.append(t("card.convert.hidden", what=what, value=value))
            continue
        if (d.type, d.id) in seen or d.type not in choices:
            continue
        seen.add((d.type, d.id))
        choices[d.type].append(
            {
                "id": d.id,
                "name": names.get((d.type, d.id), f"#{d.id}"),
                "why": t("card.convert.belongs", what=what, value=value),
                "url": f"/clients/{d.type}/{d.id}",
            }
        )
    rules = request.app[RULES]
    pipelines = [
        (p.code, (p.name_en or p.name_ru) if language(request) == "en" else p.name_ru)
        for p in rules.pipelines
    ]
    won = next((s.code for s in rules.lead_stages if s.kind == "won"), "")
    missing = [
        {"label": t("requirement." + m), "field": cf.requirement_field(m, REQUIREMENT_FIELD)}
        for m in view.gate.get(won, [])
    ]
    return {
        "subject": subject,
        "lead": view,
        "missing": missing,
        "choices": choices,
        "hidden": hidden,
        "pipelines": pipelines,
        "deal_title": view.title or view.company_name or view.contact_name or "",
        "deal_amount": _money_input(view.potential_amount),
    }


@page("cards/_convert.html")
async def convert_form(request: web.Request, user: User) -> dict[str, Any]:
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user)
        return await _convert_data(request, session, subject)


@page("cards/_convert.html")
async def convert(request: web.Request, user: User) -> web.StreamResponse:
    """Convert the lead (the existing conversion service); then open the deal's card."""
    from contact_center.i18n import error_text

    t = t_of(request)
    form = await request.post()

    def chosen(name: str) -> int | None:
        raw = str(form.get(name, ""))
        return int(raw) if raw.isdigit() else None

    lead_id = int(request.match_info["id"])
    error: str | None = None
    target = ""
    try:
        amount = cf.parse_money(str(form.get("deal_amount", "")), t("card.amount"), t)
        options = ConvertInput(
            contact_id=chosen("contact_id"),
            company_id=chosen("company_id"),
            create_deal=form.get("create_deal") == "1",
            pipeline=str(form.get("pipeline", "")) or None,
            deal_title=str(form.get("deal_title", "")).strip() or None,
            deal_amount=amount,
        )
        async with UnitOfWork(request) as u:
            result, events = await leads.convert_lead(
                u.session, lead_id, options, actor=user, rules=request.app[RULES], now=now(request)
            )
            u.emit(*events)
            await u.commit()
            if result.deal is not None:
                target = f"/deals/{result.deal.id}"
            elif result.contact is not None:
                target = f"/clients/contact/{result.contact.id}"
            elif result.company is not None:
                target = f"/clients/company/{result.company.id}"
    except cf.FieldError as exc:
        error = exc.message
    except ValidationError:
        error = t("card.error.invalid", field=t("card.convert.deal"))
    except NotFound:
        raise
    except DomainError as exc:
        if exc.error_id == "lead-duplicate-belongs-to-another-manager":
            error = t("card.convert.not_yours")
        else:
            error = error_text(t, exc.error_id, exc.details)
    if error is not None:
        async with request.app[SESSIONS]() as session:
            subject = await _subject(request, session, user)
            data = await _convert_data(request, session, subject)
        data["convert_error"] = error
        return await render("cards/_convert.html", request, data, status=422)
    location = target or f"/clients/lead/{lead_id}"
    if is_partial(request):
        # A whole new page (the deal's), loaded as one: its scripts and WebSocket start afresh.
        return web.Response(status=204, headers={"HX-Redirect": location})
    return hx_redirect(request, location)


# ---------------------------------------------------------------- the page


async def client_deals(
    session: AsyncSession, subject: Subject, user: User, rules: CrmRules, lang: str
) -> list[dict[str, Any]]:
    """The deals of a contact or company that the reader may read (the API's listing)."""
    flt = (
        deals.DealFilter(contact_id=subject.id)
        if subject.kind == "contact"
        else deals.DealFilter(company_id=subject.id)
    )
    rows, _ = await deals.list_deals(session, flt, actor=user, rules=rules, limit=50)
    return [
        {
            "id": d.id,
            "title": d.title,
            "stage": (d.stage.name_en or d.stage.name_ru) if lang == "en" else d.stage.name_ru,
            "status": d.status,
            "amount": d.amount,
        }
        for d in await deals.describe(session, rows)
    ]


async def card_page_data(
    request: web.Request, session: AsyncSession, subject: Subject, user: User
) -> dict[str, Any]:
    t = t_of(request)
    ctx = await field_context(request, session, user, subject)
    groups = [
        (label, [field_view(spec, subject, ctx) for spec in specs])
        for label, specs in cf.groups_of(subject.kind, request.app[RULES])
    ]
    data: dict[str, Any] = {
        "title": subject.name or t("card.title." + subject.kind),
        "kind": subject.kind,
        "subject": subject,
        "view": subject.view,
        "groups": groups,
        "responsible": ctx.names.user(subject.view.responsible_id),
        "first_phone": (getattr(subject.view, "phones", None) or [None])[0],
    }
    data.update(await timeline.side_data(request, session, subject, user))
    lang = language(request)
    if subject.kind == "lead":
        data["bar"] = lead_bar(subject, request.app[RULES], lang, t)
        lead = subject.view
        refs = [
            (k, i) for k, i in (("contact", lead.contact_id), ("company", lead.company_id)) if i
        ]
        data["lead_links"] = await client_names(session, refs)
        similar: list[dict[str, Any]] = []
        hidden: list[str] = []
        if not data["bar"]["converted"]:
            preview = await _convert_data(request, session, subject)
            similar = preview["choices"]["contact"] + preview["choices"]["company"]
            hidden = preview["hidden"]
        data["lead_similar"], data["lead_hidden"] = similar, hidden
        data["lead_deal"] = None
        if lead.deal_id:
            with contextlib.suppress(NotFound):  # a deal the reader may not see is not named
                data["lead_deal"] = await deals.get_deal(
                    session, lead.deal_id, actor=user, rules=request.app[RULES]
                )
    if subject.kind in ("contact", "company"):
        data["deals"] = await client_deals(session, subject, user, request.app[RULES], lang)
    if subject.kind == "company":
        data.update(await requisites.company_data(request, session, subject, user))
    return data


@page("cards/client.html")
async def client_card(request: web.Request, user: User) -> Any:
    kind = request.match_info["kind"]
    card_id = int(request.match_info["id"])
    try:
        async with request.app[SESSIONS]() as session:
            subject = await _subject(request, session, user)
            data = await card_page_data(request, session, subject, user)
    except ClientMerged as exc:
        survivor = exc.details.get("merged_into_id")
        if isinstance(survivor, int):
            raise web.HTTPSeeOther(f"/clients/{kind}/{survivor}") from None
        raise
    except NotFound:
        return await render_error(request, 404, t_of(request)("card.not_found"))
    data["back"] = {"lead": "/leads"}.get(kind, f"/clients?kind={kind}")
    data["menu_path"] = "/leads" if kind == "lead" else "/clients"
    data["_page"] = {"view": "card", "kind": kind, "id": card_id}
    if is_partial(request):
        return data
    return data


def routes(app: web.Application) -> None:
    app.router.add_get(r"/clients/{kind:contact|company|lead}/{id:\d{1,18}}", client_card)
    fields = (
        r"/card/{kind:contact|company|lead|deal|invoice}/{id:\d{1,18}}/field/{field:[a-z_-]{1,80}}"
    )
    app.router.add_get(fields, field_get)
    app.router.add_get(fields + "/edit", field_edit)
    app.router.add_post(fields, field_save)
    app.router.add_get(r"/card/suggest/{kind:contact|company}", suggest)
    app.router.add_get(r"/card/{kind:lead}/{id:\d{1,18}}/stages", lead_bar_get)
    app.router.add_post(r"/card/{kind:lead}/{id:\d{1,18}}/stage", lead_move)
    app.router.add_get(r"/card/{kind:lead}/{id:\d{1,18}}/convert", convert_form)
    app.router.add_post(r"/card/{kind:lead}/{id:\d{1,18}}/convert", convert)
    timeline.routes(app)
    requisites.routes(app)
    card_links.routes(app)
