"""Recordings in the CRM: registering a call's file, who may listen, the audit trail,
retention with legal hold."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import Actor, is_privileged
from crm_core.activities.model import Activity
from crm_core.audit.model import AuditEntry
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact
from crm_core.deals.model import Deal
from crm_core.errors import NotFound, PermissionDenied
from crm_core.leads.model import Lead
from crm_core.recordings.model import Recording, RecordingState

TERMINAL = frozenset({RecordingState.STORED, RecordingState.MISSING, RecordingState.FAILED})


def call_activity_key(pbx: str, call_ref: str) -> str:
    """The ``external_id`` of a call's timeline activity (written when the call ends)."""
    return f"call:{pbx}:{call_ref}"


async def register(
    session: AsyncSession,
    *,
    pbx: str,
    call_ref: str,
    filename: str,
    ended_at: datetime,
    call_pk: int | None = None,
) -> tuple[Recording, bool]:
    """The recording row of a call's file, created pending (due at once) if new; idempotent,
    so a call stored twice or a file pushed twice makes one row. Returns (row, created)."""
    row = await session.scalar(
        select(Recording).where(
            Recording.pbx == pbx, Recording.call_ref == call_ref, Recording.filename == filename
        )
    )
    if row is not None:
        return row, False
    row = Recording(
        pbx=pbx,
        call_ref=call_ref,
        call_pk=call_pk,
        filename=filename,
        ended_at=ended_at,
        next_attempt_at=ended_at,
        state=RecordingState.PENDING.value,
    )
    session.add(row)
    await session.flush()
    return row, True


async def link_activity(session: AsyncSession, row: Recording) -> None:
    """Attach the recording to its call's timeline activity, if it is there yet."""
    if row.activity_id is None:
        row.activity_id = await session.scalar(
            select(Activity.id).where(
                Activity.external_id == call_activity_key(row.pbx, row.call_ref)
            )
        )


# ---------------------------------------------------------------- access


async def _owners(session: AsyncSession, row: Recording) -> set[int]:
    """Users whose recording this is: who took or placed the call, who the timeline activity
    belongs to, and the responsible of the call's contact, company, lead and deal."""
    owners: set[int | None] = set()
    call = await session.get(Call, row.call_pk) if row.call_pk is not None else None
    activity = await session.get(Activity, row.activity_id) if row.activity_id else None
    links: dict[Any, set[int | None]] = {Contact: set(), Company: set(), Lead: set(), Deal: set()}
    for source in (call, activity):
        if source is None:
            continue
        owners.add(source.user_id)
        links[Contact].add(source.contact_id)
        links[Company].add(source.company_id)
        links[Lead].add(source.lead_id)
        links[Deal].add(source.deal_id)
    for model, ids in links.items():
        wanted = {i for i in ids if i is not None}
        if wanted:
            owners.update(
                await session.scalars(select(model.responsible_id).where(model.id.in_(wanted)))
            )
    return {o for o in owners if o is not None}


async def may_listen(session: AsyncSession, row: Recording, actor: Actor) -> bool:
    """Heads and admins hear every recording, a manager his own calls and his own clients'
    calls."""
    return is_privileged(actor) or actor.id in await _owners(session, row)


async def get_for_listening(session: AsyncSession, recording_id: int, actor: Actor) -> Recording:
    """The recording ``actor`` may hear; PermissionDenied for one of somebody else's calls."""
    row = await session.get(Recording, recording_id)
    if row is None:
        raise NotFound(f"no recording {recording_id}", details={"recording_id": recording_id})
    if not await may_listen(session, row, actor):
        raise PermissionDenied(
            f"recording {recording_id} is of another manager's call or client",
            details={"recording_id": recording_id},
        )
    return row


def audit_listen(
    session: AsyncSession,
    recording_id: int,
    actor: Actor,
    *,
    at: datetime,
    detail: dict[str, Any],
    allowed: bool = True,
) -> None:
    """One audit row per access: who, which recording, when, what part; a refused attempt is
    written too (``recording.denied``), so probing other managers' recordings shows."""
    session.add(
        AuditEntry(
            at=at,
            user_id=actor.id,
            action="recording.listen" if allowed else "recording.denied",
            object_type="recording",
            object_id=str(recording_id),
            details=detail,
        )
    )


async def for_activities(
    session: AsyncSession, activity_ids: Sequence[int]
) -> dict[int, Recording]:
    """The recording of each of these activities that has one (the newest if several)."""
    if not activity_ids:
        return {}
    rows = await session.scalars(
        select(Recording)
        .where(Recording.activity_id.in_(list(activity_ids)))
        .order_by(Recording.id)
    )
    return {r.activity_id: r for r in rows if r.activity_id is not None}


def describe(row: Recording) -> dict[str, Any]:
    """The API view of a recording (no storage key, no path)."""
    return {
        "id": row.id,
        "url": f"/api/v1/recordings/{row.id}" if row.state == RecordingState.STORED else None,
        "state": row.state,
        "pbx": row.pbx,
        "call_id": row.call_ref,
        "format": row.format,
        "duration_s": row.duration_s,
        "size": row.size,
        "sha256": row.sha256,
        "error": row.error,
        "created_at": row.created_at.isoformat(),
        "stored_at": row.stored_at.isoformat() if row.stored_at else None,
        "purged_at": row.purged_at.isoformat() if row.purged_at else None,
    }


# ---------------------------------------------------------------- retention


def _on_hold() -> Any:
    """A stored recording whose call or activity touches a contact, company or deal on legal
    hold."""
    holds = []
    for model, column in ((Contact, "contact_id"), (Company, "company_id"), (Deal, "deal_id")):
        for link, key in ((Call, Recording.call_pk), (Activity, Recording.activity_id)):
            holds.append(
                exists().where(
                    link.id == key, getattr(link, column) == model.id, model.legal_hold.is_(True)
                )
            )
    return or_(*holds)


async def expired(
    session: AsyncSession, *, now: datetime, retention_days: int, limit: int = 500
) -> list[Recording]:
    """Stored recordings older than the retention period, none on legal hold, oldest first.
    ``retention_days`` 0 keeps recordings forever."""
    if retention_days <= 0:
        return []
    cutoff = now - timedelta(days=retention_days)
    rows = await session.scalars(
        select(Recording)
        .where(
            and_(
                Recording.state == RecordingState.STORED.value,
                Recording.stored_at < cutoff,
                ~_on_hold(),
            )
        )
        .order_by(Recording.stored_at)
        .limit(limit)
    )
    return list(rows)


def mark_purged(row: Recording, *, now: datetime) -> None:
    row.state = RecordingState.PURGED.value
    row.purged_at = now
    row.storage_key = None
