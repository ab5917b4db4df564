"""Планы (head of sales): set each manager's plan per day or for a whole week, and see plan
against fact (counted calls from 60 s, meetings, proposals sent) per day and for the week."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center.api.common import UnitOfWork
from contact_center.keys import SESSIONS
from contact_center.web.listing import parse_day
from contact_center.web.shell import HEADS, MenuEntry, now, page, t_of, zone
from crm_core.errors import InvalidInput
from crm_core.tasks import plan as plans
from crm_core.tasks.schemas import PlanInput
from crm_core.users.model import Role, User

MENU = (MenuEntry("plans", "/plans", "menu.plans", "plans", 110, HEADS, "head"),)
FIGURES = ("calls", "meetings", "proposals")


def _week(request: web.Request) -> tuple[date, date]:
    day = parse_day(request.query.get("week", ""))
    return plans.week_of(day or now(request).astimezone(zone(request)).date())


@page("head/plans.html", roles=HEADS)
async def plans_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    start, end = _week(request)
    today = now(request).astimezone(zone(request)).date()
    async with request.app[SESSIONS]() as session:
        days, totals = await plans.plan_vs_fact(
            session, user_ids=None, start=start, end=end, tz=zone(request)
        )
        team = {
            row.id: row.display_name or row.login
            for row in await session.execute(
                select(User.id, User.display_name, User.login).where(
                    User.is_active.is_(True), User.role == Role.MANAGER.value
                )
            )
        }
        all_names = {
            row.id: row.display_name or row.login
            for row in await session.execute(select(User.id, User.display_name, User.login))
        }
    week = [start + timedelta(days=i) for i in range(7)]
    by_user: dict[int, dict[date, Any]] = {}
    for row in days:
        by_user.setdefault(row.user_id, {})[row.day] = row
    members = sorted(
        (
            {
                "id": total.user_id,
                "name": all_names.get(total.user_id, f"#{total.user_id}"),
                "days": [by_user.get(total.user_id, {}).get(d) for d in week],
                "total": total,
            }
            for total in totals
        ),
        key=lambda m: m["name"],
    )
    return {
        "title": t("menu.plans"),
        "week": week,
        "start": start,
        "end": end,
        "today": today,
        "prev_week": (start - timedelta(days=7)).isoformat(),
        "next_week": (start + timedelta(days=7)).isoformat(),
        "members": members,
        "team": sorted(team.items(), key=lambda x: x[1]),
        "figures": FIGURES,
        "saved": request.query.get("saved"),
    }


@page("errors/partial.html", roles=HEADS)
async def set_plans(request: web.Request, user: User) -> web.StreamResponse:
    """The plan form: one manager (or all), one day or every working day of the week."""
    form = await request.post()

    def number(name: str) -> int:
        raw = str(form.get(name, "0")).strip() or "0"
        if not raw.isdigit():
            raise InvalidInput(f"{name}: not a number", details={"field": name})
        return int(raw)

    body = PlanInput(
        calls=number("calls"),
        meetings=number("meetings"),
        proposals=number("proposals"),
        note=str(form.get("note", "")).strip() or None,
    )
    day = parse_day(str(form.get("day", "")))
    if day is None:
        raise InvalidInput("day: not a date", details={"field": "day"})
    if form.get("scope") == "week":
        monday, _ = plans.week_of(day)
        days = [monday + timedelta(days=i) for i in range(5)]
    else:
        days = [day]
    who = str(form.get("user_id", ""))
    async with UnitOfWork(request) as u:
        if who == "all":
            ids = list(
                await u.session.scalars(
                    select(User.id).where(User.is_active.is_(True), User.role == Role.MANAGER.value)
                )
            )
        elif who.isdigit():
            ids = [int(who)]
        else:
            raise InvalidInput("user_id: choose a manager", details={"field": "user_id"})
        at = now(request)
        for user_id in ids:
            for d in days:
                _, event = await plans.set_plan(u.session, user_id, d, body, actor=user, now=at)
                u.emit(event)
        await u.commit()
    raise web.HTTPSeeOther(f"/plans?week={days[0].isoformat()}&saved=1")


def routes(app: web.Application) -> None:
    app.router.add_get("/plans", plans_page)
    app.router.add_post("/plans", set_plans)
