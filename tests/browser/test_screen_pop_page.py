"""The manager's page in a real browser: sign in, then a ringing call pops the client card."""

from __future__ import annotations

from typing import Any

from contact_center.keys import BUS, SESSIONS
from crm_core.calls.events import CallAnswered, CallCorrected, CallRinging
from crm_core.users import service as users


async def test_sign_in_and_pop_up_for_my_extension_only(client: Any, browser: Any) -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="ivan",
            role="manager",
            password="password1",
            extensions=["101"],
            display_name="Иван Петров",
            scrypt_n=1024,
        )
        await session.commit()
    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page()
    await page.goto(f"{base}/login")
    assert await page.locator("html").get_attribute("lang") == "ru"
    await page.fill("#login", "ivan")
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    assert "Иван Петров" in await page.inner_text("header")

    bus = client.app[BUS]
    await bus.publish(
        CallRinging(call_id="other", caller="+79990000000", extension="102", audience=("ext:102",))
    )
    await bus.publish(
        CallRinging(
            call_id="c1",
            caller="+74951234567",
            did="+74951112233",
            extension="101",
            client={
                "name": "ООО Ромашка",
                "company": "Ромашка Групп",
                "client_type": "wholesaler",
                "responsible": "Иван Петров",
                "deals": [{"title": "Поставка", "stage": "КП отправлено"}],
            },
            tracking={"source": "yandex", "campaign": "spring", "region": "Москва"},
            audience=("ext:101",),
        )
    )
    pop = page.locator(".pop[data-call='c1']")
    await pop.wait_for(timeout=5000)
    text = await pop.inner_text()
    # The caller as people write numbers, dialled by a click (tel: / click-to-call).
    assert "+7 (495) 123-45-67" in text and "ООО Ромашка" in text and "Поставка" in text
    assert await pop.locator("a[href='tel:+74951234567']").count() == 1
    assert "yandex / spring" in text
    assert await page.locator(".pop[data-call='other']").count() == 0
    await bus.publish(CallAnswered(call_id="c1", extension="101", audience=("ext:101",)))
    await page.locator(".pop.answered[data-call='c1']").wait_for(timeout=5000)
    # A call whose end the link only estimated gets the PBX's figures: the calls page's feed
    # says so and nothing new appears as a call in progress.
    await page.goto(f"{base}/calls")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    await bus.publish(
        CallCorrected(
            call_id="c0",
            extension="101",
            disposition="answered",
            talk_seconds=75.0,
            counted=True,
            audience=("ext:101",),
        )
    )
    row = page.locator("#call-log tr[data-call='c0']")
    await row.wait_for(timeout=5000)
    assert "по данным АТС" in await row.inner_text()
    assert await page.locator(".pop[data-call='c0']").count() == 0


async def test_unknown_caller_gets_the_new_client_form(client: Any, browser: Any) -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="anna",
            role="manager",
            password="password1",
            extensions=["102"],
            scrypt_n=1024,
        )
        await session.commit()
    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page()
    await page.goto(f"{base}/login?lang=en")
    await page.fill("#login", "anna")
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)
    await client.app[BUS].publish(
        CallRinging(
            call_id="n1", caller="+79161234567", extension="102", client=None, audience=("ext:102",)
        )
    )
    pop = page.locator(".pop[data-call='n1']")
    await pop.wait_for(timeout=5000)
    assert "New client" in await pop.inner_text()
    assert await pop.locator("form.lead-form input[name=contact_name]").count() == 1
