"""Declarative base, naming convention, column types and SQL helpers shared by every model."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, cast

from pydantic import Field
from sqlalchemy import JSON, BigInteger, ColumnElement, DateTime, MetaData, false, select, union
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import CursorResult, Dialect, Result
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

MAX_DB_INT = 2**31 - 1
"""The largest value of an ``INTEGER`` column (PostgreSQL's is 32-bit): every id and count a
request carries must fit, or the database refuses the query."""
MIN_DB_INT = -(2**31)
DbId = Annotated[int, Field(ge=1, le=MAX_DB_INT)]
"""A record id as a request carries it: 1 … 2³¹−1 (the range of the id columns)."""


def rowcount(result: Result[Any]) -> int:
    """Rows an UPDATE or DELETE touched (a statement's result is a ``CursorResult``)."""
    return int(cast("CursorResult[Any]", result).rowcount or 0)


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """``column LIKE '%text%'`` with ``text`` taken literally (``%``, ``_`` and ``\\`` escaped)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    condition: ColumnElement[bool] = column.like(f"%{escaped}%", escape="\\")
    return condition


def matching(id_column: Any, by_name: Any, id_selects: list[Any]) -> ColumnElement[bool]:
    """A search's condition: ``by_name`` alone, or ``id_column IN (... UNION ...)`` of the
    ids each meaning of the query selects (``by_name`` among them as ``id_column``'s rows).
    Each part is answered by its own index; an ``OR`` of them made PostgreSQL walk the whole
    table."""
    condition: ColumnElement[bool]
    if not id_selects:
        condition = by_name if by_name is not None else false()
        return condition
    parts = list(id_selects)
    if by_name is not None:
        parts.append(select(id_column).where(by_name))
    condition = id_column.in_(union(*parts)) if len(parts) > 1 else id_column.in_(parts[0])
    return condition


# Stable constraint names, so Alembic migrations can address them on SQLite and PostgreSQL alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time as a UTC-aware datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in and comes out UTC-aware on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no zones, so the value is stored as naive UTC
    (which also keeps its text ordering right) and the zone is put back on the way out.
    Naive datetimes are refused: their meaning is ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware value")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stored: datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=UTC)
        return stored.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of every ORM model; its metadata is what the migrations describe."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


class Money(TypeDecorator[Decimal]):
    """An amount in RUB as ``Decimal`` with kopeck precision, stored as integer kopecks.

    Integers are exact, sortable and summable on every backend (SQLite has no decimal type),
    and ``func.sum(column)`` keeps this type, so sums come back as ``Decimal`` too.
    """

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | int | str | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        amount = Decimal(value)
        kopecks = amount * 100
        if kopecks != kopecks.to_integral_value():
            raise ValueError(f"amount {value} has more than 2 decimal places")
        return int(kopecks)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / 100).quantize(_KOPECK)


_KOPECK = Decimal("0.01")

# JSON documents: jsonb on PostgreSQL (indexable), JSON text on SQLite.
JsonDoc = JSON().with_variant(JSONB(), "postgresql")
