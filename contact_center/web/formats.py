"""How the workspace writes phones, money, moments and durations (docs: shared/UI.md, Formats).

Pure functions of a value, the language and (for moments) the time zone and "now", used as
Jinja filters and in tests.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal

from contact_center.tracking_service import display_number

NNBSP = "\u202f"  # narrow no-break space: between groups of digits
NBSP = "\u00a0"  # no-break space: before the currency sign

_MONTHS_RU = (
    "янв.",
    "февр.",
    "мар.",
    "апр.",
    "мая",
    "июн.",
    "июл.",
    "авг.",
    "сент.",
    "окт.",
    "нояб.",
    "дек.",
)
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_WORDS = {
    "ru": {"today": "сегодня", "yesterday": "вчера", "tomorrow": "завтра", "min": "мин", "s": "с"},
    "en": {
        "today": "today",
        "yesterday": "yesterday",
        "tomorrow": "tomorrow",
        "min": "min",
        "s": "s",
    },
}


def phone(e164: str | None) -> str:
    """``+74951234567`` → ``+7 (495) 123-45-67``; foreign numbers in international format;
    an extension or anything that is no number stays as it is."""
    if not e164:
        return ""
    if not e164.startswith("+"):
        return e164
    return display_number(e164)


def _group(digits: str) -> str:
    out = []
    for i, ch in enumerate(reversed(digits)):
        if i and i % 3 == 0:
            out.append(NNBSP)
        out.append(ch)
    return "".join(reversed(out))


def number(value: int | float | Decimal | None) -> str:
    """``12345`` → ``12 345`` (narrow no-break spaces between groups)."""
    if value is None:
        return ""
    text = str(int(value))
    sign = "-" if text.startswith("-") else ""
    return sign + _group(text.lstrip("-"))


def money(value: Decimal | int | float | str | None) -> str:
    """``1250000`` → ``1 250 000 ₽``; kopecks only where they exist: ``1 250 000,50 ₽``."""
    if value is None or value == "":
        return ""
    amount = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    whole = int(amount)
    kopecks = int((amount - whole) * 100)
    text = sign + _group(str(whole))
    if kopecks:
        text += f",{kopecks:02d}"
    return text + NBSP + "₽"


def _month(moment: date, lang: str) -> str:
    names = _MONTHS_EN if lang == "en" else _MONTHS_RU
    return names[moment.month - 1]


def day(value: date | None, lang: str = "ru", *, today: date | None = None) -> str:
    """``2 дек.``; the year only when it is not this one."""
    if value is None:
        return ""
    text = f"{value.day} {_month(value, lang)}"
    if today is not None and value.year != today.year:
        text += f" {value.year}"
    if today is not None:
        words = _WORDS.get(lang, _WORDS["ru"])
        if value == today:
            return words["today"]
        if value == today - timedelta(days=1):
            return words["yesterday"]
        if value == today + timedelta(days=1):
            return words["tomorrow"]
    return text


def moment(value: datetime | None, tz: tzinfo, now: datetime, lang: str = "ru") -> str:
    """``2 дек., 14:30``; today, yesterday and tomorrow by name: ``сегодня, 14:30``."""
    if value is None:
        return ""
    local = value.astimezone(tz)
    today = now.astimezone(tz).date()
    words = _WORDS.get(lang, _WORDS["ru"])
    d = local.date()
    if d == today:
        head = words["today"]
    elif d == today - timedelta(days=1):
        head = words["yesterday"]
    elif d == today + timedelta(days=1):
        head = words["tomorrow"]
    else:
        head = f"{d.day} {_month(d, lang)}"
        if d.year != today.year:
            head += f" {d.year}"
    return f"{head}, {local:%H:%M}"


def duration(seconds: float | int | None, lang: str = "ru") -> str:
    """``65`` → ``1 мин 05 с``; under a minute ``42 с``."""
    if seconds is None:
        return ""
    total = round(float(seconds))
    words = _WORDS.get(lang, _WORDS["ru"])
    minutes, secs = divmod(total, 60)
    if minutes:
        return f"{minutes}{NBSP}{words['min']} {secs:02d}{NBSP}{words['s']}"
    return f"{secs}{NBSP}{words['s']}"
