"""The kept read connection of the screen-pop: fresh data on every use, survives a dropped
connection."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from contact_center import db
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
    from contact_center.config import DatabaseSettings

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
