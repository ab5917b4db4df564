"""The inbox's mail features end to end: letters read from a real Dovecot, replies taken by
aiosmtpd. The reply box shows from which mailbox to whom, a subject the manager may change, the
letter answered (quoted below the reply) and takes files; a personal mailbox's mail goes to its
manager alone and his replies leave from it; a bounce shows on the client card and in the reply
box until the address writes again."""

from __future__ import annotations

import asyncio
import io
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiohttp import FormData
from aiosmtpd.smtp import SMTP, Envelope
from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.activities.model import Activity
from crm_core.conversations.model import Conversation, EmailBounce, Message
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.leads.model import Lead
from tests.api.test_inbox_email import bounce
from tests.conftest import need_service
from tests.fakes.dovecot import Dovecot, dovecot_binary, running_dovecot
from tests.helpers import until
from tests.web.world import Team, csrf, sign_in, team, visible

SALES, IVAN = "sales@shop.test", "ivan@shop.test"
PASSWORDS = {SALES: "imap-sales", IVAN: "imap-ivan"}
PDF = b"%PDF-1.4\n" + b"0 0 obj\n" * 40 + b"%%EOF\n"


class Smtp:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued"

    def message(self, index: int = -1) -> EmailMessage:
        raw = self.envelopes[index].content
        assert isinstance(raw, bytes)  # the bytes on the wire
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        need_service("dovecot is not installed (scripts/install-system-deps.sh installs it)")
    with running_dovecot(PASSWORDS) as server:
        yield server


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Smtp, int]]:
    handler = Smtp()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="mx.shop.test"), "127.0.0.1", 0
    )
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def mailbox(code: str, address: str, dovecot: Dovecot, port: int, **more: Any) -> dict[str, Any]:
    return {
        "code": code,
        "kind": "email",
        "address": address,
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_password": PASSWORDS[address],
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "timeout_s": 10,
        **more,
    }


@pytest.fixture
async def client(
    make_settings: Callable[..., Any],
    database_url: str,
    dovecot: Dovecot,
    smtp: tuple[Smtp, int],
    aiohttp_client_factory: Callable[..., Any],
) -> Any:
    channels = [
        mailbox("sales", SALES, dovecot, smtp[1], name="Отдел продаж"),
        mailbox("ivan-mail", IVAN, dovecot, smtp[1], owner="ivan"),
    ]
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps(channels),
        CC_SCHEDULER_INTERVAL_S="3600",
    )
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


async def _team(client: Any) -> Team:
    ids = await team(client)
    async with client.app[SESSIONS]() as session:  # a new client's mail goes to anna
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="fixed", managers=[ManagerInput(user_id=ids.anna)]),
            now=utcnow(),
        )
        await session.commit()
    return ids


def letter(
    mid: str,
    text: str,
    *,
    to: str = SALES,
    sender: str = "buyer@example.ru",
    subject: str = "Заявка",
    parent: str | None = None,
    name: str = "Роман",
) -> bytes:
    head = (
        f"From: {name} <{sender}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {mid}\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n"
    )
    if parent:
        head += f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
    head += "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    head += "Content-Transfer-Encoding: 8bit\r\n\r\n"
    return head.encode() + text.replace("\n", "\r\n").encode() + b"\r\n"


async def _messages(client: Any) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(Message)) or 0)


async def _wait_messages(client: Any, n: int) -> None:
    async def enough() -> bool:
        return await _messages(client) >= n

    await until(enough, timeout=20)


async def _conversation(client: Any, address: str) -> Conversation:
    async with client.app[SESSIONS]() as session:
        conv = await session.scalar(
            select(Conversation).where(Conversation.identity_value == address)
        )
    assert conv is not None
    return conv


def _field(html: str, name: str) -> str:
    found = re.search(rf'name="{name}"[^>]*value="([^"]*)"', html)
    assert found is not None, name
    return found.group(1)


async def test_the_reply_box_threads_quotes_and_sends_a_file(
    client: Any, dovecot: Dovecot, smtp: tuple[Smtp, int]
) -> None:
    handler, _ = smtp
    await _team(client)
    await dovecot.append_async(
        SALES, letter("<a1@example.ru>", "Добрый день!\nНужно 5 паллет <b>бумаги</b>.")
    )
    await dovecot.append_async(
        SALES,
        letter("<a2@example.ru>", "И ещё картон.", subject="Re: Заявка", parent="<a1@example.ru>"),
    )
    await _wait_messages(client, 2)
    conv = await _conversation(client, "buyer@example.ru")
    async with client.app[SESSIONS]() as session:
        first, second = list(
            await session.scalars(
                select(Message).where(Message.conversation_id == conv.id).order_by(Message.id)
            )
        )
    await sign_in(client, "anna")
    page = await (await client.get(f"/inbox?c={conv.id}")).text()
    shown = visible(page)
    assert "От" in shown and SALES in shown and "Кому" in shown and "buyer@example.ru" in shown
    assert _field(page, "subject") == "Re: Заявка"  # the latest letter's, once "Re:"
    assert _field(page, "reply_to_message_id") == str(second.id)
    assert 'name="quote" value="1" checked' in page and "И ещё картон." in shown
    assert page.count('class="answer-letter"') == 2  # "ответить на это письмо" on each
    # "reply to this letter" on the first one: the box answers it
    chosen = await client.get(
        f"/inbox/{conv.id}/thread?answer={first.id}", headers={"HX-Request": "true"}
    )
    assert chosen.status == 200
    box = await chosen.text()
    assert _field(box, "reply_to_message_id") == str(first.id)
    assert _field(box, "subject") == "Re: Заявка"
    assert "Нужно 5 паллет &lt;b&gt;бумаги&lt;/b&gt;." in box  # quoted, as text
    wrong = await client.get(f"/inbox/{conv.id}/thread?answer=999999")
    assert wrong.status == 422
    assert "Проверьте поле «Письмо, на которое вы отвечаете»" in visible(await wrong.text())
    # anna answers the first letter, changes the subject, attaches the invoice
    token = await csrf(client, "/inbox")
    form = FormData(quote_fields=False)
    for key, value in (
        ("csrf_token", token),
        ("subject", "Счёт по заявке"),
        ("reply_to_message_id", str(first.id)),
        ("quote", "1"),
        ("text", "Роман, добрый день!\nСчёт во вложении."),
    ):
        form.add_field(key, value)
    form.add_field("files", io.BytesIO(PDF), filename="счёт 7.pdf", content_type="application/pdf")
    resp = await client.post(f"/inbox/{conv.id}/reply", data=form, headers={"HX-Request": "true"})
    assert resp.status == 200, await resp.text()
    assert "счёт 7.pdf" in await resp.text()
    await client.app[SCHEDULER].run_once()
    sent = handler.message()
    assert SALES in str(sent["From"]) and sent["To"] == "buyer@example.ru"
    assert sent["Subject"] == "Счёт по заявке"
    assert sent["In-Reply-To"] == "<a1@example.ru>" and sent["References"] == "<a1@example.ru>"
    plain = sent.get_body(("plain",))
    html = sent.get_body(("html",))
    assert plain is not None and html is not None
    text = plain.get_content().replace("\r\n", "\n")
    assert text.startswith("Роман, добрый день!\nСчёт во вложении.\n")
    assert "Роман <buyer@example.ru>:\n> Добрый день!\n> Нужно 5 паллет <b>бумаги</b>." in text
    assert "И ещё картон" not in text  # the letter answered, not the latest
    rich = html.get_content()
    assert '<blockquote type="cite"' in rich and "&lt;b&gt;бумаги&lt;/b&gt;" in rich
    (file,) = list(sent.iter_attachments())
    assert file.get_filename() == "счёт 7.pdf" and file.get_content() == PDF
    assert file.get_content_type() == "application/pdf"

    # through the API with the defaults: the latest letter, its subject, quoted
    token = await client.post("/api/v1/auth/token", json={"login": "anna", "password": "password1"})
    auth = {"Authorization": f"Bearer {(await token.json())['token']}"}
    resp = await client.post(
        f"/api/v1/conversations/{conv.id}/messages",
        json={"text": "Картон тоже есть."},
        headers=auth,
    )
    assert resp.status == 201, await resp.text()
    await client.app[SCHEDULER].run_once()
    again = handler.message()
    assert again["Subject"] == "Re: Заявка" and again["In-Reply-To"] == "<a2@example.ru>"
    assert again["References"] == "<a1@example.ru> <a2@example.ru>"
    body = again.get_body(("plain",))
    assert body is not None and "> И ещё картон." in body.get_content()


async def test_a_personal_mailbox_belongs_to_its_manager(
    client: Any, dovecot: Dovecot, smtp: tuple[Smtp, int]
) -> None:
    handler, _ = smtp
    ids = await _team(client)
    await dovecot.append_async(
        IVAN, letter("<p1@example.ru>", "Иван, пришлите КП", to=IVAN, name="Пётр Личный")
    )
    await dovecot.append_async(
        SALES, letter("<s1@example.ru>", "Прайс?", sender="other@example.ru")
    )
    await _wait_messages(client, 2)
    personal = await _conversation(client, "buyer@example.ru")
    shared = await _conversation(client, "other@example.ru")
    assert personal.channel == "ivan-mail" and personal.owner_id == ids.ivan
    assert personal.assignee_id == ids.ivan  # not the distribution rules' anna
    assert shared.owner_id is None and shared.assignee_id == ids.anna
    async with client.app[SESSIONS]() as session:
        lead = await session.get(Lead, personal.lead_id)
    assert lead is not None and lead.responsible_id == ids.ivan

    await sign_in(client, "anna")
    listed = visible(await (await client.get("/inbox?view=all&status=any")).text())
    assert "Роман" in listed and "Пётр Личный" not in listed
    assert (await client.get(f"/inbox?c={personal.id}")).status == 404
    assert (await client.get(f"/inbox/{personal.id}/thread")).status == 404
    token = await client.post("/api/v1/auth/token", json={"login": "anna", "password": "password1"})
    anna = {"Authorization": f"Bearer {(await token.json())['token']}"}
    items = (await (await client.get("/api/v1/conversations", headers=anna)).json())["items"]
    assert [i["id"] for i in items] == [shared.id]
    assert (await client.get(f"/api/v1/conversations/{personal.id}", headers=anna)).status == 404
    token = await client.post("/api/v1/auth/token", json={"login": "boss", "password": "password1"})
    boss = {"Authorization": f"Bearer {(await token.json())['token']}"}
    items = (await (await client.get("/api/v1/conversations", headers=boss)).json())["items"]
    assert {i["id"] for i in items} == {shared.id, personal.id}

    # ivan answers: the reply leaves from his own mailbox
    await sign_in(client, "ivan")
    page = await (await client.get(f"/inbox?c={personal.id}")).text()
    assert f'id="mail-from">{IVAN}<' in page
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{personal.id}/reply",
        data={"csrf_token": token, "text": "КП во вложении", "subject": "Re: Заявка"},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200
    await client.app[SCHEDULER].run_once()
    (envelope,) = handler.envelopes
    assert envelope.mail_from == IVAN and envelope.rcpt_tos == ["buyer@example.ru"]
    assert IVAN in str(handler.message()["From"])


async def _bearer(client: Any, login: str) -> dict[str, str]:
    token = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return {"Authorization": f"Bearer {(await token.json())['token']}"}


async def test_a_personal_letter_on_another_managers_client_stays_private(
    client: Any, dovecot: Dovecot
) -> None:
    """Anna's client writes to Ivan's own mailbox: the letter joins the client's timeline for
    Ivan and the head, and Anna, who may open the card, does not read it there (the README's
    rule for personal mailboxes; before, the timeline showed it to her)."""
    ids = await _team(client)
    anna, ivan, boss = [await _bearer(client, who) for who in ("anna", "ivan", "boss")]
    created = await client.post(
        "/api/v1/contacts",
        json={"name": "Роман Клиентов", "emails": ["roman@client.ru"]},
        headers=anna,
    )
    assert created.status == 201, await created.text()
    contact_id = (await created.json())["id"]
    await dovecot.append_async(
        IVAN,
        letter("<pp1@client.ru>", "Иван, это лично вам", to=IVAN, sender="roman@client.ru"),
    )
    await _wait_messages(client, 1)
    personal = await _conversation(client, "roman@client.ru")
    assert personal.owner_id == ids.ivan and personal.contact_id == contact_id

    async def letters(headers: dict[str, str]) -> list[str]:
        resp = await client.get(
            "/api/v1/activities", params={"contact_id": contact_id}, headers=headers
        )
        assert resp.status == 200, await resp.text()
        return [a["body"] for a in (await resp.json())["items"] if a["kind"] == "email"]

    assert await letters(ivan) == ["Иван, это лично вам"]
    assert await letters(boss) == ["Иван, это лично вам"]
    assert await letters(anna) == []
    async with client.app[SESSIONS]() as session:
        activity_id = await session.scalar(
            select(Activity.id).where(Activity.external_id.like("message:%"))
        )
    assert (await client.get(f"/api/v1/activities/{activity_id}", headers=anna)).status == 404
    await sign_in(client, "anna")
    card = visible(await (await client.get(f"/clients/contact/{contact_id}")).text())
    assert "Роман Клиентов" in card and "это лично вам" not in card


async def test_a_bounce_shows_on_the_card_and_in_the_reply_box(
    client: Any, dovecot: Dovecot, smtp: tuple[Smtp, int]
) -> None:
    handler, _ = smtp
    await _team(client)
    await dovecot.append_async(SALES, letter("<b1@example.ru>", "Жду счёт"))
    await _wait_messages(client, 1)
    conv = await _conversation(client, "buyer@example.ru")
    await sign_in(client, "anna")
    page = await (await client.get(f"/inbox?c={conv.id}")).text()
    assert 'id="bounce-warning"' not in page and "hx-confirm" not in page
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data={"csrf_token": token, "text": "Счёт отправлен", "quote": "1"},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200
    await client.app[SCHEDULER].run_once()
    await dovecot.append_async(SALES, bounce(handler.message()["Message-ID"]))

    async def bounced() -> bool:
        async with client.app[SESSIONS]() as session:
            return await session.scalar(select(EmailBounce)) is not None

    await until(bounced, timeout=20)
    assert await _messages(client) == 2  # the report is no letter of the client's
    card = visible(await (await client.get(f"/clients/lead/{conv.lead_id}")).text())
    assert "buyer@example.ru" in card and "адрес недоступен" in card
    assert "550 5.1.1 User unknown" in card and "письмо вернулось сегодня" in card
    page = await (await client.get(f"/inbox?c={conv.id}")).text()
    warning = visible(page)
    assert 'id="bounce-warning"' in page and "Адрес buyer@example.ru недоступен" in warning
    assert "User unknown" in warning and "hx-confirm=" in page

    # the client writes again: the address works, the mark goes
    await dovecot.append_async(SALES, letter("<b2@example.ru>", "Новый адрес не нужен"))
    await _wait_messages(client, 3)
    card = visible(await (await client.get(f"/clients/lead/{conv.lead_id}")).text())
    assert "buyer@example.ru" in card and "адрес недоступен" not in card
