"""The listings' shared order: newest first is an order an index is read in."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import listing
from crm_core.calls.model import Call
from crm_core.leads.model import Lead


def _sql(stmt: object) -> str:
    return " ".join(str(stmt).split())


def test_descending_on_a_not_null_column_is_plain_desc() -> None:
    """``DESC NULLS LAST`` on a NOT NULL column made PostgreSQL sort the whole table (an index
    is read backwards as ``DESC NULLS FIRST``); there are no NULLs to put last anyway."""
    stmt = listing.order(select(Call), {"started_at": Call.started_at}, "-started_at", (), Call.id)
    assert _sql(stmt).endswith("ORDER BY calls.started_at DESC, calls.id DESC")
    stmt = listing.order(select(Lead), {"created_at": Lead.created_at}, "-created_at", (), Lead.id)
    assert _sql(stmt).endswith("ORDER BY leads.created_at DESC, leads.id DESC")


def test_descending_on_a_nullable_column_keeps_nulls_last() -> None:
    sorts = {"potential": Lead.potential_amount}
    stmt = listing.order(select(Lead), sorts, "-potential", (), Lead.id)
    assert _sql(stmt).endswith("ORDER BY leads.potential_amount DESC NULLS LAST, leads.id DESC")
    stmt = listing.order(select(Lead), sorts, "potential", (), Lead.id)
    assert _sql(stmt).endswith("ORDER BY leads.potential_amount ASC NULLS LAST, leads.id ASC")


async def test_nulls_come_last_either_way(session: AsyncSession) -> None:
    session.add_all(
        [
            Lead(title="без суммы", stage="new", origin="manual"),
            Lead(title="мало", stage="new", origin="manual", potential_amount=Decimal(10)),
            Lead(title="много", stage="new", origin="manual", potential_amount=Decimal(500)),
        ]
    )
    await session.commit()
    sorts = {"potential": Lead.potential_amount}
    for sort, titles in (
        ("-potential", ["много", "мало", "без суммы"]),
        ("potential", ["мало", "много", "без суммы"]),
    ):
        stmt = listing.order(select(Lead.title), sorts, sort, (), Lead.id)
        assert list(await session.scalars(stmt)) == titles
