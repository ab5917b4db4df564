"""The common part of the fake HTTP APIs: an aiohttp app on 127.0.0.1:0 that records every
request (method, path, query, headers, raw body) for the test to assert the exact wire format,
and can be told to fail the next calls. The idea of aiohttp's ``examples/fake_server.py``."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import parse_qsl

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    form: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Failure:
    status: int
    body: Any
    after: int = 0  # answer this many calls normally first


class FakeHttpApi:
    """Subclasses add routes in ``setup_routes``; handlers call :meth:`record` first."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.failures: list[Failure] = []
        # A provider that takes its time: calls ``hold`` matches wait for ``release``.
        self.hold: Callable[[Recorded], bool] | None = None
        self.release = asyncio.Event()
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.setup_routes(self.app.router)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def setup_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        [(_host, self.port)] = self._runner.addresses
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def fail_next(self, status: int, body: Any, *, after: int = 0) -> None:
        """The next recorded call (after ``after`` more that go through) answers ``status``
        with ``body`` (JSON) instead."""
        self.failures.append(Failure(status, body, after))

    async def record(self, request: web.Request) -> Recorded:
        body = await request.read()
        form: dict[str, Any] = {}
        ctype = request.content_type
        if ctype == "multipart/form-data":
            head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
            msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if part.get_filename():
                    form[str(name)] = {
                        "filename": part.get_filename(),
                        "content_type": part.get_content_type(),
                        "data": part.get_payload(decode=True),
                    }
                else:
                    form[str(name)] = part.get_content().strip()
        elif ctype == "application/x-www-form-urlencoded":
            form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        recorded = Recorded(
            request.method,
            request.path,
            dict(request.query),
            dict(request.headers),
            body,
            form,
        )
        self.requests.append(recorded)
        if self.hold is not None and self.hold(recorded):
            await self.release.wait()
        return recorded

    def failure(self) -> web.Response | None:
        if not self.failures:
            return None
        if self.failures[0].after > 0:
            self.failures[0].after -= 1
            return None
        failure = self.failures.pop(0)
        return web.json_response(failure.body, status=failure.status)

    def calls(self, suffix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith(suffix)]
