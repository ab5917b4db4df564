"""Fixtures of the clients slice tests: a team (admin, head, two managers) and the rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import Actor
from crm_core.rules import CrmRules, CustomFieldDef
from crm_core.users import service as users
from crm_core.users.model import User

RULES = CrmRules(
    custom_fields=(
        CustomFieldDef("segment", "enum", options=("A", "B", "C")),
        CustomFieldDef("employees", "number"),
        CustomFieldDef("founded", "date", applies_to=("company",)),
        CustomFieldDef("vip", "bool"),
        CustomFieldDef("note", "string"),
    )
)


class Acting(TypedDict):
    """Who acts and under which rules: the keyword pair every service takes, as ``**acting``."""

    actor: Actor
    rules: CrmRules


@dataclass
class Team:
    admin: User
    head: User
    ivan: User
    anna: User


@pytest.fixture
def rules() -> CrmRules:
    return RULES


@pytest.fixture
async def team(session: AsyncSession) -> Team:
    made = {}
    for login, role in (
        ("adm", "admin"),
        ("boss", "head"),
        ("ivan", "manager"),
        ("anna", "manager"),
    ):
        user, _ = await users.create_user(
            session, login=login, role=role, password="password1", scrypt_n=1024
        )
        made[login] = user
    await session.commit()
    session.expunge_all()  # detached: a test's rollback must not expire the actors
    return Team(made["adm"], made["boss"], made["ivan"], made["anna"])
