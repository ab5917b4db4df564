"""Fixtures of the channel adapter tests: protocol fakes on loopback, configs pointing at them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.sms_gateway import FakeSmsGateway
from tests.fakes.telegram_api import FakeTelegramApi

WA_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "whatsapp"
APP_SECRET = "app-secret-for-tests"


def wa_fixture(name: str) -> bytes:
    """The fixture's bytes, as Meta would send them (compact JSON, UTF-8)."""
    data = json.loads((WA_FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


@pytest.fixture
async def graph() -> AsyncIterator[FakeGraphApi]:
    async with FakeGraphApi(token="wa-token") as fake:
        yield fake


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramApi]:
    async with FakeTelegramApi(token="123456:TEST") as fake:
        yield fake


@pytest.fixture
async def sms_gateway() -> AsyncIterator[FakeSmsGateway]:
    async with FakeSmsGateway(login="cc", password="gw-secret") as fake:
        yield fake


def wa_config(api_url: str = "http://127.0.0.1:9", **over: Any) -> dict[str, Any]:
    return {
        "code": "wa-main",
        "kind": "whatsapp",
        "phone_number_id": "106540352242922",
        "access_token": "wa-token",
        "app_secret": APP_SECRET,
        "verify_token": "verify-me",
        "waba_id": "102290129340398",
        "api_url": api_url,
        **over,
    }
