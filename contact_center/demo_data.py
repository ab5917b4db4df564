"""Seed data for ``contact-center demo``: a sales team, sources and regions, tracking numbers
and a few clients whose numbers the simulated PBX will call from."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.distribution.model import DistributionRule, RuleManager
from crm_core.phones import digits_reversed
from crm_core.reference.model import Region, Source, SourceKind
from crm_core.users import service as users
from crm_core.users.model import User

DEMO_PASSWORD = "demo12345"

TEAM = (
    # login, role, display name, extensions
    ("boss", "head", "Ольга Руководитель", ()),
    ("ivan", "manager", "Иван Петров", ("101",)),
    ("anna", "manager", "Анна Смирнова", ("102",)),
)

REGIONS = (("RU-MOW", "Москва"), ("RU-SPE", "Санкт-Петербург"))

# DID -> (source kind, code, name, region code): the numbers the simulated carrier calls.
TRACKING_NUMBERS = {
    "+74951112233": (SourceKind.AD_CHANNEL, "yandex_direct", "Яндекс Директ", "RU-MOW"),
    "+78125550000": (SourceKind.AD_CHANNEL, "google_ads", "Google Ads", "RU-SPE"),
    "+74950000001": (SourceKind.EXHIBITION, "expo_2026", "Выставка «ПродЭкспо-2026»", None),
}

# Known clients (the rest of the simulated callers are new).
CLIENTS = (
    # company, client type, potential, contact, phone, responsible login
    ("ООО «Ромашка»", "wholesaler", "2500000", "Сергей Ковалёв", "+74951234567", "ivan"),
    ("Отель «Балтика»", "end_customer_hotel", "600000", "Мария Орлова", "+78125550011", "anna"),
    ("Сеть «Продукты 24»", "chain_retail", "4000000", "Андрей Лебедев", "+79031112233", "ivan"),
)
NEW_CALLERS = ("+79161234567", "+74991234567", "+79265554433", "+78129990011")


@dataclass(frozen=True)
class DemoSeed:
    users: dict[str, int]
    created: bool


async def seed(session: AsyncSession, *, scrypt_n: int) -> DemoSeed:
    """Create the demo data once; on an already seeded database change nothing."""
    existing = await session.scalar(select(User).where(User.login == "ivan"))
    if existing is not None:
        present = {u.login: u.id for u in await session.scalars(select(User))}
        return DemoSeed(users=present, created=False)
    ids: dict[str, int] = {}
    for login, role, name, exts in TEAM:
        user, _ = await users.create_user(
            session,
            login=login,
            role=role,
            password=DEMO_PASSWORD,
            extensions=exts,
            display_name=name,
            scrypt_n=scrypt_n,
        )
        ids[login] = user.id
    regions: dict[str, Region] = {}
    for code, name in REGIONS:
        regions[code] = Region(code=code, name=name, timezone="Europe/Moscow")
        session.add(regions[code])
    for did, (kind, code, name, _region) in TRACKING_NUMBERS.items():
        session.add(Source(kind=kind.value, code=code, name=name))
        session.add(Source(kind=SourceKind.TRACKING_NUMBER.value, code=did, name=f"{name} {did}"))
    await session.flush()
    await _seed_distribution(session, ids, regions)
    for company_name, client_type, potential, person, phone, owner in CLIENTS:
        company = Company(
            name=company_name,
            client_type=client_type,
            potential_amount=Decimal(potential),
            purchase_mode="regular",
            responsible_id=ids[owner],
            decision_maker_reached=True,
            decision_maker_name=person,
        )
        contact = Contact(
            name=person, position="закупщик", responsible_id=ids[owner], client_type=client_type
        )
        session.add_all([company, contact])
        await session.flush()
        session.add(
            ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True)
        )
        session.add(Phone(contact_id=contact.id, e164=phone, digits_rev=digits_reversed(phone)))
    await session.flush()
    return DemoSeed(users=ids, created=True)


# Region -> (strategy, manager logins); None is the default rule for every other region.
DISTRIBUTION = {
    "RU-MOW": ("round_robin", ("ivan",)),
    "RU-SPE": ("fixed", ("anna",)),
    None: ("manual", ()),  # requests from elsewhere wait in the head of sales' manual queue
}


async def _seed_distribution(
    session: AsyncSession, ids: dict[str, int], regions: dict[str, Region]
) -> None:
    for code, (strategy, logins) in DISTRIBUTION.items():
        rule = DistributionRule(region_id=regions[code].id if code else None, strategy=strategy)
        session.add(rule)
        await session.flush()
        session.add_all(RuleManager(rule_id=rule.id, user_id=ids[login]) for login in logins)


def caller_numbers() -> list[str]:
    """Numbers the simulated carrier calls from: known clients and new ones."""
    return [c[4].lstrip("+") for c in CLIENTS] + [n.lstrip("+") for n in NEW_CALLERS]


def tracking_dids() -> list[str]:
    return [d.lstrip("+") for d in TRACKING_NUMBERS]
