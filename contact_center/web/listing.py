"""What the list pages share: their state in the URL (search, filters, sort, page), the chips
of the filters in force, the sort links, pagination with the total, and the names of the small
reference tables (users, regions, sources) read once per page.

Pagination is by offset with a capped total: a page is one indexed query (``LIMIT 50 OFFSET
n``) and the total counts at most :data:`COUNT_CAP` + 1 rows ("1–50 из 10 000+"), so a broad
list on a million contacts never walks the whole table to count it. People page through the
first pages and narrow with filters; deep offsets are rare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from yarl import URL

from contact_center.i18n import Translate
from contact_center.web import formats
from crm_core.reference.model import Region, Source
from crm_core.users.model import User

PER_PAGE = 50
COUNT_CAP = 10_000
MAX_PAGE = 200  # offset 10 000: narrow the filters beyond that
TRANSIENT = frozenset({"lang", "bulk_created", "saved"})  # said once, not kept in the URL


@dataclass(frozen=True)
class Filter:
    """A filter of a list: a query parameter with its label and, for a choice, the options
    (value, text)."""

    name: str
    label: str  # message id
    kind: str = "select"  # select, date, text
    options: tuple[tuple[str, str], ...] = ()
    required: bool = False  # a choice without "any" (its first option is the default)

    def text_of(self, value: str) -> str:
        for option, text in self.options:
            if option == value:
                return text
        return value


@dataclass
class Chip:
    label: str
    value: str
    remove_url: str


@dataclass
class ListState:
    """The state of a list page, read from and written to its URL."""

    path: str
    params: MultiMapping[str]
    filters: list[Filter]
    sorts: tuple[str, ...]
    default_sort: str
    total: int = 0
    shown: int = 0
    chips: list[Chip] = field(default_factory=list)
    keep: tuple[str, ...] = ()  # parameters a reset keeps (the contacts/companies switch)

    @property
    def reset_url(self) -> str:
        kept = {k: self.params[k] for k in self.keep if self.params.get(k)}
        return str(URL(self.path).with_query(kept))

    @property
    def q(self) -> str:
        return self.params.get("q", "").strip()[:200]

    @property
    def sort(self) -> str:
        value = self.params.get("sort", "")
        return value if value.lstrip("-") in self.sorts else self.default_sort

    @property
    def page(self) -> int:
        try:
            return max(1, min(MAX_PAGE, int(self.params.get("page", "1"))))
        except ValueError:
            return 1

    @property
    def offset(self) -> int:
        return (self.page - 1) * PER_PAGE

    def value(self, name: str) -> str:
        return self.params.get(name, "").strip()

    def int_value(self, name: str) -> int | None:
        raw = self.value(name)
        return int(raw) if raw.isdigit() and len(raw) < 12 else None

    def date_value(self, name: str) -> date | None:
        return parse_day(self.value(name))

    def date_text(self, name: str) -> str:
        """A date filter as typed back into its box: ``02.12.2026``."""
        parsed = self.date_value(name)
        return f"{parsed:%d.%m.%Y}" if parsed else self.value(name)

    def url(self, **changes: str | int | None) -> str:
        """This list's URL with ``changes`` (None removes a parameter); a change of anything
        but the page goes back to the first page."""
        query: dict[str, str] = {
            k: v for k, v in self.params.items() if v != "" and k not in TRANSIENT
        }
        if "page" not in changes:
            query.pop("page", None)
        for key, value in changes.items():
            if value is None or value == "":
                query.pop(key, None)
            else:
                query[key] = str(value)
        if query.get("page") == "1":
            query.pop("page")
        return str(URL(self.path).with_query(query))

    def sort_url(self, key: str) -> str:
        """Sorting by ``key``: ascending first, a second click descending."""
        return self.url(sort=f"-{key}" if self.sort == key else key)

    def sort_mark(self, key: str) -> str:
        if self.sort == key:
            return "asc"
        if self.sort == f"-{key}":
            return "desc"
        return ""

    @property
    def capped(self) -> bool:
        return self.total > COUNT_CAP

    @property
    def pages(self) -> int:
        return max(1, min(MAX_PAGE, -(-min(self.total, COUNT_CAP) // PER_PAGE)))

    def range_text(self, t: Translate) -> str:
        """``1–50 из 12 345`` (``из 10 000+`` past the cap)."""
        if not self.total:
            return ""
        first = self.offset + 1
        last = self.offset + self.shown
        total = formats.number(min(self.total, COUNT_CAP)) + ("+" if self.capped else "")
        return t("list.range", first=formats.number(first), last=formats.number(last), total=total)

    def page_links(self) -> list[tuple[int | None, str]]:
        """(page number or None for a gap, URL) around the current page."""
        pages = self.pages
        wanted = sorted({1, pages, *range(max(1, self.page - 2), min(pages, self.page + 2) + 1)})
        out: list[tuple[int | None, str]] = []
        previous = 0
        for n in wanted:
            if n - previous > 1:
                out.append((None, ""))
            out.append((n, self.url(page=n)))
            previous = n
        return out

    def make_chips(self, t: Translate) -> None:
        chips = []
        if self.q:
            chips.append(Chip(t("list.search"), self.q, self.url(q=None)))
        for flt in self.filters:
            value = self.value(flt.name)
            if value:
                text = flt.text_of(value)
                if flt.kind == "date":
                    parsed = self.date_value(flt.name)
                    text = formats.day(parsed) if parsed else value
                chips.append(Chip(t(flt.label), text, self.url(**{flt.name: None})))
        self.chips = chips

    @property
    def filtered(self) -> bool:
        return bool(self.q) or any(self.value(f.name) for f in self.filters)


def parse_day(text: str | None) -> date | None:
    """A day as people type it (``2.12.2026``, ``02.12.26``) or ISO (``2026-12-02``); None for
    anything else. Date boxes are text boxes: a browser's own date input follows the browser's
    language, not the page's (an English Chrome shows mm/dd/yyyy)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        if "." in text:
            d, m, y = (int(part) for part in text.split("."))
            return date(y + 2000 if y < 100 else y, m, d)
        return date.fromisoformat(text)
    except ValueError:
        return None


def state_of(
    request: web.Request,
    filters: Iterable[Filter],
    sorts: Iterable[str],
    default_sort: str,
    keep: tuple[str, ...] = (),
) -> ListState:
    return ListState(
        path=request.path,
        params=request.query,
        filters=list(filters),
        sorts=tuple(sorts),
        default_sort=default_sort,
        keep=keep,
    )


def day_start(day: date | None, tz: ZoneInfo) -> datetime | None:
    """The first moment of ``day`` in ``tz`` (UTC)."""
    if day is None:
        return None
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def day_end(day: date | None, tz: ZoneInfo) -> datetime | None:
    """The first moment after ``day`` in ``tz`` (UTC): "to" dates are inclusive on screen."""
    if day is None:
        return None
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)


@dataclass
class Names:
    """Names of the short reference tables, so a list shows names, never ids or codes."""

    users: dict[int, str]
    regions: dict[int, str]
    sources: dict[int, str]
    managers: list[tuple[int, str]]  # active users who can be responsible, by name

    def user(self, user_id: int | None) -> str:
        return self.users.get(user_id, "") if user_id is not None else ""

    def region(self, region_id: int | None) -> str:
        return self.regions.get(region_id, "") if region_id is not None else ""

    def source(self, source_id: int | None) -> str:
        return self.sources.get(source_id, "") if source_id is not None else ""

    def user_options(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(i), n) for i, n in self.managers)

    def region_options(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(i), n) for i, n in sorted(self.regions.items(), key=lambda x: x[1]))

    def source_options(self) -> tuple[tuple[str, str], ...]:
        return tuple((str(i), n) for i, n in sorted(self.sources.items(), key=lambda x: x[1]))


async def names(session: AsyncSession) -> Names:
    users = {
        row.id: row.display_name or row.login
        for row in await session.execute(
            select(User.id, User.display_name, User.login, User.is_active, User.role)
        )
    }
    managers = [
        (row.id, row.display_name or row.login)
        for row in await session.execute(
            select(User.id, User.display_name, User.login)
            .where(User.is_active.is_(True), User.role != "admin")
            .order_by(User.display_name)
        )
    ]
    regions = dict((await session.execute(select(Region.id, Region.name))).all())
    sources = dict((await session.execute(select(Source.id, Source.name))).all())
    return Names(users=users, regions=regions, sources=sources, managers=managers)


def options(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple((str(k), str(v)) for k, v in items)
