"""The deal card (``/deals/ID``) and the invoice card (``/invoices/ID``): fields edited in
place (the same field forms as the client card), the deal's stage bar (a lost stage asks for
the reason), its stage history, its invoices (issue one from the card), pay or cancel an
invoice, and the timeline with tasks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import UnitOfWork
from contact_center.i18n import error_text
from contact_center.keys import RULES, SESSIONS
from contact_center.web import card_fields as cf
from contact_center.web import timeline
from contact_center.web.card_subjects import Subject, client_names, load
from contact_center.web.cards import field_context, field_view
from contact_center.web.shell import language, now, page, render, render_error, t_of, zone
from crm_core import access
from crm_core.clients.model import Company, Contact, Phone
from crm_core.deals import service as deals
from crm_core.deals.model import Deal, PipelineStage
from crm_core.deals.pipelines import configured_stage_codes, stages_of
from crm_core.errors import DomainError, NotFound
from crm_core.invoices import service as invoices
from crm_core.invoices.model import Invoice
from crm_core.invoices.schemas import InvoiceInput
from crm_core.rules import CrmRules
from crm_core.users.model import User

MENU = ()


async def _subject(request: web.Request, session: AsyncSession, user: User, kind: str) -> Subject:
    today = now(request).astimezone(zone(request)).date()
    return await load(
        session,
        kind,
        int(request.match_info["id"]),
        user=user,
        rules=request.app[RULES],
        today=today,
    )


def _name(stage: PipelineStage, lang: str) -> str:
    return (stage.name_en or stage.name_ru) if lang == "en" else stage.name_ru


async def deal_bar(request: web.Request, session: AsyncSession, subject: Subject) -> dict[str, Any]:
    """The deal's pipeline as a bar: done, current and later stages; won and lost at the end."""
    rules = request.app[RULES]
    lang = language(request)
    t = t_of(request)
    view = subject.view
    configured = configured_stage_codes(rules, view.pipeline)
    stages = [
        s
        for s in await stages_of(session, view.pipeline_id)
        if s.code in configured or s.id == view.stage.id
    ]
    open_ones = [s for s in stages if s.kind != "lost"]
    ids = [s.id for s in open_ones]
    current = ids.index(view.stage.id) if view.stage.id in ids else -1
    return {
        "stages": [
            {
                "code": s.code,
                "name": _name(s, lang),
                "kind": s.kind,
                "state": "done" if i < current else "current" if i == current else "todo",
            }
            for i, s in enumerate(open_ones)
        ],
        "lost_stages": [(s.code, _name(s, lang)) for s in stages if s.kind == "lost"],
        "lost_reasons": [(r, t("lost_reason." + r)) for r in rules.lost_reasons],
        "status": view.status,
        "stage_name": _name_of(view.stage, lang),
        "lost_reason": t("lost_reason." + view.lost_reason) if view.lost_reason else "",
    }


def _name_of(stage: Any, lang: str) -> str:
    return str((stage.name_en or stage.name_ru) if lang == "en" else stage.name_ru)


async def deal_invoices(session: AsyncSession, deal_id: int, today: Any, t: Any) -> list[Any]:
    rows = await session.scalars(
        select(Invoice).where(Invoice.deal_id == deal_id).order_by(Invoice.issued_on.desc())
    )
    out = []
    for inv in rows:
        state = inv.status
        if inv.status == "issued" and inv.due_on < today:
            state = "overdue"
        out.append(
            {
                "id": inv.id,
                "number": inv.number,
                "amount": inv.amount,
                "due_on": inv.due_on,
                "state": state,
                "state_text": t("invoice.status." + state),
            }
        )
    return out


async def _client_phone(
    session: AsyncSession, view: Any, user: User, rules: CrmRules
) -> str | None:
    """The number the card's call button dials: the deal's contact's first phone, else its
    company's; only a client the reader may read (as his own card would show it)."""
    for model, key, owner_id in (
        (Contact, Phone.contact_id, view.contact_id),
        (Company, Phone.company_id, view.company_id),
    ):
        if owner_id is None:
            continue
        responsible = await session.scalar(select(model.responsible_id).where(model.id == owner_id))
        if not access.can_read(user, responsible, rules):
            continue
        number = await session.scalar(
            select(Phone.e164).where(key == owner_id).order_by(Phone.id).limit(1)
        )
        if number:
            return number
    return None


async def _deal_page_data(
    request: web.Request, session: AsyncSession, subject: Subject, user: User
) -> dict[str, Any]:
    t = t_of(request)
    ctx = await field_context(request, session, user, subject)
    view = subject.view
    today = now(request).astimezone(zone(request)).date()
    refs = [(k, i) for k, i in (("contact", view.contact_id), ("company", view.company_id)) if i]
    lang = language(request)
    history = []
    if view.history:
        ids = {h.to_stage_id for h in view.history} | {
            h.from_stage_id for h in view.history if h.from_stage_id
        }
        stage_rows = {
            s.id: s
            for s in await session.scalars(select(PipelineStage).where(PipelineStage.id.in_(ids)))
        }
        for h in reversed(view.history):
            history.append(
                {
                    "at": h.at,
                    "from": _name(stage_rows[h.from_stage_id], lang) if h.from_stage_id else None,
                    "to": _name(stage_rows[h.to_stage_id], lang),
                    "who": ctx.names.user(h.user_id),
                    "reason": t("lost_reason." + h.reason) if h.reason else "",
                }
            )
    data: dict[str, Any] = {
        "title": subject.name,
        "kind": "deal",
        "first_phone": await _client_phone(session, view, user, request.app[RULES]),
        "subject": subject,
        "view": view,
        "fields": [
            field_view(spec, subject, ctx)
            for _, specs in cf.groups_of("deal", request.app[RULES])
            for spec in specs
        ],
        "responsible": ctx.names.user(view.responsible_id),
        "clients": await client_names(session, refs),
        "bar": await deal_bar(request, session, subject),
        "history": history,
        "invoices": await deal_invoices(session, subject.id, today, t),
        "invoice_due": (today + timedelta(days=5)).strftime("%d.%m.%Y"),
    }
    data.update(await timeline.side_data(request, session, subject, user))
    return data


@page("cards/deal.html")
async def deal_card(request: web.Request, user: User) -> Any:
    try:
        async with request.app[SESSIONS]() as session:
            subject = await _subject(request, session, user, "deal")
            data = await _deal_page_data(request, session, subject, user)
    except NotFound:
        return await render_error(request, 404, t_of(request)("card.not_found"))
    data["_page"] = {"view": "card", "kind": "deal", "id": subject.id}
    return data


async def _deal_rerender(
    request: web.Request,
    user: User,
    template: str,
    *,
    error: str | None = None,
    toast: str = "card.saved",
    **extra: Any,
) -> web.StreamResponse:
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user, "deal")
        data = await _deal_page_data(request, session, subject, user)
    data.update(extra)
    data["deal_error"] = error
    resp = await render(template, request, data, status=422 if error else 200)
    if error is None:
        resp.headers["HX-Trigger"] = json.dumps(
            {"card-changed": None, "cc-toast": {"text": t_of(request)(toast)}}
        )
    return resp


@page("cards/_deal_bar.html")
async def deal_move(request: web.Request, user: User) -> web.StreamResponse:
    """Move the deal from its bar (a lost stage needs one of the reasons)."""
    t = t_of(request)
    form = await request.post()
    try:
        async with UnitOfWork(request) as u:
            _, events = await deals.move_deal(
                u.session,
                int(request.match_info["id"]),
                str(form.get("stage", "")),
                reason=str(form.get("reason", "")) or None,
                actor=user,
                rules=request.app[RULES],
                now=now(request),
            )
            u.emit(*events)
            await u.commit()
    except NotFound:
        raise
    except DomainError as exc:
        message = (
            t("card.lost_reason_needed")
            if exc.error_id == "deal-lost-reason-required"
            else error_text(t, exc.error_id, exc.details)
        )
        return await _deal_rerender(request, user, "cards/_deal_bar.html", error=message)
    return await _deal_rerender(request, user, "cards/_deal_bar.html", toast="card.moved")


@page("cards/_deal_bar.html")
async def deal_bar_get(request: web.Request, user: User) -> web.StreamResponse:
    async with request.app[SESSIONS]() as session:
        subject = await _subject(request, session, user, "deal")
        data = await _deal_page_data(request, session, subject, user)
    return await render("cards/_deal_bar.html", request, data)


@page("cards/_deal_invoices.html")
async def issue_invoice(request: web.Request, user: User) -> web.StreamResponse:
    """Issue an invoice for the deal from its card."""
    t = t_of(request)
    form = await request.post()
    typed = {k: str(form.get(k, "")).strip() for k in ("number", "amount", "due_on")}
    today = now(request).astimezone(zone(request)).date()
    try:
        if not typed["number"]:
            raise cf.FieldError(t("card.error.required", field=t("card.invoice_number")))
        amount = cf.parse_money(typed["amount"], t("card.amount"), t)
        if amount is None:
            raise cf.FieldError(t("card.error.required", field=t("card.amount")))
        due = cf.parse_date(typed["due_on"], t("card.due_on"), t) or today
        async with UnitOfWork(request) as u:
            _, events = await invoices.create_invoice(
                u.session,
                InvoiceInput(
                    number=typed["number"],
                    deal_id=int(request.match_info["id"]),
                    amount=amount,
                    issued_on=today,
                    due_on=due,
                ),
                actor=user,
                rules=request.app[RULES],
                tz=zone(request),
                now=now(request),
            )
            u.emit(*events)
            await u.commit()
    except cf.FieldError as exc:
        return await _deal_rerender(
            request, user, "cards/_deal_invoices.html", error=exc.message, typed=typed
        )
    except ValidationError:
        return await _deal_rerender(
            request,
            user,
            "cards/_deal_invoices.html",
            error=t("card.error.invalid", field=t("card.invoice")),
            typed=typed,
        )
    except NotFound:
        raise
    except DomainError as exc:
        return await _deal_rerender(
            request,
            user,
            "cards/_deal_invoices.html",
            error=error_text(t, exc.error_id, exc.details),
            typed=typed,
        )
    return await _deal_rerender(request, user, "cards/_deal_invoices.html")


# ---------------------------------------------------------------- the invoice card


async def _invoice_page_data(
    request: web.Request, session: AsyncSession, subject: Subject, user: User
) -> dict[str, Any]:
    t = t_of(request)
    ctx = await field_context(request, session, user)
    view = subject.view
    state = "overdue" if view.overdue else view.status
    deal = await session.get(Deal, view.deal_id) if view.deal_id else None
    refs = [("company", view.company_id)] if view.company_id else []
    data: dict[str, Any] = {
        "title": t("card.invoice_title", number=view.number),
        "kind": "invoice",
        "subject": subject,
        "view": view,
        "fields": [field_view(spec, subject, ctx) for spec in cf.MAIN["invoice"]],
        "state": state,
        "state_text": t("invoice.status." + state),
        "deal": deal,
        "clients": await client_names(session, refs),
    }
    data.update(await timeline.side_data(request, session, subject, user))
    return data


@page("cards/invoice.html")
async def invoice_card(request: web.Request, user: User) -> Any:
    try:
        async with request.app[SESSIONS]() as session:
            subject = await _subject(request, session, user, "invoice")
            data = await _invoice_page_data(request, session, subject, user)
    except NotFound:
        return await render_error(request, 404, t_of(request)("card.not_found"))
    data["_page"] = {"view": "card", "kind": "invoice", "id": subject.id}
    return data


@page("cards/invoice.html")
async def invoice_action(request: web.Request, user: User) -> web.StreamResponse:
    """Mark the invoice paid or cancel it; then the card again."""
    t = t_of(request)
    invoice_id = int(request.match_info["id"])
    action = request.match_info["action"]
    rules = request.app[RULES]
    try:
        async with UnitOfWork(request) as u:
            if action == "pay":
                _, events = await invoices.pay_invoice(
                    u.session, invoice_id, actor=user, rules=rules, now=now(request)
                )
            else:
                _, events = await invoices.cancel_invoice(
                    u.session, invoice_id, actor=user, rules=rules, now=now(request)
                )
            u.emit(*events)
            await u.commit()
    except NotFound:
        raise
    except DomainError as exc:
        return await render_error(request, 409, error_text(t, exc.error_id, exc.details))
    from contact_center.web.shell import hx_redirect

    return hx_redirect(request, f"/invoices/{invoice_id}")


def routes(app: web.Application) -> None:
    app.router.add_get(r"/deals/{id:\d{1,18}}", deal_card)
    app.router.add_get(r"/invoices/{id:\d{1,18}}", invoice_card)
    app.router.add_get(r"/card/deal/{id:\d{1,18}}/stages", deal_bar_get)
    app.router.add_post(r"/card/deal/{id:\d{1,18}}/stage", deal_move)
    app.router.add_post(r"/card/deal/{id:\d{1,18}}/invoice", issue_invoice)
    app.router.add_post(r"/card/invoice/{id:\d{1,18}}/{action:pay|cancel}", invoice_action)
