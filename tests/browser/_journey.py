"""What the journey tests share: one browser page at 1440×900 in Russian, a screenshot per step
into docs/screenshots/journey-<who>-NN-<step>.png, signing in through the login form, and the
problems a user would notice without looking (a script error, a blocked script)."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from crm_core.users import service as users
from tests.ami._pbx_script import Chan, Script
from tests.conftest import ROOT
from tests.fakes.ami_server import encode

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


def pbx_settings(port: int) -> str:
    """``CC_PBX`` for a server connected to the fake AMI server on ``port``."""
    return json.dumps(
        [
            {
                "name": "main",
                "host": "127.0.0.1",
                "port": port,
                "username": "cc",
                "secret": "s3cret",
                "trunks": ["provider"],
                "extension_pattern": "^\\d{3}$",
            }
        ]
    )


@dataclass
class Call:
    """One call as the fake PBX plays it, in parts sent when the test says so."""

    script: Script
    call_id: str
    marks: list[int]

    def part(self, n: int) -> bytes:
        """Part ``n``: 0 rings the manager's phone, 1 answers, 2 hangs up."""
        bounds = [0, *self.marks, len(self.script.frames)]
        frames = self.script.frames[bounds[n] : bounds[n + 1]]
        return b"".join(encode(frame.headers) for frame in frames)


def click_to_call(number: str, ext: str, talk_s: float) -> Call:
    """What Asterisk 22 sends for an ``Originate`` of ``PJSIP/<ext>`` to ``number``: the
    manager's phone rings showing the client's number; he picks up, the trunk leg to the
    client is dialled and answers, both talk ``talk_s`` seconds in one bridge; then hang-up."""
    s = Script(start=time.time())
    manager = s.channel(ext, cid=ext, cidname="Ivan Petrov", context="internal")
    s.varset(manager, "CLICK2CALL", number)
    s.dial_begin(None, manager, ext)
    manager.cid, manager.cidname = number, number
    s.state(manager, 5)
    answered = len(s.frames)
    s.wait(3.0)
    s.state(manager, 6)
    s.dial_end(None, manager, "ANSWER")
    trunk = s.channel("provider", linked_to=manager, context="from-provider")
    s.dial_begin(manager, trunk, f"{number}@provider")
    s.wait(4.0)
    s.state(trunk, 6)
    s.dial_end(manager, trunk, "ANSWER")
    s.enter("b-c2c", manager)
    s.enter("b-c2c", trunk)
    ended = len(s.frames)
    s.wait(talk_s)
    s.leave("b-c2c", trunk)
    s.leave("b-c2c", manager)
    s.hangup(trunk)
    s.hangup(manager)
    return Call(s, manager.lid, [answered, ended])


def inbound_call(caller: str, did: str, ext: str, talk_s: float) -> Call:
    """A client's call to ``did`` ringing ``ext``: ring, answer, talk ``talk_s`` s, hang-up."""
    s = Script(start=time.time())
    outside = s.channel("provider", state=4, cid=caller, context="from-provider", exten=did)
    leg: Chan = s.channel(ext, linked_to=outside, cid=caller)
    s.dial_begin(outside, leg, f"PJSIP/{ext}")
    s.state(leg, 5)
    answered = len(s.frames)
    s.wait(4.0)
    s.state(leg, 6)
    s.dial_end(outside, leg, "ANSWER")
    s.enter("b-in", outside)
    s.enter("b-in", leg)
    ended = len(s.frames)
    s.wait(talk_s)
    s.leave("b-in", leg)
    s.leave("b-in", outside)
    s.hangup(leg)
    s.hangup(outside)
    return Call(s, outside.lid, [answered, ended])
