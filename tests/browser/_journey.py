"""What the journey tests share: one browser page at 1440×900 in Russian, a screenshot per step
into docs/screenshots/journey-<who>-NN-<step>.png, signing in through the login form, and the
problems a user would notice without looking (a script error, a blocked script)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from crm_core.users import service as users
from tests.conftest import ROOT

SHOTS = ROOT / "docs" / "screenshots"
PASSWORD = "password1"


@dataclass
class Journey:
    """One person's browser tab and the numbered screenshots of his journey."""

    who: str
    page: Any
    base: str
    problems: list[str] = field(default_factory=list)
    step: int = 0

    async def shot(self, name: str) -> None:
        """Save the page as the user sees it now (after its requests settle)."""
        self.step += 1
        SHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.wait_for_load_state("networkidle")
        path = SHOTS / f"journey-{self.who}-{self.step:02d}-{name}.png"
        await self.page.screenshot(path=str(path))

    async def sign_in(self, login: str, password: str = PASSWORD) -> None:
        """Type the login and password into the sign-in form, as a person does."""
        await self.page.goto(f"{self.base}/login")
        await self.page.fill("#login", login)
        await self.page.fill("#password", password)
        await self.page.click("button[type=submit]")
        await self.page.wait_for_load_state("networkidle")

    def watch(self, page: Any) -> Any:
        """Collect the script errors and blocked scripts of ``page`` (another tab too)."""

        def console(message: Any) -> None:
            # A refusal the page shows (the gate's 422) is part of the journey; a 5xx is not.
            if message.type == "error" and not re.search(r"status of 4\d\d", message.text):
                self.problems.append(f"{page.url}: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda e: self.problems.append(f"{page.url}: {e}"))
        return page


async def journey(browser: Any, client: Any, who: str) -> Journey:
    """A fresh browser context (no cookies) for ``who``, pointed at the test server."""
    context = await browser.new_context(
        viewport={"width": 1440, "height": 900}, locale="ru-RU", timezone_id="Europe/Moscow"
    )
    # A step a person sees at once; a failing one shows within seconds, not half a minute.
    context.set_default_timeout(10_000)
    page = await context.new_page()
    base = str(client.make_url("/")).rstrip("/")
    out = Journey(who=who, page=page, base=base)
    out.watch(page)
    return out


async def make_user(
    client: Any, login: str, role: str, name: str, exts: tuple[str, ...] = ()
) -> int:
    """Seed a user straight in the database (the starting data, not a step of the journey)."""
    from contact_center.keys import SESSIONS

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


def plain(text: str) -> str:
    """Text with the narrow and ordinary no-break spaces of money and dates made plain."""
    return text.replace("\u202f", " ").replace("\u00a0", " ")
