"""The kanban boards: ``/leads?view=kanban`` (the lead funnel) and ``/deals?view=kanban``
(one pipeline, ``&pipeline=`` its id or code). A column is a stage with its count and sum; it
shows the first :data:`PER_COLUMN` cards and loads :data:`MORE` at a time on demand ("ещё N"), so a
pipeline with thousands of open deals opens at once.

A card dropped on another column is moved by ``POST /leads/kanban/{id}/move`` or
``POST /deals/kanban/{id}/move`` through the same service functions as the REST API (the lead gate,
the deal rules, access), and answers JSON the board's script (``static/kanban.js``) reads: the
new column totals, or the refusal as a sentence in the user's language with the record's card
to open (the gate's missing fields named).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from contact_center.api.common import UnitOfWork
from contact_center.http.api import path_id
from contact_center.i18n import error_text
from contact_center.keys import CLOCK, RULES, SESSIONS
from contact_center.web import formats, links, listing
from contact_center.web.shell import language, page, t_of
from crm_core import access, errors
from crm_core.db import MAX_DB_INT
from crm_core.deals import board as deal_board
from crm_core.deals import service as deals
from crm_core.deals.model import Pipeline
from crm_core.deals.pipelines import get_pipeline, list_pipelines
from crm_core.leads import board as lead_board
from crm_core.leads import service as leads
from crm_core.leads.errors import ConversionRequired, LeadGateMissingFields
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from crm_core.users.model import User

MENU = ()
PER_COLUMN = 20  # the first cards of a column
MORE = 50  # the next ones, per click on "ещё N"
MAX_OFFSET = 100_000

PageView = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also takes "²" and other digits int() refuses)."""
    return text.isascii() and text.isdigit()


def with_board(list_view: PageView, board_view: PageView) -> PageView:
    """One path, two views: ``?view=kanban`` is the board, anything else the list."""

    async def view(request: web.Request) -> web.StreamResponse:
        if request.query.get("view") == "kanban":
            return await board_view(request)
        return await list_view(request)

    return view


def _label(lang: str, name_ru: str, name_en: str | None) -> str:
    return (name_en or name_ru) if lang == "en" else name_ru


def initials(name: str) -> str:
    parts = [p for p in name.replace("«", " ").replace("»", " ").split() if p]
    return "".join(p[0] for p in parts[:2]).upper()


def _responsible_filter(request: web.Request, user: User) -> int | None:
    """``?responsible=`` (any id the user may filter by; managers see their own anyway)."""
    value = request.query.get("responsible", "")
    return int(value) if _digits(value) and len(value) < 10 else None


def _shown(request: web.Request) -> int:
    """How many cards the column shows already (for "ещё N")."""
    value = request.query.get("shown", "0")
    return min(int(value), MAX_OFFSET) if _digits(value) and len(value) < 7 else 0


def _after(request: web.Request) -> tuple[datetime, int] | None:
    """The last card shown, ``<stage_changed_at ISO>_<id>``: the next page starts after it."""
    moved, _, last = request.query.get("after", "")[:80].rpartition("_")
    try:
        moment = datetime.fromisoformat(moved)
    except ValueError:
        return None
    if moment.tzinfo is None or not _digits(last) or len(last) > 18:
        return None
    if not 0 < int(last) <= MAX_DB_INT:
        return None
    return moment, int(last)


def _cursor(moved: datetime, record_id: int) -> str:
    return f"{moved.isoformat()}_{record_id}"


@dataclass(frozen=True)
class NextTask:
    title: str
    due_at: datetime | None
    overdue: bool


def _next(task: Task | None, now: datetime) -> NextTask | None:
    if task is None:
        return None
    due = task.due_at
    if due is not None and due.tzinfo is None:  # SQLite gives naive UTC back
        due = due.replace(tzinfo=UTC)
    return NextTask(task.title, due, due is not None and due < now)


# ---------------------------------------------------------------- cards


async def _lead_cards(
    request: web.Request,
    user: User,
    session: AsyncSession,
    names: listing.Names,
    stages: list[str],
    responsible: int | None,
    after: tuple[datetime, int] | None,
    limit: int = PER_COLUMN,
) -> dict[str, list[dict[str, Any]]]:
    """The cards of each of ``stages`` (one page each), with their next tasks in one query."""
    rules = request.app[RULES]
    t = t_of(request)
    now = request.app[CLOCK].now()
    by_stage = {
        stage: await lead_board.cards(
            session,
            stage,
            actor=user,
            rules=rules,
            responsible_id=responsible,
            limit=limit,
            after=after,
        )
        for stage in stages
    }
    tasks = await lead_board.next_tasks(session, (r.id for rows in by_stage.values() for r in rows))
    return {
        stage: [
            {
                "id": lead.id,
                "url": f"/clients/lead/{lead.id}",
                "title": lead.title or lead.contact_name or lead.company_name or t("pop.no_name"),
                "who": " · ".join(
                    x for x in (lead.contact_name, lead.company_name) if x and x != lead.title
                ),
                "client": None,
                "amount": lead.potential_amount,
                "responsible": names.user(lead.responsible_id),
                "initials": initials(names.user(lead.responsible_id)),
                "next": _next(tasks.get(lead.id), now),
                "locked": not access.can_write(user, lead.responsible_id),
                "cursor": _cursor(lead.stage_changed_at, lead.id),
            }
            for lead in rows
        ]
        for stage, rows in by_stage.items()
    }


async def _deal_cards(
    request: web.Request,
    user: User,
    session: AsyncSession,
    names: listing.Names,
    stage_ids: list[int],
    responsible: int | None,
    after: tuple[datetime, int] | None,
    limit: int = PER_COLUMN,
) -> dict[int, list[dict[str, Any]]]:
    """The cards of each of ``stage_ids`` (one page each); next tasks and clients in one go."""
    rules = request.app[RULES]
    now = request.app[CLOCK].now()
    by_stage = {
        stage_id: await deal_board.cards(
            session,
            stage_id,
            actor=user,
            rules=rules,
            responsible_id=responsible,
            limit=limit,
            after=after,
        )
        for stage_id in stage_ids
    }
    every = [r for rows in by_stage.values() for r in rows]
    tasks = await deal_board.next_tasks(session, (r.id for r in every))
    refs = await links.client_refs(session, every)
    return {
        stage_id: [
            {
                "id": deal.id,
                "url": f"/deals/{deal.id}",
                "title": deal.title,
                "client": refs.get(id(deal)),
                "who": "",
                "amount": deal.amount,
                "responsible": names.user(deal.responsible_id),
                "initials": initials(names.user(deal.responsible_id)),
                "next": _next(tasks.get(deal.id), now),
                "locked": not access.can_write(user, deal.responsible_id),
                "cursor": _cursor(deal.stage_changed_at, deal.id),
            }
            for deal in rows
        ]
        for stage_id, rows in by_stage.items()
    }


def _column(
    key: str, name: str, kind: str, count: int, total: Decimal, cards: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "key": key,
        "name": name,
        "kind": kind,
        "count": count,
        "total": total,
        "cards": cards,
        "more": max(0, count - len(cards)),
        "shown": len(cards),
        "after": cards[-1]["cursor"] if cards else "",
    }


# ---------------------------------------------------------------- the lead board


@page("kanban/board.html", partial="kanban/_cards.html")
async def lead_board_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    lang = language(request)
    rules = request.app[RULES]
    responsible = _responsible_filter(request, user)
    async with request.app[SESSIONS]() as session:
        totals = await lead_board.columns(
            session, actor=user, rules=rules, responsible_id=responsible
        )
        names = await listing.names(session)
        filled = [c.stage.code for c in totals if c.count]
        cards = await _lead_cards(request, user, session, names, filled, responsible, None)
    columns = []
    for col in totals:
        name = _label(lang, col.stage.name_ru, col.stage.name_en)
        shown = cards.get(col.stage.code, [])
        columns.append(_column(col.stage.code, name, col.stage.kind, col.count, col.total, shown))
    return {
        "title": t("menu.leads"),
        "board": "leads",
        "view": "kanban",
        "list_url": "/leads",
        "column_url": "/leads/kanban/column",
        "columns": columns,
        "reasons": [(r, t("junk_reason." + r)) for r in rules.junk_reasons],
        "reason_title": t("kanban.junk_reason_title"),
        "pipelines": [],
        "pipeline": None,
        "pipeline_code": None,
        "responsible": responsible,
        "managers": names.user_options() if not _own_only(user, rules) else (),
        "_page": {"view": "kanban", "board": "leads"},
    }


@page("kanban/_cards.html")
async def lead_column(request: web.Request, user: User) -> dict[str, Any]:
    """The next cards of a lead column (the "ещё N" button)."""
    rules = request.app[RULES]
    stage = request.query.get("stage", "")
    if stage not in rules.lead_stage_codes():
        raise errors.NotFound("no such stage")
    responsible = _responsible_filter(request, user)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        cards = await _lead_cards(
            request, user, session, names, [stage], responsible, _after(request), MORE
        )
    return _more(request, "/leads/kanban/column", stage, responsible, cards[stage])


def _more(
    request: web.Request,
    url: str,
    key: str,
    responsible: int | None,
    cards: list[dict[str, Any]],
) -> dict[str, Any]:
    total = request.query.get("count", "")
    count = int(total) if _digits(total) and len(total) < 9 else 0
    shown = _shown(request) + len(cards)
    after = cards[-1]["cursor"] if cards else ""
    params = {"stage": key, "after": after, "shown": str(shown), "count": str(count)}
    if request.query.get("pipeline"):
        params["pipeline"] = request.query["pipeline"]
    if responsible is not None:
        params["responsible"] = str(responsible)
    more = max(0, count - shown) if len(cards) == MORE else 0
    return {
        "board": "deals" if url.startswith("/deals") else "leads",
        "column": {"key": key, "cards": cards, "more": more},
        "more_url": str(URL(url).with_query(params)) if more else "",
    }


def _own_only(user: User, rules: CrmRules) -> bool:
    return not access.is_privileged(user) and not rules.managers_read_all


# ---------------------------------------------------------------- the deal board


async def _pipeline(request: web.Request) -> Pipeline:
    value = request.query.get("pipeline", "").strip()
    async with request.app[SESSIONS]() as session:
        if _digits(value) and len(value) < 10:
            found: Pipeline | None = await session.get(Pipeline, int(value))
            if found is not None and found.is_active:
                return found
            raise errors.NotFound("no such pipeline")
        return await get_pipeline(session, value[:64] or None)


@page("kanban/board.html", partial="kanban/_cards.html")
async def deal_board_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    lang = language(request)
    rules = request.app[RULES]
    responsible = _responsible_filter(request, user)
    pipeline = await _pipeline(request)
    async with request.app[SESSIONS]() as session:
        pipelines = await list_pipelines(session, rules)
        totals = await deal_board.columns(
            session, pipeline, actor=user, rules=rules, responsible_id=responsible
        )
        names = await listing.names(session)
        filled = [c.stage.id for c in totals if c.count]
        cards = await _deal_cards(request, user, session, names, filled, responsible, None)
    columns = []
    for col in totals:
        name = _label(lang, col.stage.name_ru, col.stage.name_en)
        shown = cards.get(col.stage.id, [])
        columns.append(
            _column(str(col.stage.id), name, col.stage.kind, col.count, col.total, shown)
        )
    return {
        "title": t("menu.deals"),
        "board": "deals",
        "view": "kanban",
        "list_url": "/deals",
        "column_url": "/deals/kanban/column",
        "columns": columns,
        "reasons": [(r, t("lost_reason." + r)) for r in rules.lost_reasons],
        "reason_title": t("kanban.lost_reason_title"),
        "pipelines": [{"id": p.id, "name": _label(lang, p.name_ru, p.name_en)} for p in pipelines],
        "pipeline": pipeline.id,
        "pipeline_code": pipeline.code,
        "responsible": responsible,
        "managers": names.user_options() if not _own_only(user, rules) else (),
        "_page": {"view": "kanban", "board": "deals", "pipeline": pipeline.id},
    }


@page("kanban/_cards.html")
async def deal_column(request: web.Request, user: User) -> dict[str, Any]:
    """The next cards of a deal column (the "ещё N" button)."""
    stage = request.query.get("stage", "")
    if not _digits(stage) or len(stage) > 9:
        raise errors.NotFound("no such stage")
    responsible = _responsible_filter(request, user)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        cards = await _deal_cards(
            request, user, session, names, [int(stage)], responsible, _after(request), MORE
        )
    return _more(request, "/deals/kanban/column", stage, responsible, cards[int(stage)])


# ---------------------------------------------------------------- moves


async def _move_input(request: web.Request) -> tuple[str, str | None]:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise errors.InvalidInput("send a JSON object", details={"field": "stage"})
    else:
        body = dict(await request.post())
    stage = body.get("stage")
    reason = body.get("reason") or None
    if not isinstance(stage, str) or not stage or len(stage) > 64:
        raise errors.InvalidInput("stage: a stage code", details={"field": "stage"})
    if reason is not None and (not isinstance(reason, str) or len(reason) > 200):
        raise errors.InvalidInput("reason: text", details={"field": "reason"})
    return stage, reason


async def _refusal(
    request: web.Request, exc: errors.DomainError, *, link: str, what: str
) -> web.Response:
    """A refused move as JSON: the sentence to show, what is missing, the card to open."""
    from contact_center.http.errors import STATUS

    t = t_of(request)
    status = next(code for cls, code in STATUS if isinstance(exc, cls))
    body: dict[str, Any] = {"ok": False, "error": exc.error_id}
    if isinstance(exc, LeadGateMissingFields):
        missing = [t("requirement." + str(m)) for m in exc.details.get("missing", [])]
        body["message"] = t("kanban.gate_refused")
        body["missing"] = missing
        body["link"] = link
        body["link_text"] = t("kanban.open_to_fill")
        body["fields"], elsewhere = await _gate_fields(request, exc.details.get("missing", []))
        # What the board cannot ask for (said only when the fields are asked right there).
        body["missing_elsewhere"] = [t("requirement." + str(m)) for m in elsewhere]
        body["fill_submit"] = t("kanban.fill_submit")
    elif isinstance(exc, ConversionRequired):
        body["message"] = t("kanban.convert_on_card")
        body["link"] = link
        body["link_text"] = t("kanban.open_" + what)
    elif isinstance(exc, errors.PermissionDenied):
        body["message"] = t("kanban.not_yours_" + what)
    elif isinstance(exc, errors.NotFound):
        body["message"] = t("error.not-found")
    else:
        body["message"] = error_text(t, exc.error_id, exc.details)
        body["link"] = link
        body["link_text"] = t("kanban.open_" + what)
    return web.json_response(body, status=status)


async def _gate_fields(
    request: web.Request, missing: list[Any]
) -> tuple[list[dict[str, Any]], list[Any]]:
    """The lead fields that meet the gate's ``missing`` requirements, for the board to ask for
    them inline (sent to ``PATCH /api/v1/leads/{id}``), and the requirements the board cannot
    ask for (a custom field, the responsible), left to the card."""
    t = t_of(request)
    rules = request.app[RULES]
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
    yes_no = [["true", t("card.yes")], ["false", t("card.no")]]
    table: dict[str, list[dict[str, Any]]] = {
        "name": [{"name": "contact_name", "label": t("kanban.contact_name"), "kind": "text"}],
        "contact": [{"name": "phones", "label": t("field.phones"), "kind": "tel"}],
        "source": [
            {
                "name": "source_id",
                "label": t("card.source"),
                "kind": "select",
                "options": [list(o) for o in names.source_options()],
            }
        ],
        "client_type": [
            {
                "name": "client_type",
                "label": t("card.client_type"),
                "kind": "select",
                "options": [[c, t("client_type." + c)] for c in rules.client_types],
            }
        ],
        "potential": [
            {"name": "potential_amount", "label": t("kanban.amount"), "kind": "money"},
            {
                "name": "purchase_mode",
                "label": t("kanban.purchase_mode"),
                "kind": "select",
                "options": [[m, t("purchase." + m)] for m in ("one_off", "regular")],
            },
        ],
        "region": [
            {
                "name": "region_id",
                "label": t("card.region"),
                "kind": "select",
                "options": [list(o) for o in names.region_options()],
            }
        ],
        "decision_maker": [
            {
                "name": "decision_maker_reached",
                "label": t("card.decision_maker_reached"),
                "kind": "select",
                "options": yes_no,
            }
        ],
        "needs": [{"name": "needs_products", "label": t("card.needs_products"), "kind": "text"}],
        "inn": [{"name": "inn", "label": t("field.inn"), "kind": "text"}],
    }
    fields = [f for m in missing for f in table.get(str(m), [])]
    return fields, [m for m in missing if str(m) not in table]


async def _lead_totals(request: web.Request, user: User) -> dict[str, dict[str, Any]]:
    async with request.app[SESSIONS]() as session:
        cols = await lead_board.columns(
            session,
            actor=user,
            rules=request.app[RULES],
            responsible_id=_responsible_filter(request, user),
        )
    return {c.stage.code: _totals(c.count, c.total) for c in cols}


def _totals(count: int, total: Decimal) -> dict[str, Any]:
    return {"count": count, "count_text": formats.number(count), "total": formats.money(total)}


@page("kanban/board.html")
async def move_lead(request: web.Request, user: User) -> web.StreamResponse:
    lead_id = _path_id(request)
    stage, reason = await _move_input(request)
    rules = request.app[RULES]
    try:
        async with UnitOfWork(request) as u:
            _, events = await leads.move_lead(
                u.session,
                lead_id,
                stage,
                reason=reason,
                actor=user,
                rules=rules,
                now=request.app[CLOCK].now(),
            )
            u.emit(*events)
            await u.commit()
    except errors.DomainError as exc:
        return await _refusal(request, exc, link=f"/clients/lead/{lead_id}", what="lead")
    return web.json_response({"ok": True, "columns": await _lead_totals(request, user)})


@page("kanban/board.html")
async def move_deal(request: web.Request, user: User) -> web.StreamResponse:
    deal_id = _path_id(request)
    stage, reason = await _move_input(request)
    rules = request.app[RULES]
    try:
        async with UnitOfWork(request) as u:
            deal, events = await deals.move_deal(
                u.session,
                deal_id,
                stage,
                reason=reason,
                actor=user,
                rules=rules,
                now=request.app[CLOCK].now(),
            )
            pipeline = await u.session.get(Pipeline, deal.pipeline_id)
            u.emit(*events)
            await u.commit()
            assert pipeline is not None  # a foreign key
            cols = await deal_board.columns(
                u.session,
                pipeline,
                actor=user,
                rules=rules,
                responsible_id=_responsible_filter(request, user),
            )
    except errors.DomainError as exc:
        return await _refusal(request, exc, link=f"/deals/{deal_id}", what="deal")
    totals = {str(c.stage.id): _totals(c.count, c.total) for c in cols}
    return web.json_response({"ok": True, "columns": totals})


def _path_id(request: web.Request) -> int:
    return path_id(request, "id", "record")


def routes(app: web.Application) -> None:
    """The column pages and the moves (the boards themselves answer on /leads and /deals)."""
    app.router.add_get("/leads/kanban/column", lead_column)
    app.router.add_get("/deals/kanban/column", deal_column)
    app.router.add_post(r"/leads/kanban/{id:\d+}/move", move_lead)
    app.router.add_post(r"/deals/kanban/{id:\d+}/move", move_deal)
