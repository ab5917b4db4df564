"""While the server starts: something answers on its port at once.

The runtime's first step waits for the database, forever if need be (a database that comes
up after the server is normal in a data centre). Without a listener meanwhile a load
balancer or an operator sees only "connection refused"; so ``serve`` puts a stand-in on the
port (``SO_REUSEPORT``) that answers ``/healthz`` with 503 and what the start waits for, and
every other request with 503 "starting", until the real server listens beside it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from contact_center import __version__


@dataclass
class StartupProgress:
    """What the start is doing; written by the runtime's steps, read by the stand-in."""

    step: str = "starting"
    database_error: str | None = None
    database_attempts: int = 0
    since: float = field(default_factory=time.monotonic)

    def database_unreachable(self, error: str) -> None:
        self.step = "waiting for the database"
        self.database_error = error
        self.database_attempts += 1

    def as_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": "starting",
            "step": self.step,
            "starting_for_s": round(time.monotonic() - self.since, 1),
            "version": __version__,
        }
        if self.database_error is not None:
            doc["database"] = {
                "status": "fail",
                "error": self.database_error,
                "attempts": self.database_attempts,
            }
        return doc


def standin_app(progress: StartupProgress) -> web.Application:
    """The stand-in: 503 everywhere, with the start's progress on ``/healthz``."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(progress.as_dict(), status=503)

    async def anything(_request: web.Request) -> web.Response:
        body = {
            "error": "starting",
            "message": "Сервер запускается, повторите запрос через несколько секунд",
            "details": progress.as_dict(),
        }
        return web.Response(
            status=503,
            text=json.dumps(body, ensure_ascii=False),
            content_type="application/json",
            headers={"Retry-After": "5"},
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", anything)
    return app
