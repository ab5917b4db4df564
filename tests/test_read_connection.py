"""The kept read connection of the screen-pop: fresh data on every use, survives a dropped
connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core.reference.model import Region


async def test_each_use_sees_what_others_committed(engine: Any) -> None:
    sessions = db.sessionmaker(engine)
    reader = db.ReadConnection(sessions)
    try:
        async with reader.session() as s:
            before = await s.scalar(select(func.count(Region.id)))
        assert before is not None
        async with sessions() as writer:
            writer.add(Region(code="RU-KZN", name="Казань"))
            await writer.commit()
        async with reader.session() as s:
            assert await s.scalar(select(func.count(Region.id))) == before + 1
    finally:
        await reader.close()


async def test_a_killed_connection_is_replaced(postgres_url: str) -> None:
    engine = db.create_engine(DatabaseSettings(url=postgres_url))
    reader = db.ReadConnection(db.sessionmaker(engine))
    try:
        async with reader.session() as s:
            pid = await s.scalar(text("SELECT pg_backend_pid()"))
        async with engine.connect() as admin:
            # Autocommit: between uses the kept connection holds no transaction open.
            state = await admin.scalar(
                text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            )
            assert state == "idle"
            await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError):
            async with reader.session() as s:
                await s.scalar(text("SELECT 1"))
        async with reader.session() as s:
            assert await s.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await reader.close()
        await engine.dispose()


async def _pooled_queries(engine: Any, uses: int) -> list[str]:
    """What the pool's connection sent outside prepared statements (transactions, the ping)
    over ``uses`` uses one after another (a pool of one: the same connection each time), as
    PostgreSQL's driver logs it."""
    queries: list[str] = []
    for i in range(uses):
        async with engine.connect() as conn:
            if i == 0:
                raw = (await conn.get_raw_connection()).driver_connection
                raw.add_query_logger(lambda record: queries.append(record.query))
            await conn.execute(text(f"SELECT {i}"))
    await asyncio.sleep(0.01)  # the driver calls its loggers soon after each statement
    return queries


async def test_a_pooled_connection_back_from_work_is_not_pinged(postgres_url: str) -> None:
    """asyncpg's ping is three round trips (BEGIN, ;, ROLLBACK): pinging at every checkout
    was most of the traffic of a short session under load."""
    engine = db.create_engine(DatabaseSettings(url=postgres_url, pool_size=1))
    try:
        queries = await _pooled_queries(engine, 3)
    finally:
        await engine.dispose()
    # Each use's own transaction, no ping.
    assert queries.count("BEGIN;") == 3, queries
    assert ";" not in queries, queries


async def test_a_pooled_connection_idle_long_is_pinged_and_replaced_when_dead(
    postgres_url: str,
) -> None:
    engine = db.create_engine(DatabaseSettings(url=postgres_url, pool_size=1), ping_after_idle_s=0)
    admin = db.create_engine(DatabaseSettings(url=postgres_url))
    try:
        assert ";" in await _pooled_queries(engine, 2)
        async with engine.connect() as conn:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
        async with admin.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # The dead connection fails its ping; the pool replaces it and the use succeeds.
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT pg_backend_pid()")) != pid
    finally:
        await engine.dispose()
        await admin.dispose()
