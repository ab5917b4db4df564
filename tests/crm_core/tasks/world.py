"""A small CRM world shared by the work-slice tests (activities, tasks, plans, invoices):
four users of each role, clients of two managers, a holding, a deal, a lead."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients.model import Company, Contact, LegalEntity
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.users import service as users
from crm_core.users.model import User

# Monday 2 March 2026, 10:00 Moscow time.
T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
LOGINS = (("adm", "admin"), ("boss", "head"), ("ivan", "manager"), ("anna", "manager"))
PASSWORD = "password1"


@dataclass
class World:
    users: dict[str, User] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)

    def user(self, login: str) -> User:
        return self.users[login]

    def __getitem__(self, key: str) -> int:
        return self.ids[key]


async def build_world(session: AsyncSession) -> World:
    """Users adm/boss/ivan/anna; ivan's company (tender bidder in Moscow, from an exhibition,
    supplied by "ООО Ромашка") with a legal entity, contact, deal and lead; anna's company;
    a holding "head" of ivan's with one member company of anna's."""
    w = World()
    for login, role in LOGINS:
        user, _ = await users.create_user(
            session, login=login, role=role, password=PASSWORD, scrypt_n=1024
        )
        w.users[login] = user
        w.ids[login] = user.id
    ivan, anna = w.ids["ivan"], w.ids["anna"]
    moscow = Region(code="RU-MOW", name="Москва")
    spb = Region(code="RU-SPE", name="Санкт-Петербург")
    expo = Source(kind="exhibition", code="expo-2026", name="Выставка 2026")
    session.add_all([moscow, spb, expo])
    await session.flush()
    w.ids.update(moscow=moscow.id, spb=spb.id, expo=expo.id)

    def company(name: str, responsible: int | None, **kw: Any) -> Company:
        c = Company(name=name, responsible_id=responsible, **kw)
        session.add(c)
        return c

    ivan_co = company(
        "Ivan Co",
        ivan,
        client_type="tender_bidder",
        region_id=moscow.id,
        source_id=expo.id,
        current_suppliers="ООО Ромашка, Acme",
    )
    anna_co = company("Anna Co", anna, client_type="retail", region_id=spb.id)
    await session.flush()
    member = company("Ivan Co Member", anna, head_id=ivan_co.id)
    orphan = company("Nobody's Co", None, client_type="tender_bidder", region_id=moscow.id)
    await session.flush()
    entity = LegalEntity(company_id=ivan_co.id, name='ООО "Иван"')
    anna_entity = LegalEntity(company_id=anna_co.id, name='ООО "Анна"')
    contact = Contact(name="Пётр Петров", responsible_id=ivan)
    anna_contact = Contact(name="Анна Контакт", responsible_id=anna, client_type="tender_bidder")
    session.add_all([entity, anna_entity, contact, anna_contact])
    # A pipeline of its own: the app may have seeded the configured ones already.
    pipeline = Pipeline(code="work-tests", name="Тесты")
    session.add(pipeline)
    await session.flush()
    stage = PipelineStage(pipeline_id=pipeline.id, code="contact", name_ru="К", name_en="C")
    session.add(stage)
    await session.flush()
    deal = Deal(
        title="Ivan deal",
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        responsible_id=ivan,
        company_id=ivan_co.id,
        contact_id=contact.id,
    )
    anna_deal = Deal(
        title="Anna deal",
        pipeline_id=pipeline.id,
        stage_id=stage.id,
        responsible_id=anna,
        company_id=anna_co.id,
    )
    lead = Lead(stage="new", responsible_id=ivan, contact_name="Лид")
    session.add_all([deal, anna_deal, lead])
    await session.flush()
    w.ids.update(
        ivan_co=ivan_co.id,
        anna_co=anna_co.id,
        member=member.id,
        orphan=orphan.id,
        entity=entity.id,
        anna_entity=anna_entity.id,
        contact=contact.id,
        anna_contact=anna_contact.id,
        deal=deal.id,
        anna_deal=anna_deal.id,
        lead=lead.id,
    )
    await session.commit()
    return w


class Recorder:
    """A fake event publisher: keeps what was published."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def publish(self, event: Any) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Any]:
        return [e for e in self.events if e.name == name]


async def api_world(client: Any) -> tuple[World, dict[str, dict[str, str]]]:
    """The world in the app's database, and a bearer header per login."""
    from contact_center.keys import SESSIONS

    async with client.app[SESSIONS]() as session:
        w = await build_world(session)
    headers: dict[str, dict[str, str]] = {}
    for login, _ in LOGINS:
        resp = await client.post("/api/v1/auth/token", json={"login": login, "password": PASSWORD})
        assert resp.status in (200, 201), await resp.text()
        headers[login] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return w, headers


async def manual_clock_client(settings: Any, factory: Any) -> tuple[Any, Any]:
    """The full app on a ManualClock at T0 whose scheduler polls only when told
    (``client.app[SCHEDULER].run_once()``)."""
    from contact_center.app import create_app
    from crm_core.clock import ManualClock

    clock = ManualClock(T0)
    settings = settings.model_copy(
        update={"scheduler": settings.scheduler.model_copy(update={"interval_s": 3600.0})}
    )
    app = create_app(settings, announce=lambda _t: None, clock=clock)
    return await factory(app), clock
