"""The Входящие page: lists, the open conversation with the client card, reply, note,
resolve, reassign, the menu counter and the WhatsApp window explained."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import FormData
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import INBOX, SCHEDULER, SESSIONS
from crm_core.conversations.model import Conversation, Message
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.jobs.model import ScheduledJob
from tests.fakes.graph_api import FakeGraphApi
from tests.inbox_support import TEMPLATES, TOKEN, signed, wa_channel, wa_image, wa_text
from tests.web.world import csrf, sign_in, team, visible

HOOK = "/webhooks/whatsapp/wa-main"


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphApi]:
    async with FakeGraphApi(token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def client(
    make_settings: Any, database_url: str, graph: FakeGraphApi, aiohttp_client_factory: Any
) -> Any:
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([wa_channel(graph.url)]),
        CC_SCHEDULER_INTERVAL_S="3600",
    )
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


async def _setup(client: Any) -> Any:
    ids = await team(client)
    async with client.app[SESSIONS]() as session:
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="fixed", managers=[ManagerInput(user_id=ids.ivan)]),
            now=utcnow(),
        )
        await session.commit()
    return ids


async def _deliver(client: Any, body: bytes) -> None:
    """The webhook, then until it is processed: it is answered once stored, and on a busy
    machine its processing may take longer than the answer waits for it."""
    resp = await client.post(HOOK, data=body, headers=signed(body))
    assert resp.status == 200
    queue = client.app[INBOX].deliveries
    for _ in range(200):
        if await queue.pending() == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the delivery was not processed within 10 s")


async def test_the_inbox_lists_shows_and_answers(client: Any) -> None:
    ids = await _setup(client)
    await _deliver(client, wa_text("wamid.p1", "Добрый день, нужен прайс <b>оптом</b>"))
    await sign_in(client, "ivan")
    page = visible(await (await client.get("/inbox")).text())
    assert "Входящие" in page and "Иван Петров" in page
    assert 'id="inbox-unread"' in page and ">1</span>" in page  # the menu counter
    assert "нужен прайс &lt;b&gt;оптом&lt;/b&gt;" in page  # text, never markup
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    opened = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert "Клиент" in opened and "лид" in opened and "WhatsApp продаж" in opened
    assert "(wa-main)" not in opened  # the channel by its name, never its code
    assert "Отправить" in opened and "Решено" in opened
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data={"text": "Прайс во вложении", "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200
    html = await resp.text()
    assert "Прайс во вложении" in html and "отправляется" in html
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data={"text": "позвонить после обеда", "note": "1", "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert "Внутренняя заметка" in await resp.text()
    resp = await client.post(
        f"/inbox/{conv.id}/status",
        data={"status": "resolved", "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert "Открыть снова" in await resp.text()
    # ivan may not hand the conversation over; the head may
    resp = await client.post(
        f"/inbox/{conv.id}/assign",
        data={"assignee_id": str(ids.anna), "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 403
    await sign_in(client, "boss")
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/assign",
        data={"assignee_id": str(ids.anna), "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200 and "Анна Смирнова" in await resp.text()
    async with client.app[SESSIONS]() as session:
        stored = await session.get(Conversation, conv.id)
        assert stored is not None and stored.assignee_id == ids.anna
        kinds = sorted(m.kind for m in (await session.scalars(select(Message))))
        assert kinds == ["note", "text", "text"]


async def test_outside_the_window_the_reply_box_explains(client: Any) -> None:
    await _setup(client)
    await _deliver(client, wa_text("wamid.old", "вчера писал", ts=time.time() - 30 * 3600))
    await sign_in(client, "ivan")
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert "Прошло больше 24 часов" in page
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data={"text": "ау", "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert resp.status == 422
    html = await resp.text()
    assert 'role="alert"' in html and "шаблон" in html and ">ау</textarea>" in html


async def test_another_managers_conversation_is_not_shown(client: Any) -> None:
    await _setup(client)
    await _deliver(client, wa_text("wamid.x", "только Ивану"))
    await sign_in(client, "anna")
    page = visible(await (await client.get("/inbox?view=all")).text())
    assert "только Ивану" not in page
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    resp = await client.get(f"/inbox?c={conv.id}")
    assert resp.status == 404


async def test_outside_the_window_the_page_offers_the_approved_templates(
    client: Any, graph: FakeGraphApi
) -> None:
    graph.templates = TEMPLATES
    await _setup(client)
    await _deliver(client, wa_text("wamid.tpl", "позавчера", ts=time.time() - 50 * 3600))
    await sign_in(client, "ivan")
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert "Одобренные шаблоны WhatsApp" in page and "заказ {{2}} готов" in page
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/template",
        data={
            "name": "order_ready",
            "language": "ru",
            "param_1": "Иван",
            "param_2": "№ 5",
            "csrf_token": token,
        },
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200
    assert "Иван, заказ № 5 готов к отгрузке." in await resp.text()
    bad = await client.post(
        f"/inbox/{conv.id}/template",
        data={"name": "order_ready", "language": "ru", "param_1": "x", "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert bad.status == 422 and "ждёт значений: 2" in await bad.text()


async def test_a_clients_picture_is_stored_and_shown_to_whom_may_read_it(
    client: Any, graph: FakeGraphApi
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 500
    graph.add_media("media.77", png, "image/png")
    await _setup(client)
    await _deliver(client, wa_image("wamid.img", "media.77", caption="Вот такие коробки"))
    await client.app[SCHEDULER].run_once()
    async with client.app[SESSIONS]() as session:
        message = (await session.scalars(select(Message))).one()
        conv_id = message.conversation_id
        attachment = message.attachments[0]
    assert attachment["key"] and attachment["size"] == len(png)
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/inbox?c={conv_id}")).text())
    assert f'src="/inbox/media/{message.id}/0"' in page and "Вот такие коробки" in page
    resp = await client.get(f"/inbox/media/{message.id}/0")
    assert resp.status == 200 and await resp.read() == png
    assert resp.headers["Content-Type"] == "image/png"
    await sign_in(client, "anna")
    assert (await client.get(f"/inbox/media/{message.id}/0")).status == 404


PDF = b"%PDF-1.4\n" + b"1 0 obj << >> endobj\n" * 50 + b"%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300


def _files_form(token: str, text: str, *files: tuple[str, bytes, str]) -> FormData:
    form = FormData(quote_fields=False)  # as a browser sends a file name: UTF-8
    form.add_field("csrf_token", token)
    form.add_field("text", text)
    for name, data, ctype in files:
        form.add_field("files", io.BytesIO(data), filename=name, content_type=ctype)
    return form


async def test_a_reply_with_files_goes_to_the_graph_api_and_shows_in_the_thread(
    client: Any, graph: FakeGraphApi
) -> None:
    await _setup(client)
    await _deliver(client, wa_text("wamid.f1", "Пришлите счёт и фото образца"))
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/inbox?c={conv.id}")).text())
    assert 'type="file" name="files"' in page and "до 25 МБ" in page
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data=_files_form(
            token,
            "Счёт и фото во вложении",
            ("счёт 15.pdf", PDF, "application/pdf"),
            ("образец.png", PNG, "image/png"),
        ),
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200, await resp.text()
    html = await resp.text()
    assert "счёт 15.pdf" in html and "Счёт и фото во вложении" in html
    async with client.app[SESSIONS]() as session:
        reply = (
            await session.scalars(select(Message).where(Message.direction == "outbound"))
        ).one()
    assert [a["filename"] for a in reply.attachments] == ["счёт 15.pdf", "образец.png"]
    assert [a["mime"] for a in reply.attachments] == ["application/pdf", "image/png"]
    assert all(a["key"] and a["size"] for a in reply.attachments)
    # the manager and the head open the file from the thread
    got = await client.get(f"/inbox/media/{reply.id}/0")
    assert got.status == 200 and await got.read() == PDF

    await client.app[SCHEDULER].run_once()
    uploads = graph.calls("/media")
    assert [u.form["file"]["data"] for u in uploads] == [PDF, PNG]
    assert [u.form["file"]["content_type"] for u in uploads] == ["application/pdf", "image/png"]
    sent = [c.json() for c in graph.calls("/messages")]
    assert [s["type"] for s in sent] == ["document", "image"]
    assert sent[0]["document"]["filename"] == "счёт 15.pdf"
    assert sent[0]["document"]["caption"] == "Счёт и фото во вложении"  # the text, once
    assert "caption" not in sent[1]["image"]
    assert sent[0]["document"]["id"] != sent[1]["image"]["id"]
    async with client.app[SESSIONS]() as session:
        stored = await session.get(Message, reply.id)
        assert stored is not None and stored.status == "sent"
        assert stored.provider_message_id and stored.provider_message_id.startswith("wamid.fake.")


@pytest.mark.parametrize(
    ("name", "data", "ctype", "says"),
    [
        (
            "setup.exe",
            b"MZ" + b"\x00" * 100,
            "application/x-msdownload",
            "такой тип не отправляется",
        ),
        ("счёт.pdf", b"<html>not a pdf</html>", "application/pdf", "содержимое не похоже на PDF"),
        ("фото.png", PNG, "application/pdf", "браузер назвал его application/pdf"),
        ("пусто.pdf", b"", "application/pdf", "пустой"),
    ],
)
async def test_a_file_that_is_not_sent_is_refused_in_russian(
    client: Any, graph: FakeGraphApi, name: str, data: bytes, ctype: str, says: str
) -> None:
    await _setup(client)
    await _deliver(client, wa_text("wamid.f2", "Жду документы"))
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "ivan")
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data=_files_form(token, "см. файл", (name, data, ctype)),
        headers={"HX-Request": "true"},
    )
    assert resp.status == 422
    html = await resp.text()
    assert says in html and name in html
    assert "см. файл" in html  # the draft is kept
    async with client.app[SESSIONS]() as session:
        assert (
            await session.scalars(select(Message).where(Message.direction == "outbound"))
        ).all() == []
    await client.app[SCHEDULER].run_once()
    assert graph.calls("/messages") == [] and graph.calls("/media") == []


async def test_a_file_over_the_channels_limit_is_refused_naming_the_limit(
    make_settings: Any, database_url: str, graph: FakeGraphApi, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CHANNELS=json.dumps([{**wa_channel(graph.url), "media_max_bytes": 1024 * 1024}]),
        CC_SCHEDULER_INTERVAL_S="3600",
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await _setup(client)
    await _deliver(client, wa_text("wamid.f3", "Жду каталог"))
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "ivan")
    token = await csrf(client, "/inbox")
    big = b"%PDF-1.4\n" + b"0" * (2 * 1024 * 1024)
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data=_files_form(token, "", ("каталог.pdf", big, "application/pdf")),
        headers={"HX-Request": "true"},
    )
    assert resp.status == 422
    html = await resp.text()
    assert "каталог.pdf" in html and "2 МБ" in html and "предела 1 МБ" in html


async def test_a_retry_after_the_second_file_failed_sends_only_that_file(
    client: Any, graph: FakeGraphApi
) -> None:
    """The provider took the invoice and then failed on the photo: the retry sends the photo
    alone (before, the client got the invoice twice)."""
    await _setup(client)
    await _deliver(client, wa_text("wamid.r1", "Пришлите счёт и фото"))
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "ivan")
    token = await csrf(client, "/inbox")
    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data=_files_form(
            token,
            "Счёт и фото",
            ("счёт 16.pdf", PDF, "application/pdf"),
            ("образец.png", PNG, "image/png"),
        ),
        headers={"HX-Request": "true"},
    )
    assert resp.status == 200, await resp.text()
    graph.fail_next(
        500, {"error": {"message": "Service temporarily unavailable", "code": 2}}, after=1
    )
    await client.app[SCHEDULER].run_once()
    assert [c.json()["type"] for c in graph.calls("/messages")] == ["document", "image"]
    async with client.app[SESSIONS]() as session:
        reply = (
            await session.scalars(select(Message).where(Message.direction == "outbound"))
        ).one()
        assert reply.status == "queued"  # to be retried
        job = await session.scalar(select(ScheduledJob).where(ScheduledJob.status == "pending"))
        assert job is not None
        job.due_at = utcnow() - timedelta(seconds=1)
        await session.commit()
    await client.app[SCHEDULER].run_once()
    sent = [c.json() for c in graph.calls("/messages")]
    assert [s["type"] for s in sent] == ["document", "image", "image"]  # the photo again only
    assert sent[0]["document"]["caption"] == "Счёт и фото"
    async with client.app[SESSIONS]() as session:
        stored = await session.get(Message, reply.id)
        assert stored is not None and stored.status == "sent"
        parts = stored.payload["sent_parts"]
        assert set(parts) == {"file:0", "file:1"}
        assert stored.provider_message_id == parts["file:0"]  # the first part's id


async def test_a_chunked_upload_past_the_limit_is_refused_in_russian(client: Any) -> None:
    """Without Content-Length the size is found while reading: the refusal is the page's
    Russian one, not aiohttp's English 413."""
    await _setup(client)
    await _deliver(client, wa_text("wamid.f4", "Жду каталог"))
    async with client.app[SESSIONS]() as session:
        conv = (await session.scalars(select(Conversation))).one()
    await sign_in(client, "ivan")
    token = await csrf(client, "/inbox")
    boundary = "cc-test-boundary"

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            f"{token}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f'name="files"; filename="big.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        chunk = b"0" * (1024 * 1024)
        for _ in range(65):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    resp = await client.post(
        f"/inbox/{conv.id}/reply",
        data=body(),
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "HX-Request": "true",
            "X-CSRF-Token": token,
        },
    )
    assert resp.status == 413
    assert "файлы вместе больше 64 МБ" in await resp.text()
