"""Users, regions and rules shared by the distribution tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.distribution.model import DistributionRule, RuleManager
from crm_core.reference.model import Region
from crm_core.users import service as users

# Monday 2 March 2026, 12:00 Moscow time (09:00 UTC).
NOON_MSK = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PASSWORD = "password1"
WORKDAY = {day: ["09:00-18:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


async def build(session: AsyncSession) -> dict[str, int]:
    """Managers ivan (101), anna (102), petr (103), head boss, admin adm; regions Russia →
    Moscow, St Petersburg, Kazan (no rule of its own)."""
    ids: dict[str, int] = {}
    for login, role, ext in (
        ("adm", "admin", None),
        ("boss", "head", None),
        ("ivan", "manager", "101"),
        ("anna", "manager", "102"),
        ("petr", "manager", "103"),
    ):
        user, _ = await users.create_user(
            session,
            login=login,
            role=role,
            password=PASSWORD,
            extensions=[ext] if ext else [],
            scrypt_n=1024,
        )
        ids[login] = user.id
    russia = Region(code="RU", name="Россия", timezone="Europe/Moscow")
    session.add(russia)
    await session.flush()
    for key, code, name, zone in (
        ("moscow", "RU-MOW", "Москва", "Europe/Moscow"),
        ("spb", "RU-SPE", "Санкт-Петербург", "Europe/Moscow"),
        ("kazan", "RU-TA", "Казань", None),
    ):
        region = Region(code=code, name=name, parent_id=russia.id, timezone=zone)
        session.add(region)
        await session.flush()
        ids[key] = region.id
    ids["russia"] = russia.id
    await session.commit()
    return ids


async def add_rule(
    session: AsyncSession,
    region_id: int | None,
    strategy: str,
    *managers: tuple[int, int] | int,
    hours: dict[str, list[str]] | None = None,
    **manager_kw: Any,
) -> int:
    """A rule with ``managers`` (user id, or (user id, weight)); committed."""
    rule = DistributionRule(region_id=region_id, strategy=strategy)
    session.add(rule)
    await session.flush()
    for m in managers:
        user_id, weight = m if isinstance(m, tuple) else (m, 1)
        session.add(
            RuleManager(rule_id=rule.id, user_id=user_id, weight=weight, hours=hours, **manager_kw)
        )
    await session.commit()
    return rule.id
