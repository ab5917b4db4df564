"""The demo's customers writing on WhatsApp, Telegram and e-mail, and the providers the
managers' replies go to, all on loopback (no Meta, no Telegram, no mail server).

* :class:`DemoProviders` stands in for the WhatsApp Cloud (Graph) API and the Telegram Bot
  API (one small aiohttp app) and for an SMTP server (a sink that accepts every letter). A
  WhatsApp reply taken by the fake Graph API comes back as Meta's status webhooks
  (``delivered``, then ``read``), signed with the channel's app secret, so the inbox shows
  its delivery status move.
* :func:`customers` writes as the customers do, in Russian, some from the demo's known
  clients (their phones on WhatsApp), some from numbers, chats and addresses never seen
  (each a new lead): WhatsApp messages as signed webhook deliveries and Telegram updates with
  the webhook's secret header, both to the server's own webhook URLs, exactly as the
  providers post them; e-mail through the IMAP reader's own path (the letter's bytes parsed
  by :func:`channels.mail_parse.parse_email`, the batch stored by
  :meth:`contact_center.inbox_service.Inbox.store_mail`) — the demo runs no IMAP server, so
  its mailbox is configured not to be read (``imap_enabled: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import aiohttp
from aiohttp import web

from channels.config import ChannelConfig, parse_channels
from channels.mail import FetchedMail, MailBatch, MailboxState
from channels.mail_parse import parse_email
from channels.telegram import SECRET_HEADER
from channels.whatsapp import sign

log = logging.getLogger(__name__)

WHATSAPP, TELEGRAM, EMAIL = "wa-demo", "tg-demo", "mail-demo"
PHONE_NUMBER_ID = "100000000000001"
WABA_ID = "100000000000002"
WA_TOKEN = "demo-graph-token"
APP_SECRET = "demo-app-secret"
TG_TOKEN = "100000:DEMO"
TG_SECRET = "demo-telegram-secret"
MAILBOX = "sales@demo.example"

# What customers write (Russian, as they would).
TEXTS = (
    "Здравствуйте! Пришлите, пожалуйста, актуальный прайс.",
    "Добрый день, есть ли в наличии бумага А4 «Снегурочка», 50 пачек?",
    "Можно счёт на оплату? Реквизиты отправлю в ответ.",
    "Когда будет доставка по нашему заказу?",
    "Подскажите, работаете ли вы с юрлицами по безналу?",
    "Нужна консультация по оптовым условиям, перезвоните, пожалуйста.",
    "Спасибо, товар получили. Хотим повторить заказ.",
    "Есть ли скидка при заказе от 100 000 ₽?",
    "Добрый вечер! Можно ли забрать самовывозом завтра утром?",
    "Интересует поставка канцтоваров в офис, 40 сотрудников.",
)
NEW_NAMES = (
    "Алексей Смирнов",
    "Ольга Кузнецова",
    "Дмитрий Попов",
    "Екатерина Волкова",
    "Михаил Соколов",
    "Наталья Морозова",
)
MAIL_DOMAINS = ("stroymarket.ru", "hotel-neva.ru", "ofis-plus.ru", "mail.ru", "yandex.ru")
TRANSLIT = {
    "Алексей": "aleksey",
    "Ольга": "olga",
    "Дмитрий": "dmitry",
    "Екатерина": "ekaterina",
    "Михаил": "mikhail",
    "Наталья": "natalya",
}
# Channel -> weight of the messages customers send on it.
MIX = {WHATSAPP: 3, TELEGRAM: 2, EMAIL: 1}
# When a WhatsApp reply taken by the fake Graph API is delivered and read (seconds after).
DELIVERED_AFTER_S, READ_AFTER_S = 1.5, 4.0


def channel_settings(providers: DemoProviders) -> list[ChannelConfig]:
    """The demo's three channels, pointed at ``providers``."""
    return parse_channels(
        [
            {
                "code": WHATSAPP,
                "kind": "whatsapp",
                "name": "WhatsApp отдела продаж",
                "phone_number_id": PHONE_NUMBER_ID,
                "waba_id": WABA_ID,
                "access_token": WA_TOKEN,
                "app_secret": APP_SECRET,
                "verify_token": "demo-verify",
                "api_url": providers.url,
            },
            {
                "code": TELEGRAM,
                "kind": "telegram",
                "name": "Telegram-бот",
                "bot_token": TG_TOKEN,
                "webhook_secret": TG_SECRET,
                "api_url": providers.url,
            },
            {
                "code": EMAIL,
                "kind": "email",
                "name": "Почта отдела продаж",
                "address": MAILBOX,
                "display_name": "Отдел продаж",
                "imap_host": "127.0.0.1",
                "imap_password": "demo",
                "imap_enabled": False,
                "smtp_host": "127.0.0.1",
                "smtp_port": providers.smtp_port,
                "smtp_security": "none",
            },
        ]
    )


# ---------------------------------------------------------------- the providers


class DemoProviders:
    """The fake Graph API and Bot API (HTTP) and an SMTP sink, on loopback. ``sent`` counts
    what each channel's provider took; ``statuses`` the status webhooks that came back."""

    def __init__(
        self, *, delivered_after_s: float = DELIVERED_AFTER_S, read_after_s: float = READ_AFTER_S
    ) -> None:
        self.server_url: str | None = None  # where Meta's status webhooks go (set once known)
        self.delivered_after_s, self.read_after_s = delivered_after_s, read_after_s
        self.sent: dict[str, int] = {WHATSAPP: 0, TELEGRAM: 0, EMAIL: 0}
        self.statuses = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._smtp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self.port = 0
        self.smtp_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{version}/{phone_id}/messages", self._wa_message)
        app.router.add_get("/{version}/{waba_id}/message_templates", self._wa_templates)
        app.router.add_post("/bot{token}/{method}", self._tg_method)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        [(_host, self.port)] = self._runner.addresses
        self._smtp = await asyncio.start_server(self._smtp_session, "127.0.0.1", 0)
        self.smtp_port = self._smtp.sockets[0].getsockname()[1]
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # WhatsApp Cloud API ------------------------------------------------------------

    async def _wa_message(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {WA_TOKEN}":
            return web.json_response(
                {"error": {"message": "Invalid OAuth access token."}}, status=401
            )
        body = await request.json()
        to = str(body.get("to") or "")
        wamid = f"wamid.demo.{next(self._ids)}"
        self.sent[WHATSAPP] += 1
        self._spawn(self._statuses(wamid, to))
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": wamid}],
            }
        )

    async def _statuses(self, wamid: str, to: str) -> None:
        """Meta's status webhooks for a message it took: delivered, then read."""
        started = time.monotonic()
        for status, after in (("delivered", self.delivered_after_s), ("read", self.read_after_s)):
            await asyncio.sleep(max(0.0, started + after - time.monotonic()))
            item = {
                "id": wamid,
                "status": status,
                "timestamp": str(int(time.time())),
                "recipient_id": to,
            }
            if await self._post_whatsapp({"statuses": [item]}):
                self.statuses += 1

    async def _post_whatsapp(self, value: dict[str, Any]) -> bool:
        """One signed webhook delivery to the server, as Meta sends it."""
        if self.server_url is None or self._http is None:
            return False
        body = whatsapp_envelope(value)
        try:
            async with self._http.post(
                f"{self.server_url}/webhooks/whatsapp/{WHATSAPP}",
                data=body,
                headers={
                    "X-Hub-Signature-256": sign(body, APP_SECRET),
                    "Content-Type": "application/json",
                },
            ) as resp:
                return resp.status == 200
        except aiohttp.ClientError as exc:
            log.info("demo: the WhatsApp webhook did not answer (%s)", exc)
            return False

    async def _wa_templates(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "data": [
                    {
                        "id": "1",
                        "name": "order_ready",
                        "language": "ru",
                        "status": "APPROVED",
                        "category": "UTILITY",
                        "components": [
                            {"type": "BODY", "text": "{{1}}, ваш заказ {{2}} готов к отгрузке."}
                        ],
                    },
                    {
                        "id": "2",
                        "name": "follow_up",
                        "language": "ru",
                        "status": "APPROVED",
                        "category": "MARKETING",
                        "components": [
                            {"type": "BODY", "text": "Здравствуйте! Актуален ли ваш запрос?"}
                        ],
                    },
                ],
                "paging": {"cursors": {}},
            }
        )

    # Telegram Bot API --------------------------------------------------------------

    async def _tg_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TG_TOKEN:
            return web.json_response({"ok": False, "error_code": 401}, status=401)
        method = request.match_info["method"]
        if not method.startswith("send"):
            return web.json_response({"ok": True, "result": True})
        params: dict[str, Any] = (
            dict(await request.post())
            if request.content_type != "application/json"
            else await request.json()
        )
        self.sent[TELEGRAM] += 1
        return web.json_response(
            {
                "ok": True,
                "result": {
                    "message_id": next(self._ids),
                    "chat": {"id": int(params.get("chat_id", 0)), "type": "private"},
                    "date": int(time.time()),
                },
            }
        )

    # SMTP --------------------------------------------------------------------------

    async def _smtp_session(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Just enough SMTP (RFC 5321) for a client to hand a letter over: it is counted and
        dropped."""

        async def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()

        try:
            await say("220 demo.example ESMTP demo sink")
            while line := await reader.readline():
                verb = line.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
                if verb == "EHLO":
                    await say("250-demo.example\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 OK")
                elif verb == "DATA":
                    await say("354 end with <CRLF>.<CRLF>")
                    while await reader.readline() not in (b".\r\n", b".\n", b""):
                        pass
                    self.sent[EMAIL] += 1
                    await say("250 OK queued")
                elif verb == "QUIT":
                    await say("221 bye")
                    break
                elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                    await say("250 OK")
                else:
                    await say("502 not implemented")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


def whatsapp_envelope(value: dict[str, Any]) -> bytes:
    """A Graph API webhook delivery of the demo's number carrying ``value``."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": WABA_ID,
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "74950000000",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


# ---------------------------------------------------------------- the customers


class Customers:
    """Customers writing to the demo: :meth:`write_one` sends one message on a channel."""

    def __init__(
        self,
        server_url: str,
        inbox: Any,
        *,
        known: Sequence[tuple[str, str]],
        seed: int | None = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.inbox = inbox  # contact_center.inbox_service.Inbox (its store_mail)
        self.known = list(known)  # (name, E.164) of the demo's clients
        self.rnd = random.Random(seed)
        self.written: dict[str, int] = {WHATSAPP: 0, TELEGRAM: 0, EMAIL: 0}
        self._ids = itertools.count(int(time.time() * 1000))
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def write_one(self, channel: str | None = None) -> bool:
        """One customer's message on ``channel`` (by default one of :data:`MIX`)."""
        rnd = self.rnd
        channel = channel or rnd.choices(list(MIX), weights=list(MIX.values()))[0]
        text = rnd.choice(TEXTS)
        if channel == WHATSAPP:
            ok = await self._whatsapp(text)
        elif channel == TELEGRAM:
            ok = await self._telegram(text)
        else:
            ok = await self._email(text)
        if ok:
            self.written[channel] += 1
        return ok

    async def _whatsapp(self, text: str) -> bool:
        rnd = self.rnd
        if self.known and rnd.random() < 0.5:
            name, phone = rnd.choice(self.known)
            wa_id = phone.lstrip("+")
        else:
            name, wa_id = rnd.choice(NEW_NAMES), f"79{rnd.randrange(10**9):09d}"
        body = whatsapp_envelope(
            {
                "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
                "messages": [
                    {
                        "from": wa_id,
                        "id": f"wamid.customer.{next(self._ids)}",
                        "timestamp": str(int(time.time())),
                        "type": "text",
                        "text": {"body": text},
                    }
                ],
            }
        )
        return await self._post(
            f"/webhooks/whatsapp/{WHATSAPP}",
            body,
            {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"},
        )

    async def _telegram(self, text: str) -> bool:
        rnd = self.rnd
        name = rnd.choice(NEW_NAMES)
        first, _, last = name.partition(" ")
        user_id = 500_000_000 + rnd.randrange(1000)  # a few chats write again
        update = {
            "update_id": next(self._ids) % 2**31,
            "message": {
                "message_id": next(self._ids) % 2**31,
                "from": {"id": user_id, "is_bot": False, "first_name": first, "last_name": last},
                "chat": {"id": user_id, "type": "private", "first_name": first},
                "date": int(time.time()),
                "text": text,
            },
        }
        body = json.dumps(update, ensure_ascii=False).encode()
        return await self._post(
            f"/webhooks/telegram/{TELEGRAM}",
            body,
            {SECRET_HEADER: TG_SECRET, "Content-Type": "application/json"},
        )

    async def _email(self, text: str) -> bool:
        """A letter as the IMAP reader would fetch it: parsed by the reader's parser and stored
        by the reader's own function."""
        rnd = self.rnd
        name = rnd.choice(NEW_NAMES)
        local = TRANSLIT.get(name.split(" ")[0], "client")
        letter = EmailMessage()
        letter["From"] = f"{name} <{local}@{rnd.choice(MAIL_DOMAINS)}>"
        letter["To"] = MAILBOX
        letter["Subject"] = rnd.choice(
            ("Запрос прайса", "Вопрос по заказу", "Счёт на оплату", "Сотрудничество")
        )
        letter["Date"] = format_datetime(datetime.now(UTC))
        letter["Message-ID"] = make_msgid(domain="customer.demo")
        letter.set_content(f"{text}\n\nС уважением,\n{name}")
        raw = letter.as_bytes()
        uid = next(self._ids) % 2**31
        message = parse_email(raw, channel=EMAIL, received_at=datetime.now(UTC))
        await self.inbox.store_mail(
            EMAIL, MailBatch(MailboxState("INBOX", 1, uid), [FetchedMail(uid, raw, message)])
        )
        return True

    async def _post(self, path: str, body: bytes, headers: dict[str, str]) -> bool:
        try:
            async with self._session().post(
                self.server_url + path, data=body, headers=headers
            ) as resp:
                if resp.status != 200:
                    log.warning("demo: %s answered %s", path, resp.status)
                return resp.status == 200
        except aiohttp.ClientError as exc:
            log.info("demo: %s did not answer (%s)", path, exc)
            return False


async def customers(writers: Customers, *, every_s: float) -> None:
    """Customers write forever, one message every ~``every_s`` seconds."""
    while True:
        try:
            await writers.write_one()
        except Exception:  # the demo goes on whatever one message met
            log.exception("demo: a customer's message failed")
        await asyncio.sleep(every_s * writers.rnd.uniform(0.5, 1.5))
