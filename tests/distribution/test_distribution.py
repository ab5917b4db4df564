"""Who gets a request: strategies, fallbacks, working hours, existing clients (both backends)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from contact_center import db
from crm_core.clients.model import Contact, Phone
from crm_core.distribution import service as distribution
from crm_core.distribution.model import DistributionRule
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.tasks.model import Task
from crm_core.users.model import User
from tests.distribution.world import NOON_MSK, WORKDAY, add_rule, build

EVENING_MSK = NOON_MSK + timedelta(hours=9)  # 21:00 in Moscow


async def pick(session: Any, region: int | None, phone: str | None = None, at: datetime = NOON_MSK):
    result = await distribution.distribute(session, region, phone, at, "web")
    await session.commit()
    return result


async def test_fixed_rule_and_fallbacks_to_parent_default_and_queue(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "fixed", w["ivan"], hours=WORKDAY)
    await add_rule(session, w["russia"], "fixed", w["anna"], hours=WORKDAY)
    a = await pick(session, w["moscow"])
    assert (a.user_id, a.queued, a.reason) == (w["ivan"], False, "fixed")
    # Kazan has no rule: its parent's.
    assert (await pick(session, w["kazan"])).user_id == w["anna"]
    # Nobody works at 21:00 and there is no default rule: the manual queue.
    late = await pick(session, w["moscow"], at=EVENING_MSK)
    assert (late.user_id, late.queued, late.reason) == (None, True, "nobody_on_duty")
    await add_rule(session, None, "fixed", w["petr"])  # the default rule, any time
    assert (await pick(session, w["moscow"], at=EVENING_MSK)).user_id == w["petr"]
    assert (await pick(session, None)).user_id == w["petr"]


async def test_inactive_manager_is_skipped(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "round_robin", w["ivan"], w["anna"])
    (await session.get(User, w["ivan"])).is_active = False
    await session.commit()
    picks = {(await pick(session, w["moscow"])).user_id for _ in range(4)}
    assert picks == {w["anna"]}


async def test_manual_rule_queues_even_with_managers_elsewhere(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["spb"], "manual")
    await add_rule(session, None, "fixed", w["ivan"])
    a = await pick(session, w["spb"])
    assert (a.user_id, a.queued, a.reason) == (None, True, "manual")


async def test_weighted_round_robin_continues_across_sessions(session: Any, engine: Any) -> None:
    w = await build(session)
    rule_id = await add_rule(session, w["moscow"], "round_robin", (w["ivan"], 2), w["anna"])
    first = [(await pick(session, w["moscow"])).user_id for _ in range(3)]
    assert first == [w["ivan"], w["anna"], w["ivan"]]
    # A "restart": a new session (a new process would read the same row) goes on from turn 4.
    async with db.sessionmaker(engine)() as other:
        nxt = [(await pick(other, w["moscow"])).user_id for _ in range(3)]
    assert nxt == [w["ivan"], w["anna"], w["ivan"]]
    turn = await session.scalar(select(DistributionRule.turn).where(DistributionRule.id == rule_id))
    assert turn == 6


async def test_round_robin_turns_are_never_shared_under_concurrency(
    session: Any, engine: Any
) -> None:
    """On PostgreSQL the row lock decides; SQLite serialises the writers (busy timeout)."""
    w = await build(session)
    await add_rule(session, w["moscow"], "round_robin", w["ivan"], w["anna"], w["petr"])
    factory = db.sessionmaker(engine)

    async def one() -> int | None:
        async with factory() as s:
            return (await pick(s, w["moscow"])).user_id

    picks = await asyncio.gather(*(one() for _ in range(30)))
    # 30 turns over three managers: exactly ten each only if no two calls took the same turn.
    assert Counter(picks) == {w["ivan"]: 10, w["anna"]: 10, w["petr"]: 10}


async def test_least_loaded_counts_open_leads_and_tasks(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "least_loaded", w["ivan"], w["anna"], w["petr"])
    session.add_all(
        [
            Lead(stage="new", responsible_id=w["ivan"]),
            Lead(stage="junk", responsible_id=w["anna"]),  # closed: not load
            Task(kind="custom", title="t", status="open", responsible_id=w["petr"]),
            Task(kind="custom", title="t", status="done", responsible_id=w["anna"]),
        ]
    )
    await session.commit()
    assert (await pick(session, w["moscow"])).user_id == w["anna"]
    session.add(Task(kind="custom", title="t", status="open", responsible_id=w["anna"]))
    session.add(Task(kind="custom", title="t", status="open", responsible_id=w["anna"]))
    await session.commit()
    # ivan 1, anna 2, petr 1: the lower id of the two least loaded.
    assert (await pick(session, w["moscow"])).user_id == min(w["ivan"], w["petr"])


async def test_existing_client_goes_to_his_manager_first(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "fixed", w["ivan"])
    contact = Contact(name="Клиент", responsible_id=w["petr"])
    session.add(contact)
    await session.flush()
    number = "+74951112233"
    session.add(Phone(contact_id=contact.id, e164=number, digits_rev=digits_reversed(number)))
    await session.commit()
    a = await pick(session, w["moscow"], number)
    assert (a.user_id, a.reason) == (w["petr"], "existing_client")
    (await session.get(User, w["petr"])).is_active = False
    await session.commit()
    assert (await pick(session, w["moscow"], number)).user_id == w["ivan"]


def test_weighted_turns_interleave() -> None:
    tz = ZoneInfo("UTC")
    managers = [distribution.on_duty_of(1, 3, tz, None), distribution.on_duty_of(2, 1, tz, None)]
    seq = [distribution.weighted_turn(managers, t) for t in range(8)]
    assert seq == [1, 1, 2, 1, 1, 1, 2, 1]
    assert Counter(seq) == {1: 6, 2: 2}


def test_working_hours_in_the_managers_zone_and_past_midnight() -> None:
    vladivostok = distribution.on_duty_of(
        1, 1, ZoneInfo("Asia/Vladivostok"), {"mon": ["09:00-18:00"]}
    )
    # 01:00 UTC Monday = 11:00 in Vladivostok (UTC+10), 04:00 in Moscow.
    assert vladivostok.works_at(datetime(2026, 3, 2, 1, 0, tzinfo=UTC))
    assert not vladivostok.works_at(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))  # 19:00 there
    night = distribution.on_duty_of(2, 1, ZoneInfo("UTC"), {"fri": ["22:00-06:00"]})
    assert night.works_at(datetime(2026, 3, 6, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert night.works_at(datetime(2026, 3, 7, 5, 59, tzinfo=UTC))  # Saturday 05:59
    assert not night.works_at(datetime(2026, 3, 7, 6, 0, tzinfo=UTC))
    assert not night.works_at(datetime(2026, 3, 5, 23, 0, tzinfo=UTC))  # Thursday


@pytest.mark.parametrize("bad", ["9-18", "09:00-25:00", "09:00", "ab:cd-10:00"])
def test_bad_intervals_are_refused_with_the_text(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        distribution.parse_interval(bad)
