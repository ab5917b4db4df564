"""A small funnel world shared by the leads and deals tests: a team of each role, a region,
sources and the configured pipelines synchronised into the database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.deals.pipelines import sync_pipelines
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.users import service as users
from crm_core.users.model import User

# Monday 2 March 2026, 10:00 Moscow time.
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
LOGINS = (("adm", "admin"), ("boss", "head"), ("ivan", "manager"), ("anna", "manager"))
PASSWORD = "password1"
# A valid 10-digit INN (Sberbank's) and a second one for another company.
INN = "7707083893"
INN2 = "7736207543"


@dataclass
class Team:
    admin: User
    head: User
    ivan: User
    anna: User
    moscow: int
    spb: int
    expo: int
    site: int

    def __getitem__(self, login: str) -> User:
        return {"adm": self.admin, "boss": self.head, "ivan": self.ivan, "anna": self.anna}[login]


async def make_team(
    session: AsyncSession, rules: CrmRules | None = None, *, sync: bool = True
) -> Team:
    """Users adm/boss/ivan/anna, regions Moscow and St Petersburg, sources "exhibition" and
    "website", the pipelines of ``rules``; committed, users detached (a test's rollback must
    not expire the actors)."""
    made: dict[str, User] = {}
    for login, role in LOGINS:
        user, _ = await users.create_user(
            session, login=login, role=role, password=PASSWORD, scrypt_n=1024
        )
        made[login] = user
    moscow = Region(code="RU-MOW", name="Москва")
    spb = Region(code="RU-SPE", name="Санкт-Петербург")
    expo = Source(kind="exhibition", code="expo-2026", name="Выставка 2026")
    site = Source(kind="website", code="site", name="Сайт")
    session.add_all([moscow, spb, expo, site])
    await session.flush()
    if sync:
        await sync_pipelines(session, rules or CrmRules())
    await session.commit()
    session.expunge_all()
    return Team(
        made["adm"], made["boss"], made["ivan"], made["anna"], moscow.id, spb.id, expo.id, site.id
    )


def full_card(team: Team, **overrides: Any) -> dict[str, Any]:
    """Lead fields meeting the default gate up to "qualified" (and so "converted")."""
    card: dict[str, Any] = {
        "contact_name": "Пётр Петров",
        "company_name": "ООО Ромашка",
        "phones": ["+7 495 123-45-67"],
        "source_id": team.expo,
        "client_type": "wholesaler",
        "potential_amount": "150000.00",
        "purchase_mode": "regular",
        "region_id": team.moscow,
        "decision_maker_reached": True,
    }
    card.update(overrides)
    return card


async def api_team(client: Any) -> tuple[Team, dict[str, dict[str, str]]]:
    """The team in the app's database (whose start-up synchronised the pipelines), and a
    bearer header per login."""
    from contact_center.keys import SESSIONS

    async with client.app[SESSIONS]() as session:
        team = await make_team(session, sync=False)
    return team, await api_headers(client)


async def api_headers(client: Any) -> dict[str, dict[str, str]]:
    """A bearer header per login (the users must exist in the app's database)."""
    headers: dict[str, dict[str, str]] = {}
    for login, _ in LOGINS:
        resp = await client.post("/api/v1/auth/token", json={"login": login, "password": PASSWORD})
        assert resp.status in (200, 201), await resp.text()
        headers[login] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return headers
