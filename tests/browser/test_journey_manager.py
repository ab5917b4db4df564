"""A manager's day as one continuous browser session (issue 12), by clicks and typing only:
he signs in and lands on My day, calls back from a task (click-to-call reaches the fake AMI
server as an Originate), the fake PBX rings his extension and the pop-up shows the lead, he
opens the lead's card from it, edits fields, the gate refuses a move naming the missing fields
in Russian, he fills them and moves the lead, converts it, finds the deal on the kanban, drags
it to the next stage and issues an invoice. A screenshot of every step at 1440×900 goes to
docs/screenshots/journey-manager-NN-<step>.png."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS
from crm_core.deals.model import Deal
from crm_core.deals.pipelines import sync_pipelines
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from tests.browser._journey import click_to_call, journey, make_user, pbx_settings, plain
from tests.fakes.ami_server import FakeAmiServer
from tests.helpers import later_today, until

CLIENT = "+78125550011"


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
    ivan = await make_user(client, "ivan", "manager", "Иван Петров", ("101",))
    now = datetime.now(UTC)
    async with client.app[SESSIONS]() as s:
        await sync_pipelines(s, CrmRules())
        spb = Region(code="RU-SPE", name="Санкт-Петербург")
        yandex = Source(kind="ad_channel", code="yandex", name="Яндекс Директ")
        s.add_all([spb, yandex])
        await s.flush()
        lead = Lead(
            title="Заявка с сайта: текстиль",
            stage="new",
            contact_name="Мария",
            company_name="Отель «Невский»",
            responsible_id=ivan,
            created_at=now - timedelta(hours=3),
        )
        s.add(lead)
        await s.flush()
        from crm_core.clients.model import Phone

        s.add(Phone(lead_id=lead.id, e164=CLIENT))
        s.add(
            Task(
                kind="call_back",
                title="Перезвонить по заявке: текстиль",
                responsible_id=ivan,
                lead_id=lead.id,
                due_at=later_today(now, timedelta(minutes=30)),
            )
        )
        await s.commit()
        return {"ivan": ivan, "lead": lead.id}


async def test_a_managers_day_from_a_call_back_to_an_invoice(
    live: Any, fake_pbx: FakeAmiServer, browser: Any
) -> None:
    world = await _world(live)
    j = await journey(browser, live, "manager")
    page = j.page

    # Sign in: My day opens, the call-back task is there with its button.
    await j.sign_in("ivan")
    assert page.url == f"{j.base}/"
    assert "Мой день" in await page.inner_text("h1")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    task = page.locator("#callbacks li.task", has_text="Перезвонить по заявке: текстиль")
    await task.wait_for()
    await j.shot("my-day")

    # Call back from the task: the server asks the PBX to originate the call.
    await task.locator("button", has_text="Перезвонить").click()
    await page.locator(".toast", has_text="+7 (812) 555-00-11").wait_for(timeout=5000)
    originate = await until(lambda: fake_pbx.actions_named("Originate"), timeout=5)
    assert f"CLICK2CALL={CLIENT}" in originate[0]["Variable"]
    assert originate[0]["Channel"].endswith("/101")

    # The PBX rings his phone for the call to the client: the pop-up shows the lead.
    pbx = fake_pbx.logged_in_sessions()[-1]
    call = click_to_call(CLIENT, "101", talk_s=95)
    await pbx.send(call.part(0))
    pop = page.locator(f".pop[data-call='{call.call_id}']")
    await pop.wait_for()
    text = await pop.inner_text()
    assert "Исходящий звонок" in text and "+7 (812) 555-00-11" in text
    assert "Мария" in text and "Перезвонить по заявке: текстиль" in text
    assert "Отель «Невский»" in text  # the lead's company, as typed on the lead
    await j.shot("pop-up")
    await pbx.send(call.part(1))  # he picks up, the client answers: they talk
    await page.locator(f".pop.answered[data-call='{call.call_id}']").wait_for()

    # From the pop-up to the lead's card, in the same tab (he works in one tab all day).
    pages_before = len(page.context.pages)
    await pop.locator("a", has_text="Открыть карточку").click()
    await page.wait_for_url(re.compile(rf".*/clients/lead/{world['lead']}$"))
    assert len(page.context.pages) == pages_before
    assert await page.inner_text("#card .card-title") == "Мария"
    assert "Заявка с сайта: текстиль" in await page.inner_text("#f-title")
    await j.shot("lead-card")

    # The call ends (a minute and a half): it is on the lead's history, the task is done.
    await pbx.send(call.part(2))
    await page.locator("#timeline", has_text="Звонок, исходящий").wait_for()
    tasks = page.locator("#card-tasks li", has_text="Перезвонить по заявке: текстиль")
    await tasks.locator("button", has_text="Выполнено").click()
    await tasks.wait_for(state="detached")
    await page.locator("#timeline", has_text="Задача выполнена").wait_for()

    # Edit fields in place: the contact's full name and the region.
    await page.click("#f-contact_name button.edit")
    await page.fill("#f-contact_name input[name=contact_name]", "Мария Орлова")
    await page.click("#f-contact_name button[type=submit]")
    await page.locator("#f-contact_name .value-text", has_text="Мария Орлова").wait_for()
    await page.locator("#card .card-title", has_text="Мария Орлова").wait_for()  # no reload
    await page.click("#f-region_id button.edit")
    await page.select_option("#f-region_id select", label="Санкт-Петербург")
    await page.click("#f-region_id button[type=submit]")
    await page.locator("#f-region_id .value-text", has_text="Санкт-Петербург").wait_for()
    await j.shot("lead-fields-edited")

    # The gate refuses the move to "В работе", naming the missing fields in Russian.
    await page.click("#stage-bar button:has-text('В работе')")
    refusal = page.locator("#gate.refused[role=alert]")
    await refusal.wait_for()
    text = await refusal.inner_text()
    assert "Чтобы перейти на стадию «В работе», заполните: источник, тип клиента, потенциал" in text
    assert (await page.inner_text("#stage-bar")).count("заполните") == 1  # said once
    await j.shot("gate-refused")

    # Fill them from the links under the stage bar, then the move goes through.
    await page.click("#gate a:has-text('источник')")
    await page.select_option("#f-source_id select", label="Яндекс Директ")
    await page.click("#f-source_id button[type=submit]")
    await page.locator("#f-source_id .value-text", has_text="Яндекс Директ").wait_for()
    await page.click("#gate a:has-text('тип клиента')")
    await page.select_option("#f-client_type select", label="Конечный клиент: гостиница")
    await page.click("#f-client_type button[type=submit]")
    await page.locator("#f-client_type .value-text").wait_for()
    await page.click("#gate a:has-text('потенциал')")
    await page.fill("#f-potential input[name=potential_amount]", "300 000")
    await page.select_option("#f-potential select[name=purchase_mode]", "regular")
    await page.click("#f-potential button[type=submit]")
    await page.locator("#f-potential .value-text").wait_for()
    await page.locator("#gate", has_text="можно переводить").wait_for()
    await page.click("#stage-bar button:has-text('В работе')")
    await page.locator("#stage-bar [aria-current=step]", has_text="В работе").wait_for()
    assert await page.locator("#stage-error, #gate.refused").count() == 0
    await j.shot("lead-moved")

    # Convert: a new contact and company from the lead, and a deal.
    await page.click("#convert-open")
    form = page.locator("#convert-form")
    await form.wait_for()
    preview = await form.inner_text()
    assert "Будет создан контакт «Мария Орлова»" in preview
    assert "Будет создана компания «Отель «Невский»»" in preview
    # Converting needs the decision maker too: the form says so and links to the field.
    assert "Для конвертации ещё нужно заполнить: вышли ли на ЛПР" in preview
    await form.locator("#convert-gate a", has_text="вышли ли на ЛПР").click()
    await page.select_option("#f-decision_maker select", "yes")
    await page.fill("#f-decision_maker input[name=decision_maker_name]", "Мария, управляющая")
    await page.click("#f-decision_maker button[type=submit]")
    await page.locator("#f-decision_maker .value-text").wait_for()
    await page.locator("#convert-gate").wait_for(state="detached")
    await form.locator("input[name=deal_title]").fill("Текстиль для отеля «Невский»")
    await form.locator("input[name=deal_amount]").fill("640 000")
    await j.shot("convert")
    await form.locator("button[type=submit]").click()
    await page.wait_for_url(re.compile(r".*/deals/\d+$"))
    assert await page.inner_text("#card .card-title") == "Текстиль для отеля «Невский»"
    head = await page.inner_text(".card-head")
    assert "Мария Орлова" in head and "Отель «Невский»" in head
    deal_id = int(page.url.rsplit("/", 1)[1])
    # The deal's history carries the lead's call; the client is a click away by phone.
    assert "Звонок, исходящий" in await page.inner_text("#timeline")
    call_button = page.locator(".card-actions button[data-call-to]")
    assert await call_button.inner_text() == "Позвонить +7 (812) 555-00-11"
    task_button = page.locator(".card-actions a", has_text="Задача")
    call_box, task_box = await call_button.bounding_box(), await task_button.bounding_box()
    assert call_box is not None and task_box is not None
    assert abs(call_box["y"] - task_box["y"]) < 4  # the header's actions in one row
    await j.shot("deal-card")

    # The deal on the kanban, in the first stage; dragged to the next one.
    await page.click("nav a[href='/deals']")
    await page.wait_for_url(re.compile(r".*/deals(\?.*)?$"))
    if await page.locator(".kcol").count() == 0:
        await page.click(".view-switch a:has-text('Канбан')")
    card_sel = f'.kcard[data-id="{deal_id}"]'
    columns = page.locator(".kcol")
    await columns.first.wait_for()
    first, second = columns.nth(0), columns.nth(1)
    assert await first.locator(card_sel).count() == 1
    first_stage = await first.get_attribute("data-stage")
    second_stage = await second.get_attribute("data-stage")
    second_name = (await second.locator(".khead h2").inner_text()).strip()
    await j.shot("deals-kanban")
    await _drag(page, card_sel, f'.kcol[data-stage="{second_stage}"]')
    await page.locator(f'.kcol[data-stage="{second_stage}"] {card_sel}').wait_for()
    await page.wait_for_function(
        "(sel) => document.querySelector(sel).textContent.trim() === '1'",
        arg=f'.kcol[data-stage="{second_stage}"] .kcount',
    )
    assert first_stage != second_stage
    async with live.app[SESSIONS]() as s:
        deal = await s.get(Deal, deal_id)
        assert deal is not None and str(deal.stage_id) == second_stage
    await j.shot("deal-dragged")

    # Back on the deal's card: the stage it was dragged to, and an invoice issued.
    await page.click(f"{card_sel} a.kname")
    await page.wait_for_url(re.compile(rf".*/deals/{deal_id}$"))
    assert second_name in await page.inner_text("#stage-bar [aria-current=step]")
    panel = page.locator("#deal-invoices")
    await panel.locator("summary", has_text="Выставить счёт").click()
    await panel.locator("input[name=number]").fill("2026-301")
    await panel.locator("input[name=amount]").fill("640 000")
    await panel.locator("button[type=submit]").click()
    await page.locator("#deal-invoices a", has_text="№ 2026-301").wait_for()
    await j.shot("deal-invoice-issued")
    await page.click("#deal-invoices a:has-text('№ 2026-301')")
    await page.wait_for_url(re.compile(r".*/invoices/\d+$"))
    assert "№ 2026-301" in await page.inner_text("#card .card-title")
    assert "640 000 ₽" in plain(await page.inner_text("#card"))
    await j.shot("invoice")
    async with live.app[SESSIONS]() as s:
        invoice = await s.scalar(select(Invoice).where(Invoice.number == "2026-301"))
        assert invoice is not None and invoice.deal_id == deal_id
        lead = await s.get(Lead, world["lead"])
        assert lead is not None and lead.deal_id == deal_id

    assert j.problems == []


async def _drag(page: Any, card: str, column: str) -> None:
    """Drag ``card`` onto the cards of ``column`` with the mouse, in steps, as a person does."""
    source = page.locator(card)
    target = page.locator(f"{column} .kcards")
    await source.scroll_into_view_if_needed()
    box = await source.bounding_box()
    goal = await target.bounding_box()
    assert box is not None and goal is not None
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 12)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] / 2 + 10, box["y"] + 20, steps=4)
    await page.mouse.move(goal["x"] + goal["width"] / 2, goal["y"] + 30, steps=12)
    await page.mouse.move(goal["x"] + goal["width"] / 2, goal["y"] + 34, steps=2)
    await page.mouse.up()
