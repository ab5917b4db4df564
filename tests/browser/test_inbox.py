"""The inbox in the browser: a WhatsApp message from an unknown number (a signed webhook to
the server) appears live in the inbox of the manager the distribution rules give new clients;
he answers; the answer reaches the fake Graph API; its delivery status comes back by webhook
and shows; the lead's card has the thread on its timeline. Screenshots in docs/screenshots/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contact_center.app import create_app
from contact_center.keys import SESSIONS
from crm_core.users import service as users
from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.helpers import until
from tests.inbox_support import TOKEN, manager_on_duty, signed, wa_channel, wa_status, wa_text

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
HOOK = "/webhooks/whatsapp/wa-main"


async def test_whatsapp_from_a_stranger_is_answered_from_the_inbox(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any, browser: Any
) -> None:
    async with FakeGraphApi(token=TOKEN) as graph:
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_CHANNELS=json.dumps([wa_channel(graph.url)]),
            CC_SCHEDULER_INTERVAL_S="0.2",
        )
        client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
        async with client.app[SESSIONS]() as session:
            await manager_on_duty(session, "ivan", "Иван Петров")
            await users.create_user(
                session,
                login="anna",
                role="manager",
                password="password1",
                display_name="Анна Смирнова",
                scrypt_n=1024,
            )
            await session.commit()

        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(f"{base}/login")
        await page.fill("#login", "ivan")
        await page.fill("#password", "password1")
        await page.click("button[type=submit]")
        await page.goto(f"{base}/inbox")
        await page.locator("#ws-state.ok").wait_for(timeout=5000)
        assert await page.locator(".empty").first.is_visible()

        body = wa_text(
            "wamid.stranger.1",
            "Здравствуйте! Нужны 200 коробок, доставка в Тверь — сколько будет стоить?",
            wa_id="79031234567",
            name="Ольга Смирнова",
        )
        resp = await client.post(HOOK, data=body, headers=signed(body))
        assert resp.status == 200
        row = page.locator(".conversations li", has_text="Ольга Смирнова")
        await row.wait_for(timeout=5000)  # arrived live over /ws
        await page.locator("#inbox-unread:not([hidden])", has_text="1").wait_for(timeout=5000)
        assert "200 коробок" in await row.inner_text()

        await row.locator("a").click()
        thread = page.locator("#inbox-thread")
        await thread.wait_for(timeout=5000)
        side = await page.locator(".client-side").inner_text()
        assert "лид" in side and "WhatsApp продаж" in side and "Иван Петров" in side
        await page.fill("#reply-text", "Ольга, добрый день! 200 коробок с доставкой — 18 400 ₽.")
        await page.click(".composer button[type=submit]")
        outbound = page.locator(".msg.outbound")
        await outbound.wait_for(timeout=5000)

        await until(lambda: graph.calls("/messages"), timeout=10)
        sent = graph.calls("/messages")
        assert len(sent) == 1
        assert sent[0].json()["to"] == "79031234567"
        assert sent[0].json()["text"]["body"].startswith("Ольга, добрый день!")
        await page.locator(".msg.outbound .msg-status[data-status=sent]").wait_for(timeout=5000)

        status = wa_status("wamid.fake.1", "delivered", wa_id="79031234567")
        resp = await client.post(HOOK, data=status, headers=signed(status))
        assert resp.status == 200
        delivered = page.locator(".msg.outbound .msg-status[data-status=delivered]")
        await delivered.wait_for(timeout=5000)  # the thread reloaded on message.status
        assert await delivered.inner_text() == "доставлено"
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "16-manager-inbox-whatsapp.png"))

        # While he writes the next reply the client writes again: her message shows at once,
        # his half-typed reply stays in the box with the cursor in it.
        await page.click("#reply-text")
        await page.keyboard.type("Доставка в четверг, ")
        more = wa_text("wamid.stranger.2", "А в четверг привезёте?", wa_id="79031234567")
        resp = await client.post(HOOK, data=more, headers=signed(more))
        assert resp.status == 200
        await page.locator(".msg.inbound", has_text="А в четверг привезёте?").wait_for(timeout=5000)
        assert await page.input_value("#reply-text") == "Доставка в четверг, "
        assert await page.evaluate("document.activeElement.id") == "reply-text"
        await page.keyboard.type("с 10 до 14.")
        await page.click(".composer button[type=submit]")
        await until(lambda: len(graph.calls("/messages")) == 2, timeout=10)
        assert (
            graph.calls("/messages")[1].json()["text"]["body"] == "Доставка в четверг, с 10 до 14."
        )

        await page.click(".client-side a[href^='/clients/lead/']")
        await page.wait_for_load_state("networkidle")
        timeline = await page.locator("main").inner_text()
        assert "200 коробок" in timeline and "18 400" in timeline
        await page.screenshot(path=str(SHOTS / "17-manager-lead-card-whatsapp-thread.png"))


async def test_the_sms_reply_box_counts_characters_and_parts_as_he_types(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any, browser: Any
) -> None:
    async with FakeSmsGateway(login="cc", password="gw-secret") as gateway:
        channel = {
            "code": "sms-main",
            "kind": "sms",
            "name": "SMS",
            "login": "cc",
            "password": "gw-secret",
            "api_url": gateway.url,
        }
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_CHANNELS=json.dumps([channel]),
            CC_SCHEDULER_INTERVAL_S="3600",
        )
        client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
        async with client.app[SESSIONS]() as session:
            await manager_on_duty(session)
            await session.commit()
        sms = {"sms_id": "9001", "phone": "79161234567", "mes": "Перезвоните мне"}
        assert (await client.post("/webhooks/sms/sms-main", data=sms)).status == 200

        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page(viewport={"width": 1440, "height": 900})
        await page.goto(f"{base}/login")
        await page.fill("#login", "ivan")
        await page.fill("#password", "password1")
        await page.click("button[type=submit]")
        await page.goto(f"{base}/inbox")
        await page.locator(".conversations li a").first.click()
        counter = page.locator("#sms-counter")
        await counter.wait_for(timeout=5000)
        assert "Символов: 0" in await counter.inner_text()
        await page.locator("#reply-text").press_sequentially("Ж" * 71)
        await page.locator("#sms-counter", has_text="SMS-частей: 2").wait_for(timeout=5000)
        text = await page.locator("#sms-counter").inner_text()
        assert "Символов: 71" in text and "в части до 67" in text and "кириллица" in text
        await page.close()
