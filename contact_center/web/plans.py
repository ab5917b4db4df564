"""Планы (head of sales): set each manager's plan per day or for a whole week, and see plan
against fact (counted calls from 60 s, meetings, proposals sent) per day and for the week."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy import select
from yarl import URL

from contact_center.api.common import UnitOfWork
from contact_center.i18n import error_text
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


# The plan form's fields, kept as typed across a save (in the URL) and a refusal.
FORM_FIELDS = ("user_id", "day", "scope", *FIGURES)


def _typed(source: Mapping[str, Any]) -> dict[str, str]:
    return {k: str(source[k])[:2000] for k in FORM_FIELDS if k in source}


async def _page(
    request: web.Request, form: Mapping[str, str], error: tuple[str, str] | None = None
) -> dict[str, Any]:
    """The plans page of the week asked for, its form showing ``form`` (what was typed) and
    ``error`` (the field and what is wrong with it)."""
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
    default_day = (today if start <= today <= end else start).strftime("%d.%m.%Y")
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
        "form": {"user_id": "all", "day": default_day, "scope": "day", **form},
        "error": error,
    }


@page("head/plans.html", roles=HEADS)
async def plans_page(request: web.Request, user: User) -> dict[str, Any]:
    # After a save the URL carries what was typed, so the form shows it again.
    return await _page(request, _typed(request.query) if request.query.get("saved") else {})


@page("head/plans.html", roles=HEADS)
async def set_plans(request: web.Request, user: User) -> Any:
    """The plan form: one manager (or all), one day or every working day of the week. A
    refusal shows the page again with what was typed and what is wrong (422)."""
    form = await request.post()
    typed = _typed(form)
    try:
        week = await _save(request, user, form)
    except InvalidInput as exc:
        field = str(exc.details.get("field", ""))
        data = await _page(
            request, typed, (field, error_text(t_of(request), exc.error_id, exc.details))
        )
        data["_status"] = 422
        return data
    query = {"week": week.isoformat(), "saved": "1", **typed}
    raise web.HTTPSeeOther(str(URL("/plans").with_query(query)))


async def _save(request: web.Request, user: User, form: Mapping[str, Any]) -> date:
    """Set the plans the form asks for; the Monday of their week."""

    def number(name: str, most: int) -> int:
        raw = str(form.get(name, "0")).strip() or "0"
        if not raw.isdigit() or int(raw) > most:
            raise InvalidInput(f"{name}: not a number", details={"field": name})
        return int(raw)

    body = PlanInput(
        calls=number("calls", 1000),
        meetings=number("meetings", 100),
        proposals=number("proposals", 1000),
        note=str(form.get("note", "")).strip()[:2000] or None,
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
    return days[0]


def routes(app: web.Application) -> None:
    app.router.add_get("/plans", plans_page)
    app.router.add_post("/plans", set_plans)
