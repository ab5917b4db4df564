"""E-mail in the inbox: a real Dovecot read by the server's IMAP reader (a background task of
the composition root), aiosmtpd taking the replies. Russian letters in windows-1251 read
right, an auto-reply creates no lead, a restart neither loses nor repeats a letter, a reply
threads under the client's letter, a bounce marks our letter failed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from email import policy
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope
from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.keys import SCHEDULER, SESSIONS
from crm_core.conversations.model import Conversation, MailboxCursor, Message
from crm_core.leads.model import Lead
from crm_core.users import service as users
from tests.conftest import need_service
from tests.fakes.dovecot import Dovecot, dovecot_binary, running_dovecot
from tests.helpers import until

USER, PASSWORD = "sales@shop.test", "imap-secret"


class Smtp:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        need_service("dovecot is not installed (scripts/install-system-deps.sh installs it)")
    with running_dovecot({USER: PASSWORD}) as server:
        yield server


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Smtp, int]]:
    import asyncio

    handler = Smtp()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(handler, hostname="mx.shop.test"), "127.0.0.1", 0
    )
    yield handler, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.fixture
def mail_settings(
    make_settings: Callable[..., Any], database_url: str, dovecot: Dovecot, smtp: Any
) -> Any:
    channel = {
        "code": "sales",
        "kind": "email",
        "address": USER,
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "none",
        "imap_password": PASSWORD,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp[1],
        "smtp_security": "none",
        "timeout_s": 10,
    }
    return make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([channel]),
        CC_SCHEDULER_INTERVAL_S="3600",
    )


def cp1251_letter(n: int, sender: str = "buyer@example.ru") -> bytes:
    return (
        f"From: =?windows-1251?B?0O7s4O0=?= <{sender}>\r\nTo: {USER}\r\n"
        "Subject: =?windows-1251?Q?=C7=E0=FF=E2=EA=E0?=\r\n"
        f"Message-ID: <client-{n}@example.ru>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=windows-1251\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    ).encode() + f"Добрый день! Нужно {n} паллет бумаги.\r\n".encode("cp1251")


def auto_reply() -> bytes:
    return (
        b"From: robot@example.ru\r\nTo: sales@shop.test\r\nSubject: Auto: out of office\r\n"
        b"Message-ID: <auto-1@example.ru>\r\nAuto-Submitted: auto-replied\r\n\r\n"
        b"I am on vacation\r\n"
    )


def bounce(original: str) -> bytes:
    return (
        b"From: MAILER-DAEMON@mx.shop.test\r\nTo: sales@shop.test\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <bounce-1@mx.shop.test>\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="R"\r\n\r\n'
        b"--R\r\nContent-Type: text/plain\r\n\r\nnot delivered\r\n"
        b"--R\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.shop.test\r\n\r\n"
        b"Final-Recipient: rfc822; buyer@example.ru\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n"
        b"--R\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"From: sales@shop.test\r\nTo: buyer@example.ru\r\nMessage-ID: "
        + original.encode()
        + b"\r\n\r\n--R--\r\n"
    )


async def _count(client: Any, model: type) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_mail_in_reply_out_restart_and_bounce(
    mail_settings: Any, dovecot: Dovecot, smtp: Any, aiohttp_client_factory: Any
) -> None:
    handler, _port = smtp
    client = await aiohttp_client_factory(create_app(mail_settings, announce=lambda _t: None))
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session, login="boss", role="head", password="password1", scrypt_n=1024
        )
        await session.commit()
    dovecot.append(USER, cp1251_letter(1))
    dovecot.append(USER, auto_reply())
    await until(lambda: _count(client, Message), timeout=15)
    await until(lambda: _count_is(client, Message, 2), timeout=15)
    async with client.app[SESSIONS]() as session:
        conv = await session.scalar(
            select(Conversation).where(Conversation.identity_value == "buyer@example.ru")
        )
        assert conv is not None and conv.channel_kind == "email"
        assert conv.thread_key == "<client-1@example.ru>" and conv.name == "Роман"
        first = await session.scalar(select(Message).where(Message.conversation_id == conv.id))
        assert first is not None and "Нужно 1 паллет бумаги" in (first.text or "")
        lead = await session.get(Lead, conv.lead_id)
        assert lead is not None and lead.origin == "message"
        robot = await session.scalar(
            select(Conversation).where(Conversation.identity_value == "robot@example.ru")
        )
        assert robot is not None and robot.lead_id is None  # an auto-reply creates no lead
        cursor = await session.scalar(select(MailboxCursor))
        assert cursor is not None and cursor.last_uid == 2 and cursor.uidvalidity
    assert await _count(client, Lead) == 1

    token = await client.post("/api/v1/auth/token", json={"login": "boss", "password": "password1"})
    headers = {"Authorization": f"Bearer {(await token.json())['token']}"}
    resp = await client.post(
        f"/api/v1/conversations/{conv.id}/messages",
        json={"text": "Роман, счёт во вложении."},
        headers=headers,
    )
    assert resp.status == 201
    reply_id = (await resp.json())["id"]
    await client.app[SCHEDULER].run_once()
    assert len(handler.envelopes) == 1
    sent = BytesParser(policy=policy.default).parsebytes(handler.envelopes[0].content)
    assert sent["In-Reply-To"] == "<client-1@example.ru>"
    assert sent["Subject"] == "Re: Заявка" and sent["To"] == "buyer@example.ru"
    body = sent.get_body(("plain",))
    assert body is not None
    assert "счёт во вложении" in body.get_content()
    await client.close()  # a restart: the next reader goes on from the stored cursor

    again = await aiohttp_client_factory(create_app(mail_settings, announce=lambda _t: None))
    dovecot.append(USER, cp1251_letter(2))
    dovecot.append(USER, bounce(sent["Message-ID"]))
    await until(lambda: _count_is(again, Message, 4), timeout=15)
    async with again.app[SESSIONS]() as session:
        texts = [m.text for m in await session.scalars(select(Message).order_by(Message.id))]
        assert sum("паллет" in (t or "") for t in texts) == 2  # nothing read twice
        failed = await session.get(Message, reply_id)
        assert failed is not None and failed.status == "failed" and "5.1.1" in (failed.error or "")
        cursor = await session.scalar(select(MailboxCursor))
        assert cursor is not None and cursor.last_uid == 4
    assert await _count(again, Lead) == 1  # the second letter joined the same client


async def _count_is(client: Any, model: type, n: int) -> bool:
    return await _count(client, model) == n
