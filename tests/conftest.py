"""Shared fixtures: databases on SQLite and PostgreSQL, real Redis, settings and app clients.

Service-backed tests read ``CC_TEST_DATABASE_URL`` (a PostgreSQL URL whose database is used only
to create and drop per-test databases) and ``CC_TEST_REDIS_URL``. Without them those tests skip
with a reason; with ``CC_REQUIRE_SERVICES=1`` a missing or unreachable service fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy.engine import make_url

from contact_center.config import Settings, load_settings

REQUIRE_SERVICES = os.environ.get("CC_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def need_service(reason: str) -> NoReturn:
    """Skip for a missing service, or fail when the run requires services."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (CC_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def require_ffmpeg() -> None:
    """For tests that convert audio: skip without ffmpeg, or fail under CC_REQUIRE_SERVICES=1
    (CI installs it; a conversion test that silently skips there proves nothing)."""
    from recordings.convert import find_ffmpeg

    if find_ffmpeg() is None:
        need_service("ffmpeg is not installed (scripts/install-system-deps.sh installs it)")


# ---------------------------------------------------------------- databases


async def _migrate_url(url: str) -> None:
    from contact_center import db
    from contact_center.config import DatabaseSettings

    engine = db.create_engine(DatabaseSettings(url=url))
    try:
        await db.migrate(engine)
    finally:
        await engine.dispose()


def _asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def pg_admin(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(url), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (much faster than migrating each time)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.sqlite3"
    asyncio.run(_migrate_url(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[str, str]]:
    """(server URL, template database name): migrated once, cloned per test."""
    base = os.environ.get("CC_TEST_DATABASE_URL")
    if not base:
        need_service("CC_TEST_DATABASE_URL not set: PostgreSQL tests skipped")
    name = f"cc_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(pg_admin(base, f'CREATE DATABASE "{name}"'))
    except (OSError, Exception) as exc:  # asyncpg raises its own hierarchy too
        need_service(f"PostgreSQL at {make_url(base).render_as_string()} unusable: {exc}")
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    asyncio.run(_migrate_url(url))
    yield base, name
    asyncio.run(pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of its own for one test, on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "cc.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    yield request.getfixturevalue("postgres_url")


@contextlib.contextmanager
def own_database(base: str, template: str | None = None) -> Iterator[str]:
    """A PostgreSQL database of its own on ``base``'s server — a copy of ``template``, or
    empty — its URL; dropped afterwards."""
    name = f"cc_t_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{template}"' if template else ""
    asyncio.run(pg_admin(base, f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_template: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database of its own for one test."""
    with own_database(*postgres_template) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[Any]:
    from contact_center import db
    from contact_center.config import DatabaseSettings

    eng = db.create_engine(DatabaseSettings(url=database_url))
    yield eng
    await eng.dispose()


@pytest.fixture
async def session(engine: Any) -> AsyncIterator[Any]:
    from contact_center import db

    async with db.sessionmaker(engine)() as s:
        yield s


# ---------------------------------------------------------------- redis


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("CC_TEST_REDIS_URL")
    if not url:
        need_service("CC_TEST_REDIS_URL not set: Redis tests skipped")
    return url


@pytest.fixture
def redis_prefix() -> str:
    """A key/channel prefix of its own per test, so tests sharing one Redis never meet."""
    return f"cctest:{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url, socket_connect_timeout=3)
    try:
        await client.ping()
    except (aioredis.RedisError, OSError) as exc:
        await client.aclose()
        need_service(f"Redis at {redis_url} unreachable: {exc}")
    yield client
    await client.aclose()


# ---------------------------------------------------------------- settings and apps


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings from the repository's config.yaml plus ``CC_*``-style overrides."""

    def build(**env: str) -> Settings:
        base = {
            "CC_AUTH_SCRYPT_N": "1024",  # fast hashing in tests
            "CC_PBX": "[]",
            "CC_RECORDINGS_STORAGE_DIR": str(tmp_path / "recordings"),
            # Tests read what a webhook did right after its answer: answered once processed
            # (the server's default answers once stored; tests/test_drill_kill9_inbox.py).
            "CC_INBOX_ACK_WAIT_S": "5",
        }
        base.update(env)
        return load_settings(ROOT / "config.yaml", env=base)

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(CC_DATABASE_URL=database_url)


@pytest.fixture
async def client(settings: Settings, aiohttp_client_factory: Callable[..., Any]) -> Any:
    from contact_center.app import create_app

    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


@pytest.fixture
async def aiohttp_client_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start apps on loopback; close them (running their cleanup) at the end of the test."""
    from aiohttp.test_utils import TestClient, TestServer

    clients: list[TestClient[Any, Any]] = []

    async def make(app: Any) -> TestClient[Any, Any]:
        c: TestClient[Any, Any] = TestClient(TestServer(app))
        await c.start_server()
        clients.append(c)
        return c

    yield make
    for c in reversed(clients):
        await c.close()
