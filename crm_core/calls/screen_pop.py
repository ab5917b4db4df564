"""The screen-pop's client card: who is calling, as the manager whose phone rings may see it.

:func:`card_summary` answers the latency-critical question "who is calling" in two round
trips whatever the card holds; :func:`card_as_seen_by` cuts it down for a manager who may not
read the card (:mod:`crm_core.access`): he sees the caller's name, company and responsible
manager only, no deals, tasks, activities or recordings, and no link to the card.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Integer, String, and_, bindparam, false, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.activities.model import Activity
from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact
from crm_core.db import Money
from crm_core.deals.model import Deal, PipelineStage, StageKind
from crm_core.leads.model import Lead
from crm_core.recordings.model import Recording, RecordingState
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task, TaskStatus
from crm_core.users.model import User, UserExtension

# What a manager who may not read the card is shown of it.
RESTRICTED_KEYS = ("name", "company", "responsible")


@dataclass(slots=True)
class Viewer:
    """The user a pop-up is for (an :class:`crm_core.access.Actor`)."""

    id: int
    role: str


# (pbx, extension) -> the active user owning it; pbx "" means on any PBX.
Viewers = dict[tuple[str, str], Viewer]

_EXTENSION_VIEWERS = (
    select(UserExtension.pbx, UserExtension.extension, User.id, User.role)
    .join(User, User.id == UserExtension.user_id)
    .where(User.is_active.is_(True))
)


async def extension_viewers(session: AsyncSession) -> Viewers:
    """Every extension with its active owner, in one round trip of plain rows (a few hundred
    rows: the pop-up keeps them in memory rather than ask at every ring)."""
    conn = await session.connection()
    return {
        (r.pbx, r.extension): Viewer(r.id, r.role) for r in await conn.execute(_EXTENSION_VIEWERS)
    }


def viewer_of(viewers: Viewers, pbx: str, extension: str) -> Viewer | None:
    """Who sees the pop-ups of ``extension`` on ``pbx``: its owner there, else its owner on
    any PBX (as :func:`crm_core.calls.service.extension_owner`)."""
    return viewers.get((pbx, extension)) or viewers.get(("", extension))


def card_as_seen_by(
    card: dict[str, Any] | None, viewer: access.Actor | None, rules: CrmRules
) -> dict[str, Any] | None:
    """``card`` (from :func:`card_summary`) for ``viewer``: whole when he may read the card,
    else only its :data:`RESTRICTED_KEYS` and ``"restricted": True`` (nobody owns the ringing
    extension: the same). Pure, so one lookup serves every phone the call rings."""
    if card is None:
        return None
    if viewer is not None and access.can_read(viewer, card["responsible_id"], rules):
        return card
    return {**{key: card[key] for key in RESTRICTED_KEYS}, "restricted": True}


def _money(amount: Decimal | None) -> str | None:
    if amount is None:
        return None
    return f"{amount:,.0f}".replace(",", " ")


async def card_summary(
    session: AsyncSession, number: str | None, *, rules: CrmRules, region: str = "RU"
) -> dict[str, Any] | None:
    """The screen-pop's client card summary for a calling number, or None for a new caller.

    Two queries whatever the card holds (who is calling; the card with its names, deals,
    activities and tasks in one UNION): the pop-up waits on each round trip, and on a busy
    event loop every await is a chance to queue behind other work.
    """
    if not number or not number.startswith("+"):
        return None
    match = await clients.find_client_by_phone(
        session, number, actor=access.SYSTEM, rules=rules, region=region
    )
    if match is None:
        return None
    kind, record_id = _card_record(match)
    # A contact of a company is described by the company's card (type, potential, region).
    card_kind = "company" if match.company_id is not None and kind != "lead" else kind
    card_id = match.company_id if card_kind == "company" else record_id
    links = {name: getattr(match, name) for name in _LINKS}
    # Core execution of statements built once per shape: no ORM result machinery, and their
    # cache keys are computed once (the pop-up is the latency-critical path).
    conn = await session.connection()
    present = tuple(value is not None for value in links.values())
    stmt = _card_rows(
        card_kind, match.responsible_id is not None, match.company_id is not None, present
    )
    params = {"card_id": card_id, "responsible_id": match.responsible_id, **links}
    sections: dict[str, list[Any]] = {"head": [], "deal": [], "activity": [], "task": []}
    for row in await conn.execute(stmt, params):
        sections[row.section].append(row)
    head = _Head.of(sections["head"][0]) if sections["head"] else None
    potential = _money(head.potential_amount) if head is not None else None
    return {
        "type": kind,
        "id": record_id,
        "contact_id": match.contact_id,
        "company_id": match.company_id,
        "lead_id": match.lead_id,
        "name": match.name,
        "company": head.company if head is not None else None,
        "client_type": head.client_type if head is not None else None,
        "potential": f"{potential} ₽" if potential else None,
        "purchase_mode": head.purchase_mode if head is not None else None,
        "responsible_id": match.responsible_id,
        "responsible": head.responsible if head is not None else None,
        "region": head.region if head is not None else None,
        "source": head.source if head is not None else None,
        "deals": [
            {"id": r.id, "title": r.title, "amount": _money(r.amount), "stage": r.extra}
            for r in sections["deal"]
        ],
        "activities": [
            {
                "kind": r.extra,
                "subject": r.title,
                "occurred_at": r.at.isoformat(),
                "direction": r.direction,
                "recording": (
                    {"id": r.recording_id, "url": f"/api/v1/recordings/{r.recording_id}"}
                    if r.recording_id
                    else None
                ),
            }
            for r in sections["activity"]
        ],
        "tasks": [
            {"id": r.id, "title": r.title, "due_at": r.at.isoformat() if r.at else None}
            for r in sections["task"]
        ],
        "url": f"/clients/{kind}/{record_id}",
        "matched_on": match.matched_on,
    }


_MODELS: dict[str, Any] = {"contact": Contact, "company": Company, "lead": Lead}
_LINKS = ("contact_id", "company_id", "lead_id")  # a card's links, the parameters of its lists


def _card_record(match: clients.ClientMatch) -> tuple[str, int]:
    """The record a match points at: its contact, else its company, else its lead."""
    if match.contact_id is not None:
        return "contact", match.contact_id
    if match.company_id is not None:
        return "company", match.company_id
    assert match.lead_id is not None
    return "lead", match.lead_id


@functools.cache
def _card_head(card_kind: str, with_responsible: bool, with_company: bool) -> Any:
    """The card's own fields with the names of its region, source, responsible and company
    (parameters ``card_id``, ``responsible_id``, ``company_id``)."""
    card: Any = _MODELS[card_kind]

    def name_of(model: Any, column: Any, param: str, present: bool) -> Any:
        if not present:
            return literal(None, String()).label(None)
        return select(column).where(model.id == bindparam(param)).scalar_subquery()

    return (
        select(
            card.client_type,
            card.potential_amount,
            card.purchase_mode,
            Region.name.label("region"),
            Source.name.label("source"),
            name_of(User, User.display_name, "responsible_id", with_responsible).label(
                "responsible"
            ),
            # A lead not yet linked to a company names it in its own column.
            (
                card.company_name.label("company")
                if card_kind == "lead" and not with_company
                else name_of(Company, Company.name, "company_id", with_company).label("company")
            ),
        )
        .select_from(card)
        .outerjoin(Region, Region.id == card.region_id)
        .outerjoin(Source, Source.id == card.source_id)
        .where(card.id == bindparam("card_id"))
    )


@dataclass(slots=True)
class _Head:
    """The card's own fields, from its ``head`` row of :func:`_card_rows`."""

    company: str | None
    client_type: str | None
    potential_amount: Decimal | None
    purchase_mode: str | None
    region: str | None
    source: str | None
    responsible: str | None

    @classmethod
    def of(cls, row: Any) -> _Head:
        return cls(
            company=row.title,
            client_type=row.extra,
            potential_amount=row.amount,
            purchase_mode=row.direction,
            region=row.region,
            source=row.source,
            responsible=row.responsible,
        )


@functools.cache
def _card_rows(
    card_kind: str, with_responsible: bool, with_company: bool, present: tuple[bool, ...]
) -> Any:
    """The whole card in one statement: open deals, last activities and open tasks of the card
    (five each) and its own fields (:func:`_card_head`), as one UNION ALL of rows ``(section,
    id, title, amount, extra, at, direction, recording_id, region, source, responsible)``;
    the ``head`` row carries company, potential, client type and purchase mode in ``title``,
    ``amount``, ``extra`` and ``direction``. ``present`` says which of the parameters
    ``contact_id``, ``company_id``, ``lead_id`` the card has."""
    no_amount = literal(None, Money()).label("amount")
    no_text = literal(None, String()).label("direction")
    no_recording = literal(None, Integer()).label("recording_id")
    no_names = (
        literal(None, String()).label("region"),
        literal(None, String()).label("source"),
        literal(None, String()).label("responsible"),
    )
    deals = (
        select(
            literal("deal").label("section"),
            Deal.id,
            Deal.title.label("title"),
            Deal.amount.label("amount"),
            PipelineStage.name_ru.label("extra"),
            Deal.updated_at.label("at"),
            no_text,
            no_recording,
            *no_names,
        )
        .join(PipelineStage, PipelineStage.id == Deal.stage_id)
        .where(_client_filter(Deal, present), PipelineStage.kind == StageKind.OPEN.value)
        .order_by(Deal.updated_at.desc())
        .limit(5)
    )
    recent = (
        select(
            literal("activity"),
            Activity.id,
            Activity.subject,
            no_amount,
            Activity.kind,
            Activity.occurred_at,
            Activity.direction,
            Recording.id,
            *no_names,
        )
        .outerjoin(
            Recording,
            and_(
                Recording.activity_id == Activity.id,
                Recording.state == RecordingState.STORED.value,
            ),
        )
        # A personal mailbox's letters are not the pop-up's to show (the card is summed up
        # once for whoever's phone rings).
        .where(_client_filter(Activity, present), Activity.private_to_id.is_(None))
        .order_by(Activity.occurred_at.desc())
        .limit(5)
    )
    open_tasks = (
        select(
            literal("task"),
            Task.id,
            Task.title,
            no_amount,
            literal(None, String()),
            Task.due_at,
            no_text,
            no_recording,
            *no_names,
        )
        .where(_client_filter(Task, present), Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at)
        .limit(5)
    )
    own = _card_head(card_kind, with_responsible, with_company).subquery()
    head = select(
        literal("head"),
        literal(None, Integer()),
        own.c.company,
        own.c.potential_amount,
        own.c.client_type,
        literal(None, Deal.updated_at.type),
        own.c.purchase_mode,
        literal(None, Integer()),
        own.c.region,
        own.c.source,
        own.c.responsible,
    )
    parts = [select(*q.subquery().c) for q in (deals, recent, open_tasks)] + [head]
    union = union_all(*parts).subquery()
    return select(union)


def _client_filter(model: Any, present: tuple[bool, ...]) -> Any:
    """Rows of ``model`` linked to the matched contact, company or lead (the links it has;
    parameters of the same names)."""
    conditions = [
        getattr(model, column) == bindparam(column)
        for column, there in zip(_LINKS, present, strict=True)
        if there and hasattr(model, column)
    ]
    return or_(*conditions) if conditions else false()
