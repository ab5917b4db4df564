"""Use cases of call tracking that need the database: the configuration (sites, pools,
numbers), visitors' attribution, and the session history a call is attributed with.

Attribution dicts (what a call, a lead and the screen-pop carry) all have the same keys, see
:func:`attribution_dict`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.db import Base
from crm_core.reference.model import Region, Source
from crm_core.tracking.errors import InvalidTrackingData, TrackingNotFound, TrackingTaken
from crm_core.tracking.events import TrackingChanged
from crm_core.tracking.model import (
    TrackingNumber,
    TrackingPool,
    TrackingSession,
    TrackingSite,
    TrackingVisitor,
)
from crm_core.tracking.schemas import NumberInput, PoolInput, SiteInput

M = TypeVar("M", bound=Base)


def hash_form_key(key: str) -> str:
    """The stored form of a site's form key (sha256 hex): the key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


async def get_site(session: AsyncSession, code: str) -> TrackingSite | None:
    """The active site with ``code``, or None."""
    return await session.scalar(
        select(TrackingSite).where(TrackingSite.code == code, TrackingSite.is_active.is_(True))
    )


def verify_form_key(site: TrackingSite, key: str) -> bool:
    """Whether ``key`` is the site's form key; a site without one accepts no key.

    The comparison takes the same time wherever the hashes differ, so the key cannot be
    guessed byte by byte from response times."""
    if not site.form_key_hash or not key:
        return False
    return hmac.compare_digest(hash_form_key(key), site.form_key_hash)


def attribution_dict(
    *,
    visitor_id: str | None,
    site: str | None,
    kind: str | None,
    channel: str | None,
    source_id: int | None,
    source: str | None,
    campaign: str | None,
    utm: dict[str, str] | None,
    landing_page: str | None,
    referrer: str | None,
    region: str | None,
    region_id: int | None,
    low_confidence: bool,
) -> dict[str, Any]:
    """One shape for every attribution, so consumers never guess which keys exist."""
    return {
        "visitor_id": visitor_id,
        "site": site,
        "kind": kind,
        "channel": channel,
        "source_id": source_id,
        "source": source,
        "campaign": campaign,
        "utm": dict(utm or {}),
        "landing_page": landing_page,
        "referrer": referrer,
        "region": region,
        "region_id": region_id,
        "low_confidence": low_confidence,
    }


async def visitor_attribution(
    session: AsyncSession, site_id: int, visitor_id: str
) -> dict[str, Any] | None:
    """The attribution of a site's visitor (his first touch, or his latest campaign click), or
    None for an unknown visitor. One query.

    ``low_confidence`` is True when the number his latest session got was shared (its pool
    was exhausted), so a call on that number may be someone else's."""
    latest_low = (
        select(TrackingSession.low_confidence)
        .where(
            TrackingSession.site_id == TrackingVisitor.site_id,
            TrackingSession.visitor_id == TrackingVisitor.visitor_id,
        )
        .order_by(TrackingSession.started_at.desc(), TrackingSession.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(TrackingVisitor, TrackingSite.code, Source.name, Region.code, latest_low)
            .join(TrackingSite, TrackingSite.id == TrackingVisitor.site_id)
            .outerjoin(Source, Source.id == TrackingVisitor.source_id)
            .outerjoin(Region, Region.id == TrackingVisitor.region_id)
            .where(TrackingVisitor.site_id == site_id, TrackingVisitor.visitor_id == visitor_id)
        )
    ).first()
    if row is None:
        return None
    visitor, site_code, source_name, region_code, low = row
    return attribution_dict(
        visitor_id=visitor.visitor_id,
        site=site_code,
        kind=visitor.kind,
        channel=visitor.channel,
        source_id=visitor.source_id,
        source=source_name or visitor.channel,
        campaign=visitor.campaign,
        utm=visitor.utm,
        landing_page=visitor.landing_page,
        referrer=visitor.referrer,
        region=region_code,
        region_id=visitor.region_id,
        low_confidence=bool(low),
    )


# ---------------------------------------------------------------- configuration


async def get_entity(session: AsyncSession, model: type[M], entity_id: int) -> M:
    """A site, pool or number by id, or :class:`TrackingNotFound` naming it."""
    row = await session.get(model, entity_id)
    if row is None:
        entity = model.__tablename__.removeprefix("tracking_").rstrip("s")
        raise TrackingNotFound(
            f"no tracking {entity} {entity_id}", details={"entity": entity, "id": entity_id}
        )
    return row


async def _exists(session: AsyncSession, model: type[Base], field: str, value: int | None) -> None:
    if value is not None and await session.get(model, value) is None:
        raise InvalidTrackingData(
            f"{field}: no such {model.__tablename__.rstrip('s')} {value}",
            details={"field": field, "value": value},
        )


async def _taken(session: AsyncSession, what: str, value: str, *conditions: Any) -> None:
    if await session.scalar(select(1).where(*conditions).limit(1)) is not None:
        raise TrackingTaken(f"{what} {value!r} is taken", details={"field": what, "value": value})


async def save_site(
    session: AsyncSession, body: SiteInput, site_id: int | None = None
) -> tuple[TrackingSite, list[TrackingChanged]]:
    """Create (``site_id`` None) or replace a site. A replacement without ``form_key`` keeps
    the stored key: the key is never read back, so clients cannot resend it."""
    site = await get_entity(session, TrackingSite, site_id) if site_id else TrackingSite()
    if body.code != site.code:
        await _taken(session, "code", body.code, TrackingSite.code == body.code)
    await _exists(session, Region, "default_region_id", body.default_region_id)
    site.code, site.name, site.origins = body.code, body.name, body.origins
    site.default_region_id, site.is_active = body.default_region_id, body.is_active
    if body.form_key is not None:
        site.form_key_hash = hash_form_key(body.form_key)
    session.add(site)
    await session.flush()
    return site, [TrackingChanged(entity="site", entity_id=site.id)]


async def save_pool(
    session: AsyncSession, body: PoolInput, pool_id: int | None = None
) -> tuple[TrackingPool, list[TrackingChanged]]:
    pool = await get_entity(session, TrackingPool, pool_id) if pool_id else TrackingPool()
    if (body.site_id, body.code) != (pool.site_id, pool.code):
        await _taken(
            session,
            "code",
            body.code,
            TrackingPool.site_id == body.site_id,
            TrackingPool.code == body.code,
        )
    await _exists(session, TrackingSite, "site_id", body.site_id)
    await _exists(session, Region, "region_id", body.region_id)
    await _exists(session, Source, "source_id", body.source_id)
    for key, value in body.model_dump().items():
        setattr(pool, key, value)
    session.add(pool)
    await session.flush()
    return pool, [TrackingChanged(entity="pool", entity_id=pool.id)]


async def save_number(
    session: AsyncSession, body: NumberInput, number_id: int | None = None
) -> tuple[TrackingNumber, list[TrackingChanged]]:
    number = await get_entity(session, TrackingNumber, number_id) if number_id else None
    if number is None or number.did != body.did:
        await _taken(session, "did", body.did, TrackingNumber.did == body.did)
    number = number or TrackingNumber()
    await _exists(session, TrackingSite, "site_id", body.site_id)
    await _exists(session, Region, "region_id", body.region_id)
    await _exists(session, Source, "source_id", body.source_id)
    values = body.model_dump()
    if body.pool_id is not None:
        pool = await session.get(TrackingPool, body.pool_id)
        if pool is None:
            raise InvalidTrackingData(
                f"pool_id: no such pool {body.pool_id}",
                details={"field": "pool_id", "value": body.pool_id},
            )
        values["site_id"] = pool.site_id  # a pool number belongs to its pool's site
    for key, value in values.items():
        setattr(number, key, value)
    session.add(number)
    await session.flush()
    return number, [TrackingChanged(entity="number", entity_id=number.id)]


async def delete_entity(
    session: AsyncSession, model: type[Base], entity_id: int
) -> list[TrackingChanged]:
    """Delete a site (with its pools and numbers), a pool (with its numbers) or a number.
    Calls and sessions keep their DIDs and attribution; only the links go."""
    row = await get_entity(session, model, entity_id)
    await session.delete(row)
    await session.flush()
    entity = model.__tablename__.removeprefix("tracking_").rstrip("s")
    return [TrackingChanged(entity=entity, entity_id=entity_id)]


async def list_entities(session: AsyncSession, model: type[M], *conditions: Any) -> list[M]:
    order = model.__table__.c.id  # every tracking entity has an integer id
    return list(await session.scalars(select(model).where(*conditions).order_by(order)))


async def pool_dids(session: AsyncSession, pool_ids: Sequence[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {pid: [] for pid in pool_ids}
    rows = await session.execute(
        select(TrackingNumber.pool_id, TrackingNumber.did)
        .where(TrackingNumber.pool_id.in_(pool_ids))
        .order_by(TrackingNumber.did)
    )
    for pool_id, did in rows:
        if pool_id is not None:  # selected by pool_id: never None
            out[pool_id].append(did)
    return out


# ---------------------------------------------------------------- session history


async def attribution_at(
    session: AsyncSession, did: str, at: datetime, *, lease: timedelta, cooldown: timedelta
) -> dict[str, Any] | None:
    """The attribution of the session that held ``did`` at ``at`` (or released it within the
    cooldown before), from the history; for calls the lease store cannot answer (after a
    restart of the embedded server, or a call long past). One query."""
    row = await session.scalar(
        select(TrackingSession.attribution)
        .where(
            TrackingSession.did == did,
            TrackingSession.started_at <= at,
            or_(
                TrackingSession.ended_at >= at - cooldown,
                and_(
                    TrackingSession.ended_at.is_(None),
                    TrackingSession.last_seen_at >= at - lease - cooldown,
                ),
            ),
        )
        .order_by(TrackingSession.started_at.desc(), TrackingSession.id.desc())
        .limit(1)
    )
    return dict(row) if row else None
