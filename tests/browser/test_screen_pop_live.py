"""The pop-up appears in the manager's browser when the simulated PBX rings his extension."""

from __future__ import annotations

import json
from typing import Any

from ami.simulator import SimulatedPbx
from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.users import service as users
from tests.helpers import until


async def test_fake_pbx_rings_101_and_ivans_browser_pops_the_card(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any, browser: Any
) -> None:
    sim = SimulatedPbx(speed=4.0, username="cc", secret="s")
    await sim.start()
    try:
        config = [
            {
                "name": "main",
                "host": "127.0.0.1",
                "port": sim.port,
                "username": "cc",
                "secret": "s",
                "trunks": ["provider"],
                "extension_pattern": "^\\d{3}$",
            }
        ]
        settings = make_settings(CC_DATABASE_URL=database_url, CC_PBX=json.dumps(config))
        client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
        async with client.app[SESSIONS]() as session:
            ivan, _ = await users.create_user(
                session,
                login="ivan",
                role="manager",
                password="password1",
                extensions=["101"],
                display_name="Иван Петров",
                scrypt_n=1024,
            )
            company = Company(
                name="ООО «Ромашка»", client_type="wholesaler", responsible_id=ivan.id
            )
            contact = Contact(name="Сергей Ковалёв", responsible_id=ivan.id)
            session.add_all([company, contact])
            await session.flush()
            session.add(ContactCompany(contact_id=contact.id, company_id=company.id))
            session.add(Phone(contact_id=contact.id, e164="+74951234567"))
            await session.commit()
        await until(
            lambda: (
                client.app[PBX]["main"].link is not None and client.app[PBX]["main"].link.connected
            ),
            timeout=10,
        )

        base = str(client.make_url("/")).rstrip("/")
        page = await browser.new_page()
        await page.goto(f"{base}/login")
        await page.fill("#login", "ivan")
        await page.fill("#password", "password1")
        await page.click("button[type=submit]")
        await page.locator("#ws-state.ok").wait_for(timeout=5000)

        sim.play("a_inbound_queue_answered", outside="74951234567", did="74951112233")
        pop = page.locator(".pop")
        await pop.first.wait_for(timeout=15000)
        text = await pop.first.inner_text()
        assert "+7 (495) 123-45-67" in text
        assert "Сергей Ковалёв" in text and "ООО «Ромашка»" in text
        await page.locator(".pop.answered").wait_for(timeout=20000)
    finally:
        await sim.close()
