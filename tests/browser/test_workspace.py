"""The workspace in a real browser: the admin's, a manager's and the head's journeys, with a
screenshot of each page at 1440×900 in docs/screenshots/ (looked at by a person: Russian
words only, names not codes, nothing overlapping)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from contact_center import demo_tracking
from contact_center.keys import BUS, RECORDINGS, SESSIONS, TRACKER
from crm_core.activities.model import Activity
from crm_core.calls.events import CallAnswered, CallEnded, CallRinging
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.distribution.model import WebRequest
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.recordings.model import Recording
from crm_core.reference.model import Region, Source
from crm_core.tasks.model import DailyPlan, Task
from crm_core.users import service as users
from crm_core.users.model import User
from tests.conftest import FIXTURES, ROOT
from tests.helpers import later_today

SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "password1"
TOPBAR_PX = 56


async def _page(browser: Any) -> Any:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="ru-RU", timezone_id="Europe/Moscow"
    )
    return await context.new_page()


async def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(SHOTS / f"{name}.png"))


async def _sign_in(page: Any, base: str, login: str, password: str = PASSWORD) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#login", login)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")


async def _user(client: Any, login: str, role: str, name: str, exts: tuple[str, ...] = ()) -> int:
    async with client.app[SESSIONS]() as s:
        user, _ = await users.create_user(
            s,
            login=login,
            role=role,
            password=PASSWORD,
            extensions=exts,
            display_name=name,
            scrypt_n=1024,
        )
        await s.commit()
        return user.id


async def _sign_out(page: Any) -> None:
    await page.click("details.user-menu > summary")
    await page.click("details.user-menu button[type=submit]")
    await page.wait_for_url(re.compile(r".*/login$"))


async def test_admin_creates_a_user_resets_his_password_and_he_must_change_it(
    client: Any, browser: Any
) -> None:
    await _user(client, "root", "admin", "Администратор")
    base = str(client.make_url("/")).rstrip("/")
    page = await _page(browser)
    await page.goto(f"{base}/login")
    await _shot(page, "01-login")
    await _sign_in(page, base, "root")
    await page.click("nav a[href='/users']")
    await page.fill("#create-user input[name=login]", "petr")
    await page.fill("#create-user input[name=display_name]", "Пётр Соколов")
    await page.fill("#create-user input[name=extensions]", "105")
    await page.click("#create-user button[type=submit]")
    first = (await page.inner_text("#issued-password")).strip()
    assert "Пётр Соколов: временный пароль" in await page.inner_text("#one-time")
    await _shot(page, "02-admin-users-one-time-password")

    await page.click("#user-petr button:has-text('Сбросить пароль')")
    password = (await page.inner_text("#issued-password")).strip()
    assert password != first
    await _sign_out(page)

    await _sign_in(page, base, "petr", password)
    assert page.url.endswith("/settings/password")
    await _shot(page, "03-first-sign-in-new-password")
    await page.goto(f"{base}/leads")  # nothing else before the new password
    assert page.url.endswith("/settings/password")
    await page.fill("#current_password", password)
    await page.fill("#new_password", "my-own-password")
    await page.fill("#new_password_again", "my-own-password")
    await page.click("button.primary")
    await page.wait_for_url(f"{base}/")
    assert "Мой день" in await page.inner_text("h1")
    await _sign_out(page)
    await _sign_in(page, base, "petr", "my-own-password")
    assert page.url == f"{base}/"


async def _manager_world(client: Any) -> dict[str, Any]:
    ivan = await _user(client, "ivan", "manager", "Иван Петров", ("101",))
    anna = await _user(client, "anna", "manager", "Анна Смирнова", ("102",))
    now = datetime.now(UTC)
    wav = next(FIXTURES.joinpath("ami").glob("*.wav"))
    stored = await client.app[RECORDINGS].storage.put(wav, "call.wav")
    async with client.app[SESSIONS]() as s:
        moscow = Region(code="RU-MOW", name="Москва")
        spb = Region(code="RU-SPE", name="Санкт-Петербург")
        yandex = Source(kind="ad_channel", code="yandex_direct", name="Яндекс Директ")
        expo = Source(kind="exhibition", code="expo", name="Выставка «ПродЭкспо-2026»")
        s.add_all([moscow, spb, yandex, expo])
        await s.flush()
        company = Company(
            name="ООО «Ромашка»",
            client_type="wholesaler",
            potential_amount=Decimal("2500000"),
            purchase_mode="regular",
            responsible_id=ivan,
            region_id=moscow.id,
            source_id=yandex.id,
        )
        contact = Contact(name="Сергей Ковалёв", position="закупщик", responsible_id=ivan)
        hotel = Contact(name="Мария Орлова", responsible_id=ivan, region_id=spb.id)
        s.add_all([company, contact, hotel])
        await s.flush()
        s.add(ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True))
        s.add(Phone(contact_id=contact.id, e164="+74951234567"))
        s.add(Phone(contact_id=hotel.id, e164="+78125550011"))
        for i, (title, stage, region, source, who) in enumerate(
            [
                ("Звонок с +7 (916) 123-45-67", "new", moscow, yandex, ivan),
                ("Заявка с сайта: бумага А4", "in_work", moscow, yandex, ivan),
                ("Отель «Невский»: текстиль", "in_work", spb, expo, ivan),
                ("Кафе «Пышечная»", "new", spb, expo, ivan),
                ("Сеть «Продукты 24»", "qualified", moscow, yandex, ivan),
                ("Чужой лид", "new", moscow, yandex, anna),
            ]
        ):
            lead = Lead(
                title=title,
                stage=stage,
                region_id=region.id,
                source_id=source.id,
                responsible_id=who,
                contact_name=None,
                potential_amount=Decimal(150000 * (i + 1)),
                created_at=now - timedelta(hours=5 * i),
            )
            s.add(lead)
            await s.flush()
            s.add(Phone(lead_id=lead.id, e164=f"+7916123456{i}"))
        s.add_all(
            [
                Task(
                    kind="send_proposal",
                    title="Отправить КП по бумаге",
                    responsible_id=ivan,
                    company_id=company.id,
                    due_at=now - timedelta(hours=20),
                ),
                Task(
                    kind="call_back",
                    title="Перезвонить +7 (812) 555-00-11 (Мария Орлова)",
                    responsible_id=ivan,
                    contact_id=hotel.id,
                    due_at=later_today(now, timedelta(minutes=40)),
                    origin_key="missed-call:+78125550011",
                ),
                Task(
                    kind="meeting",
                    title="Встреча на складе «Ромашки»",
                    responsible_id=ivan,
                    company_id=company.id,
                    due_at=later_today(now, timedelta(hours=2)),
                ),
                Invoice(
                    number="2026-118",
                    company_id=company.id,
                    amount=Decimal("1250000.50"),
                    issued_on=date.today() - timedelta(days=10),
                    due_on=date.today() + timedelta(days=2),
                    responsible_id=ivan,
                ),
            ]
        )
        talk = Call(
            pbx="main",
            call_id="c-talk",
            direction="inbound",
            caller="+74951234567",
            callee="101",
            did="+74951112233",
            extension="101",
            disposition="answered",
            started_at=now - timedelta(hours=1),
            answered_at=now - timedelta(hours=1) + timedelta(seconds=6),
            ended_at=now - timedelta(minutes=58),
            ring_seconds=6,
            talk_seconds=65,
            counted=True,
            user_id=ivan,
            contact_id=contact.id,
            company_id=company.id,
        )
        missed = Call(
            pbx="main",
            call_id="c-missed",
            direction="inbound",
            caller="+78125550011",
            callee="101",
            did="+78125550000",
            disposition="missed",
            started_at=now - timedelta(minutes=30),
            ended_at=now - timedelta(minutes=29, seconds=40),
            ring_seconds=20,
            user_id=ivan,
            contact_id=hotel.id,
        )
        out = Call(
            pbx="main",
            call_id="c-out",
            direction="outbound",
            caller="101",
            callee="+79031112233",
            extension="101",
            disposition="answered",
            started_at=now - timedelta(hours=3),
            ended_at=now - timedelta(hours=3) + timedelta(seconds=40),
            ring_seconds=8,
            talk_seconds=32,
            user_id=ivan,
        )
        s.add_all([talk, missed, out])
        await s.flush()
        s.add(
            Activity(
                kind="call",
                direction="inbound",
                subject="Входящий звонок, 65 с",
                occurred_at=talk.started_at,
                talk_s=65,
                counted=True,
                user_id=ivan,
                contact_id=contact.id,
            )
        )
        s.add(
            Recording(
                pbx="main",
                call_ref="c-talk",
                call_pk=talk.id,
                filename=wav.name,
                state="stored",
                storage_key=stored.key,
                format=wav.suffix.lstrip("."),
                size=stored.size,
                sha256=stored.sha256,
                ended_at=talk.ended_at,
            )
        )
        await s.commit()
    return {"ivan": ivan, "anna": anna, "spb": spb.id}


async def test_a_managers_day_calls_and_lists(client: Any, browser: Any) -> None:
    world = await _manager_world(client)
    base = str(client.make_url("/")).rstrip("/")
    page = await _page(browser)
    await _sign_in(page, base, "ivan")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    counters = await page.inner_text(".counters")
    assert "просрочено" in counters and "пропущенные звонки" in counters
    assert await page.locator("#callbacks [data-call-to='+78125550011']").count() == 1
    await _shot(page, "04-manager-my-day")

    overdue = page.locator("#overdue li.task", has_text="Отправить КП по бумаге")
    await overdue.locator("button", has_text="Выполнено").click()
    await page.locator(".toast", has_text="Задача выполнена").wait_for(timeout=5000)
    await overdue.wait_for(state="detached", timeout=5000)
    assert "Просроченных задач нет" in await page.inner_text("#overdue")
    async with client.app[SESSIONS]() as s:
        task = await s.scalar(select(Task).where(Task.title == "Отправить КП по бумаге"))
        assert task.status == "done"

    await page.click("nav a[href='/calls']")
    player = page.locator("audio.player")
    await player.first.wait_for(timeout=5000)
    src = await player.first.get_attribute("src")
    assert src and src.startswith("/api/v1/recordings/")
    status = await page.evaluate(
        "async (u) => (await fetch(u, {headers: {Range: 'bytes=0-99'}})).status", src
    )
    assert status == 206
    table = await page.inner_text("table.calls")
    assert "+7 (812) 555-00-11" in table and "пропущенный" in table and "засчитан" in table
    assert "\n101\n" not in table and "1 мин 05 с" in table.replace("\u00a0", " ")
    await _shot(page, "05-manager-calls")

    # The live feed names the client's number, for a missed call too, and drops "waiting".
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    bus = client.app[BUS]
    await bus.publish(
        CallRinging(call_id="f1", caller="+74951234567", extension="101", audience=("ext:101",))
    )
    await bus.publish(CallAnswered(call_id="f1", extension="101", audience=("ext:101",)))
    await bus.publish(
        CallEnded(
            call_id="f2",
            caller="+78125550011",
            disposition="missed",
            audience=("ext:101",),
        )
    )
    feed = page.locator("#call-log tr")
    await feed.nth(2).wait_for(timeout=5000)
    lines = [await row.inner_text() for row in await feed.all()]
    assert "+7 (812) 555-00-11" in lines[0] and "пропущен" in lines[0]
    assert "+7 (495) 123-45-67" in lines[1] and "101" not in lines[1]  # answered: the client
    assert await page.locator("#call-empty").is_hidden()
    await page.locator(".pop[data-call='f1']").locator("button.close").click()

    await page.click("nav a[href='/leads']")
    await page.select_option("select[name=region]", str(world["spb"]))
    await page.locator(".chip", has_text="Санкт-Петербург").wait_for(timeout=5000)
    await page.wait_for_url(re.compile(rf".*region={world['spb']}.*"))
    assert len(await page.locator("table.list tbody tr").all()) == 2
    await page.select_option("select[name=stage]", "in_work")
    await page.locator(".chip", has_text="В работе").wait_for(timeout=5000)
    assert len(await page.locator("table.list tbody tr").all()) == 1
    await _shot(page, "06-manager-leads-filtered")
    await page.locator(".chip", has_text="Санкт-Петербург").locator("a").click()
    await page.locator(".chip", has_text="Санкт-Петербург").wait_for(state="detached", timeout=5000)
    assert len(await page.locator("table.list tbody tr").all()) == 2  # in work, any region
    await page.go_back()
    await page.locator(".chip", has_text="Санкт-Петербург").wait_for(timeout=5000)

    await page.goto(f"{base}/clients?kind=company")
    await page.click("tbody tr >> nth=0")
    await page.wait_for_url(re.compile(r".*/clients/company/\d+$"))
    await page.locator("#card .card-title").wait_for(timeout=5000)
    await page.goto(f"{base}/tasks")
    await _shot(page, "07-manager-tasks")
    await page.goto(f"{base}/invoices")
    assert "1 250 000,50 ₽" in (await page.inner_text("table.list")).replace("\u202f", " ").replace(
        "\u00a0", " "
    )
    await _shot(page, "08-manager-invoices")
    await page.goto(f"{base}/clients")
    await _shot(page, "09-manager-clients")

    # Pop-ups: at most three open below the top bar, older ones collapsed.
    await page.goto(f"{base}/today")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    for i, number in enumerate(("+74951234567", "+79161234560", "+79161234561", "+79990001122")):
        await client.app[BUS].publish(
            CallRinging(
                call_id=f"pop{i}",
                caller=number,
                did="+74951112233",
                extension="101",
                client={"name": "Сергей Ковалёв", "company": "ООО «Ромашка»"} if i == 0 else None,
                audience=("ext:101",),
            )
        )
    await page.locator(".pop[data-call='pop3']").wait_for(timeout=5000)
    assert await page.locator(".pop").count() == 4
    assert await page.locator(".pop.collapsed").count() == 1
    assert await page.locator(".pop[data-call='pop0'].collapsed").count() == 1  # the oldest
    box = await page.locator("#pops").bounding_box()
    assert box is not None and box["y"] >= TOPBAR_PX
    inside = await page.evaluate(
        "() => !!document.elementFromPoint(700, 28).closest('header.topbar')"
    )
    assert inside  # the top bar stays on top: search, bell and user menu usable
    await _shot(page, "10-manager-pop-ups")
    await page.keyboard.press("Escape")
    assert await page.locator(".pop").count() == 3


async def test_the_head_plans_assigns_and_checks_the_pools(client: Any, browser: Any) -> None:
    await _manager_world(client)
    await _user(client, "boss", "head", "Ольга Руководитель")
    async with client.app[SESSIONS]() as s:
        await demo_tracking.seed(s)
        lead = Lead(title="Заявка с сайта: посуда", stage="new", contact_name="Пётр")
        s.add(lead)
        await s.flush()
        s.add(
            WebRequest(
                site="demo",
                name="Пётр Васильев",
                phone="+79161230000",
                comment="Нужна посуда для кафе, 200 комплектов",
                form={},
                status="queued",
                lead_id=lead.id,
            )
        )
        await s.commit()
    client.app[TRACKER].invalidate()
    base = str(client.make_url("/")).rstrip("/")
    page = await _page(browser)
    await _sign_in(page, base, "boss")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    assert "Отдел сегодня" in await page.inner_text("main")
    await _shot(page, "11-head-my-day")
    await client.app[BUS].publish(
        CallRinging(
            call_id="live1",
            caller="+74951234567",
            extension="101",
            audience=("ext:101", "role:head"),
        )
    )
    live = page.locator("#on-call li[data-call='live1']")
    await live.wait_for(timeout=5000)
    assert "Иван Петров" in await live.inner_text()
    assert await page.locator(".pop").count() == 0  # the head's screen pops nothing

    await page.click("nav a[href='/plans']")
    await page.select_option("select[name=user_id]", label="Иван Петров")
    await page.fill("input[name=calls]", "20")
    await page.fill("input[name=meetings]", "2")
    await page.fill("input[name=proposals]", "3")
    await page.click(".plan-form button[type=submit]")
    await page.locator(".notice", has_text="План сохранён").wait_for(timeout=5000)
    row = await page.inner_text("table.plans tbody tr:has-text('Иван Петров')")
    assert "1/20" in row  # one counted call today against a plan of 20
    async with client.app[SESSIONS]() as s:
        ivan = await s.scalar(select(User.id).where(User.login == "ivan"))
        assert await s.scalar(select(DailyPlan.calls).where(DailyPlan.user_id == ivan)) == 20
    await _shot(page, "12-head-plans")

    await page.click("nav a[href='/distribution']")
    await _shot(page, "13-head-distribution-queue")
    request = page.locator("#queue tbody tr", has_text="Пётр Васильев")
    await request.locator("select").select_option(label="Анна Смирнова")
    await request.locator("button", has_text="Назначить").click()
    await page.locator(".notice", has_text="назначена: Анна Смирнова").wait_for(timeout=5000)
    assert "Очередь пуста" in await page.inner_text("#queue")

    await page.click("nav a[href='/tracking']")
    pools = await page.inner_text("#pools")
    assert "Рекомендуемый размер" in pools and "Яндекс Директ" in pools
    await _shot(page, "14-head-tracking-pools")
    await page.goto(f"{base}/calls")
    await _shot(page, "15-head-calls")
