"""The channels' webhooks: ``GET``/``POST /webhooks/whatsapp/{channel}`` (Meta's verification
handshake; deliveries signed with ``X-Hub-Signature-256``), ``POST /webhooks/telegram/{channel}``
(``X-Telegram-Bot-Api-Secret-Token``), ``POST /webhooks/sms/{channel}`` (the gateway's
callbacks). ``{channel}`` is a channel's ``code`` in the configuration.

A request that is not from the provider is refused with 403 and logged with the reason (by
the inbox service); an unreadable one is a 400; a stored delivery answers 200. The work is the
inbox service's (:class:`contact_center.inbox_service.Inbox`), built by the composition root.
"""

from __future__ import annotations

from aiohttp import web

from channels.base import WebhookRequest
from channels.errors import PayloadInvalid, SignatureInvalid
from contact_center.keys import CLOCK, INBOX

KINDS = ("whatsapp", "telegram", "sms")


async def verify(request: web.Request) -> web.Response:
    code = request.match_info["channel"]
    try:
        challenge = request.app[INBOX].verify(code, dict(request.query))
    except SignatureInvalid:
        return web.Response(status=403, text="forbidden")
    return web.Response(text=challenge, content_type="text/plain")


async def deliver(request: web.Request) -> web.Response:
    kind, code = request.match_info["kind"], request.match_info["channel"]
    if kind not in KINDS:
        raise web.HTTPNotFound()
    body = await request.read()
    delivery = WebhookRequest(
        method=request.method,
        headers=dict(request.headers),
        body=body,
        query=dict(request.query),
        received_at=request.app[CLOCK].now(),
    )
    try:
        count = await request.app[INBOX].ingest(kind, code, delivery, peer=request.remote)
    except SignatureInvalid:
        return web.Response(status=403, text="forbidden")
    except PayloadInvalid as exc:
        return web.json_response(
            {"error": "channel-payload-invalid", "message": exc.message}, status=400
        )
    if kind == "sms":
        return web.Response(text="OK")  # SMSC wants a plain answer
    return web.json_response({"ok": True, "items": count})


def routes(app: web.Application) -> None:
    app.router.add_get("/webhooks/whatsapp/{channel}", verify)
    app.router.add_post("/webhooks/{kind}/{channel}", deliver)
