"""Use cases of the client timeline: record activities (idempotently for adapters), record
meetings and notes by hand, list a timeline.

Also the access rule shared by activities, tasks and invoices: a manager may see and change a
record that is his (its user / responsible) or that is linked to a client, deal or lead he is
responsible for; head and admin everything (:mod:`crm_core.access`).

Every function takes the caller's session; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, false, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from crm_core import access
from crm_core.access import Actor
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.model import Activity
from crm_core.activities.schemas import MANUAL_KINDS, ActivityInput, ActivityPatch
from crm_core.clients.companies import group_company_ids
from crm_core.clients.model import Company, Contact
from crm_core.db import UnnestInsert, fetch_pg, is_postgresql, utcnow
from crm_core.deals.model import Deal
from crm_core.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from crm_core.leads.model import Lead
from crm_core.rules import CrmRules
from crm_core.users.model import User

# ---------------------------------------------------------------- links and access

_LINKED: dict[str, type[Any]] = {
    "company_id": Company,
    "contact_id": Contact,
    "deal_id": Deal,
    "lead_id": Lead,
}
_NAMES = {"company_id": "company", "contact_id": "contact", "deal_id": "deal", "lead_id": "lead"}


@dataclass(frozen=True)
class ClientLinks:
    """What a timeline entry, task or invoice is about."""

    company_id: int | None = None
    contact_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None

    def items(self) -> list[tuple[str, int]]:
        return [(k, v) for k in _LINKED if (v := getattr(self, k)) is not None]


async def link_owners(session: AsyncSession, links: ClientLinks) -> set[int]:
    """The responsible managers of the linked company, contact, deal and lead."""
    owners: set[int] = set()
    for field, ident in links.items():
        model = _LINKED[field]
        owner = await session.scalar(select(model.responsible_id).where(model.id == ident))
        if owner is not None:
            owners.add(owner)
    return owners


async def check_links(
    session: AsyncSession,
    links: ClientLinks,
    *,
    actor: Actor,
    rules: CrmRules,
) -> None:
    """Every link exists and ``actor`` may change it.

    A missing or unreadable link is invalid input naming the field (ids of other managers'
    clients do not leak); one the actor may only read is refused.
    """
    for field, ident in links.items():
        model = _LINKED[field]
        row = (
            await session.execute(select(model.id, model.responsible_id).where(model.id == ident))
        ).first()
        what = f"{_NAMES[field]} {ident}"
        missing = InvalidInput(f"no {what}", details={"field": field, "value": ident})
        if row is None:
            raise missing
        try:
            access.check(actor, row[1], rules, write=True, what=what, missing=missing)
        except PermissionDenied:
            raise PermissionDenied(
                f"{what} belongs to another manager", details={"field": field, "value": ident}
            ) from None


async def complete_links(session: AsyncSession, links: ClientLinks) -> ClientLinks:
    """Fill the company and contact from the deal or lead when they are not given, so an entry
    about a deal shows on its client's timeline too."""
    company_id, contact_id = links.company_id, links.contact_id
    for model, ident in ((Deal, links.deal_id), (Lead, links.lead_id)):
        if ident is None or (company_id is not None and contact_id is not None):
            continue
        row = (
            await session.execute(
                select(model.company_id, model.contact_id).where(model.id == ident)
            )
        ).first()
        if row is not None:
            company_id = company_id if company_id is not None else row[0]
            contact_id = contact_id if contact_id is not None else row[1]
    return ClientLinks(
        company_id=company_id, contact_id=contact_id, deal_id=links.deal_id, lead_id=links.lead_id
    )


def linked_to_clients_of(
    user_id: int,
    *,
    company: InstrumentedAttribute[Any] | None = None,
    contact: InstrumentedAttribute[Any] | None = None,
    deal: InstrumentedAttribute[Any] | None = None,
    lead: InstrumentedAttribute[Any] | None = None,
) -> list[ColumnElement[bool]]:
    """SQL conditions: the record's link points at a client/deal/lead ``user_id`` is
    responsible for."""
    out: list[ColumnElement[bool]] = []
    for column, model in ((company, Company), (contact, Contact), (deal, Deal), (lead, Lead)):
        if column is not None:
            out.append(column.in_(select(model.id).where(model.responsible_id == user_id)))
    return out


async def ensure_active_user(session: AsyncSession, user_id: int | None, field: str) -> None:
    if user_id is None:
        return
    active = await session.scalar(select(User.is_active).where(User.id == user_id))
    if not active:
        raise InvalidInput(f"no active user {user_id}", details={"field": field, "value": user_id})


# ---------------------------------------------------------------- activities


def _scope(stmt: Select[Any], actor: Actor, rules: CrmRules) -> Select[Any]:
    if access.is_privileged(actor):
        return stmt
    assert actor.id is not None  # only the system has none, and it is privileged
    stmt = stmt.where(
        or_(
            Activity.private_to_id.is_(None),
            Activity.private_to_id == actor.id,
            Activity.user_id == actor.id,
        )
    )
    if rules.managers_read_all:
        return stmt
    return stmt.where(
        or_(
            Activity.user_id == actor.id,
            *linked_to_clients_of(
                actor.id,
                company=Activity.company_id,
                contact=Activity.contact_id,
                deal=Activity.deal_id,
                lead=Activity.lead_id,
            ),
        )
    )


def _private_from(activity: Activity, actor: Actor) -> bool:
    """A personal mailbox's letter ``actor`` may not read, whoever's client it concerns."""
    if activity.private_to_id is None or access.is_privileged(actor):
        return False
    return actor.id not in (activity.private_to_id, activity.user_id)


def _links(activity: Activity | ActivityInput) -> ClientLinks:
    return ClientLinks(
        company_id=activity.company_id,
        contact_id=activity.contact_id,
        deal_id=activity.deal_id,
        lead_id=activity.lead_id,
    )


async def record_activity(
    session: AsyncSession,
    data: ActivityInput,
    *,
    actor: Actor,
    now: datetime | None = None,
) -> Activity:
    """Store a timeline entry on behalf of ``actor`` without permission checks: the adapters'
    write (they pass :data:`~crm_core.access.SYSTEM`) and :func:`add_activity`'s, which has
    checked them.

    With ``external_id`` the write is idempotent: when an entry with that id exists it is
    updated with the fields ``data`` sets and returned, never duplicated (also when two writers
    race). The company and contact are filled from the deal or lead when not given.
    """
    links = await complete_links(session, _links(data))
    values: dict[str, Any] = data.model_dump(exclude_unset=True)
    values.pop("kind", None)
    values.update(
        kind=str(data.kind),
        company_id=links.company_id,
        contact_id=links.contact_id,
    )
    if values.get("occurred_at") is None:
        values["occurred_at"] = now or utcnow()
    if data.external_id is not None:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        inserted = await session.scalar(
            insert(Activity)
            .values(
                **values,
                created_at=now or utcnow(),
                created_by_id=actor.id,
            )
            .on_conflict_do_nothing(index_elements=["external_id"])
            # The new entry itself (no second round trip to load it): every call stores one.
            .returning(Activity),
            execution_options={"populate_existing": True},
        )
        if inserted is not None:
            return cast(Activity, inserted)
        stmt = select(Activity).execution_options(populate_existing=True)
        existing = await session.scalar(
            stmt.where(Activity.external_id == data.external_id).with_for_update()
        )
        assert existing is not None
        for key in (data.model_fields_set | {"company_id", "contact_id"}) - {"external_id"}:
            # Links found since are added, never dropped by a re-write that lacks them.
            if values[key] is None and key in ("company_id", "contact_id", "occurred_at"):
                continue
            setattr(existing, key, values[key])
        await session.flush()
        return existing
    activity = Activity(**values, created_at=now or utcnow(), created_by_id=actor.id)
    session.add(activity)
    await session.flush()
    return activity


NEW_ACTIVITY_COLUMNS = (*ActivityInput.model_fields, "created_at", "created_by_id")
"""The columns :func:`new_activity_rows` fills."""


def new_activity_rows(
    items: Sequence[ActivityInput], *, actor: Actor, now: datetime | None = None
) -> list[dict[str, Any]]:
    """:func:`record_new_activities`' rows (:data:`NEW_ACTIVITY_COLUMNS`)."""
    rows = []
    for data in items:
        values: dict[str, Any] = data.model_dump()
        values["kind"] = str(data.kind)
        if values.get("occurred_at") is None:
            values["occurred_at"] = now or utcnow()
        values.update(created_at=now or utcnow(), created_by_id=actor.id)
        rows.append(values)
    return rows


def new_activities_pg(prefix: str = "p") -> UnnestInsert:
    """PostgreSQL: :func:`record_new_activities`' statement, its SQL the same whatever the
    number of rows (parameters named ``prefix``: to be part of a larger statement)."""
    return UnnestInsert.of(
        Activity.__table__,
        NEW_ACTIVITY_COLUMNS,
        conflict="ON CONFLICT (external_id) DO NOTHING",
        returning=("id", "external_id"),
        prefix=prefix,
    )


def recorded_activities(
    rows: Sequence[dict[str, Any]], result: Sequence[Any]
) -> list[ActivityRecorded]:
    """The events of :func:`new_activity_rows`' ``rows`` written: ``result`` is the rows the
    insert returned (id, external id); a row not among them was stored already."""
    ids = {external: row_id for row_id, external in result}
    out = []
    for values in rows:
        row_id = ids.get(values["external_id"])
        if row_id is None:
            continue
        user_id = values["user_id"]
        out.append(
            ActivityRecorded(
                activity_id=row_id,
                kind=values["kind"],
                direction=values["direction"],
                subject=values["subject"],
                occurred_at=values["occurred_at"],
                counted=values["counted"],
                user_id=user_id,
                contact_id=values["contact_id"],
                company_id=values["company_id"],
                deal_id=values["deal_id"],
                lead_id=values["lead_id"],
                external_id=values["external_id"],
                audience=(f"user:{user_id}",) if user_id is not None else (),
            )
        )
    return out


async def record_new_activities(
    session: AsyncSession,
    items: Sequence[ActivityInput],
    *,
    actor: Actor,
    now: datetime | None = None,
) -> list[ActivityRecorded]:
    """Many timeline entries at once (the inbox's batch of messages), in one statement: each
    ``item`` has its links complete (as :func:`complete_links` would leave them) and an
    ``external_id``; one whose id is stored already is left as it is (no event)."""
    if not items:
        return []
    rows = new_activity_rows(items, actor=actor, now=now)
    result: Sequence[Any]
    if is_postgresql(session):
        # One statement whatever the number of rows (compiled and prepared once).
        unnest = new_activities_pg()
        result = await fetch_pg(session, unnest.statement, unnest.params(rows))
    else:
        # One multi-row INSERT (an ORM executemany with RETURNING runs a statement per row).
        result = (
            await session.execute(
                sqlite.insert(Activity)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["external_id"])
                .returning(Activity.id, Activity.external_id)
            )
        ).all()
    return recorded_activities(rows, result)


async def add_activity(
    session: AsyncSession,
    data: ActivityInput,
    *,
    actor: Actor,
    rules: CrmRules,
    now: datetime,
) -> Activity:
    """A meeting, note or e-mail recorded by hand by ``actor``: for himself (head and admin
    for anyone), about clients he may change."""
    if data.kind not in MANUAL_KINDS:
        raise InvalidInput(
            f"{data.kind} activities are recorded by the adapters, not by hand",
            details={"field": "kind", "value": str(data.kind)},
        )
    data = data.model_copy(update={"user_id": data.user_id or actor.id, "external_id": None})
    access.check_acting_for(actor, data.user_id, "user_id")
    await ensure_active_user(session, data.user_id, "user_id")
    await check_links(session, _links(data), actor=actor, rules=rules)
    return await record_activity(session, data, actor=actor, now=now)


async def get_activity(
    session: AsyncSession, activity_id: int, *, actor: Actor, rules: CrmRules
) -> Activity:
    """One activity ``actor`` may read (404 otherwise)."""
    activity = await session.get(Activity, activity_id)
    if activity is None or _private_from(activity, actor):
        raise NotFound(f"no activity {activity_id}")
    owners = await link_owners(session, _links(activity))
    access.check(
        actor, activity.user_id, rules, write=False, what=f"activity {activity_id}", owners=owners
    )
    return activity


async def _editable(
    session: AsyncSession, activity_id: int, *, actor: Actor, rules: CrmRules
) -> Activity:
    activity = await session.get(Activity, activity_id)
    if activity is None or _private_from(activity, actor):
        raise NotFound(f"no activity {activity_id}")
    owners = await link_owners(session, _links(activity))
    access.check(
        actor, activity.user_id, rules, write=True, what=f"activity {activity_id}", owners=owners
    )
    if activity.external_id is not None or activity.kind not in MANUAL_KINDS:
        raise Conflict(
            f"activity {activity_id} was recorded by the system and cannot be changed",
            details={"activity_id": activity_id, "kind": activity.kind},
        )
    return activity


async def update_activity(
    session: AsyncSession,
    activity_id: int,
    patch: ActivityPatch,
    *,
    actor: Actor,
    rules: CrmRules,
) -> Activity:
    """Change a hand-recorded activity (409 for one an adapter wrote)."""
    activity = await _editable(session, activity_id, actor=actor, rules=rules)
    for key, value in patch.model_dump(exclude_unset=True).items():
        if key in ("subject", "occurred_at") and value is None:
            raise InvalidInput(f"{key} may not be null", details={"field": key})
        setattr(activity, key, value)
    await session.flush()
    return activity


async def delete_activity(
    session: AsyncSession, activity_id: int, *, actor: Actor, rules: CrmRules
) -> None:
    """Delete a hand-recorded activity (409 for one an adapter wrote)."""
    activity = await _editable(session, activity_id, actor=actor, rules=rules)
    await session.delete(activity)
    await session.flush()


async def list_activities(
    session: AsyncSession,
    *,
    actor: Actor,
    rules: CrmRules,
    company_id: int | None = None,
    contact_id: int | None = None,
    deal_id: int | None = None,
    lead_id: int | None = None,
    user_id: int | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
    count: bool = True,
) -> tuple[list[Activity], int]:
    """A timeline, newest first, with its total; only what ``actor`` may read.

    A company's timeline includes its group (the head organisation's member companies).
    ``count=False`` skips counting (a card shows no total: on a contact with thousands of
    entries the count cost more than the page) and gives the number of rows returned.
    """
    stmt = select(Activity)
    if company_id is not None:
        stmt = stmt.where(Activity.company_id.in_(await group_company_ids(session, company_id)))
    for column, value in (
        (Activity.contact_id, contact_id),
        (Activity.deal_id, deal_id),
        (Activity.lead_id, lead_id),
        (Activity.user_id, user_id),
        (Activity.kind, kind),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(Activity.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(Activity.occurred_at < until)
    if since is not None and until is not None and until <= since:
        stmt = stmt.where(false())
    stmt = _scope(stmt, actor, rules)
    total = await session.scalar(select(func.count()).select_from(stmt.subquery())) if count else 0
    rows = list(
        await session.scalars(
            stmt.order_by(Activity.occurred_at.desc(), Activity.id.desc())
            .limit(limit)
            .offset(offset)
        )
    )
    return rows, int(total or 0) if count else len(rows)
