"""WhatsApp sending, media download and template sync against the fake Graph API."""

from __future__ import annotations

import socket

import pytest

from channels.base import MediaSender, OutboundMedia, TemplateSender
from channels.errors import ChannelSendFailed, MediaRefused, MediaUnavailable
from channels.whatsapp import WhatsAppAdapter
from tests.channels.conftest import wa_config
from tests.fakes.graph_api import FakeGraphApi


@pytest.fixture
async def wa(graph: FakeGraphApi):
    adapter = WhatsAppAdapter(WhatsAppAdapter.validate_config(wa_config(graph.url)))
    yield adapter
    await adapter.close()


async def test_send_text_puts_the_exact_body_on_the_wire(wa: WhatsAppAdapter, graph: FakeGraphApi):
    result = await wa.send_text(
        "+79161234567", "Добрый день! Доставка 500 ₽.", reply_to="wamid.IN1"
    )
    assert result.provider_message_id == "wamid.fake.1"
    (call,) = graph.requests
    assert (call.method, call.path) == ("POST", "/v22.0/106540352242922/messages")
    assert call.headers["Authorization"] == "Bearer wa-token"
    assert call.json() == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "79161234567",
        "type": "text",
        "context": {"message_id": "wamid.IN1"},
        "text": {"body": "Добрый день! Доставка 500 ₽.", "preview_url": False},
    }


async def test_send_template_with_positional_params(wa: WhatsAppAdapter, graph: FakeGraphApi):
    assert isinstance(wa, TemplateSender)
    result = await wa.send_template("79161234567", "order_ready", "ru", ["Иван", "№ 1042"])
    assert result.provider_message_id.startswith("wamid.fake.")
    body = graph.requests[-1].json()
    assert body["type"] == "template"
    assert body["template"] == {
        "name": "order_ready",
        "language": {"code": "ru"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Иван"},
                    {"type": "text", "text": "№ 1042"},
                ],
            }
        ],
    }


async def test_send_template_with_named_params(wa: WhatsAppAdapter, graph: FakeGraphApi):
    await wa.send_template("79161234567", "welcome", "ru", {"first_name": "Анна"})
    params = graph.requests[-1].json()["template"]["components"][0]["parameters"]
    assert params == [{"type": "text", "parameter_name": "first_name", "text": "Анна"}]


async def test_send_template_without_params(wa: WhatsAppAdapter, graph: FakeGraphApi):
    await wa.send_template("79161234567", "hello_world", "en_US")
    assert graph.requests[-1].json()["template"] == {
        "name": "hello_world",
        "language": {"code": "en_US"},
        "components": [],
    }


async def test_an_unknown_template_language_is_refused_before_sending(wa, graph):
    with pytest.raises(ChannelSendFailed) as err:
        await wa.send_template("79161234567", "hello", "xx_YY")
    assert not err.value.retryable
    assert graph.requests == []


async def test_send_media_by_link(wa: WhatsAppAdapter, graph: FakeGraphApi):
    assert isinstance(wa, MediaSender)
    media = OutboundMedia("document", link="https://example.ru/price.pdf", filename="Прайс.pdf")
    await wa.send_media("79161234567", media, caption="Наш прайс")
    body = graph.requests[-1].json()
    assert body["type"] == "document"
    assert body["document"] == {
        "link": "https://example.ru/price.pdf",
        "caption": "Наш прайс",
        "filename": "Прайс.pdf",
    }


async def test_send_media_bytes_uploads_first(wa: WhatsAppAdapter, graph: FakeGraphApi):
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 64
    await wa.send_media("79161234567", OutboundMedia("image", data=png, mime="image/png"))
    upload, send = graph.requests
    assert upload.path == "/v22.0/106540352242922/media"
    assert upload.form["file"]["data"] == png
    assert upload.form["messaging_product"] == "whatsapp"
    media_id = send.json()["image"]["id"]
    assert graph.media[media_id].data == png


async def test_outside_the_window_the_api_error_is_permanent(wa, graph):
    graph.fail_next(
        400,
        {
            "error": {
                "message": "(#131047) Re-engagement message",
                "type": "OAuthException",
                "code": 131047,
                "error_data": {"details": "More than 24 hours have passed"},
                "fbtrace_id": "x",
            }
        },
    )
    with pytest.raises(ChannelSendFailed) as err:
        await wa.send_text("79161234567", "Привет")
    assert err.value.code == "131047"
    assert not err.value.retryable
    assert "24 hours" in err.value.message


async def test_throttling_is_retryable(wa, graph):
    graph.fail_next(
        400, {"error": {"message": "(#130429) Rate limit hit", "code": 130429, "type": "x"}}
    )
    with pytest.raises(ChannelSendFailed) as err:
        await wa.send_text("79161234567", "Привет")
    assert (err.value.code, err.value.retryable) == ("130429", True)


async def test_a_server_error_is_retryable(wa, graph):
    graph.fail_next(503, {"error": {"message": "Service unavailable", "code": 2, "type": "x"}})
    with pytest.raises(ChannelSendFailed) as err:
        await wa.send_text("79161234567", "Привет")
    assert err.value.retryable


async def test_an_unreachable_api_is_a_retryable_transport_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        wa = WhatsAppAdapter(WhatsAppAdapter.validate_config(wa_config(f"http://127.0.0.1:{port}")))
        try:
            with pytest.raises(ChannelSendFailed) as err:
                await wa.send_text("79161234567", "Привет")
        finally:
            await wa.close()
    assert (err.value.code, err.value.retryable) == ("transport", True)


# --------------------------------------------------------------------------- media


async def test_fetch_media_by_id(wa: WhatsAppAdapter, graph: FakeGraphApi):
    graph.add_media("1003383421387256", b"\xff\xd8\xff jpeg bytes", "image/jpeg")
    media = await wa.fetch_media("1003383421387256")
    assert (media.data, media.mime) == (b"\xff\xd8\xff jpeg bytes", "image/jpeg")
    info, download = graph.requests
    assert info.path == "/v22.0/1003383421387256"
    assert download.path == "/download/1003383421387256"
    assert download.headers["Authorization"] == "Bearer wa-token"


async def test_media_over_the_announced_cap_is_not_downloaded(wa, graph):
    graph.add_media("m-big", b"x" * 2000, "application/pdf")
    with pytest.raises(MediaRefused) as err:
        await wa.fetch_media("m-big", max_bytes=1000)
    assert "over the cap" in err.value.message
    assert [r.path for r in graph.requests] == ["/v22.0/m-big"]


async def test_media_that_lied_about_its_size_is_cut_while_reading(wa, graph):
    graph.add_media("m-liar", b"x" * 5000, "application/pdf", announced_size=10)
    with pytest.raises(MediaRefused):
        await wa.fetch_media("m-liar", max_bytes=1000)


async def test_media_served_as_another_type_is_refused(wa, graph):
    graph.add_media("m-html", b"<html>", "image/jpeg", served_mime="text/html")
    with pytest.raises(MediaRefused) as err:
        await wa.fetch_media("m-html")
    assert "text/html" in err.value.message


async def test_unknown_media_is_unavailable(wa, graph):
    with pytest.raises(MediaUnavailable):
        await wa.fetch_media("no-such-media")


# --------------------------------------------------------------------------- templates


async def test_sync_templates_lists_approved_ones_over_every_page(wa, graph):
    graph.templates = [
        {
            "id": "1",
            "name": "order_ready",
            "language": "ru",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [{"type": "BODY", "text": "{{1}}, заказ {{2}} готов."}],
        },
        {
            "id": "2",
            "name": "draft",
            "language": "ru",
            "status": "PENDING",
            "category": "MARKETING",
            "components": [],
        },
        {
            "id": "3",
            "name": "welcome",
            "language": "ru",
            "status": "APPROVED",
            "category": "MARKETING",
            "components": [
                {"type": "HEADER", "format": "TEXT", "text": "Привет"},
                {"type": "BODY", "text": "Здравствуйте, {{first_name}}!"},
            ],
        },
        {
            "id": "4",
            "name": "hello_world",
            "language": "en_US",
            "status": "APPROVED",
            "category": "UTILITY",
            "components": [{"type": "BODY", "text": "Hello"}],
        },
    ]
    templates = await wa.sync_templates()
    assert [(t.name, t.language, t.params) for t in templates] == [
        ("order_ready", "ru", ("1", "2")),
        ("welcome", "ru", ("first_name",)),
        ("hello_world", "en_US", ()),
    ]
    assert templates[0].body == "{{1}}, заказ {{2}} готов."
    calls = graph.calls("/message_templates")
    assert len(calls) == 2  # two pages of two
    assert calls[0].path == "/v22.0/102290129340398/message_templates"
    assert calls[0].query["status"] == "APPROVED"
