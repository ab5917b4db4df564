"""A fake SMSC.ru HTTP API: ``/sys/send.php`` (form or query; ``fmt=3`` JSON answers with the
message id, the parts and the cost: 3.50 RUB a part, or an error), recorded for assertions."""

from __future__ import annotations

import itertools
from decimal import Decimal

from aiohttp import web

from tests.fakes.http_fake import FakeHttpApi

PRICE_PER_PART = Decimal("3.50")


class FakeSmsGateway(FakeHttpApi):
    def __init__(self, login: str = "cc", password: str = "secret") -> None:
        self.login = login
        self.password = password
        self.balance = Decimal("1000.00")
        self._ids = itertools.count(5000)
        super().__init__()

    def setup_routes(self, router: web.UrlDispatcher) -> None:
        router.add_route("*", "/sys/send.php", self.send)

    @staticmethod
    def parts(text: str) -> int:
        # independent of channels.sms: UCS-2 as soon as a character is not ASCII
        if all(ord(c) < 128 for c in text):
            return 1 if len(text) <= 160 else -(-len(text) // 153)
        return 1 if len(text) <= 70 else -(-len(text) // 67)

    async def send(self, request: web.Request) -> web.Response:
        recorded = await self.record(request)
        params = {**recorded.query, **recorded.form}
        if (failure := self.failure()) is not None:
            return failure
        if params.get("login") != self.login or params.get("psw") != self.password:
            return web.json_response({"error": "authorise error", "error_code": 2})
        if not params.get("phones", "").lstrip("+").isdigit():
            return web.json_response({"error": "invalid number", "error_code": 7})
        cnt = self.parts(params.get("mes", ""))
        cost = PRICE_PER_PART * cnt
        self.balance -= cost
        return web.json_response(
            {
                "id": next(self._ids),
                "cnt": cnt,
                "cost": f"{cost:.2f}",
                "balance": f"{self.balance:.2f}",
            }
        )
