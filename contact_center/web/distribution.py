"""Распределение (head of sales): the manual queue (assign a website request and its lead to a
manager) and the rules per region (who gets which region's requests, and how)."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web
from sqlalchemy import select

from contact_center import distribution_service
from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS, SETTINGS
from contact_center.web import listing
from contact_center.web.shell import HEADS, MenuEntry, hx_redirect, now, page, t_of
from crm_core.distribution import requests as web_requests
from crm_core.distribution import rules as rule_book
from crm_core.distribution.model import WebRequest
from crm_core.distribution.schemas import ManagerInput, RuleInput, StrategyLiteral
from crm_core.errors import InvalidInput
from crm_core.reference.model import Region
from crm_core.users.model import User

MENU = (
    MenuEntry(
        "distribution", "/distribution", "menu.distribution", "distribution", 120, HEADS, "head"
    ),
)
STRATEGIES = ("round_robin", "fixed", "least_loaded", "manual")
QUEUE_PAGE = 50


@page("head/distribution.html", roles=HEADS)
async def distribution_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        queue, total = await web_requests.list_queue(session, limit=QUEUE_PAGE, offset=0)
        rules = await rule_book.list_rules(session)
        regions = list(await session.execute(select(Region.id, Region.name).order_by(Region.name)))
        assigned = None
        raw = request.query.get("request", "")
        if request.query.get("saved") == "assigned" and raw.isdigit() and len(raw) <= 18:
            # Whom the request just went to, and its lead one click away.
            done = await session.get(WebRequest, int(raw))
            if done is not None and done.responsible_id is not None:
                assigned = {
                    "name": done.name or t("pop.no_name"),
                    "manager": names.user(done.responsible_id),
                    "lead_id": done.lead_id,
                }
    return {
        "assigned": assigned,
        "title": t("menu.distribution"),
        "queue": [
            {
                "id": r.id,
                "at": r.created_at,
                "name": r.name,
                "phone": r.phone,
                "email": r.email,
                "comment": r.comment,
                "region": names.region(r.region_id),
                "source": names.source(r.source_id),
                "lead_id": r.lead_id,
                "site": r.site,
            }
            for r in queue
        ],
        "queue_total": total,
        "managers": names.managers,
        "rules": [
            {
                "id": r.id,
                "region": names.region(r.region_id) if r.region_id else None,
                "region_id": r.region_id,
                "strategy": r.strategy,
                "is_active": r.is_active,
                "managers": [names.user(m.user_id) for m in r.managers],
                "manager_ids": [m.user_id for m in r.managers],
            }
            for r in rules
        ],
        "regions": regions,
        "strategies": STRATEGIES,
        "done": request.query.get("saved"),
    }


@page("errors/partial.html", roles=HEADS)
async def assign(request: web.Request, user: User) -> web.StreamResponse:
    form = await request.post()
    raw = str(form.get("user_id", ""))
    if not raw.isdigit():
        raise InvalidInput("user_id: choose a manager", details={"field": "user_id"})
    request_id = int(request.match_info["id"])
    async with UnitOfWork(request) as u:
        _, events = await web_requests.assign(
            u.session,
            request_id,
            int(raw),
            actor=user,
            rules=request.app[RULES],
            policy=distribution_service.policy_of(request.app[SETTINGS]),
            now=now(request),
        )
        u.emit(*events)
        await u.commit()
    return hx_redirect(request, f"/distribution?saved=assigned&request={request_id}")


def _rule_input(request: web.Request, form: Any) -> RuleInput:
    region = str(form.get("region_id", ""))
    strategy = str(form.get("strategy", ""))
    if strategy not in STRATEGIES:
        strategy = request.app[SETTINGS].distribution.default_strategy
    ids = [int(v) for v in form.getall("managers", []) if str(v).isdigit()]
    try:
        return RuleInput(
            region_id=int(region) if region.isdigit() else None,
            strategy=cast(StrategyLiteral, strategy),  # checked by RuleInput
            is_active=form.get("is_active", "1") == "1",
            managers=[ManagerInput(user_id=i) for i in ids],
        )
    except ValueError as exc:
        if "fixed" in str(exc):
            raise InvalidInput(
                "managers: a fixed rule has exactly one manager",
                details={"field": "managers", "reason": "fixed-one"},
            ) from None
        raise InvalidInput(
            "managers: at least one manager", details={"field": "managers", "reason": "needs-one"}
        ) from None


@page("errors/partial.html", roles=HEADS)
async def save_rule(request: web.Request, user: User) -> web.StreamResponse:
    form = await request.post()
    body = _rule_input(request, form)
    rule_id = request.match_info.get("id")
    async with UnitOfWork(request) as u:
        if rule_id:
            # The page sets who serves the region; each kept manager keeps the weight and
            # working hours set through the API.
            current = await rule_book.get_rule(u.session, int(rule_id))
            kept = {m.user_id: m for m in current.managers}
            body = body.model_copy(
                update={
                    "managers": [
                        ManagerInput.model_validate(kept[m.user_id].model_dump())
                        if m.user_id in kept
                        else m
                        for m in body.managers
                    ]
                }
            )
            _, events = await rule_book.replace_rule(
                u.session, int(rule_id), body, now=now(request)
            )
        else:
            _, events = await rule_book.create_rule(u.session, body, now=now(request))
        u.emit(*events)
        await u.commit()
    return hx_redirect(request, "/distribution?saved=rule")


@page("errors/partial.html", roles=HEADS)
async def delete_rule(request: web.Request, user: User) -> web.StreamResponse:
    async with UnitOfWork(request) as u:
        u.emit(
            *await rule_book.delete_rule(u.session, int(request.match_info["id"]), now=now(request))
        )
        await u.commit()
    return hx_redirect(request, "/distribution?saved=deleted")


def routes(app: web.Application) -> None:
    app.router.add_get("/distribution", distribution_page)
    app.router.add_post(r"/distribution/queue/{id:\d{1,18}}/assign", assign)
    app.router.add_post("/distribution/rules", save_rule)
    app.router.add_post(r"/distribution/rules/{id:\d{1,18}}", save_rule)
    app.router.add_post(r"/distribution/rules/{id:\d{1,18}}/delete", delete_rule)
