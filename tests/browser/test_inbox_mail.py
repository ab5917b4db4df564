"""A mail reply with a file, in the browser: a client's letter (read from a real Dovecot)
opens in the inbox with the reply box of a mail program — from the shared mailbox to the
client, the subject "Re: …" ready to edit, the letter quoted below; the manager changes the
subject, writes, attaches an invoice (a letter arriving meanwhile does not wipe the reply being
written) and sends; the letter with the file reaches the SMTP
server (aiosmtpd) threaded under the client's, and the file shows on the message in the thread.
Screenshot in docs/screenshots/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contact_center.app import create_app
from tests.api.test_inbox_mailboxes import (  # noqa: F401 (fixtures)
    PDF,
    SALES,
    Smtp,
    _team,
    dovecot,
    letter,
    mailbox,
    smtp,
)
from tests.fakes.dovecot import Dovecot
from tests.helpers import until

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def test_a_mail_reply_with_an_invoice_attached(
    make_settings: Any,
    database_url: str,
    aiohttp_client_factory: Any,
    browser: Any,
    dovecot: Dovecot,  # noqa: F811
    smtp: tuple[Smtp, int],  # noqa: F811
    tmp_path: Path,
) -> None:
    handler, port = smtp
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([mailbox("sales", SALES, dovecot, port, name="Отдел продаж")]),
        CC_SCHEDULER_INTERVAL_S="0.2",
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await _team(client)  # new clients' mail goes to anna
    base = str(client.make_url("/")).rstrip("/")
    page = await browser.new_page(viewport={"width": 1440, "height": 900})
    await page.goto(f"{base}/login")
    await page.fill("#login", "anna")
    await page.fill("#password", "password1")
    await page.click("button[type=submit]")
    await page.goto(f"{base}/inbox")
    await page.locator("#ws-state.ok").wait_for(timeout=5000)

    await dovecot.append_async(
        SALES,
        letter("<r1@example.ru>", "Добрый день!\nПришлите счёт на 5 паллет бумаги."),
    )
    row = page.locator(".conversations li", has_text="Роман")
    await row.wait_for(timeout=20000)  # read from the mailbox, arrived live over /ws
    await row.locator("a").click()
    await page.locator("#inbox-thread").wait_for(timeout=5000)
    assert await page.locator("#mail-from").inner_text() == SALES
    assert await page.locator("#mail-to").inner_text() == "buyer@example.ru"
    subject = page.locator("#reply-subject")
    assert await subject.input_value() == "Re: Заявка"
    await page.fill("#reply-text", "Роман, добрый день!\nСчёт во вложении, действует 5 дней.")
    await subject.fill("Счёт № 7 на бумагу")  # the focus leaves the text box
    invoice = tmp_path / "Счёт № 7.pdf"
    invoice.write_bytes(PDF)
    names = page.locator(".file-pick .file-names")
    assert await names.inner_text() == "Файлы не выбраны"  # in Russian, not the browser's words
    await page.set_input_files("#reply-files", str(invoice))
    assert await names.inner_text() == "Счёт № 7.pdf"
    # the client writes again meanwhile: the list moves, the reply being written stays
    await dovecot.append_async(
        SALES,
        letter(
            "<r2@example.ru>",
            "И доставку посчитайте.",
            subject="Re: Заявка",
            parent="<r1@example.ru>",
        ),
    )
    await page.locator(".conversations li", has_text="доставку").wait_for(timeout=20000)
    files = await page.eval_on_selector("#reply-files", "(input) => input.files.length")
    assert files == 1 and await subject.input_value() == "Счёт № 7 на бумагу"
    await page.click(".composer button[type=submit]")
    attachment = page.locator(".msg.outbound .attachment a", has_text="Счёт № 7.pdf")
    await attachment.wait_for(timeout=5000)
    await page.locator(".msg.outbound .msg-status[data-status=sent]").wait_for(timeout=10000)
    await until(lambda: handler.envelopes, timeout=10)
    sent = handler.message()
    assert sent["Subject"] == "Счёт № 7 на бумагу"
    assert sent["In-Reply-To"] == "<r1@example.ru>"
    body = sent.get_body(("plain",))
    assert body is not None and "> Пришлите счёт на 5 паллет бумаги." in body.get_content()
    (file,) = list(sent.iter_attachments())
    assert file.get_filename() == "Счёт № 7.pdf" and file.get_content() == PDF
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / "48-manager-inbox-mail-reply-with-file.png"))
    # the file opens from the thread
    href = await attachment.get_attribute("href")
    assert href is not None
    got = await page.request.get(f"{base}{href}")
    assert got.status == 200 and await got.body() == PDF
