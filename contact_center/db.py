"""Database engine: SQLite (embedded default) or PostgreSQL, start-up retry and migrations."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, InvalidatePoolError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from contact_center.config import DatabaseSettings
from crm_core import migrations

T = TypeVar("T")

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every instance migrating one database.
_MIGRATION_LOCK_KEY = 0x43_43_4D_49  # "CCMI"


class DatabaseUnavailable(Exception):
    """The database could not be reached within the allowed time."""


# SQLSTATEs of a server that is going away or not there yet: class 08 (connection exception),
# admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
_AWAY_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# A network that does not reach the server (a full disk is not the database being away).
_NETWORK_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is away (down, restarting, the connection lost)
    rather than that the statement is wrong: the work may succeed when it is tried again.

    asyncpg's refused connection reaches us as a bare ``ConnectionRefusedError`` (the pool's
    connect is not wrapped); a server shutting down answers with SQLSTATEs SQLAlchemy maps to
    a plain ``DBAPIError``."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror):
        return True
    if isinstance(exc, OSError) and (
        exc.errno in _NETWORK_ERRNOS or str(exc).startswith("Multiple exceptions")
    ):
        return True  # asyncio's connect to every address of a name, each refused
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError):
            return True
        exc = exc.orig if exc.orig is not None else exc
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str) and (state.startswith("08") or state in _AWAY_SQLSTATES):
        return True
    # asyncpg's own "connection was closed in the middle of operation".
    return type(exc).__name__ == "ConnectionDoesNotExistError"


def safe_url(url: str) -> str:
    """The URL with its password masked, for logs and health output."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


# A pooled connection idle longer than this is pinged before use (see _ping_when_idle).
PING_AFTER_IDLE_S = 1.0


def _ping_when_idle(engine: AsyncEngine, idle_s: float) -> None:
    """Ping a pooled connection before use only when it sat in the pool ``idle_s`` or longer.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout, and asyncpg's ping is three round
    trips (``BEGIN``, ``;``, ``ROLLBACK``): under load that was most of the wire traffic of a
    short session. A connection returned moments ago is as good as the last statement said; a
    server that went away meanwhile fails the next statement as a disconnect, which
    invalidates the whole pool (the request answers 503, the next ones reconnect). A
    connection that waited longer (a quiet night, a restart while nobody worked) is pinged
    and, if dead, the pool replaced, as ``pool_pre_ping`` does."""
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    def checkin(_dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info["cc_idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop("cc_idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_s:
            return  # fresh from connect, or back from work a moment ago
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # Like pool_pre_ping's failure: every pooled connection is replaced.
            raise InvalidatePoolError(f"ping after {idle_s:g} s idle failed: {exc!r}") from exc

    event.listen(sync_engine, "checkin", checkin)
    event.listen(sync_engine, "checkout", checkout)


def create_engine(
    settings: DatabaseSettings, ping_after_idle_s: float = PING_AFTER_IDLE_S
) -> AsyncEngine:
    """Build the engine; SQLite gets WAL and foreign keys on every connection; a PostgreSQL
    connection is pinged before use when it sat idle ``ping_after_idle_s`` or longer."""
    url = make_url(settings.url)
    kwargs: dict[str, Any] = {"echo": settings.echo}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.update(pool_size=settings.pool_size, max_overflow=settings.pool_size)
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine, ping_after_idle_s)
    return engine


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


class ReadConnection:
    """One connection kept open, in autocommit, for a latency-critical read path.

    A pooled session costs a pre-ping, a ``BEGIN`` and a ``ROLLBACK`` around the queries, and
    each round trip is an await where a busy event loop runs other work first. The screen-pop
    reads through this instead: only its own queries go over the wire, on a connection whose
    prepared statements stay warm. Uses are serialised (one reader per path); a connection the
    driver reports broken is dropped and the next use opens a fresh one, once per failure.
    """

    def __init__(self, sessions: async_sessionmaker[Any]) -> None:
        self._engine: AsyncEngine = sessions.kw["bind"]
        self._lock = asyncio.Lock()
        self._conn: AsyncConnection | None = None

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A fresh session (empty identity map, so nothing stale) on the kept connection."""
        async with self._lock:
            if self._conn is None or self._conn.closed or self._conn.invalidated:
                conn = await self._engine.connect()
                self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            session = AsyncSession(bind=self._conn, expire_on_commit=False)
            try:
                yield session
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    await self._drop()
                raise
            finally:
                await session.close()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()


class SchemaCheck:
    """Whether the database's schema is the one this code needs (``alembic_version`` at the
    head revision), cached for ``ttl_s``: a database recreated empty (or restored from an old
    dump) answers ``SELECT 1`` while every real query fails."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._head = migrations.head_revision()
        self._checked_at = -float("inf")
        self._problem: str | None = None

    async def problem(self, timeout: float = 2.0) -> str | None:
        """None when the schema is at the head revision, else what is wrong."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._checked_at < self._ttl_s:
            return self._problem
        current: str | None
        error: str | None
        try:
            async with asyncio.timeout(timeout), self._engine.connect() as conn:
                current = (
                    await conn.execute(text("SELECT version_num FROM alembic_version"))
                ).scalar()
        except (DBAPIError, OperationalError) as exc:
            current, error = None, describe_error(exc)
        else:
            error = None
        if current == self._head:
            self._problem = None
        elif error is not None and "alembic_version" in error:
            self._problem = "the database has no schema (run: contact-center migrate)"
        elif error is not None:
            self._problem = error
        else:
            self._problem = (
                f"schema at revision {current or 'none'}, expected {self._head}"
                " (run: contact-center migrate)"
            )
        self._checked_at = loop.time()
        return self._problem


def describe_error(exc: BaseException) -> str:
    """One line for a connection failure, without the SQLAlchemy boilerplate."""
    inner = getattr(exc, "orig", None) or exc
    text_ = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return f"{type(inner).__name__}: {text_}"


async def ping(engine: AsyncEngine, timeout: float = 2.0) -> None:
    """Run ``SELECT 1``; raise on failure or timeout."""
    async with asyncio.timeout(timeout), engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def wait_for_database(
    engine: AsyncEngine,
    *,
    max_delay: float = 30.0,
    give_up_after: float | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> None:
    """Retry until the database answers, logging one line per attempt (no traceback).

    ``give_up_after`` None retries forever (the server waits for its database); the CLI's
    one-shot commands pass a limit and get ``DatabaseUnavailable``.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    delay = 0.5
    url = engine.url.render_as_string(hide_password=True)
    while True:
        try:
            await ping(engine, timeout=10.0)
            return
        except (OSError, DBAPIError, OperationalError, TimeoutError) as exc:
            reason = describe_error(exc)
        elapsed = loop.time() - started
        if give_up_after is not None and elapsed >= give_up_after:
            raise DatabaseUnavailable(f"database {url} unreachable after {elapsed:.0f} s: {reason}")
        if on_retry is not None:
            on_retry(reason)
        wait = min(delay, max_delay) * random.uniform(0.8, 1.2)
        log.warning(
            "database %s unreachable (%s); retrying in %.1f s",
            url,
            reason,
            wait,
            extra={"db_url": url, "retry_in_s": round(wait, 1)},
        )
        await asyncio.sleep(wait)
        delay *= 2


def _upgrade(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        # Several instances may start together; one migrates, the others wait and find it done.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
    migrations.upgrade(conn)


def _transactional_sqlite(engine: AsyncEngine) -> AsyncEngine:
    """An engine of its own on the same SQLite file whose transactions really begin at BEGIN.

    The sqlite3 driver only opens a transaction before data changes, so CREATE TABLE and the
    other DDL of a migration would each commit at once: a server stopped mid-migration left a
    half-built schema that the next start could not migrate ("table users already exists").
    SQLite's DDL is transactional when the transaction is opened explicitly (the recipe of
    SQLAlchemy's SQLite dialect documentation), so migrations are all or nothing.
    """
    migrating = create_async_engine(engine.url, poolclass=NullPool)

    @event.listens_for(migrating.sync_engine, "connect")
    def _connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        _sqlite_pragmas(dbapi_conn, record)
        dbapi_conn.isolation_level = None  # the driver emits no BEGIN of its own

    @event.listens_for(migrating.sync_engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return migrating


async def migrate(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """Apply pending migrations, all in one transaction; return (revision before, after).

    A cancellation (the server stopped while it starts) lets the migration finish first, then
    goes on: cancelled midway, SQLite's batch operations could not roll back (the stop ended in
    PendingRollbackError and exit status 1)."""
    return await _finish_then_cancel(_migrate(engine))


async def _finish_then_cancel(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even if the caller is cancelled meanwhile; then re-raise that
    cancellation (once ``work`` is done, so nothing is left running behind the caller)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.done():  # the work itself was cancelled
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
    return result


async def _migrate(engine: AsyncEngine) -> tuple[str | None, str | None]:
    sqlite = engine.dialect.name == "sqlite"
    migrating = _transactional_sqlite(engine) if sqlite else engine
    try:
        async with migrating.connect() as conn:
            before = await conn.run_sync(migrations.current_revision)
        async with migrating.begin() as conn:
            await conn.run_sync(_upgrade)
        async with migrating.connect() as conn:
            after = await conn.run_sync(migrations.current_revision)
    finally:
        if sqlite:
            await migrating.dispose()
    if before != after:
        log.info("database migrated from %s to %s", before or "empty", after)
    return before, after
