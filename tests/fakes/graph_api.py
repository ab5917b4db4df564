"""A fake WhatsApp Cloud (Graph) API: messages, media upload and download, message templates.

Every call needs ``Authorization: Bearer <token>``. Sent messages get ids ``wamid.fake.N``;
media registered with :meth:`FakeGraphApi.add_media` is served by ``GET /v*/{media-id}``
(metadata with a download URL on this server) and that URL (bytes, bearer token required).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.http_fake import FakeHttpApi


@dataclass
class FakeMedia:
    data: bytes
    mime: str
    served_mime: str | None = None
    announced_size: int | None = None


class FakeGraphApi(FakeHttpApi):
    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.media: dict[str, FakeMedia] = {}
        self.templates: list[dict[str, Any]] = []
        self.page_size = 2
        self._ids = itertools.count(1)
        super().__init__()

    def setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/{version}/{phone_id}/messages", self.messages)
        router.add_post("/{version}/{phone_id}/media", self.upload)
        router.add_get("/{version}/{waba_id}/message_templates", self.list_templates)
        router.add_get("/download/{media_id}", self.download)
        router.add_get("/{version}/{media_id}", self.media_info)

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(
                {
                    "error": {
                        "message": "Invalid OAuth access token.",
                        "type": "OAuthException",
                        "code": 190,
                        "fbtrace_id": "fake",
                    }
                },
                status=401,
            )
        return None

    def add_media(
        self,
        media_id: str,
        data: bytes,
        mime: str,
        *,
        served_mime: str | None = None,
        announced_size: int | None = None,
    ) -> None:
        self.media[media_id] = FakeMedia(data, mime, served_mime, announced_size)

    async def messages(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        if (failure := self.failure()) is not None:
            return failure
        body = recorded.json()
        to = body.get("to") or body.get("recipient")
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": f"wamid.fake.{next(self._ids)}"}],
            }
        )

    async def upload(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        file = recorded.form.get("file") or {}
        media_id = f"media.fake.{next(self._ids)}"
        self.add_media(media_id, file.get("data", b""), file.get("content_type", ""))
        return web.json_response({"id": media_id})

    async def media_info(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.json_response(
                {
                    "error": {
                        "message": "Unsupported get request.",
                        "code": 100,
                        "type": "GraphMethodException",
                    }
                },
                status=400,
            )
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "url": f"{self.url}/download/{request.match_info['media_id']}",
                "mime_type": media.mime,
                "sha256": hashlib.sha256(media.data).hexdigest(),
                "file_size": media.announced_size
                if media.announced_size is not None
                else len(media.data),
                "id": request.match_info["media_id"],
            }
        )

    async def download(self, request: web.Request) -> web.StreamResponse:
        await self.record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        media = self.media.get(request.match_info["media_id"])
        if media is None:
            return web.Response(status=404)
        return web.Response(body=media.data, content_type=media.served_mime or media.mime)

    async def list_templates(self, request: web.Request) -> web.Response:
        await self.record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        wanted = request.query.get("status")
        items = [t for t in self.templates if not wanted or t["status"] == wanted]
        start = int(request.query.get("after", "0"))
        page = items[start : start + self.page_size]
        body: dict[str, Any] = {"data": page, "paging": {"cursors": {}}}
        if start + self.page_size < len(items):
            body["paging"]["next"] = (
                f"{self.url}{request.path}?status={wanted or ''}&after={start + self.page_size}"
            )
        return web.json_response(body)
