"""The cards in a real browser (Debian's Chromium): a field edited in place with a Russian
refusal next to it, the lead's gate refusing a move naming the fields, filling them from the
links under the bar, moving, converting with the duplicate preview and landing on the deal
card; a task added and completed on the timeline; a name typed as markup shown as text.
Screenshots at 1440×900 in docs/screenshots/ (30-…)."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from contact_center.keys import SESSIONS
from crm_core.activities.model import Activity
from crm_core.clients.model import Company, Contact, ContactCompany, LegalEntity, Phone, Requisites
from crm_core.deals.pipelines import sync_pipelines
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from crm_core.users import service as users
from tests.conftest import ROOT

SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "password1"


async def _page(browser: Any) -> tuple[Any, list[str]]:
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="ru-RU", timezone_id="Europe/Moscow"
    )
    page = await context.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


async def _shot(page: Any, name: str, *, full: bool = False) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.wait_for_load_state("networkidle")
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full)


async def _world(client: Any) -> dict[str, Any]:
    async with client.app[SESSIONS]() as s:
        ivan, _ = await users.create_user(
            s,
            login="ivan",
            role="manager",
            password=PASSWORD,
            extensions=["101"],
            display_name="Иван Петров",
            scrypt_n=1024,
        )
        await sync_pipelines(s, CrmRules())
        moscow = Region(code="RU-MOW", name="Москва")
        spb = Region(code="RU-SPE", name="Санкт-Петербург")
        yandex = Source(kind="ad_channel", code="yandex", name="Яндекс Директ")
        s.add_all([moscow, spb, yandex])
        await s.flush()
        maria = Contact(name="Мария Орлова", responsible_id=ivan.id, region_id=spb.id)
        sergey = Contact(
            name="Сергей Ковалёв",
            position="закупщик",
            responsible_id=ivan.id,
            client_type="wholesaler",
            source_id=yandex.id,
            region_id=moscow.id,
            potential_amount=Decimal("2500000"),
            purchase_mode="regular",
            needs_products="бумага А4, картон",
        )
        romashka = Company(
            name="ООО «Ромашка»",
            responsible_id=ivan.id,
            client_type="wholesaler",
            region_id=moscow.id,
        )
        s.add_all([maria, sergey, romashka])
        await s.flush()
        s.add(ContactCompany(contact_id=sergey.id, company_id=romashka.id, is_decision_maker=True))
        s.add(Phone(contact_id=maria.id, e164="+78125550011"))
        s.add(Phone(contact_id=sergey.id, e164="+74951234567"))
        entity = LegalEntity(company_id=romashka.id, name="ООО «Ромашка»")
        s.add(entity)
        await s.flush()
        s.add(
            Requisites(
                legal_entity_id=entity.id,
                full_name="Общество с ограниченной ответственностью «Ромашка»",
                inn="7707083893",
                kpp="773601001",
            )
        )
        s.add(
            Activity(
                kind="call",
                direction="inbound",
                subject="Звонок с +7 (495) 123-45-67",
                outcome="answered",
                talk_s=95,
                counted=True,
                occurred_at=datetime(2026, 11, 30, 9, 30, tzinfo=UTC),
                contact_id=sergey.id,
                user_id=ivan.id,
            )
        )
        lead = Lead(
            title="Заявка с сайта: текстиль",
            stage="new",
            contact_name="Мария",
            company_name="Отель «Невский»",
            responsible_id=ivan.id,
        )
        s.add(lead)
        await s.flush()
        s.add(Phone(lead_id=lead.id, e164="+78125550011"))
        await s.commit()
        return {
            "ivan": ivan.id,
            "maria": maria.id,
            "sergey": sergey.id,
            "company": romashka.id,
            "lead": lead.id,
        }


async def _sign_in(page: Any, base: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#login", "ivan")
    await page.fill("#password", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")


async def test_a_phone_edited_with_a_bad_value_is_refused_in_russian_then_saved(
    client: Any, browser: Any
) -> None:
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/contact/{w['sergey']}")
    assert await page.inner_text("#card .card-title") == "Сергей Ковалёв"
    await _shot(page, "40-manager-contact-card")

    await page.click("#f-phones button.edit")
    first = page.locator("#f-phones input[name=phones]").first
    await first.fill("12345")
    await page.click("#f-phones button[type=submit]")
    error = page.locator("#f-phones .field-error")
    await error.wait_for(timeout=5000)
    assert "«12345» — это не номер телефона" in await error.inner_text()
    await _shot(page, "41-contact-phone-refused")

    await page.locator("#f-phones input[name=phones]").first.fill("8 916 000-11-22")
    await page.click("#f-phones button[type=submit]")
    await page.locator("#f-phones a.phone").first.wait_for(timeout=5000)
    assert "+7 (916) 000-11-22" in await page.inner_text("#f-phones")
    assert await page.locator("#f-phones .field-error").count() == 0
    async with client.app[SESSIONS]() as s:
        phones = list(await s.scalars(select(Phone.e164).where(Phone.contact_id == w["sergey"])))
    assert phones == ["+79160001122"]
    # The duplicate of a visible contact names it and links to it. htmx focuses the form's
    # first input (autofocus) as the swap settles: type into the second only after that.
    await page.click("#f-phones button.edit")
    second = page.locator("form#f-phones input[name=phones]").nth(1)
    await second.wait_for(timeout=5000)
    await page.wait_for_function("document.activeElement?.id === 'in-phones'")
    await second.fill("+7 812 555-00-11")
    values = await page.locator("form#f-phones input[name=phones]").evaluate_all(
        "(nodes) => nodes.map((n) => n.value)"
    )
    assert values == ["+7 (916) 000-11-22", "+7 812 555-00-11"]
    await page.click("#f-phones button[type=submit]")
    await page.locator("#f-phones .field-error").wait_for(timeout=5000)
    link = page.locator("#f-phones .field-error a")
    assert await link.inner_text() == "Мария Орлова"
    assert await link.get_attribute("href") == f"/clients/contact/{w['maria']}"
    # Every phone has a call button: it asks the PBX (none here) through POST /api/v1/calls.
    await page.click("#f-phones button:has-text('Отмена')")
    await page.click("#f-phones button.call")
    toast = page.locator(".toast.error")
    await toast.wait_for(timeout=5000)
    assert "Нет связи с АТС" in await toast.inner_text()
    assert problems == []


async def test_the_gate_refuses_naming_fields_then_move_convert_and_the_deal_card_opens(
    client: Any, browser: Any
) -> None:
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/lead/{w['lead']}")
    gate = await page.inner_text("#gate")
    assert "Чтобы перейти на стадию «В работе», заполните:" in gate
    assert "источник" in gate and "тип клиента" in gate and "потенциал" in gate
    await page.click("#stage-bar button:has-text('В работе')")
    refusal = page.locator("#gate.refused[role=alert]")
    await refusal.wait_for(timeout=5000)
    text = await refusal.inner_text()
    assert "Чтобы перейти на стадию «В работе», заполните: источник, тип клиента, потенциал" in text
    assert (await page.inner_text("#stage-bar")).count("заполните") == 1  # said once
    await _shot(page, "42-lead-gate-refused")

    # Each missing requirement is a link that opens its field.
    await page.click("#gate a:has-text('источник')")
    await page.select_option("#f-source_id select", label="Яндекс Директ")
    await page.click("#f-source_id button[type=submit]")
    await page.locator("#f-source_id .value-text").wait_for(timeout=5000)
    await page.locator("#gate a:has-text('тип клиента')").wait_for(timeout=5000)
    await page.click("#gate a:has-text('тип клиента')")
    await page.select_option("#f-client_type select", label="Конечный клиент: гостиница")
    await page.click("#f-client_type button[type=submit]")
    await page.locator("#f-client_type .value-text").wait_for(timeout=5000)
    await page.click("#f-potential button.edit")
    await page.fill("#f-potential input[name=potential_amount]", "300 000")
    await page.select_option("#f-potential select[name=purchase_mode]", "one_off")
    await page.click("#f-potential button[type=submit]")
    await page.locator("#f-potential .value-text").wait_for(timeout=5000)
    await page.locator("#gate:has-text('можно переводить')").wait_for(timeout=5000)

    await page.click("#stage-bar button:has-text('В работе')")
    await page.locator("#stage-bar [aria-current=step]:has-text('В работе')").wait_for(timeout=5000)
    for key, value in (("region_id", "Санкт-Петербург"),):
        await page.click(f"#f-{key} button.edit")
        await page.select_option(f"#f-{key} select", label=value)
        await page.click(f"#f-{key} button[type=submit]")
        await page.locator(f"#f-{key} .value-text").wait_for(timeout=5000)
    await page.click("#f-decision_maker button.edit")
    await page.select_option("#f-decision_maker select", "yes")
    await page.fill("#f-decision_maker input[name=decision_maker_name]", "Мария, управляющая")
    await page.click("#f-decision_maker button[type=submit]")
    await page.locator("#f-decision_maker .value-text").wait_for(timeout=5000)

    await page.click("#convert-open")
    dialog = page.locator("#convert-form")
    await dialog.wait_for(timeout=5000)
    preview = await dialog.inner_text()
    assert "Телефон +7 (812) 555-00-11 принадлежит Мария Орлова — привязать к нему" in preview
    assert "Будет создана компания «Отель «Невский»»" in preview
    await page.fill("#convert-form input[name=deal_title]", "Текстиль для отеля «Невский»")
    await _shot(page, "43-lead-convert-duplicate-preview")
    await page.click("#convert-form button[type=submit]")
    await page.wait_for_url(f"{base}/deals/*", timeout=5000)
    assert await page.inner_text("#card .card-title") == "Текстиль для отеля «Невский»"
    head = await page.inner_text(".card-head")
    assert "Мария Орлова" in head and "Отель «Невский»" in head
    assert "Контакт установлен" in await page.inner_text("#stage-bar")
    async with client.app[SESSIONS]() as s:
        lead = await s.get(Lead, w["lead"])
        assert lead is not None and lead.contact_id == w["maria"] and lead.deal_id is not None
    await page.click("#stage-bar button:has-text('КП отправлено')")
    await page.locator("#stage-bar [aria-current=step]:has-text('КП отправлено')").wait_for(
        timeout=5000
    )
    await _shot(page, "44-deal-card")
    assert problems == []


async def test_a_task_added_on_the_card_is_completed_there(client: Any, browser: Any) -> None:
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/contact/{w['sergey']}")
    await page.click("#composer label.tab:has-text('Задача')")
    await page.fill("#task-form input[name=title]", "Отправить КП на бумагу")
    await page.fill("#task-form input[name=due_time]", "15:00")
    await page.select_option("#task-form select[name=remind]", "60")
    await page.click("#task-form button[type=submit]")
    task = page.locator("#card-tasks li:has-text('Отправить КП на бумагу')")
    await task.wait_for(timeout=5000)
    await page.click("#composer label.tab:has-text('Комментарий')")
    await page.fill(".compose-note textarea", "Просил прислать образцы")
    await page.click(".compose-note button[type=submit]")
    await page.locator("#timeline:has-text('Просил прислать образцы')").wait_for(timeout=5000)
    await _shot(page, "45-contact-task-and-comment")
    await (
        page.locator("#card-tasks li:has-text('Отправить КП на бумагу')")
        .locator("button:has-text('Выполнено')")
        .click()
    )
    await page.locator("#timeline:has-text('Задача выполнена: Отправить КП на бумагу')").wait_for(
        timeout=5000
    )
    assert await page.locator("#card-tasks li:has-text('Отправить КП на бумагу')").count() == 0
    async with client.app[SESSIONS]() as s:
        row = await s.scalar(select(Task).where(Task.title == "Отправить КП на бумагу"))
        assert row is not None and row.status == "done" and row.contact_id == w["sergey"]
        assert row.remind_at is not None and row.due_at is not None
    assert problems == []


async def test_a_name_typed_as_a_script_renders_as_text(client: Any, browser: Any) -> None:
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/contact/{w['sergey']}")
    await page.click("#f-name button.edit")
    await page.fill("#f-name input[name=name]", "<script>alert(1)</script>")
    await page.click("#f-name button[type=submit]")
    await page.locator("#f-name .value-text").wait_for(timeout=5000)
    assert await page.inner_text("#f-name .value-text") == "<script>alert(1)</script>"
    await page.reload()
    assert await page.inner_text("#card .card-title") == "<script>alert(1)</script>"
    await page.goto(f"{base}/clients/company/{w['company']}")
    assert "<script>alert(1)</script>" in await page.inner_text("#card")
    await page.wait_for_timeout(300)
    assert dialogs == [] and problems == []


async def test_company_requisites_and_invoice_card(client: Any, browser: Any) -> None:
    w = await _world(client)
    async with client.app[SESSIONS]() as s:
        invoice = Invoice(
            number="A-17",
            company_id=w["company"],
            amount=Decimal("260000"),
            issued_on=date(2026, 11, 25),
            due_on=date(2099, 12, 31),
            responsible_id=w["ivan"],
        )
        s.add(invoice)
        await s.commit()
        invoice_id = invoice.id
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/company/{w['company']}")
    await page.click("#legal details.edit-req summary:has-text('Изменить реквизиты')")
    await page.fill("#legal input[name=inn]", "7707083894")
    await page.click("#legal details.edit-req[open] button[type=submit]")
    await page.locator("#legal .field-error").wait_for(timeout=5000)
    assert "ИНН: контрольная сумма не сходится" in await page.inner_text("#legal .field-error")
    await page.fill("#legal details.edit-req[open] input[name=inn]", "7707083893")
    await page.fill("#legal details.edit-req[open] input[name=bik]", "044525225")
    await page.fill(
        "#legal details.edit-req[open] input[name=settlement_account]", "40702810938000000001"
    )
    await page.click("#legal details.edit-req[open] button[type=submit]")
    await page.locator("#legal summary:has-text('История реквизитов (1)')").wait_for(timeout=5000)
    await page.click("#legal summary:has-text('История реквизитов')")
    await page.locator("#legal").scroll_into_view_if_needed()
    await _shot(page, "46-company-requisites")
    await page.goto(f"{base}/invoices/{invoice_id}")
    assert "№ A-17" in await page.inner_text("#card .card-title")
    await _shot(page, "47-invoice-card")
    assert problems == []


async def test_a_move_right_after_a_save_keeps_the_gates_answer(client: Any, browser: Any) -> None:
    """A field saved refreshes the stage bar; a move clicked while that refresh is still on its
    way (a slow network here: the refresh answers first, the move later) shows the gate's
    refusal: the late refresh does not replace the bar under the move's answer."""
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/lead/{w['lead']}")
    refresh_sent = asyncio.Event()
    answered: list[str] = []

    def slow(seconds: float, name: str, sent: asyncio.Event | None = None) -> Any:
        async def handle(route: Any) -> None:
            if sent is not None:
                sent.set()
            await asyncio.sleep(seconds)  # the network, not the test, is slow
            try:
                await route.continue_()
                answered.append(name)
            except Exception:  # the request was aborted by the page
                answered.append(name + " aborted")

        return handle

    await page.route("**/card/lead/*/stages", slow(0.6, "refresh", refresh_sent))
    await page.route("**/card/lead/*/stage", slow(1.2, "move"))
    await page.click("#f-region_id button.edit")
    await page.select_option("#f-region_id select", label="Санкт-Петербург")
    await page.click("#f-region_id button[type=submit]")
    await page.locator("#f-region_id .value-text").wait_for(timeout=5000)
    await asyncio.wait_for(refresh_sent.wait(), 5)
    await page.click("#stage-bar button:has-text('В работе')")
    await page.locator("#gate.refused").wait_for(timeout=5000)
    assert "заполните: источник" in await page.inner_text("#gate.refused")
    await page.wait_for_load_state("networkidle")
    assert await page.locator("#gate.refused").is_visible()
    assert "move" in answered
    assert problems == []


async def test_the_deal_cards_call_button_follows_its_changed_contact(
    client: Any, browser: Any
) -> None:
    from crm_core.deals import service as deals
    from crm_core.deals.schemas import DealInput
    from crm_core.users.model import User

    w = await _world(client)
    async with client.app[SESSIONS]() as s:
        ivan = await s.get(User, w["ivan"])
        assert ivan is not None
        deal, _ = await deals.create_deal(
            s,
            DealInput(title="Поставка бумаги", contact_id=w["sergey"], company_id=w["company"]),
            actor=ivan,
            rules=CrmRules(),
            now=datetime.now(UTC),
        )
        await s.commit()
        deal_id = deal.id
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/deals/{deal_id}")
    call = page.locator(".card-actions button[data-call-to]")
    assert await call.get_attribute("data-call-to") == "+74951234567"
    # The deal's contact is changed on the card: the button calls the new one, no reload.
    await page.evaluate("window.__same_page = true")
    await page.click("#f-contact_id button.edit")
    await page.fill("#f-contact_id input[name=contact_id]", "Мария Орлова")
    await page.click("#f-contact_id button[type=submit]")
    await page.locator("#f-contact_id a", has_text="Мария Орлова").wait_for(timeout=5000)
    await page.locator(
        ".card-actions button[data-call-to='+78125550011']", has_text="+7 (812) 555-00-11"
    ).wait_for(timeout=5000)
    assert await page.locator(".card-actions button[data-call-to]").count() == 1
    assert await page.evaluate("window.__same_page === true")
    assert problems == []


async def test_toasts_cover_no_field_and_do_not_pile_up(client: Any, browser: Any) -> None:
    w = await _world(client)
    base = str(client.make_url("/")).rstrip("/")
    page, problems = await _page(browser)
    await _sign_in(page, base)
    await page.goto(f"{base}/clients/contact/{w['sergey']}")
    await page.wait_for_load_state("networkidle")
    # Many notices at once (saves, refusals, news with a link), as on a busy afternoon.
    await page.evaluate(
        """() => { for (let i = 0; i < 8; i++) {
             window.CC.toast("Сохранено " + i, "Поле сохранено", i % 2 ? "/tasks" : null,
                             i % 3 ? null : "error");
           } }"""
    )
    toasts = page.locator("#toasts .toast")
    assert await toasts.count() == 3  # the newest three, not a pile
    for width, height in ((1440, 900), (1280, 800)):
        await page.set_viewport_size({"width": width, "height": height})
        covered = await page.evaluate(
            """() => {
              const boxes = Array.from(document.querySelectorAll("#toasts .toast"))
                .map((t) => t.getBoundingClientRect());
              const hit = (a, b) => a.left < b.right && b.left < a.right
                                    && a.top < b.bottom && b.top < a.bottom;
              const fields = Array.from(document.querySelectorAll(
                "#main input, #main select, #main textarea, #main button, #main a, .topbar"));
              return fields.filter((f) => {
                const r = f.getBoundingClientRect();
                return r.width && r.height && boxes.some((b) => hit(b, r));
              }).map((f) => f.outerHTML.slice(0, 80));
            }"""
        )
        assert covered == [], (width, covered)
    assert problems == []
