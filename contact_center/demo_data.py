"""Seed data for ``contact-center demo``: a sales team, sources and regions, tracking numbers
and a few clients whose numbers the simulated PBX will call from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.activities.model import Activity, ActivityKind
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.deals.model import Deal, DealStageChange, Pipeline, PipelineStage, StageKind
from crm_core.distribution.model import DistributionRule, RuleManager
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead, LeadStageChange
from crm_core.phones import digits_reversed
from crm_core.reference.model import Region, Source, SourceKind
from crm_core.tasks.model import DailyPlan, Task, TaskKind, TaskStatus
from crm_core.users import service as users
from crm_core.users.model import User

DEMO_PASSWORD = "demo12345"
MOSCOW = ZoneInfo("Europe/Moscow")

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
    # company, client type, potential, contact, phone, responsible login, region
    ("ООО «Ромашка»", "wholesaler", "2500000", "Сергей Ковалёв", "+74951234567", "ivan", "RU-MOW"),
    (
        "Отель «Балтика»",
        "end_customer_hotel",
        "600000",
        "Мария Орлова",
        "+78125550011",
        "anna",
        "RU-SPE",
    ),
    (
        "Сеть «Продукты 24»",
        "chain_retail",
        "4000000",
        "Андрей Лебедев",
        "+79031112233",
        "ivan",
        "RU-MOW",
    ),
    ("ИП Гусева", "retail", "350000", "Ольга Гусева", "+74957001122", "ivan", "RU-MOW"),
    ("ООО «ВкусМаркет»", "web_shop", "900000", "Денис Орлов", "+78127003344", "anna", "RU-SPE"),
    (
        "ГК «ТендерСнаб»",
        "tender_bidder",
        "5200000",
        "Игорь Власов",
        "+74957005566",
        "ivan",
        "RU-MOW",
    ),
    (
        "Ресторан «Невский»",
        "end_customer_restaurant",
        "420000",
        "Екатерина Белова",
        "+78127007788",
        "anna",
        "RU-SPE",
    ),
    (
        "ООО «Комплект-Офис»",
        "kitting_supplier",
        "1300000",
        "Павел Соколов",
        "+74957009900",
        "anna",
        "RU-MOW",
    ),
    (
        "Бизнес-центр «Орбита»",
        "end_customer_office",
        "280000",
        "Наталья Зайцева",
        "+78127001100",
        "ivan",
        "RU-SPE",
    ),
    (
        "ООО «Северный опт»",
        "wholesaler",
        "3100000",
        "Алексей Морозов",
        "+78127002200",
        "anna",
        "RU-SPE",
    ),
)
PRODUCTS = (
    "Кофе в зёрнах",
    "Чай листовой",
    "Кондитерские изделия",
    "Бакалея",
    "Новогодние наборы",
    "Соки и воды",
)
NEW_CALLERS = ("+79161234567", "+74991234567", "+79265554433", "+78129990011")

# Leads in several stages: title, contact, company, phone, stage, responsible, region, source.
LEADS = (
    (
        "Заявка с сайта: кофе в зёрнах",
        "Виктор Ли",
        "Кофейня «Зерно»",
        "+79167770101",
        "new",
        "ivan",
        "RU-MOW",
        "yandex_direct",
    ),
    (
        "Звонок: поставки для сети",
        "Инна Кравец",
        None,
        "+79217770202",
        "new",
        "anna",
        "RU-SPE",
        "google_ads",
    ),
    (
        "Выставка: интерес к чаю",
        "Роман Гаев",
        "ООО «Чайный дом»",
        "+79037770303",
        "in_work",
        "ivan",
        "RU-MOW",
        "expo_2026",
    ),
    (
        "Опт для гостиницы",
        "Светлана Ершова",
        "Гостиница «Пулково»",
        "+78127770404",
        "in_work",
        "anna",
        "RU-SPE",
        "google_ads",
    ),
    (
        "Тендер на снабжение столовых",
        "Максим Фролов",
        "ГБУ «Школьное питание»",
        "+74957770505",
        "qualified",
        "ivan",
        "RU-MOW",
        "yandex_direct",
    ),
    ("Спам-звонок", None, None, "+79997770606", "junk", "anna", "RU-SPE", "google_ads"),
)

# Invoices: company index, amount, days from today to the due date, status.
INVOICES = (
    (0, "184500.00", 1, "issued"),  # expires tomorrow
    (2, "932000.00", 2, "issued"),
    (4, "76300.00", -3, "issued"),  # overdue
    (1, "58900.00", 5, "issued"),
    (5, "1240000.00", -10, "paid"),
    (9, "415000.00", 3, "issued"),
)


@dataclass(frozen=True)
class DemoSeed:
    users: dict[str, int]
    created: bool


async def seed(
    session: AsyncSession, *, scrypt_n: int, now: datetime | None = None, tz: tzinfo = MOSCOW
) -> DemoSeed:
    """Create the demo data once; on an already seeded database change nothing. ``now`` and
    ``tz`` place the tasks, invoices and plans around today."""
    existing = await session.scalar(select(User).where(User.login == "ivan"))
    if existing is not None:
        present = {u.login: u.id for u in await session.scalars(select(User))}
        return DemoSeed(users=present, created=False)
    now = now or datetime.now(UTC)
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
    sources: dict[str, Source] = {}
    for did, (kind, code, name, _region) in TRACKING_NUMBERS.items():
        sources[code] = Source(kind=kind.value, code=code, name=name)
        session.add(sources[code])
        session.add(Source(kind=SourceKind.TRACKING_NUMBER.value, code=did, name=f"{name} {did}"))
    await session.flush()
    await _seed_distribution(session, ids, regions)
    companies: list[tuple[Company, Contact]] = []
    for index, (company_name, client_type, potential, person, phone, owner, region) in enumerate(
        CLIENTS
    ):
        source = list(sources.values())[index % len(sources)]
        company = Company(
            name=company_name,
            client_type=client_type,
            potential_amount=Decimal(potential),
            purchase_mode="regular",
            responsible_id=ids[owner],
            decision_maker_reached=True,
            decision_maker_name=person,
            region_id=regions[region].id,
            source_id=source.id,
            created_at=now - timedelta(days=30 + index),
        )
        contact = Contact(
            name=person,
            position="закупщик",
            responsible_id=ids[owner],
            client_type=client_type,
            region_id=regions[region].id,
            source_id=source.id,
            created_at=now - timedelta(days=30 + index),
        )
        session.add_all([company, contact])
        await session.flush()
        session.add(
            ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True)
        )
        session.add(Phone(contact_id=contact.id, e164=phone, digits_rev=digits_reversed(phone)))
        companies.append((company, contact))
    await session.flush()
    deals = await _seed_deals(session, companies, now)
    await _seed_leads(session, ids, regions, sources, now)
    await _seed_tasks(session, ids, companies, deals, now, tz)
    await _seed_invoices(session, companies, deals, now, tz)
    await _seed_plans(session, ids, companies, now, tz)
    await session.flush()
    return DemoSeed(users=ids, created=True)


async def _seed_deals(
    session: AsyncSession, companies: list[tuple[Company, Contact]], now: datetime
) -> dict[int, Deal]:
    """Deals in every stage of every active pipeline (two in each open stage), each with the
    stage history that brought it there. Returns the first deal of each company (by id)."""
    pipelines = list(await session.scalars(select(Pipeline).where(Pipeline.is_active.is_(True))))
    firsts: dict[int, Deal] = {}
    n = 0
    for pipeline in pipelines:
        stages = list(
            await session.scalars(
                select(PipelineStage)
                .where(PipelineStage.pipeline_id == pipeline.id)
                .order_by(PipelineStage.sort, PipelineStage.id)
            )
        )
        path = [s for s in stages if s.kind == StageKind.OPEN.value]
        for stage in stages:
            for _ in range(2 if stage.kind == StageKind.OPEN.value else 1):
                company, contact = companies[n % len(companies)]
                product = PRODUCTS[n % len(PRODUCTS)]
                n += 1
                created = now - timedelta(days=20 - n % 15, hours=n)
                walk = path[: path.index(stage) + 1] if stage in path else [*path[:4], stage]
                closed = stage.kind != StageKind.OPEN.value
                deal = Deal(
                    title=f"{product} для {company.name}",
                    pipeline_id=pipeline.id,
                    stage_id=stage.id,
                    amount=Decimal(40000 + 37500 * (n % 23)),
                    margin=Decimal(8000 + 7300 * (n % 23)),
                    products=product,
                    responsible_id=company.responsible_id,
                    source_id=company.source_id,
                    company_id=company.id,
                    contact_id=contact.id,
                    created_by_id=company.responsible_id,
                    created_at=created,
                    stage_changed_at=created + timedelta(days=len(walk) - 1),
                    lost_reason="price" if stage.kind == StageKind.LOST.value else None,
                    closed_at=created + timedelta(days=len(walk) - 1) if closed else None,
                )
                session.add(deal)
                await session.flush()
                firsts.setdefault(company.id, deal)
                previous: PipelineStage | None = None
                for step, to in enumerate(walk):
                    session.add(
                        DealStageChange(
                            deal_id=deal.id,
                            from_stage_id=previous.id if previous else None,
                            to_stage_id=to.id,
                            user_id=company.responsible_id,
                            at=created + timedelta(days=step),
                            reason=deal.lost_reason if to.kind == StageKind.LOST.value else None,
                        )
                    )
                    previous = to
    return firsts


async def _seed_leads(
    session: AsyncSession,
    ids: dict[str, int],
    regions: dict[str, Region],
    sources: dict[str, Source],
    now: datetime,
) -> None:
    order = ("new", "in_work", "qualified")
    for n, (title, person, company, phone, stage, owner, region, source) in enumerate(LEADS):
        created = now - timedelta(days=n + 1, hours=n)
        worked = stage in ("in_work", "qualified")
        lead = Lead(
            title=title,
            stage=stage,
            origin="call" if n % 2 else "web",
            contact_name=person,
            company_name=company,
            source_id=sources[source].id,
            region_id=regions[region].id,
            responsible_id=ids[owner],
            client_type="wholesaler" if worked else None,
            potential_amount=Decimal("750000") if worked else None,
            decision_maker_reached=True if stage == "qualified" else None,
            decision_maker_name=person if stage == "qualified" else None,
            junk_reason="spam" if stage == "junk" else None,
            created_at=created,
            stage_changed_at=created + timedelta(hours=2),
        )
        session.add(lead)
        await session.flush()
        session.add(Phone(lead_id=lead.id, e164=phone, digits_rev=digits_reversed(phone)))
        walk = order[: order.index(stage) + 1] if stage in order else ("new", stage)
        previous: str | None = None
        for step, to in enumerate(walk):
            session.add(
                LeadStageChange(
                    lead_id=lead.id,
                    from_stage=previous,
                    to_stage=to,
                    user_id=ids[owner],
                    at=created + timedelta(hours=step),
                    reason=lead.junk_reason if to == "junk" else None,
                )
            )
            previous = to


async def _seed_tasks(
    session: AsyncSession,
    ids: dict[str, int],
    companies: list[tuple[Company, Contact]],
    deals: dict[int, Deal],
    now: datetime,
    tz: tzinfo,
) -> None:
    """Each manager's tasks: overdue, due later today, tomorrow, and proposals sent (done)."""
    local = now.astimezone(tz)
    midnight = datetime.combine(local.date() + timedelta(days=1), time(), tzinfo=tz)
    # "Later today" however late the demo starts: at most halfway to midnight.
    later_today = now + (midnight.astimezone(UTC) - now) / 2
    plan = (
        (TaskKind.CALL_BACK, "Перезвонить по коммерческому предложению", -timedelta(days=1)),
        (TaskKind.MEETING, "Встреча: согласовать ассортимент", -timedelta(hours=3)),
        (TaskKind.CALL_BACK, "Уточнить объём поставки", timedelta(hours=2)),
        (TaskKind.SEND_PROPOSAL, "Отправить КП с новыми ценами", timedelta(hours=4)),
        (TaskKind.CUSTOM, "Подготовить договор", timedelta(days=1, hours=2)),
        (TaskKind.SEND_PROPOSAL, "КП на сезонный ассортимент", None),  # done today
        (TaskKind.SEND_PROPOSAL, "КП на новогодние наборы", None),  # done earlier
    )
    for login in ("ivan", "anna"):
        mine = [(c, p) for c, p in companies if c.responsible_id == ids[login]]
        for n, (kind, title, offset) in enumerate(plan):
            company, contact = mine[n % len(mine)]
            deal = deals.get(company.id)
            completed: datetime | None = None
            status = TaskStatus.OPEN.value
            if offset is None:
                completed = now - (timedelta(minutes=30) if n == 5 else timedelta(days=2))
                due, status = completed, TaskStatus.DONE.value
            else:
                due = now + offset
                if timedelta(0) < offset < timedelta(days=1):
                    due = min(due, later_today)  # still today
            session.add(
                Task(
                    kind=kind.value,
                    title=title,
                    status=status,
                    due_at=due,
                    responsible_id=ids[login],
                    created_by_id=ids["boss"] if n == 4 else ids[login],
                    company_id=company.id,
                    contact_id=contact.id,
                    deal_id=deal.id if deal else None,
                    completed_at=completed,
                    created_at=now - timedelta(days=3),
                )
            )


async def _seed_invoices(
    session: AsyncSession,
    companies: list[tuple[Company, Contact]],
    deals: dict[int, Deal],
    now: datetime,
    tz: tzinfo,
) -> None:
    today = now.astimezone(tz).date()
    for n, (index, amount, due_in, status) in enumerate(INVOICES):
        company, _ = companies[index]
        deal = deals.get(company.id)
        session.add(
            Invoice(
                number=f"Д-{today:%y%m}-{n + 1:03d}",
                company_id=company.id,
                deal_id=deal.id if deal else None,
                amount=Decimal(amount),
                issued_on=today - timedelta(days=14),
                due_on=today + timedelta(days=due_in),
                status=status,
                paid_at=now - timedelta(days=2) if status == "paid" else None,
                responsible_id=company.responsible_id,
            )
        )


async def _seed_plans(
    session: AsyncSession,
    ids: dict[str, int],
    companies: list[tuple[Company, Contact]],
    now: datetime,
    tz: tzinfo,
) -> None:
    """This week's plans of each manager, and meetings held (part of the fact; counted calls
    come from the call history, proposals from the tasks done)."""
    today = now.astimezone(tz).date()
    monday = today - timedelta(days=today.weekday())
    for login in ("ivan", "anna"):
        for day in range(7):
            workday = day < 5
            session.add(
                DailyPlan(
                    user_id=ids[login],
                    day=monday + timedelta(days=day),
                    calls=8 if workday else 0,
                    meetings=2 if workday else 0,
                    proposals=2 if workday else 0,
                    set_by_id=ids["boss"],
                )
            )
        mine = [(c, p) for c, p in companies if c.responsible_id == ids[login]]
        for n, back in enumerate((timedelta(minutes=40), timedelta(days=1, hours=1))):
            company, contact = mine[n % len(mine)]
            session.add(
                Activity(
                    kind=ActivityKind.MEETING.value,
                    subject="Встреча у клиента: дегустация и условия поставки",
                    occurred_at=now - back,
                    duration_s=1800.0,
                    user_id=ids[login],
                    company_id=company.id,
                    contact_id=contact.id,
                    created_by_id=ids[login],
                )
            )


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
