"""The full client card in a real browser, and notification toasts on the manager's pages."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from contact_center.keys import BUS, SESSIONS
from crm_core.activities.model import Activity
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.deals.model import Deal, PipelineStage
from crm_core.deals.pipelines import sync_pipelines
from crm_core.notifications import service as notifications
from crm_core.phones import digits_reversed
from crm_core.reference.model import Region
from crm_core.rules import CrmRules
from crm_core.tasks.events import TaskDue
from crm_core.tasks.model import Task
from crm_core.users import service as users


async def _sign_in(client: Any, browser: Any, login: str, lang: str = "ru") -> tuple[Any, str]:
    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page()
    await page.goto(f"{base}/login?lang={lang}")
    await page.fill("#login", login)
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    return page, base


async def test_card_of_a_contact_shows_fields_deals_tasks_and_timeline(
    client: Any, browser: Any
) -> None:
    async with client.app[SESSIONS]() as s:
        ivan, _ = await users.create_user(
            s,
            login="ivan",
            role="manager",
            password="password1",
            extensions=["101"],
            display_name="Иван Петров",
            scrypt_n=1024,
        )
        await sync_pipelines(s, CrmRules())
        region = Region(code="RU-SPE", name="Санкт-Петербург")
        s.add(region)
        await s.flush()
        company = Company(
            name="ООО «Ромашка»",
            client_type="wholesaler",
            responsible_id=ivan.id,
            region_id=region.id,
            potential_amount=Decimal("1200000"),
        )
        contact = Contact(
            name="Сергей Ковалёв",
            position="закупщик",
            responsible_id=ivan.id,
            needs_products="бумага А4",
        )
        s.add_all([company, contact])
        await s.flush()
        s.add(ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True))
        s.add(
            Phone(
                contact_id=contact.id,
                e164="+74951234567",
                digits_rev=digits_reversed("+74951234567"),
            )
        )
        stage = await s.scalar(select(PipelineStage).where(PipelineStage.kind == "open"))
        s.add(
            Deal(
                title="Поставка бумаги",
                pipeline_id=stage.pipeline_id,
                stage_id=stage.id,
                amount=Decimal("250000"),
                contact_id=contact.id,
                company_id=company.id,
                responsible_id=ivan.id,
            )
        )
        s.add(
            Activity(
                kind="call",
                direction="inbound",
                subject="Звонок с +74951234567",
                outcome="answered",
                talk_s=95,
                occurred_at=datetime(2026, 11, 20, 9, 30, tzinfo=UTC),
                contact_id=contact.id,
                user_id=ivan.id,
            )
        )
        s.add(
            Task(
                kind="call_back",
                title="Перезвонить по счёту",
                contact_id=contact.id,
                responsible_id=ivan.id,
            )
        )
        await s.commit()
        contact_id, company_id, stage_name = contact.id, company.id, stage.name_ru

    page, base = await _sign_in(client, browser, "ivan")
    await page.goto(f"{base}/clients/contact/{contact_id}")
    card = page.locator("#card .card-title")
    await card.wait_for(timeout=5000)
    assert await card.inner_text() == "Сергей Ковалёв"
    text = await page.inner_text("#card")
    assert "закупщик" in text and "+74951234567" in text and "бумага А4" in text
    assert "ООО «Ромашка»" in text and "ЛПР" in text
    assert "Иван Петров" in text  # the responsible, by name
    assert "Поставка бумаги" in text and stage_name in text
    assert "Перезвонить по счёту" in text
    assert "Звонок с +74951234567" in text and "входящий" in text
    assert await page.locator("a[href='tel:+74951234567']").count() == 1

    await page.click(f"a[href='/clients/company/{company_id}']")
    await page.locator("#card .card-title").wait_for(timeout=5000)
    company_text = await page.inner_text("#card")
    assert "Оптовик" in company_text and "Санкт-Петербург" in company_text
    assert "1 200 000" in company_text.replace("\u00a0", " ")

    await page.goto(f"{base}/clients/contact/999999")
    await page.get_by_text("Карточка не найдена").wait_for(timeout=5000)


async def test_a_reminder_pops_a_toast_with_a_link_to_the_client(client: Any, browser: Any) -> None:
    async with client.app[SESSIONS]() as s:
        anna, _ = await users.create_user(
            s, login="anna", role="manager", password="password1", scrypt_n=1024
        )
        await s.commit()
    page, _ = await _sign_in(client, browser, "anna", lang="en")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    # As the scheduler does: the reminders are stored as notifications in the job's
    # transaction, then the events (with notification.created) are published.
    reminders = [
        TaskDue(
            task_id=7,
            kind="call_back",
            title="Call Romashka back",
            contact_id=42,
            responsible_id=anna.id,
            audience=(f"user:{anna.id}",),
        ),
        TaskDue(
            task_id=8,
            kind="call_back",
            title="Not hers",
            responsible_id=None,
            audience=(f"user:{anna.id + 1}",),
        ),
    ]
    async with client.app[SESSIONS]() as s:
        stored = await notifications.record(s, reminders, now=datetime.now(UTC))
        await s.commit()
    for event in [*reminders, *stored]:
        await client.app[BUS].publish(event)
    toast = page.locator(".toast")
    await toast.first.wait_for(timeout=5000)
    text = await toast.first.inner_text()
    assert "Reminder" in text and "Call Romashka back" in text
    assert await toast.first.locator("a").get_attribute("href") == "/clients/contact/42"
    assert await toast.count() == 1


async def test_card_page_needs_a_session_and_a_known_kind(client: Any) -> None:
    resp = await client.get("/clients/contact/1", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/clients/contact/1"
    assert (await client.get("/clients/deal/1", allow_redirects=False)).status == 404
    assert (await client.get("/clients/contact/x", allow_redirects=False)).status == 404
