"""How the workspace writes phones, money, moments and durations."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from contact_center.web import formats

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)  # 12:00 in Moscow


def test_phone() -> None:
    assert formats.phone("+74951234567") == "+7 (495) 123-45-67"
    assert formats.phone("+79161234567") == "+7 (916) 123-45-67"
    assert formats.phone("+442071234567").startswith("+44 20 ")
    assert formats.phone("101") == "101"
    assert formats.phone(None) == ""


def test_money_groups_with_narrow_spaces_and_shows_kopecks_only_when_there() -> None:
    assert formats.money(Decimal("1250000")) == "1\u202f250\u202f000\u00a0₽"
    assert formats.money(Decimal("1250000.50")) == "1\u202f250\u202f000,50\u00a0₽"
    assert formats.money(999) == "999\u00a0₽"
    assert formats.money(None) == ""


def test_moments_name_today_yesterday_and_tomorrow() -> None:
    assert formats.moment(datetime(2026, 12, 2, 11, 30, tzinfo=UTC), MSK, NOW) == "сегодня, 14:30"
    assert formats.moment(datetime(2026, 12, 1, 6, 5, tzinfo=UTC), MSK, NOW) == "вчера, 09:05"
    assert formats.moment(datetime(2026, 11, 28, 6, 5, tzinfo=UTC), MSK, NOW) == "28 нояб., 09:05"
    assert formats.moment(datetime(2025, 5, 2, 6, 5, tzinfo=UTC), MSK, NOW) == "2 мая 2025, 09:05"
    assert formats.moment(datetime(2026, 12, 2, 11, 30, tzinfo=UTC), MSK, NOW, "en") == (
        "today, 14:30"
    )
    assert formats.day(date(2026, 12, 2), today=date(2026, 11, 1)) == "2 дек."


def test_durations() -> None:
    assert formats.duration(65) == "1\u00a0мин 05\u00a0с"
    assert formats.duration(42.4) == "42\u00a0с"
    assert formats.duration(0) == "0\u00a0с"


def test_days_as_people_type_them() -> None:
    from contact_center.web.listing import parse_day

    assert parse_day("02.12.2026") == date(2026, 12, 2)
    assert parse_day("2.12.26") == date(2026, 12, 2)
    assert parse_day("2026-12-02") == date(2026, 12, 2)
    assert parse_day("31.02.2026") is None
    assert parse_day("вчера") is None
    assert parse_day("") is None
