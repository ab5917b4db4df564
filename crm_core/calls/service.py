"""Use cases of the call log: store a finished call once, find who owns an extension, list."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import listing
from crm_core.calls.model import Call
from crm_core.calls.record import CallRecord
from crm_core.users.model import User, UserExtension


async def extension_owner(session: AsyncSession, pbx: str, extension: str | None) -> User | None:
    """The active user owning ``extension`` on ``pbx`` (an owner with pbx "" owns it on any)."""
    if not extension:
        return None
    user = await session.scalar(
        select(User)
        .join(UserExtension, UserExtension.user_id == User.id)
        .where(
            UserExtension.extension == extension,
            or_(UserExtension.pbx == pbx, UserExtension.pbx == ""),
            User.is_active.is_(True),
        )
        .order_by(UserExtension.pbx.desc())  # a PBX-specific owner wins over a global one
        .limit(1)
    )
    return user


async def get_call(session: AsyncSession, pbx: str, call_id: str) -> Call | None:
    return await session.scalar(select(Call).where(Call.pbx == pbx, Call.call_id == call_id))


async def newest_end(session: AsyncSession, pbx: str) -> datetime | None:
    """When the newest stored call of ``pbx`` ended."""
    return await session.scalar(select(func.max(Call.ended_at)).where(Call.pbx == pbx))


async def estimates_of(
    session: AsyncSession, pbx: str, call_ids: Sequence[str]
) -> dict[str, list[str]]:
    """call id -> its estimated times ([] when exact), for the ``call_ids`` of ``pbx`` stored."""
    found: dict[str, list[str]] = {}
    ids = list(dict.fromkeys(call_ids))
    for i in range(0, len(ids), 500):
        rows = await session.execute(
            select(Call.call_id, Call.estimated).where(
                Call.pbx == pbx, Call.call_id.in_(ids[i : i + 500])
            )
        )
        for call_id, estimated in rows:
            found[call_id] = list(estimated or [])
    return found


async def store_call(
    session: AsyncSession, pbx: str, record: CallRecord, **links: Any
) -> tuple[Call, bool]:
    """Insert the call ``record`` of ``pbx`` unless it is already stored (a replay after a
    reconnect); (call, created).

    ``links`` are the attribution columns (user_id, contact_id, company_id, lead_id, deal_id,
    source_id, region_id, tracking).
    """
    existing = await get_call(session, pbx, record.call_id)
    if existing is not None:
        return existing, False
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    del fields["billsec"]  # the CDR's measure of talk_seconds, not a column of its own
    fields.update(
        rang=list(record.rang), transfers=list(record.transfers), estimated=list(record.estimated)
    )
    call = Call(pbx=pbx, **fields, **links)
    session.add(call)
    await session.flush()
    return call, True


async def list_calls(
    session: AsyncSession,
    *,
    user_ids: list[int] | None = None,
    direction: str | None = None,
    disposition: str | Sequence[str] | None = None,
    counted: bool | None = None,
    contact_id: int | None = None,
    company_id: int | None = None,
    number: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    sort: str | None = None,
    count_cap: int | None = None,
) -> tuple[list[Call], int]:
    """Calls newest first with their total, filtered; ``user_ids`` None means everyone's."""
    stmt = select(Call)
    if user_ids is not None:
        stmt = stmt.where(Call.user_id.in_(user_ids))
    if direction:
        stmt = stmt.where(Call.direction == direction)
    if isinstance(disposition, str):
        stmt = stmt.where(Call.disposition == disposition)
    elif disposition:
        stmt = stmt.where(Call.disposition.in_(list(disposition)))
    if counted is not None:
        stmt = stmt.where(Call.counted.is_(counted))
    if contact_id is not None:
        stmt = stmt.where(Call.contact_id == contact_id)
    if company_id is not None:
        stmt = stmt.where(Call.company_id == company_id)
    if number:
        stmt = stmt.where(or_(Call.caller == number, Call.callee == number))
    if since is not None:
        stmt = stmt.where(Call.started_at >= since)
    if until is not None:
        stmt = stmt.where(Call.started_at < until)
    total = await listing.total(session, stmt, count_cap)
    sorts = {
        "started_at": Call.started_at,
        "talk_seconds": Call.talk_seconds,
        "ring_seconds": Call.ring_seconds,
    }
    stmt = listing.order(stmt, sorts, sort, (Call.started_at.desc(), Call.id.desc()), Call.id)
    rows = await session.scalars(stmt.limit(limit).offset(offset))
    return list(rows), total
