"""Отслеживание звонков (head of sales): the sites with call tracking, their number pools with
the lease statistics (peak, exhaustion, the size that would have covered the peak), and every
tracking number with what a call to it means."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contact_center.keys import SESSIONS, TRACKER
from contact_center.web import listing
from contact_center.web.shell import HEADS, MenuEntry, page, t_of
from crm_core.tracking import service as tracking
from crm_core.tracking.model import TrackingNumber, TrackingPool, TrackingSite
from crm_core.users.model import User

MENU = (MenuEntry("tracking", "/tracking", "menu.tracking", "tracking", 130, HEADS, "head"),)


@page("head/tracking.html", roles=HEADS)
async def tracking_page(request: web.Request, user: User) -> dict[str, Any]:
    t = t_of(request)
    async with request.app[SESSIONS]() as session:
        names = await listing.names(session)
        sites = await tracking.list_entities(session, TrackingSite)
        pools = await tracking.list_entities(session, TrackingPool)
        numbers = await tracking.list_entities(session, TrackingNumber)
        dids = await tracking.pool_dids(session, [p.id for p in pools])
    tracker = request.app[TRACKER]
    site_names = {s.id: s.name for s in sites}
    pool_names = {p.id: p.name for p in pools}
    pool_rows = []
    for pool in pools:
        size = len(dids.get(pool.id, []))
        stats = await tracker.pool_stats(pool.id)
        peak = stats.peak_sessions if stats else 0
        recommended = max(size, peak)
        pool_rows.append(
            {
                "id": pool.id,
                "name": pool.name,
                "site": site_names.get(pool.site_id, ""),
                "channel": label(t, "channel.", pool.channel) or t("tracking.any"),
                "kind": label(t, "source_kind.", pool.kind),
                "region": names.region(pool.region_id) or t("tracking.any_region"),
                "source": names.source(pool.source_id),
                "size": size,
                "leased": stats.leased if stats else 0,
                "peak_leased": stats.peak_leased if stats else 0,
                "peak": peak,
                "exhausted": stats.exhausted if stats else 0,
                "recommended": recommended,
                "short": recommended > size or (stats is not None and stats.exhausted > 0),
                "active": pool.is_active,
            }
        )
    return {
        "title": t("menu.tracking"),
        "origin": str(request.url.origin()).rstrip("/"),
        "sites": [
            {
                "name": s.name,
                "origins": s.origins or [],
                "region": names.region(s.default_region_id),
                "forms": bool(s.form_key_hash),
                "active": s.is_active,
                "code": s.code,
            }
            for s in sites
        ],
        "pools": pool_rows,
        "numbers": [
            {
                "did": n.did,
                "kind": t("number_kind." + n.kind),
                "site": site_names.get(n.site_id, "") if n.site_id else "",
                "pool": pool_names.get(n.pool_id, "") if n.pool_id else "",
                "source": names.source(n.source_id),
                "region": names.region(n.region_id),
                "campaign": n.campaign,
                "active": n.is_active,
            }
            for n in numbers
        ],
    }


def label(t: Any, prefix: str, code: str | None) -> str:
    """The name of a code (a channel, a kind of traffic); a channel nobody named yet (a
    referring site's own code) is shown as it is rather than as a message key."""
    if not code:
        return ""
    text = t(prefix + code)
    return code if text == prefix + code else text


def routes(app: web.Application) -> None:
    app.router.add_get("/tracking", tracking_page)
