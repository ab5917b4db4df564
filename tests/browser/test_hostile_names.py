"""Names people type reach the pages as data, never as markup: a source named ``<!--<script>``
once stopped every card page from loading (the page's JSON sat in an inline script, where that
text switches the HTML parser into a mode in which ``</script>`` no longer ends the element).
The pages also run under the Content-Security-Policy without a single violation."""

from __future__ import annotations

from typing import Any

from contact_center.keys import SESSIONS
from crm_core.clients.model import Contact
from crm_core.reference.model import Region, Source
from crm_core.users import service as users

HOSTILE = "<!--<script>"


async def test_a_source_named_like_markup_does_not_break_the_card(
    client: Any, browser: Any
) -> None:
    async with client.app[SESSIONS]() as s:
        ivan, _ = await users.create_user(
            s,
            login="ivan",
            role="manager",
            password="password1",
            display_name="</script><script>window.pwned=1</script>",
            scrypt_n=1024,
        )
        source = Source(kind="other", code="hostile", name=HOSTILE)
        region = Region(code="RU-X", name="</script><b id=pwned>x</b>\u2028")
        s.add_all([source, region])
        await s.flush()
        contact = Contact(
            name="Сергей Ковалёв",
            responsible_id=ivan.id,
            source_id=source.id,
            region_id=region.id,
        )
        s.add(contact)
        await s.commit()
        contact_id = contact.id

    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page()
    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    await page.goto(f"{base}/login")
    await page.fill("#login", "ivan")
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)  # app.js ran, /ws connected

    await page.goto(f"{base}/clients/contact/{contact_id}")
    title = page.locator("#card .card-title")
    await title.wait_for(timeout=5000)
    assert await title.inner_text() == "Сергей Ковалёв"
    text = await page.inner_text("#card")
    assert HOSTILE in text  # shown as the text it is
    assert await page.evaluate("window.pwned") is None
    assert await page.locator("#pwned").count() == 0
    assert problems == []  # no script error, no Content-Security-Policy violation


async def test_the_demo_landing_runs_under_the_policy(client: Any, browser: Any) -> None:
    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )
    await page.goto(f"{base}/demo/landing")
    await page.select_option("#city", "RU-SPE")
    assert await page.input_value("#form-region") == "RU-SPE"  # its script file ran
    assert violations == []
