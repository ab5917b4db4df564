"""Small test helpers (poll until a condition holds, free ports, a group out of a page, a
moment later or earlier today, a workday)."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from crm_core.tasks import plan as plans


def found(pattern: str, text: str, flags: int = 0) -> str:
    """The first group of ``pattern``'s first match in ``text``; fails the test if none."""
    match = re.search(pattern, text, flags)
    assert match is not None, f"{pattern!r} not found"
    return match.group(1)


def _today(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """[start, end) of the workspace's day ``now`` falls on in ``zone``."""
    tz = ZoneInfo(zone)
    return plans.day_bounds(plans.local_day(now, tz), tz)


def later_today(now: datetime, wanted: timedelta, zone: str = "Europe/Moscow") -> datetime:
    """``now + wanted`` if that is still today in ``zone`` (the workspace's day), otherwise a
    moment halfway between ``now`` and that midnight: a test that seeds "due later today" must
    not turn into "due tomorrow" when the suite runs late in the evening."""
    _, end = _today(now, zone)
    return min(now + wanted, now + (end - now) / 2)


def earlier_today(now: datetime, wanted: timedelta, zone: str = "Europe/Moscow") -> datetime:
    """``now - wanted`` if that is still today in ``zone``, otherwise a moment halfway between
    that day's midnight and ``now`` (what "happened earlier today" is just after midnight)."""
    start, _ = _today(now, zone)
    return max(now - wanted, now - (now - start) / 2)


def workday(now: datetime, zone: str = "Europe/Moscow") -> bool:
    """Whether ``now`` falls on a Monday to Friday in ``zone`` (a weekly plan's days)."""
    return now.astimezone(ZoneInfo(zone)).weekday() < 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def until(
    predicate: Callable[[], Any], *, timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
