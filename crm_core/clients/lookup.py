"""Who is calling: a number (any format) to the contact, company or open lead that has it.

The screen-pop path: one indexed equality (``phones.last10``) answers it, with statements built
once and run on the Core connection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from crm_core import access
from crm_core.access import Actor
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.leads.model import Lead
from crm_core.phones import digits_of, try_normalize_phone
from crm_core.rules import CrmRules


@dataclass(frozen=True)
class ClientMatch:
    """Who is calling: the screen-pop's answer for a number."""

    contact_id: int | None
    company_id: int | None
    lead_id: int | None
    responsible_id: int | None
    name: str
    matched_on: str  # "e164": the exact number; "last_digits": its last 10 digits
    phone: str | None = None  # the stored number that matched


def _suffix_range(key: str) -> tuple[str, str | None]:
    """``[key, upper)``: every string of digits starting with ``key``. The upper bound drops
    trailing nines and increments the last digit ("7659" → "766"), so it stays a digit string
    and sorts the same under any collation; all nines have no upper bound."""
    stripped = key.rstrip("9")
    if not stripped:
        return key, None
    return key, stripped[:-1] + str(int(stripped[-1]) + 1)


def digits_rev_prefix(digits: str) -> Any:
    """A ``WHERE`` clause: phones whose number ends with ``digits`` (a btree range)."""
    low, high = _suffix_range(digits[::-1])
    clause = Phone.digits_rev >= low
    if high is not None:
        clause = and_(clause, Phone.digits_rev < high)
    return clause


def _lookup_statements() -> tuple[Any, Any, Any]:
    """The lookup's statements, built once: a statement object reused with bound parameters
    skips SQLAlchemy's per-call construction and cache-key work (half the lookup's time)."""
    linked = aliased(Company)

    def via_link(column: Any) -> Any:
        # The contact's company: where he is the decision maker first, else the oldest link.
        return (
            select(column)
            .select_from(ContactCompany)
            .join(
                linked,
                and_(linked.id == ContactCompany.company_id, linked.merged_into_id.is_(None)),
            )
            .where(ContactCompany.contact_id == Phone.contact_id)
            .order_by(ContactCompany.is_decision_maker.desc(), ContactCompany.id)
            .limit(1)
            .correlate(Phone)
            .scalar_subquery()
        )

    base = (
        select(
            Phone.e164,
            Phone.contact_id,
            Contact.name,
            Contact.responsible_id,
            via_link(linked.id),
            via_link(linked.responsible_id),
            Phone.company_id,
            Company.name,
            Company.responsible_id,
            Phone.lead_id,
            Lead.stage,
            func.coalesce(Lead.contact_name, Lead.company_name, Lead.title),
            Lead.responsible_id,
            Lead.contact_id,
            Lead.company_id,
        )
        .outerjoin(Contact, and_(Contact.id == Phone.contact_id, Contact.merged_into_id.is_(None)))
        .outerjoin(Company, and_(Company.id == Phone.company_id, Company.merged_into_id.is_(None)))
        .outerjoin(Lead, Lead.id == Phone.lead_id)
    )
    exact = base.where(Phone.e164 == bindparam("e164")).limit(50)
    by_last10 = base.where(Phone.last10 == bindparam("last10")).limit(50)
    many = base.add_columns(Phone.last10).where(Phone.last10.in_(bindparam("keys", expanding=True)))
    return exact, by_last10, many


_BY_E164, _BY_LAST10, _BY_LAST10_MANY = _lookup_statements()

Visible = Callable[[int | None], bool] | None  # None: everything is visible


async def find_client_by_phone(
    session: AsyncSession,
    raw: str,
    *,
    actor: Actor,
    rules: CrmRules,
    region: str | None = None,
) -> ClientMatch | None:
    """Who is calling from ``raw`` (any format), among the records ``actor`` may read: a
    contact, else a company, else an open lead with that number in E.164; failing that, one
    whose number has the same last 10 digits. A contact comes with his company (the one where
    he is the decision maker first) and the contact's responsible (else the company's). None
    for an unknown number, or one only records ``actor`` may not read have (telephony and
    routing pass :data:`~crm_core.access.SYSTEM`, which sees every record).

    ``region`` (default ``rules.default_region``) reads numbers without a country code.
    """
    open_stages = _open_stages(rules)
    visible: Visible = None
    if not (access.is_privileged(actor) or rules.managers_read_all):
        visible = functools.partial(access.can_read, actor, rules=rules)
    e164 = try_normalize_phone(raw, region or rules.default_region)
    digits = digits_of(e164 or raw or "")
    # Core execution: plain rows, none of the ORM's result machinery (a screen-pop path).
    # It does not autoflush, so flush what the session holds, if anything.
    if session.new or session.dirty or session.deleted:
        await session.flush()
    conn = await session.connection()
    if len(digits) < 10:
        if e164 is None:
            return None
        rows = (await conn.execute(_BY_E164, {"e164": e164})).all()
        return _best_match(rows, "e164", open_stages, visible)
    # Every number with the same last 10 digits, the exact one among them: one query.
    rows = (await conn.execute(_BY_LAST10, {"last10": digits[-10:]})).all()
    exact = [r for r in rows if r[0] == e164]
    match = _best_match(exact, "e164", open_stages, visible) if exact else None
    return match or _best_match(rows, "last_digits", open_stages, visible)


async def find_clients_by_phones(
    session: AsyncSession,
    raws: Sequence[str],
    *,
    actor: Actor,
    rules: CrmRules,
) -> dict[str, ClientMatch]:
    """:func:`find_client_by_phone` for many numbers in one query (the inbox's batch of
    senders): each found number -> its match, chosen as that function chooses."""
    open_stages = _open_stages(rules)
    visible: Visible = None
    if not (access.is_privileged(actor) or rules.managers_read_all):
        visible = functools.partial(access.can_read, actor, rules=rules)
    wanted: dict[str, tuple[str | None, str]] = {}
    out: dict[str, ClientMatch] = {}
    for raw in dict.fromkeys(raws):
        e164 = try_normalize_phone(raw, rules.default_region)
        digits = digits_of(e164 or raw or "")
        if len(digits) >= 10:
            wanted[raw] = (e164, digits[-10:])
            continue
        match = await find_client_by_phone(session, raw, actor=actor, rules=rules)
        if match is not None:
            out[raw] = match
    if not wanted:
        return out
    if session.new or session.dirty or session.deleted:
        await session.flush()
    conn = await session.connection()
    keys = sorted({last10 for _, last10 in wanted.values()})
    rows = (await conn.execute(_BY_LAST10_MANY, {"keys": keys})).all()
    by_key: dict[str, list[Any]] = {}
    for row in rows:
        by_key.setdefault(row[-1], []).append(row[:-1])
    for raw, (e164, last10) in wanted.items():
        found = by_key.get(last10, [])
        exact = [r for r in found if r[0] == e164]
        match = _best_match(exact, "e164", open_stages, visible) if exact else None
        match = match or _best_match(found, "last_digits", open_stages, visible)
        if match is not None:
            out[raw] = match
    return out


@functools.cache
def _open_stages_of(stages: tuple[Any, ...]) -> frozenset[str]:
    return frozenset(s.code for s in stages if s.kind == "open")


def _open_stages(rules: CrmRules) -> frozenset[str]:
    return _open_stages_of(rules.lead_stages)


def _best_match(
    rows: Sequence[Any], matched_on: str, open_stages: frozenset[str], visible: Visible
) -> ClientMatch | None:
    best: tuple[int, int] | None = None
    found: ClientMatch | None = None
    for r in rows:
        (e164, contact_id, contact_name, contact_resp, link_company, link_resp) = r[:6]
        (company_id, company_name, company_resp) = r[6:9]
        (lead_id, stage, lead_name, lead_resp, lead_contact, lead_company) = r[9:]
        # Rank: a contact, then a company (lowest id first), then the newest open lead; each
        # only when the actor may read it (its own responsible decides).
        if contact_id is not None and contact_name is not None:
            if visible is not None and not visible(contact_resp):
                continue
            rank = (0, contact_id)
            candidate = ClientMatch(
                contact_id,
                link_company,
                None,
                contact_resp if contact_resp is not None else link_resp,
                contact_name,
                matched_on,
                e164,
            )
        elif company_id is not None and company_name is not None:
            if visible is not None and not visible(company_resp):
                continue
            rank = (1, company_id)
            candidate = ClientMatch(
                None, company_id, None, company_resp, company_name, matched_on, e164
            )
        elif lead_id is not None and stage in open_stages:
            if visible is not None and not visible(lead_resp):
                continue
            rank = (2, -lead_id)
            candidate = ClientMatch(
                lead_contact, lead_company, lead_id, lead_resp, lead_name or e164, matched_on, e164
            )
        else:
            continue
        if best is None or rank < best:
            best, found = rank, candidate
    return found
