"""The head of sales' journey as one continuous browser session (issue 12): she signs in (no
extension of her own) and sees the team's day, sets a manager's plan and sees it against the
fact, assigns a web request from the queue to a manager, checks the call-tracking pools'
statistics, and watches a live call of her team start, get answered and end (the fake PBX
rings the manager's extension). A screenshot of every step at 1440×900 goes to
docs/screenshots/journey-head-NN-<step>.png."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from contact_center import demo_tracking
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS, TRACKER
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.distribution.model import WebRequest
from crm_core.leads.model import Lead
from crm_core.tasks.model import DailyPlan, Task
from tests.browser._journey import inbound_call, journey, make_user, pbx_settings
from tests.fakes.ami_server import FakeAmiServer
from tests.helpers import earlier_today, until, workday


@pytest.fixture
async def fake_pbx() -> Any:
    async with FakeAmiServer() as server:
        yield server


@pytest.fixture
async def live(
    make_settings: Any, database_url: str, fake_pbx: FakeAmiServer, aiohttp_client_factory: Any
) -> Any:
    """The server, connected to the fake PBX over a real AMI session."""
    settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=pbx_settings(fake_pbx.port))
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await until(
        lambda: client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected,
        timeout=10,
    )
    return client


async def _world(client: Any) -> dict[str, Any]:
    await make_user(client, "boss", "head", "Ольга Руководитель")
    ivan = await make_user(client, "ivan", "manager", "Иван Петров", ("101",))
    anna = await make_user(client, "anna", "manager", "Анна Смирнова", ("102",))
    now = datetime.now(UTC)
    called = earlier_today(now, timedelta(hours=1))  # a counted call today
    async with client.app[SESSIONS]() as s:
        await demo_tracking.seed(s)
        lead = Lead(title="Заявка с сайта: посуда", stage="new", contact_name="Пётр Васильев")
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
        s.add(
            Task(
                kind="call_back",
                title="Перезвонить в «Ромашку»",
                responsible_id=ivan,
                due_at=now - timedelta(hours=2),
            )
        )
        s.add(
            Call(
                pbx="main",
                call_id="c-morning",
                direction="inbound",
                caller="+74951234567",
                callee="101",
                did="+74951112201",
                extension="101",
                disposition="answered",
                started_at=called,
                answered_at=called + timedelta(seconds=5),
                ended_at=called + timedelta(seconds=80),
                ring_seconds=5,
                talk_seconds=75,
                counted=True,
                user_id=ivan,
            )
        )
        s.add(
            Activity(
                kind="call",
                direction="inbound",
                subject="Входящий звонок, 75 с",
                occurred_at=called,
                talk_s=75,
                counted=True,
                user_id=ivan,
            )
        )
        await s.commit()
        return {"ivan": ivan, "anna": anna, "lead": lead.id}


async def test_the_head_plans_assigns_checks_the_pools_and_watches_live_calls(
    live: Any, fake_pbx: FakeAmiServer, browser: Any
) -> None:
    world = await _world(live)
    live.app[TRACKER].invalidate()
    j = await journey(browser, live, "head")
    page = j.page

    # Her home without an extension: the team's day, nobody on a call yet.
    await j.sign_in("boss")
    assert page.url == f"{j.base}/"
    await page.locator("#ws-state.ok").wait_for()
    main = await page.inner_text("main")
    assert "Отдел сегодня" in main and "Иван Петров" in main and "Анна Смирнова" in main
    assert await page.locator("#on-call-empty").is_visible()
    ivan_row = page.locator("#team tbody tr", has_text="Иван Петров")
    # His one open task is an overdue call-back: under «Перезвонить», as his own day has it.
    assert "0" in await ivan_row.locator("td").nth(1).inner_text()
    assert "1" in await ivan_row.locator("td").nth(3).inner_text()
    await j.shot("my-day-team")

    # Plans: Ivan's week, then his day against today's fact (one counted call).
    await page.click("nav a[href='/plans']")
    await page.wait_for_url(re.compile(r".*/plans$"))
    assert "Планы" in await page.inner_text("h1")
    form = page.locator(".plan-form")
    await form.locator("select[name=user_id]").select_option(label="Иван Петров")
    await form.locator("select[name=scope]").select_option("week")
    await form.locator("input[name=calls]").fill("20")
    await form.locator("input[name=meetings]").fill("2")
    await form.locator("input[name=proposals]").fill("3")
    await form.locator("button[type=submit]").click()
    await page.locator(".notice", has_text="План сохранён").wait_for()
    row = await page.inner_text("table.plans tbody tr:has-text('Иван Петров')")
    # A plan on each weekday: 100 calls a week (on a Saturday or Sunday, today has none).
    today_plan = "20" if workday(datetime.now(UTC)) else "—"
    assert f"1/{today_plan}" in row and "1/100" in row
    anna = await page.inner_text("table.plans tbody tr:has-text('Анна Смирнова')")
    assert "0/0" not in anna and "0/—" in anna  # no plan is not a plan of zero
    async with live.app[SESSIONS]() as s:
        days = list(await s.scalars(select(DailyPlan).where(DailyPlan.user_id == world["ivan"])))
        assert len(days) >= 5 and all(d.calls == 20 for d in days)
    await j.shot("plans")
    await page.click("nav a[href='/today']")
    ivan_row = page.locator("#team tbody tr", has_text="Иван Петров")
    assert f"1 / {today_plan}" in await ivan_row.inner_text()

    # The queue: a web request nobody took, given to Anna; her lead now.
    await page.click("nav a[href='/distribution']")
    await page.wait_for_url(re.compile(r".*/distribution$"))
    request = page.locator("#queue tbody tr", has_text="Пётр Васильев")
    assert "Нужна посуда для кафе" in await request.inner_text()
    await j.shot("distribution-queue")
    await request.locator("select").select_option(label="Анна Смирнова")
    await request.locator("button", has_text="Назначить").click()
    notice = page.locator(".notice", has_text="Заявка «Пётр Васильев» назначена: Анна Смирнова")
    await notice.wait_for()
    assert "Очередь пуста" in await page.inner_text("#queue")
    async with live.app[SESSIONS]() as s:
        lead = await s.get(Lead, world["lead"])
        assert lead is not None and lead.responsible_id == world["anna"]
    await j.shot("distribution-assigned")
    await notice.locator("a", has_text="Открыть лид").click()
    await page.wait_for_url(re.compile(rf".*/clients/lead/{world['lead']}$"))
    assert "Ответственный: Анна Смирнова" in await page.inner_text(".card-head")

    # Call tracking: the pools with their statistics and the recommended size.
    await page.click("nav a[href='/tracking']")
    await page.wait_for_url(re.compile(r".*/tracking$"))
    pools = await page.inner_text("#pools")
    assert "Яндекс Директ × Москва" in pools and "Рекомендуемый размер" in pools
    await j.shot("tracking-pools")

    # Live calls: the PBX rings Ivan; she sees it ring, be answered and end.
    await page.click("nav a[href='/today']")
    await page.locator("#ws-state.ok").wait_for()
    pbx = fake_pbx.logged_in_sessions()[-1]
    call = inbound_call("+74951234567", "+74951112201", "101", talk_s=80)
    await pbx.send(call.part(0))
    on_call = page.locator(f"#on-call li[data-call='{call.call_id}']")
    await on_call.wait_for()
    text = await on_call.inner_text()
    assert "Иван Петров" in text and "+7 (495) 123-45-67" in text and "звонит" in text
    assert await page.locator(".pop").count() == 0  # her screen pops nothing
    await pbx.send(call.part(1))
    await page.locator(f"#on-call li.answered[data-call='{call.call_id}']").wait_for()
    assert "разговаривает" in await on_call.inner_text()
    await j.shot("live-call")
    await pbx.send(call.part(2))
    await on_call.wait_for(state="detached")
    await page.locator("#on-call-empty").wait_for()
    # His second counted call today is in the team's fact without a reload.
    ivan_row = page.locator("#team tbody tr", has_text="Иван Петров")
    await ivan_row.filter(has_text=f"2 / {today_plan}").wait_for()

    # The call history: the call just ended, with the client's number and the manager.
    await page.click("nav a[href='/calls']")
    await page.wait_for_url(re.compile(r".*/calls$"))
    table = await page.inner_text("table.calls")
    assert "+7 (495) 123-45-67" in table and "Иван Петров" in table
    await j.shot("calls")
    assert j.problems == []
