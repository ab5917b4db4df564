"""Use cases of distribution rules: list, read, create, replace, delete.

Every change returns a :class:`~crm_core.distribution.events.RulesChanged` event so the
dialplan's cached rule book is dropped on every instance once the change is committed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients.errors import InvalidReference
from crm_core.deals import service as deals
from crm_core.distribution.errors import RuleExists, RuleNotFound
from crm_core.distribution.events import RulesChanged
from crm_core.distribution.model import DistributionRule, RuleManager
from crm_core.distribution.schemas import RuleInput, RuleOut
from crm_core.reference.model import Region
from crm_core.users.model import User


async def _out(session: AsyncSession, rules: list[DistributionRule]) -> list[RuleOut]:
    ids = [r.id for r in rules]
    managers: dict[int, list[RuleManager]] = {i: [] for i in ids}
    for m in (
        await session.execute(
            select(RuleManager).where(RuleManager.rule_id.in_(ids)).order_by(RuleManager.id)
        )
    ).scalars():
        managers[m.rule_id].append(m)
    codes = {i: c for i, c in await session.execute(select(Region.id, Region.code))}
    return [
        RuleOut.of(r, managers[r.id], codes.get(r.region_id) if r.region_id else None)
        for r in rules
    ]


async def list_rules(session: AsyncSession) -> list[RuleOut]:
    """Every rule, the default (no region) first."""
    rows = (
        await session.execute(
            select(DistributionRule).order_by(
                DistributionRule.region_id.is_not(None), DistributionRule.id
            )
        )
    ).scalars()
    return await _out(session, list(rows))


async def get_rule(session: AsyncSession, rule_id: int) -> RuleOut:
    return (await _out(session, [await _rule(session, rule_id)]))[0]


async def _rule(session: AsyncSession, rule_id: int) -> DistributionRule:
    rule = await session.get(DistributionRule, rule_id)
    if rule is None:
        raise RuleNotFound(f"no distribution rule {rule_id}", details={"rule_id": rule_id})
    return rule


async def _check(session: AsyncSession, data: RuleInput, rule_id: int | None) -> None:
    """The region exists, the slot is free, the managers are active users."""
    await deals.check_references(session, region_id=data.region_id)
    taken = await session.scalar(
        select(DistributionRule.id).where(
            DistributionRule.region_id.is_(None)
            if data.region_id is None
            else DistributionRule.region_id == data.region_id,
            DistributionRule.id != (rule_id or 0),
        )
    )
    if taken is not None:
        what = f"region {data.region_id}" if data.region_id else "the default slot"
        raise RuleExists(
            f"region_id: {what} already has rule {taken}",
            details={"field": "region_id", "value": data.region_id, "rule_id": taken},
        )
    ids = [m.user_id for m in data.managers]
    active = set(
        (await session.execute(select(User.id).where(User.id.in_(ids), User.is_active))).scalars()
    )
    for i, user_id in enumerate(ids):
        if user_id not in active:
            raise InvalidReference(
                f"managers.{i}.user_id: no active user {user_id}",
                details={"field": f"managers.{i}.user_id", "value": user_id},
            )


def _set_managers(session: AsyncSession, rule_id: int, data: RuleInput) -> None:
    session.add_all(
        RuleManager(
            rule_id=rule_id, user_id=m.user_id, weight=m.weight, timezone=m.timezone, hours=m.hours
        )
        for m in data.managers
    )


async def create_rule(
    session: AsyncSession, data: RuleInput, *, now: datetime
) -> tuple[RuleOut, list[RulesChanged]]:
    await _check(session, data, None)
    rule = DistributionRule(
        region_id=data.region_id,
        strategy=data.strategy,
        is_active=data.is_active,
        created_at=now,
        updated_at=now,
    )
    session.add(rule)
    await session.flush()
    _set_managers(session, rule.id, data)
    await session.flush()
    return await get_rule(session, rule.id), [RulesChanged(rule_id=rule.id, occurred_at=now)]


async def replace_rule(
    session: AsyncSession, rule_id: int, data: RuleInput, *, now: datetime
) -> tuple[RuleOut, list[RulesChanged]]:
    """Replace a rule and its managers; the round-robin turn carries on."""
    rule = await _rule(session, rule_id)
    await _check(session, data, rule_id)
    rule.region_id = data.region_id
    rule.strategy = data.strategy
    rule.is_active = data.is_active
    rule.updated_at = now
    await session.execute(delete(RuleManager).where(RuleManager.rule_id == rule_id))
    _set_managers(session, rule_id, data)
    await session.flush()
    return await get_rule(session, rule_id), [RulesChanged(rule_id=rule_id, occurred_at=now)]


async def delete_rule(session: AsyncSession, rule_id: int, *, now: datetime) -> list[RulesChanged]:
    rule = await _rule(session, rule_id)
    await session.execute(delete(RuleManager).where(RuleManager.rule_id == rule_id))
    await session.delete(rule)
    await session.flush()
    return [RulesChanged(rule_id=rule_id, occurred_at=now)]
