"""Headless Chromium (Debian's /usr/bin/chromium) driven by Playwright."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import need_service

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The browser of a Russian sales team: dates in inputs read дд.мм.гггг.
    "--lang=ru-RU",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        need_service("chromium not installed (scripts/install-system-deps.sh installs it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield instance
        await instance.close()
