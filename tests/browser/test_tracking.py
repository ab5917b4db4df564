"""track.js in a real browser on the demo landing page: the number of the visitor's source
and region replaces every data-cc-phone element and the tel: link."""

from __future__ import annotations

from typing import Any

from contact_center import demo_tracking
from contact_center.keys import SESSIONS, TRACKER
from contact_center.tracking_service import display_number

SPB_YANDEX = demo_tracking.POOLS["yandex-spb"][-1]


async def _phones(page: Any) -> tuple[list[str], str | None]:
    texts = await page.locator("[data-cc-phone]").all_inner_texts()
    return texts, await page.get_attribute("#header-phone", "href")


async def test_campaign_visitor_in_st_petersburg_gets_the_pool_number(
    client: Any, browser: Any
) -> None:
    async with client.app[SESSIONS]() as session:
        await demo_tracking.seed(session)
        await session.commit()
    client.app[TRACKER].invalidate()
    base = str(client.make_url("/")).rstrip("/")

    page = await (await browser.new_context()).new_page()
    await page.goto(f"{base}/demo/landing?utm_source=yandex&utm_campaign=x")
    await page.wait_for_function("() => window.ccTracking !== undefined")
    await page.select_option("#city", "RU-SPE")
    displays = {display_number(did): did for did in SPB_YANDEX}
    await page.wait_for_function(
        "(shown) => shown.includes(document.querySelector('#body-phone').textContent)",
        arg=list(displays),
        timeout=5000,
    )
    texts, href = await _phones(page)
    assert len(texts) == 2 and len(set(texts)) == 1
    assert href == f"tel:{displays[texts[0]]}"
    visitor = await page.evaluate("() => window.ccTracking.visitorId()")
    assert await page.input_value("input[name=visitor_id]") == visitor

    direct = await (await browser.new_context()).new_page()
    await direct.goto(f"{base}/demo/landing")
    default = demo_tracking.DEFAULTS["RU-MOW"]
    await direct.wait_for_function(
        "(shown) => document.querySelector('#body-phone').textContent === shown",
        arg=display_number(default),
        timeout=5000,
    )
    texts, href = await _phones(direct)
    assert texts == [display_number(default)] * 2
    assert href == f"tel:{default}"
