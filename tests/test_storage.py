"""Storage: migrations, UTC timestamps and SQLite pragmas, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.engine.interfaces import ReflectedIndex
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from contact_center import db
from contact_center.config import DatabaseSettings
from crm_core import migrations
from crm_core.models import Base
from crm_core.users.model import AuthToken, User
from tests.conftest import own_database, pg_admin


async def test_migrations_reach_head_and_match_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        assert await conn.run_sync(migrations.current_revision) == migrations.head_revision()
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert set(Base.metadata.tables) <= tables


async def test_migrate_twice_is_a_no_op(engine: AsyncEngine) -> None:
    before, after = await db.migrate(engine)
    assert before == after == migrations.head_revision()


async def test_models_match_migrations_exactly(engine: AsyncEngine) -> None:
    """Autogenerate finds nothing to add: the migrations describe the models in full."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def diff(conn: Connection) -> Any:
        opts = {"compare_type": False, "include_object": migrations.include_object}
        ctx = MigrationContext.configure(conn, opts=opts)
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_datetimes_come_back_utc_aware(session: AsyncSession) -> None:
    moscow = timezone(timedelta(hours=3))
    stamp = datetime(2026, 11, 26, 15, 30, 0, 123456, tzinfo=moscow)
    user = User(login="tz", role="manager", password_hash="x", created_at=stamp)
    session.add(user)
    await session.commit()
    session.expunge_all()
    loaded = await session.scalar(select(User).where(User.login == "tz"))
    assert loaded is not None
    assert loaded.created_at.tzinfo is not None
    assert loaded.created_at.utcoffset() == timedelta(0)
    assert loaded.created_at == stamp
    assert loaded.created_at.hour == 12  # 15:30 +03:00 is 12:30 UTC


async def test_comparisons_on_timestamps_use_utc(session: AsyncSession) -> None:
    user = User(login="cmp", role="manager", password_hash="x")
    session.add(user)
    await session.flush()
    base = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i, hours in enumerate((1, 2, 3)):
        session.add(
            AuthToken(
                user_id=user.id,
                kind="api",
                token_hash=f"h{i}",
                expires_at=base + timedelta(hours=hours),
            )
        )
    await session.commit()
    # 14:30 in Moscow is 11:30 UTC: all three expire after it; 13:30 UTC leaves two.
    cutoff = datetime(2026, 1, 1, 16, 30, tzinfo=timezone(timedelta(hours=3)))
    count = len(
        (await session.scalars(select(AuthToken).where(AuthToken.expires_at > cutoff))).all()
    )
    assert count == 2


async def test_naive_datetime_is_refused(session: AsyncSession) -> None:
    session.add(
        User(login="naive", role="manager", password_hash="x", created_at=datetime(2026, 1, 1))
    )
    with pytest.raises(Exception, match="naive datetime"):
        await session.flush()


async def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = db.create_engine(DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path}/x/db.sqlite3"))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()
    assert (tmp_path / "x" / "db.sqlite3").exists()  # the data directory is created


async def test_foreign_keys_are_enforced(session: AsyncSession) -> None:
    session.add(AuthToken(user_id=999_999, kind="api", token_hash="orphan"))
    with pytest.raises(Exception, match=r"(?i)foreign key"):
        await session.flush()


async def test_name_search_is_served_by_trigram_indexes_on_postgresql(
    engine: AsyncEngine, session: AsyncSession
) -> None:
    """Substring search on names (``name_search LIKE '%…%'``) uses the pg_trgm GIN indexes of
    migration 0010 on PostgreSQL; SQLite has none and needs none."""
    from crm_core.clients import search
    from crm_core.clients.model import Company, Contact

    async with engine.connect() as conn:
        names = set(
            await conn.run_sync(
                lambda c: {
                    ix["name"]
                    for table in ("contacts", "companies", "leads")
                    for ix in inspect(c).get_indexes(table)
                }
            )
        )
    trigram = {n for n in names if n and n.endswith(migrations.TRIGRAM_SUFFIX)}
    if engine.dialect.name != "postgresql":
        assert trigram == set()
        return
    assert trigram == {
        "ix_contacts_name_search_trgm",
        "ix_companies_name_search_trgm",
        "ix_leads_name_search_trgm",
    }
    # The clause the client search builds, as it is sent (a bound, escaped pattern).
    await session.execute(text("SET LOCAL enable_seqscan = off"))
    # The name btree (migration 0016) holds name_search too: on these empty tables a whole
    # scan of it looks as cheap as the trigram index. Out of the way for this transaction
    # (rolled back with it), the plan shows whether the trigram index serves the clause.
    for name in ("ix_contacts_name_search_id", "ix_companies_name_search_id"):
        await session.execute(text(f"DROP INDEX {name}"))
    for kind, table, index in (
        ("contact", Contact, "ix_contacts_name_search_trgm"),
        ("company", Company, "ix_companies_name_search_trgm"),
    ):
        stmt = select(table.id).where(search._search_clause(kind, "Ромашка_1%", "RU"))
        sql = str(stmt.compile(engine.sync_engine, compile_kwargs={"literal_binds": True}))
        plan = "\n".join((await session.execute(text(f"EXPLAIN {sql}"))).scalars())
        assert index in plan, plan
    lead_plan = "\n".join(
        (
            await session.execute(
                text("EXPLAIN SELECT id FROM leads WHERE name_search LIKE '%ромашка%'")
            )
        ).scalars()
    )
    assert "ix_leads_name_search_trgm" in lead_plan, lead_plan


async def test_list_pages_have_their_indexes(engine: AsyncEngine) -> None:
    """Migration 0016: the task list's order, the card's converted leads, and client lists
    by name; on PostgreSQL the name and responsible indexes carry what the lists filter on
    (INCLUDE), so a page and a manager's total are read from an index alone."""

    def indexes(conn: Connection) -> dict[str, ReflectedIndex]:
        return {
            ix["name"]: ix
            for table in ("tasks", "leads", "contacts", "companies")
            for ix in inspect(conn).get_indexes(table)
            if ix["name"]
        }

    async with engine.connect() as conn:
        found = await conn.run_sync(indexes)
    assert found["ix_tasks_status_due"]["column_names"] == ["status", "due_at", "id"]
    for column in ("contact_id", "company_id", "deal_id"):
        assert found[f"ix_leads_{column}"]["column_names"] == [column]
    assert found["ix_leads_stage"]["column_names"] == ["stage"]
    if engine.dialect.name == "postgresql":
        stage_include = found["ix_leads_stage"]["dialect_options"]["postgresql_include"]
        assert stage_include == ["potential_amount", "responsible_id"]
    filters = ["merged_into_id", "client_type", "region_id", "source_id", "purchase_mode"]
    for table in ("contacts", "companies"):
        assert f"ix_{table}_name_search" not in found  # replaced by the one with the id
        name, responsible = (
            found[f"ix_{table}_name_search_id"],
            found[f"ix_{table}_responsible_id_id"],
        )
        assert name["column_names"] == ["name_search", "id"]
        assert responsible["column_names"] == ["responsible_id", "id"]
        if engine.dialect.name == "postgresql":
            include = "postgresql_include"
            assert name["dialect_options"][include] == ["responsible_id", *filters]
            assert responsible["dialect_options"][include] == filters


async def test_migrations_complete_without_the_right_to_create_pg_trgm(
    postgres_template: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A role that may not create extensions (no CREATE on its database) still migrates: the
    trigram indexes are skipped with a warning, search stays correct (and scans)."""
    base, _ = postgres_template
    name, role = f"cc_t_{uuid.uuid4().hex[:12]}", f"cc_r_{uuid.uuid4().hex[:8]}"
    await pg_admin(base, f'CREATE ROLE "{role}" LOGIN', f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name)
    try:
        await pg_admin(
            url.render_as_string(hide_password=False),
            f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"',
        )
        limited = url.set(username=role, password=None).render_as_string(hide_password=False)
        eng = db.create_engine(DatabaseSettings(url=limited))
        try:
            caplog.set_level("WARNING", logger="crm_core.migrations")
            assert (await db.migrate(eng))[1] == migrations.head_revision()
            async with eng.connect() as conn:
                indexes = await conn.run_sync(lambda c: inspect(c).get_indexes("contacts"))
        finally:
            await eng.dispose()
        names = [ix["name"] for ix in indexes]
        assert not [n for n in names if n is not None and n.endswith(migrations.TRIGRAM_SUFFIX)]
        assert any("cannot create the pg_trgm extension" in r.getMessage() for r in caplog.records)
    finally:
        await pg_admin(
            base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'DROP ROLE IF EXISTS "{role}"'
        )


async def test_private_letters_migration_marks_the_letters_already_stored(
    engine: AsyncEngine,
) -> None:
    """0019 marks the personal mailboxes' letters stored before it as private to their
    manager (and nothing else)."""
    from crm_core.activities.model import Activity
    from crm_core.conversations.model import Conversation, Message

    at = datetime(2026, 12, 1, 10, tzinfo=UTC)
    async with db.sessionmaker(engine)() as s:
        owner = User(login="ivan", role="manager", password_hash="x", display_name="Иван")
        s.add(owner)
        await s.flush()
        ids = {}
        for code, owner_id in (("ivan-mail", owner.id), ("sales", None)):
            conv = Conversation(
                channel=code,
                channel_kind="email",
                identity_kind="email",
                identity_value=f"{code}@client.ru",
                owner_id=owner_id,
            )
            s.add(conv)
            await s.flush()
            message = Message(
                conversation_id=conv.id,
                channel=code,
                direction="inbound",
                author_kind="client",
                text="Письмо",
                status="received",
                sent_at=at,
            )
            s.add(message)
            await s.flush()
            letter = Activity(kind="email", subject="", external_id=f"message:{message.id}")
            s.add(letter)
            await s.flush()
            ids[code] = letter.id
        s.add(Activity(kind="email", subject="руками", external_id=None))
        await s.commit()

    def down_and_up(conn: Connection) -> None:
        from alembic import command

        command.downgrade(migrations.alembic_config(conn), "0018")
        command.upgrade(migrations.alembic_config(conn), "head")

    async with engine.begin() as conn:
        await conn.run_sync(down_and_up)
    async with db.sessionmaker(engine)() as s:
        marks = dict((await s.execute(select(Activity.id, Activity.private_to_id))).all())
    assert marks[ids["ivan-mail"]] == owner.id
    assert marks[ids["sales"]] is None
    assert sorted(v for v in marks.values() if v is not None) == [owner.id]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A database with nothing in it yet, on each backend."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    base, _ = request.getfixturevalue("postgres_template")
    with own_database(base) as url:
        yield url


@pytest.mark.parametrize("at", ["first change of a table", "statement 60"])
async def test_a_stop_during_the_migration_lets_it_finish(empty_database_url: str, at: str) -> None:
    """A server stopped while it migrates (SIGTERM at start-up cancels the start) used to end
    with PendingRollbackError and exit status 1 when the cancellation fell inside one of
    SQLite's batch operations: the migration finishes, then the cancellation goes on."""
    seen = 0
    task: asyncio.Task[Any] | None = None

    def cancel_midway(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal seen
        seen += 1
        if at == "statement 60":
            hit = seen == 60
        else:  # SQLite's batch operations drop and rename tables; PostgreSQL alters them
            hit = statement.lstrip().startswith(("DROP TABLE", "ALTER TABLE"))
        if hit and task is not None and not task.cancelling():
            task.cancel()

    eng = db.create_engine(DatabaseSettings(url=empty_database_url))
    event.listen(Engine, "before_cursor_execute", cancel_midway)
    try:
        task = asyncio.ensure_future(db.migrate(eng))
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        event.remove(Engine, "before_cursor_execute", cancel_midway)
    try:  # cancelled midway (CancelledError, not the migration's result), yet at head
        async with eng.connect() as conn:
            assert await conn.run_sync(migrations.current_revision) == migrations.head_revision()
        assert await db.migrate(eng) == (migrations.head_revision(),) * 2
    finally:
        await eng.dispose()
