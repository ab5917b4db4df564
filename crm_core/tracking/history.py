"""Writing visitors and sessions in batches.

The website endpoint must answer in milliseconds at thousands of requests a second, so it
does not write to the database itself: it queues what happened (a session started, a
heartbeat, a session ended) and a writer stores a batch at a time with a few statements.
Until the batch is stored, the lease store holds the same attribution, which is what a call
during that time is attributed with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.tracking.model import TrackingSession, TrackingVisitor


@dataclass(frozen=True)
class VisitorTouch:
    """A visitor seen by a session: his (first-touch) attribution as the page sent it."""

    site_id: int
    visitor_id: str
    kind: str
    channel: str
    source_id: int | None
    campaign: str | None
    utm: dict[str, str]
    landing_page: str | None
    referrer: str | None
    region_id: int | None
    seen_at: datetime
    campaign_click: bool  # replaces a stored first touch


@dataclass(frozen=True)
class SessionStart:
    key: str
    site_id: int
    visitor_id: str
    number_id: int | None
    pool_id: int | None
    did: str | None
    low_confidence: bool
    page: str | None
    attribution: dict[str, Any]
    started_at: datetime


@dataclass
class Batch:
    visitors: list[VisitorTouch]
    starts: list[SessionStart]
    beats: dict[str, datetime]  # session key -> last heartbeat
    ends: dict[str, datetime]  # session key -> released at

    def __len__(self) -> int:
        return len(self.visitors) + len(self.starts) + len(self.beats) + len(self.ends)


_ATTRIBUTION = ("kind", "channel", "source_id", "campaign", "utm", "landing_page", "referrer")


_CHUNK = 25
_SESSIONS = cast(Table, TrackingSession.__table__)  # a mapped class's table (typed FromClause)
_VISITORS = TrackingVisitor.__table__


async def store_batch(session: AsyncSession, batch: Batch) -> None:
    """Store one batch (the caller commits): visitors first, then sessions, then updates.
    Plain Core statements, many rows each: the ORM's unit of work would cost more than the
    database here."""
    conn = await session.connection()
    insert = (postgresql if conn.dialect.name == "postgresql" else sqlite).insert
    await _upsert_visitors(conn, insert, batch.visitors)
    rows = [{**vars(s), "last_seen_at": s.started_at} for s in batch.starts]
    await _execute(conn, insert(_SESSIONS), rows)
    for column, values in (("last_seen_at", batch.beats), ("ended_at", batch.ends)):
        await _execute(
            conn,
            _SESSIONS.update()
            .where(_SESSIONS.c.key == bindparam("k"))
            .values({column: bindparam("at")}),
            [{"k": key, "at": at} for key, at in values.items()],
        )


async def _execute(conn: Any, statement: Any, rows: list[dict[str, Any]]) -> None:
    """``statement`` for ``rows``, a chunk at a time: preparing parameters is CPU work in the
    event loop, and small chunks let the website requests in between."""
    for start in range(0, len(rows), _CHUNK):
        await conn.execute(statement, rows[start : start + _CHUNK])


async def _upsert_visitors(conn: Any, insert: Any, touches: Sequence[VisitorTouch]) -> None:
    """Insert new visitors; for known ones a campaign click replaces the attribution, any
    visit refreshes ``last_seen_at`` and (when known) the region."""
    latest: dict[tuple[int, str], VisitorTouch] = {}
    for touch in touches:  # one row per visitor per statement (ON CONFLICT needs it)
        key = (touch.site_id, touch.visitor_id)
        kept = latest.get(key)
        if kept is None or touch.campaign_click:
            latest[key] = touch
        else:  # the same rule as between batches: only the visit time and region move on
            region_id = touch.region_id or kept.region_id
            latest[key] = replace(kept, seen_at=touch.seen_at, region_id=region_id)
    for clicks in (True, False):
        rows = [
            {
                **{k: v for k, v in vars(t).items() if k not in ("seen_at", "campaign_click")},
                "first_seen_at": t.seen_at,
                "touched_at": t.seen_at,
                "last_seen_at": t.seen_at,
            }
            for t in latest.values()
            if t.campaign_click is clicks
        ]
        stmt = insert(_VISITORS)
        changes: dict[str, Any] = {
            "last_seen_at": stmt.excluded.last_seen_at,
            "region_id": func.coalesce(stmt.excluded.region_id, _VISITORS.c.region_id),
        }
        if clicks:
            changes.update({c: getattr(stmt.excluded, c) for c in _ATTRIBUTION})
            changes["touched_at"] = stmt.excluded.touched_at
        await _execute(
            conn,
            stmt.on_conflict_do_update(index_elements=["site_id", "visitor_id"], set_=changes),
            rows,
        )
