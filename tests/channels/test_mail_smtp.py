"""SMTP out through aiosmtpd: the letter on the wire, threading headers, TLS modes, refusals."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from channels.base import OutboundMedia
from channels.errors import ChannelSendFailed
from channels.mail import EmailAdapter, OutboundEmail, quote_reply
from tests.fakes.tls import LocalCert, make_local_cert


class Inbox:
    """An aiosmtpd handler that keeps what it was given; refuses RCPT to ``refuse``."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.envelopes: list[Envelope] = []
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued as FAKE1"

    def message(self, index: int = -1) -> EmailMessage:
        raw = self.envelopes[index].original_content or self.envelopes[index].content
        assert isinstance(raw, bytes)  # the bytes on the wire
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)  # what policy.default builds
        return message


def authenticator(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any):
    ok = isinstance(data, LoginPassword) and data == LoginPassword(b"sales@shop.test", b"smtp-pw")
    return AuthResult(success=ok, handled=False)  # unhandled: the server answers 535


@pytest.fixture
async def smtp_server() -> AsyncIterator[Callable[..., Any]]:
    import asyncio

    servers: list[asyncio.AbstractServer] = []

    async def start(inbox: Inbox, *, tls: ssl.SSLContext | None = None, implicit=False, **kw):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(
                inbox,
                hostname="mx.shop.test",
                tls_context=None if implicit else tls,
                authenticator=authenticator,
                auth_require_tls=False,
                **kw,
            ),
            "127.0.0.1",
            0,
            ssl=tls if implicit else None,
        )
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def adapter(port: int, **over: Any) -> EmailAdapter:
    return EmailAdapter(
        EmailAdapter.validate_config(
            {
                "code": "mail-sales",
                "kind": "email",
                "address": "sales@shop.test",
                "display_name": "Отдел продаж",
                "imap_host": "127.0.0.1",
                "imap_password": "x",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_security": "none",
                "timeout_s": 10,
                **over,
            }
        ),
        ssl_context=over.pop("ssl_context", None) if "ssl_context" in over else None,
    )


async def test_a_reply_carries_threading_headers_and_our_message_id(smtp_server) -> None:
    inbox = Inbox()
    port = await smtp_server(inbox)
    mail = adapter(port)
    result = await mail.send_email(
        OutboundEmail(
            to=("ivan@example.ru",),
            subject="Re: Заявка на поставку",
            text="Иван, добрый день! Счёт во вложении.",
            html="<p>Иван, добрый день! <b>Счёт</b> во вложении.</p>",
            in_reply_to="<req-1@example.ru>",
            references=("<root@example.ru>",),
            attachments=(
                OutboundMedia(
                    "document",
                    data=b"%PDF-1.4 ...",
                    mime="application/pdf",
                    filename="Счёт № 12.pdf",
                ),
            ),
        )
    )
    (envelope,) = inbox.envelopes
    assert envelope.mail_from == "sales@shop.test"
    assert envelope.rcpt_tos == ["ivan@example.ru"]
    sent = inbox.message()
    assert sent["Message-ID"] == result.provider_message_id
    assert result.provider_message_id.endswith("@shop.test>")
    assert sent["In-Reply-To"] == "<req-1@example.ru>"
    assert sent["References"] == "<root@example.ru> <req-1@example.ru>"
    assert str(sent["Subject"]) == "Re: Заявка на поставку"
    assert sent["From"].addresses[0].display_name == "Отдел продаж"
    plain, html = sent.get_body(("plain",)), sent.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().strip() == "Иван, добрый день! Счёт во вложении."
    assert "<b>Счёт</b>" in html.get_content()
    (att,) = list(sent.iter_attachments())
    assert att.get_filename() == "Счёт № 12.pdf"
    assert att.get_content() == b"%PDF-1.4 ..."


async def test_send_text_threads_under_the_clients_letter(smtp_server) -> None:
    inbox = Inbox()
    mail = adapter(await smtp_server(inbox))
    result = await mail.send_text(
        "anna@example.ru",
        "Отгрузка завтра.",
        reply_to="<q-2@example.ru>",
        subject="Re: Вопрос по отгрузке",
    )
    sent = inbox.message()
    assert sent["In-Reply-To"] == "<q-2@example.ru>"
    assert sent["References"] == "<q-2@example.ru>"
    assert sent["Message-ID"] == result.provider_message_id


async def test_login_when_a_password_is_configured(smtp_server) -> None:
    inbox = Inbox()
    port = await smtp_server(inbox)
    await adapter(port, smtp_password="smtp-pw").send_text("a@example.ru", "hi")
    assert len(inbox.envelopes) == 1
    with pytest.raises(ChannelSendFailed) as err:
        await adapter(port, smtp_password="wrong").send_text("a@example.ru", "hi")
    assert err.value.code == "535" and not err.value.retryable, err.value.message


async def test_starttls(smtp_server, tmp_path: Path) -> None:
    cert: LocalCert = make_local_cert(tmp_path)
    inbox = Inbox()
    port = await smtp_server(inbox, tls=cert.server_context(), require_starttls=True)
    mail = EmailAdapter(
        adapter(port, smtp_security="starttls").config, ssl_context=cert.client_context()
    )
    await mail.send_text("a@example.ru", "по TLS")
    assert len(inbox.envelopes) == 1
    # without STARTTLS the server refuses: nothing is sent in the clear
    with pytest.raises(ChannelSendFailed):
        await adapter(port, smtp_security="none").send_text("a@example.ru", "в открытую")
    assert len(inbox.envelopes) == 1


async def test_implicit_tls(smtp_server, tmp_path: Path) -> None:
    cert = make_local_cert(tmp_path)
    inbox = Inbox()
    port = await smtp_server(inbox, tls=cert.server_context(), implicit=True)
    mail = EmailAdapter(
        adapter(port, smtp_security="ssl").config, ssl_context=cert.client_context()
    )
    await mail.send_text("a@example.ru", "SMTPS")
    assert len(inbox.envelopes) == 1


async def test_a_refused_recipient_is_a_permanent_failure(smtp_server) -> None:
    inbox = Inbox(refuse=("nobody@example.ru",))
    mail = adapter(await smtp_server(inbox))
    with pytest.raises(ChannelSendFailed) as err:
        await mail.send_text("nobody@example.ru", "hi")
    assert err.value.code == "550" and not err.value.retryable
    assert "User unknown" in err.value.message


async def test_an_unreachable_server_is_retryable() -> None:
    from tests.helpers import free_port

    with pytest.raises(ChannelSendFailed) as err:
        await adapter(free_port()).send_text("a@example.ru", "hi")
    assert (err.value.code, err.value.retryable) == ("transport", True)


def test_a_reply_quotes_the_letter_as_text_and_as_an_html_blockquote() -> None:
    plain, html = quote_reply(
        "Добрый день!\nСчёт во вложении.",
        "Нужно 5 паллет <b>бумаги</b>.\r\n\r\nСрочно.",
        "02.12.2026 14:30, Роман <buyer@example.ru>:",
    )
    assert plain == (
        "Добрый день!\nСчёт во вложении.\n\n02.12.2026 14:30, Роман <buyer@example.ru>:\n"
        "> Нужно 5 паллет <b>бумаги</b>.\n>\n> Срочно.\n"
    )
    assert '<blockquote type="cite"' in html
    assert "Нужно 5 паллет &lt;b&gt;бумаги&lt;/b&gt;.<br>" in html  # text, never markup
    assert "Роман &lt;buyer@example.ru&gt;:" in html
    assert html.index("Счёт во вложении.") < html.index("<blockquote")
    assert "<b>" not in html
