"""Which manager gets a call or a website request: region rules, working hours, strategies.

The order of the decision:

1. an existing client goes to his responsible manager (if that user is still active);
2. the rule of the request's region, then of its parent regions, then the default rule: the
   first rule with a manager on duty (active, inside his working hours) decides by its strategy;
   a ``manual`` rule sends the request to the manual queue at once;
3. nobody on duty anywhere: the manual queue.

The rules, managers, regions and active users are read into a :class:`RuleBook` snapshot. The
dialplan endpoint keeps one in memory (the composition root invalidates it on change events), a
website request reads a fresh one; the decision itself is the same code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.clients import service as clients
from crm_core.distribution.model import DistributionRule, RuleManager, Strategy
from crm_core.leads.model import Lead
from crm_core.reference.model import Region
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task, TaskStatus
from crm_core.users.model import User, UserExtension

log = logging.getLogger(__name__)

Channel = Literal["call", "web", "message"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY = 24 * 60
_MAX_PARENT_DEPTH = 16  # a cycle in regions.parent_id must not hang the dialplan


@dataclass(frozen=True)
class Assignment:
    """The outcome: a manager, or the manual queue (``queued``), and why (``reason``:
    ``existing_client``, a strategy name, ``manual``, ``nobody_on_duty``)."""

    user_id: int | None
    queued: bool
    reason: str
    rule_id: int | None = None


def parse_interval(text: str) -> tuple[int, int]:
    """``"09:00-18:00"`` → minutes of the day ``(540, 1080)``; an end at or before the start
    runs past midnight (``"22:00-06:00"``). Raises ``ValueError`` with the offending text."""
    try:
        start, end = (_minutes(part) for part in text.split("-"))
    except ValueError as exc:
        raise ValueError(f"expected HH:MM-HH:MM, got {text!r}") from exc
    return start, end


def _minutes(text: str) -> int:
    hours, minutes = text.strip().split(":")
    h, m = int(hours), int(minutes)
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > _DAY:
        raise ValueError(text)
    return h * 60 + m


@dataclass(frozen=True)
class OnDuty:
    """A manager's weight and working hours in his time zone."""

    user_id: int
    weight: int
    tz: ZoneInfo
    # weekday index (0 = Monday) → intervals in minutes; None = any time
    hours: Mapping[int, tuple[tuple[int, int], ...]] | None

    def works_at(self, moment: datetime) -> bool:
        if self.hours is None:
            return True
        local = moment.astimezone(self.tz)
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        today = any(
            start <= minute and (minute < end or end <= start)
            for start, end in self.hours.get(day, ())
        )
        # An interval of yesterday that runs past midnight.
        overnight = any(
            end <= start and minute < end for start, end in self.hours.get((day - 1) % 7, ())
        )
        return today or overnight


def on_duty_of(
    user_id: int, weight: int, tz: ZoneInfo, hours: Mapping[str, Sequence[str]] | None
) -> OnDuty:
    table = None
    if hours is not None:
        table = {
            WEEKDAYS.index(day): tuple(parse_interval(i) for i in intervals)
            for day, intervals in hours.items()
        }
    return OnDuty(user_id, max(weight, 1), tz, table)


@dataclass(frozen=True)
class RuleView:
    id: int
    region_id: int | None
    strategy: str
    managers: tuple[OnDuty, ...]


@dataclass(frozen=True)
class RuleBook:
    """Everything a decision reads besides the caller's card and the managers' load."""

    rules: Mapping[int | None, RuleView] = field(default_factory=dict)  # by region id
    parents: Mapping[int, int | None] = field(default_factory=dict)
    region_ids: Mapping[str, int] = field(default_factory=dict)  # by code
    active_users: frozenset[int] = frozenset()
    extensions: Mapping[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def chain(self, region_id: int | None) -> list[RuleView]:
        """The active rules to try: the region's, its parents' (nearest first), the default."""
        out: list[RuleView] = []
        seen: set[int] = set()
        while region_id is not None and region_id not in seen and len(seen) < _MAX_PARENT_DEPTH:
            seen.add(region_id)
            rule = self.rules.get(region_id)
            if rule is not None:
                out.append(rule)
            region_id = self.parents.get(region_id)
        default = self.rules.get(None)
        if default is not None:
            out.append(default)
        return out

    def extension_of(self, user_id: int | None, pbx: str | None) -> str | None:
        """The user's extension on ``pbx`` (one registered for any PBX will do)."""
        if user_id is None:
            return None
        owned = self.extensions.get(user_id, ())
        exact = [ext for p, ext in owned if pbx and p == pbx]
        anywhere = [ext for p, ext in owned if p == ""]
        found = exact or anywhere
        return found[0] if found else None


async def load_rulebook(session: AsyncSession, *, default_timezone: str) -> RuleBook:
    """Read the rules, their managers, regions, active users and extensions (five queries)."""
    regions = (
        await session.execute(select(Region.id, Region.code, Region.parent_id, Region.timezone))
    ).all()
    zones = {r.id: r.timezone for r in regions}
    rows = (
        await session.execute(select(DistributionRule).where(DistributionRule.is_active))
    ).scalars()
    managers: dict[int, list[OnDuty]] = {}
    rules_by_id = {r.id: r for r in rows}
    for m in (
        await session.execute(
            select(RuleManager)
            .where(RuleManager.rule_id.in_(rules_by_id))
            .order_by(RuleManager.user_id)
        )
    ).scalars():
        region_id = rules_by_id[m.rule_id].region_id
        zone = m.timezone or (zones.get(region_id) if region_id else None) or default_timezone
        managers.setdefault(m.rule_id, []).append(
            on_duty_of(m.user_id, m.weight, ZoneInfo(zone), m.hours)
        )
    active = frozenset((await session.execute(select(User.id).where(User.is_active))).scalars())
    extensions: dict[int, list[tuple[str, str]]] = {}
    for user_id, pbx, ext in await session.execute(
        select(UserExtension.user_id, UserExtension.pbx, UserExtension.extension).order_by(
            UserExtension.id
        )
    ):
        extensions.setdefault(user_id, []).append((pbx, ext))
    return RuleBook(
        rules={
            r.region_id: RuleView(r.id, r.region_id, r.strategy, tuple(managers.get(r.id, ())))
            for r in rules_by_id.values()
        },
        parents={r.id: r.parent_id for r in regions},
        region_ids={r.code: r.id for r in regions},
        active_users=active,
        extensions={u: tuple(e) for u, e in extensions.items()},
    )


async def distribute(
    session: AsyncSession,
    region_id: int | None,
    phone: str | None,
    now: datetime,
    channel: Channel,
    *,
    rules: CrmRules | None = None,
    book: RuleBook | None = None,
    default_timezone: str = "Europe/Moscow",
    taken_by: int | None = None,
) -> Assignment:
    """Choose the manager for a call or a website request from ``region_id`` (None: unknown)
    by ``phone`` (E.164 or None). Advances a round-robin rule's turn in the caller's
    transaction; nothing else is written.

    ``taken_by`` is the manager who already has the request (the dialplan sent the call to his
    phone): when the deciding rule has him on duty he keeps it and no second round-robin
    turn is taken, so the lead goes to the manager who talked to the caller."""
    rules = rules or CrmRules()
    if book is None:
        book = await load_rulebook(session, default_timezone=default_timezone)
    if phone:
        match = await clients.find_client_by_phone(session, phone, actor=access.SYSTEM, rules=rules)
        if match is not None and match.responsible_id in book.active_users:
            return Assignment(match.responsible_id, False, "existing_client")
    for rule in book.chain(region_id):
        if rule.strategy == Strategy.MANUAL:
            return Assignment(None, True, "manual", rule.id)
        on_duty = [m for m in rule.managers if m.user_id in book.active_users and m.works_at(now)]
        if not on_duty:
            continue
        if taken_by is not None and any(m.user_id == taken_by for m in on_duty):
            return Assignment(taken_by, False, rule.strategy, rule.id)
        user_id = await _pick(session, rule, on_duty, rules)
        log.debug(
            "distribution: %s request of region %s → user %s by rule %s (%s)",
            channel,
            region_id,
            user_id,
            rule.id,
            rule.strategy,
        )
        return Assignment(user_id, False, rule.strategy, rule.id)
    return Assignment(None, True, "nobody_on_duty")


async def distribute_many(
    session: AsyncSession,
    regions: Sequence[int | None],
    now: datetime,
    channel: Channel,
    *,
    rules: CrmRules | None = None,
    book: RuleBook | None = None,
    default_timezone: str = "Europe/Moscow",
) -> list[Assignment]:
    """:func:`distribute` (without a number to look up) for many requests at once, one per
    region in ``regions``, in order: a round-robin rule takes all its turns in one statement."""
    rules = rules or CrmRules()
    if book is None:
        book = await load_rulebook(session, default_timezone=default_timezone)
    out: list[Assignment | None] = []
    turns: dict[int, list[tuple[int, RuleView, list[OnDuty]]]] = {}
    duty: dict[int, list[OnDuty]] = {}  # a rule's managers on duty now: worked out once
    for index, region_id in enumerate(regions):
        decided: Assignment | None = Assignment(None, True, "nobody_on_duty")
        for rule in book.chain(region_id):
            if rule.strategy == Strategy.MANUAL:
                decided = Assignment(None, True, "manual", rule.id)
                break
            on_duty = duty.get(rule.id)
            if on_duty is None:
                on_duty = duty[rule.id] = [
                    m for m in rule.managers if m.user_id in book.active_users and m.works_at(now)
                ]
            if not on_duty:
                continue
            if rule.strategy == Strategy.ROUND_ROBIN:
                turns.setdefault(rule.id, []).append((index, rule, on_duty))
                decided = None
            else:
                decided = Assignment(
                    await _pick(session, rule, on_duty, rules), False, rule.strategy, rule.id
                )
            break
        out.append(decided)
    if turns:
        conn = await session.connection()
        for rule_id, wanting in turns.items():
            last = (
                await conn.execute(_TAKE_TURNS, {"rule_id": rule_id, "n": len(wanting)})
            ).scalar()
            first = int(last or len(wanting)) - len(wanting)  # the 0-based turn of the first
            for offset, (index, rule, on_duty) in enumerate(wanting):
                user_id = weighted_turn(on_duty, first + offset)
                out[index] = Assignment(user_id, False, rule.strategy, rule.id)
    assert all(a is not None for a in out)
    return [a for a in out if a is not None]


async def _pick(
    session: AsyncSession, rule: RuleView, on_duty: Sequence[OnDuty], rules: CrmRules
) -> int:
    if rule.strategy == Strategy.ROUND_ROBIN:
        conn = await session.connection()
        turn = (await conn.execute(_TAKE_TURN, {"rule_id": rule.id})).scalar()
        return weighted_turn(on_duty, int(turn or 1) - 1)
    if rule.strategy == Strategy.LEAST_LOADED:
        load = await open_load(session, [m.user_id for m in on_duty], rules)
        return min(on_duty, key=lambda m: (load.get(m.user_id, 0) / m.weight, m.user_id)).user_id
    return on_duty[0].user_id  # fixed: its one manager


def _take_turn_statement() -> Any:
    """``UPDATE ... SET turn = turn + 1 ... RETURNING turn``: atomic under the row lock on
    PostgreSQL and the single writer on SQLite. A Core statement built once: the ORM's bulk
    update path costs more than the round trip on the dialplan's hot path."""
    table = cast(Table, DistributionRule.__table__)  # a mapped class's table (typed FromClause)
    return (
        table.update()
        .where(table.c.id == bindparam("rule_id"))
        .values(turn=table.c.turn + 1)
        .returning(table.c.turn)
    )


_TAKE_TURN = _take_turn_statement()
_TAKE_TURNS = (
    cast(Table, DistributionRule.__table__)
    .update()
    .where(cast(Table, DistributionRule.__table__).c.id == bindparam("rule_id"))
    .values(turn=cast(Table, DistributionRule.__table__).c.turn + bindparam("n"))
    .returning(cast(Table, DistributionRule.__table__).c.turn)
)


def weighted_turn(managers: Sequence[OnDuty], turn: int) -> int:
    """The user of turn ``turn`` (0-based) in smooth weighted round robin: weights 2:1 give
    A, B, A, A, B, A … interleaved rather than in runs. The cycle (as long as the weights'
    sum) is worked out once per set of managers and weights, not on every turn."""
    cycle = _weighted_cycle(tuple((m.user_id, m.weight) for m in managers))
    return cycle[turn % len(cycle)]


@functools.lru_cache(maxsize=256)
def _weighted_cycle(managers: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    total = sum(weight for _, weight in managers)
    current = [0] * len(managers)
    out: list[int] = []
    for _ in range(total):
        for i, (_, weight) in enumerate(managers):
            current[i] += weight
        chosen = max(range(len(managers)), key=lambda i: (current[i], -i))
        current[chosen] -= total
        out.append(managers[chosen][0])
    return tuple(out)


async def open_load(
    session: AsyncSession, user_ids: Iterable[int], rules: CrmRules
) -> dict[int, int]:
    """Open leads (in an open stage) plus open tasks of each user."""
    ids = list(user_ids)
    open_stages = [s.code for s in rules.lead_stages if s.kind == "open"]
    load: dict[int, int] = dict.fromkeys(ids, 0)
    lead_counts = (
        select(Lead.responsible_id, func.count())
        .where(Lead.responsible_id.in_(ids), Lead.stage.in_(open_stages))
        .group_by(Lead.responsible_id)
    )
    task_counts = (
        select(Task.responsible_id, func.count())
        .where(Task.responsible_id.in_(ids), Task.status == TaskStatus.OPEN.value)
        .group_by(Task.responsible_id)
    )
    for stmt in (lead_counts, task_counts):
        for user_id, count in await session.execute(stmt):
            if user_id is not None:  # selected among ids
                load[user_id] += count
    return load


def hours_are_valid(hours: Mapping[str, Sequence[str]]) -> None:
    """Raise ``ValueError`` naming the first bad weekday key or interval."""
    for day, intervals in hours.items():
        if day not in WEEKDAYS:
            raise ValueError(f"unknown weekday {day!r}; expected one of {', '.join(WEEKDAYS)}")
        for interval in intervals:
            parse_interval(interval)


async def region_of_tracking(
    session: AsyncSession, tracking: Mapping[str, Any] | None
) -> int | None:
    """The active region a call's or lead's tracking names (``region_id``, else the
    ``region`` code); None when it names none or one that is gone."""
    if not tracking:
        return None
    if tracking.get("region_id"):
        where = Region.id == int(tracking["region_id"])
    elif tracking.get("region"):
        where = Region.code == str(tracking["region"])
    else:
        return None
    region_id = await session.scalar(select(Region.id).where(where, Region.is_active))
    return int(region_id) if region_id is not None else None
