"""A fake Telegram Bot API: ``/bot<token>/<method>`` (JSON or multipart) and file downloads
(``/file/bot<token>/<path>``). Messages sent get increasing message ids in their chat."""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.http_fake import FakeHttpApi


class FakeTelegramApi(FakeHttpApi):
    def __init__(self, token: str = "123456:TEST") -> None:
        self.token = token
        self.files: dict[str, tuple[str, bytes]] = {}  # file_id -> (file_path, bytes)
        self._ids = itertools.count(100)
        super().__init__()

    def setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/bot{token}/{method}", self.method)
        router.add_get("/file/bot{token}/{path:.+}", self.file)

    def add_file(self, file_id: str, path: str, data: bytes) -> None:
        self.files[file_id] = (path, data)

    def _params(self, recorded: Any) -> dict[str, Any]:
        if recorded.form:
            return dict(recorded.form)
        return recorded.json() if recorded.body else {}

    async def method(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        if (failure := self.failure()) is not None:
            return failure
        name = request.match_info["method"]
        params = self._params(recorded)
        if name == "getFile":
            found = self.files.get(params.get("file_id", ""))
            if found is None:
                return web.json_response(
                    {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"},
                    status=400,
                )
            path, data = found
            return web.json_response(
                {
                    "ok": True,
                    "result": {
                        "file_id": params["file_id"],
                        "file_unique_id": "u",
                        "file_size": len(data),
                        "file_path": path,
                    },
                }
            )
        if name.startswith("send"):
            chat_id = params["chat_id"]  # every send* names the chat
            return web.json_response(
                {
                    "ok": True,
                    "result": {
                        "message_id": next(self._ids),
                        "chat": {"id": int(chat_id), "type": "private"},
                        "date": 1700000000,
                    },
                }
            )
        return web.json_response({"ok": True, "result": True})

    async def file(self, request: web.Request) -> web.Response:
        await self.record(request)
        if request.match_info["token"] != self.token:
            return web.Response(status=401)
        for path, data in self.files.values():
            if path == request.match_info["path"]:
                return web.Response(body=data, content_type="application/octet-stream")
        return web.Response(status=404)
