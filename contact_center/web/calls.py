"""Звонки: the stored call history (the client's number and name, never an extension in the
number column), with recordings to listen to; live calls appear on top from /ws."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from contact_center.keys import RULES, SESSIONS
from contact_center.web import links, listing
from contact_center.web.shell import MenuEntry, page, t_of, zone
from crm_core import access
from crm_core.calls import service as calls
from crm_core.phones import try_normalize_phone
from crm_core.recordings.model import Recording, RecordingState
from crm_core.users.model import User, UserExtension

MENU = (MenuEntry("calls", "/calls", "menu.calls", "calls", 60),)
SORTS = ("started_at", "talk_seconds", "ring_seconds")
MISSED = ("missed", "abandoned")
RESULTS = {"answered": ("answered",), "missed": MISSED, "busy": ("busy", "failed")}


def _number(q: str, region: str) -> str | None:
    """The search box of the call list: a phone in any format."""
    if not q:
        return None
    return try_normalize_phone(q, region) or q


def kind_of(direction: str, disposition: str) -> str:
    """входящий, исходящий or пропущенный (an inbound call nobody answered)."""
    if direction == "inbound" and disposition in MISSED:
        return "missed"
    return direction


@page("lists/calls.html", partial="lists/_calls.html")
async def calls_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    tz = zone(request)
    rules = request.app[RULES]
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        privileged = access.is_privileged(user) or rules.managers_read_all
        filters = [
            listing.Filter(
                "result",
                "filter.result",
                options=tuple((k, t("call.result." + k)) for k in RESULTS),
            ),
            listing.Filter(
                "direction",
                "filter.direction",
                options=tuple((d, t("call.kind." + d)) for d in ("inbound", "outbound")),
            ),
            listing.Filter(
                "counted",
                "filter.counted",
                options=(("1", t("call.counted")), ("0", t("call.not_counted"))),
            ),
            listing.Filter("from", "filter.date_from", kind="date"),
            listing.Filter("to", "filter.date_to", kind="date"),
        ]
        if privileged:
            filters.insert(
                0, listing.Filter("manager", "filter.manager", options=names.user_options())
            )
        state = listing.state_of(request, filters, SORTS, "-started_at")
        manager = state.int_value("manager")
        user_ids: list[int] | None = [user.id]  # a manager: his own calls
        if privileged:
            user_ids = [manager] if manager is not None else None
        counted = {"1": True, "0": False}.get(state.value("counted"))
        rows, state.total = await calls.list_calls(
            session,
            user_ids=user_ids,
            direction=state.value("direction") or None,
            disposition=RESULTS.get(state.value("result")),
            counted=counted,
            number=_number(state.q, rules.default_region),
            since=listing.day_start(state.date_value("from"), tz),
            until=listing.day_end(state.date_value("to"), tz),
            limit=listing.PER_PAGE,
            offset=state.offset,
            sort=state.sort,
            count_cap=listing.COUNT_CAP,
        )
        refs = await links.client_refs(session, rows)
        recordings: dict[int, list[tuple[int, str]]] = {}
        if rows:
            for call_pk, rec_id, rec_state in await session.execute(
                select(Recording.call_pk, Recording.id, Recording.state)
                .where(Recording.call_pk.in_([c.id for c in rows]))
                .order_by(Recording.id)
            ):
                recordings.setdefault(call_pk, []).append((rec_id, rec_state))
    state.shown = len(rows)
    state.make_chips(t)
    items = []
    for c in rows:
        kind = kind_of(c.direction, c.disposition)
        number = (
            c.caller
            if c.direction == "inbound"
            else c.callee
            if c.direction == "outbound"
            else None
        )
        recs = recordings.get(c.id, [])
        stored = [rid for rid, st in recs if st == RecordingState.STORED.value]
        estimated = set(c.estimated or ())
        disposition = t("disposition." + c.disposition)
        if c.unanswered_by and c.disposition != "busy":
            disposition = t("call.unanswered_by." + c.unanswered_by)
        items.append(
            {
                "id": c.id,
                "started_at": c.started_at,
                "kind": kind,
                "kind_text": t("call.kind." + kind),
                "disposition": disposition,
                "number": number,
                "internal": c.direction == "internal",
                "client": refs.get(id(c)),
                "manager": names.user(c.user_id),
                "queue": c.queue,
                "ring": c.ring_seconds,
                "talk": c.talk_seconds,
                # Times not seen as they happened (an AMI outage without a CDR): shown "≈".
                "ring_estimated": bool(estimated & {"started_at", "answered_at"}),
                "talk_estimated": bool(estimated & {"answered_at", "ended_at"}),
                "counted": c.counted,
                "recording": f"/api/v1/recordings/{stored[0]}" if stored else None,
                "recording_state": recs[0][1] if recs and not stored else None,
            }
        )
    return {
        "title": t("menu.calls"),
        "state": state,
        "items": items,
        "_page": {"view": "calls", "ext_names": await _extension_names(request, names)},
    }


async def _extension_names(request: web.Request, names: listing.Names) -> dict[str, str]:
    """Who owns each extension, so the live feed names the manager, not his number."""
    async with request.app[SESSIONS]() as session:
        return {
            ext: names.user(uid)
            for ext, uid in await session.execute(
                select(UserExtension.extension, UserExtension.user_id)
            )
        }


def routes(app: web.Application) -> None:
    app.router.add_get("/calls", calls_page)
