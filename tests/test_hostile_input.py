"""Input that costs us: bodies past their route's limit (chunked too), ids past the database's
integer columns, NUL characters, JSON nested 50,000 deep, 5,000-digit numbers. Every one is a
4xx with the stable error shape, on SQLite and PostgreSQL; an unexpected failure is a 500 with
the same shape, logged once per kind, not once per request; the login throttle keeps its
memory bounded without forgetting whom it throttles."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from contact_center.http.auth import LoginThrottle
from contact_center.keys import SESSIONS
from crm_core.errors import RateLimited
from crm_core.users import service as users

BIG = 2**31  # one past PostgreSQL's INTEGER


async def _bearer(client: Any, role: str = "manager", login: str = "ivan") -> dict[str, str]:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session, login=login, role=role, password="password1", scrypt_n=1024
        )
        await session.commit()
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": "password1"})
    return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _error(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert set(body) == {"error", "message", "details"}, body
    return body


async def _chunks(size: int, piece: bytes = b" ") -> AsyncIterator[bytes]:
    """``size`` bytes sent with Transfer-Encoding: chunked (no Content-Length)."""
    sent = 0
    block = piece * 4096
    while sent < size:
        yield block
        sent += len(block)


# ---------------------------------------------------------------- sizes


async def test_a_public_endpoint_refuses_megabytes_of_json(client: Any) -> None:
    big = b'{"login": "a", "password": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    resp = await client.post(
        "/api/v1/auth/token", data=io.BytesIO(big), headers={"Content-Type": "application/json"}
    )
    body = await _error(resp, 413)
    assert body["error"] == "body-too-large"


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/api/v1/leads/web", "application/json"),
        ("/api/v1/leads/web", "application/x-www-form-urlencoded"),
        ("/api/v1/tracking/session", "text/plain"),
        ("/api/v1/auth/token", "application/json"),
    ],
)
async def test_chunked_bodies_are_bounded_while_read(client: Any, path: str, ctype: str) -> None:
    size = 64 * 1024 if "auth" not in path else 2 * 1024 * 1024
    resp = await client.post(path, data=_chunks(size), headers={"Content-Type": ctype})
    body = await _error(resp, 413)
    assert body["error"] == "body-too-large"
    assert body["details"]["limit_bytes"] in (16 * 1024, 1024 * 1024)


# ---------------------------------------------------------------- numbers and ids


async def test_ids_past_the_integer_columns_are_4xx(client: Any) -> None:
    headers = await _bearer(client)
    for path in (f"/api/v1/contacts/{BIG}", f"/api/v1/tasks/{BIG}", "/api/v1/deals/" + "9" * 40):
        body = await _error(await client.get(path, headers=headers), 404)
        assert body["error"] == "not-found"
    resp = await client.get(f"/api/v1/tasks?contact_id={BIG}", headers=headers)
    body = await _error(resp, 422)
    assert "contact_id" in body["message"]
    resp = await client.get(f"/api/v1/contacts?offset={BIG}", headers=headers)
    await _error(resp, 422)
    resp = await client.post(
        "/api/v1/tasks", json={"title": "Позвонить", "contact_id": BIG}, headers=headers
    )
    body = await _error(resp, 422)
    assert "contact_id" in body["message"]
    resp = await client.post(
        "/api/v1/tasks", json={"title": "Позвонить", "contact_id": -BIG - 1}, headers=headers
    )
    await _error(resp, 422)


async def test_absurd_numbers_are_422(client: Any) -> None:
    headers = await _bearer(client)
    for raw in (
        b'{"title": "x", "contact_id": ' + b"9" * 5000 + b"}",
        b'{"title": "x", "contact_id": NaN}',
        b'{"title": "x", "contact_id": 1e400}',
        b'{"title": "x", "contact_id": Infinity}',
    ):
        resp = await client.post(
            "/api/v1/tasks",
            data=raw,
            headers={**headers, "Content-Type": "application/json"},
        )
        await _error(resp, 422)
    resp = await client.get("/api/v1/contacts?limit=" + "9" * 5000, headers=headers)
    await _error(resp, 422)


async def test_json_nested_50000_deep_is_422(client: Any) -> None:
    headers = await _bearer(client)
    deep = b"[" * 50_000 + b"]" * 50_000
    for path, status in (
        ("/api/v1/tasks", 422),
        ("/api/v1/auth/token", 422),
        ("/api/v1/leads/web", 413),  # 100 KB: over the public forms' 16 KB before its depth
    ):
        resp = await client.post(
            path, data=io.BytesIO(deep), headers={**headers, "Content-Type": "application/json"}
        )
        await _error(resp, status)
    moderately = b'{"title": "x", "description": ' + b"[" * 40 + b"]" * 40 + b"}"
    resp = await client.post(
        "/api/v1/tasks", data=moderately, headers={**headers, "Content-Type": "application/json"}
    )
    body = await _error(resp, 422)
    assert "deeper" in body["message"]


# ---------------------------------------------------------------- NUL characters


async def test_nul_characters_are_422_everywhere(client: Any) -> None:
    headers = await _bearer(client)
    resp = await client.post("/api/v1/tasks", json={"title": "a\x00b"}, headers=headers)
    body = await _error(resp, 422)
    assert "title" in body["message"] and "NUL" in body["message"]
    resp = await client.get("/api/v1/contacts?q=%00", headers=headers)
    await _error(resp, 422)
    resp = await client.post("/api/v1/auth/token", json={"login": "a\x00", "password": "x"})
    await _error(resp, 422)
    resp = await client.get("/api/v1/recordings?call_id=1%00", headers=headers)
    await _error(resp, 422)
    # A lone surrogate ("\ud800" in JSON) is no text either: no driver can send it.
    resp = await client.post(
        "/api/v1/tasks",
        data=b'{"title": "a\\ud800b"}',
        headers={**headers, "Content-Type": "application/json"},
    )
    body = await _error(resp, 422)
    assert "title" in body["message"]


async def test_nul_in_the_login_form_is_a_russian_422_page(client: Any) -> None:
    resp = await client.post("/login", data={"login": "adm\x00in", "password": "x"})
    assert resp.status == 422
    assert "недопустимые символы" in await resp.text()
    form = b"login=admin&password=" + b"x" * 2_000_000
    resp = await client.post(
        "/login",
        data=io.BytesIO(form),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 413
    assert "Слишком большой запрос" in await resp.text()


# ---------------------------------------------------------------- unexpected failures


async def test_an_unexpected_failure_is_a_500_with_the_error_shape_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from contact_center.http.errors import error_middleware

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/v1/broken", broken)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(20):
                body = await _error(await client.get("/api/v1/broken"), 500)
                assert body["error"] == "internal-error" and "a bug" not in body["message"]
    finally:
        await client.close()
    reports = [r for r in caplog.records if "a bug" in r.getMessage()]
    assert len(reports) == 1 and reports[0].exc_info is not None


def test_the_log_limiter_reports_repeats_with_the_next_record() -> None:
    from contact_center.http.errors import LogLimiter

    limiter = LogLimiter(window_s=60)
    kind = ("RuntimeError", "x.py:1")
    assert limiter.allow(kind, now=0) == (True, 0)
    assert [limiter.allow(kind, now=t)[0] for t in range(1, 10)] == [False] * 9
    assert limiter.allow(("ValueError", "y.py:2"), now=5) == (True, 0)
    assert limiter.allow(kind, now=61) == (True, 9)


# ---------------------------------------------------------------- the login throttle


def test_a_flood_of_new_logins_does_not_unthrottle_anyone() -> None:
    now = [0.0]
    throttle = LoginThrottle(3, per_address=10**9, max_keys=1000, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("10.0.0.1", "admin")
    with pytest.raises(RateLimited):
        throttle.check("10.0.0.1", "admin")
    for i in range(150_000):  # a spray of fresh (address, login) pairs
        throttle.failed(f"10.1.{i // 256}.{i % 256}", f"user{i}")
    assert len(throttle) <= 1000  # bounded ...
    with pytest.raises(RateLimited):  # ... and the guesser is still throttled
        throttle.check("10.0.0.1", "admin")
    now[0] += LoginThrottle.WINDOW_S + 1
    throttle.check("10.0.0.1", "admin")  # until his window has passed


def test_password_spraying_from_one_address_is_throttled() -> None:
    throttle = LoginThrottle(10, per_address=30)
    for i in range(30):  # one guess at each of 30 logins
        throttle.check("198.51.100.9", f"user{i}")
        throttle.failed("198.51.100.9", f"user{i}")
    with pytest.raises(RateLimited):
        throttle.check("198.51.100.9", "user999")
    throttle.check("198.51.100.10", "user999")  # other addresses are not affected


async def test_spraying_over_the_api_is_answered_429(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_AUTH_LOGIN_ATTEMPTS_PER_ADDRESS_15MIN="5"
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    statuses = [
        (
            await client.post("/api/v1/auth/token", json={"login": f"user{i}", "password": "guess"})
        ).status
        for i in range(7)
    ]
    assert statuses == [401] * 5 + [429] * 2


async def test_several_instances_share_the_login_throttle(
    make_settings: Any,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    aiohttp_client_factory: Any,
) -> None:
    """Behind a load balancer the guesses land on every instance in turn: the limit holds
    for them together (each counting only its own let 3 × 5 guesses through)."""
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_REDIS_URL=redis_url,
        CC_REDIS_PREFIX=redis_prefix,
        CC_AUTH_LOGIN_ATTEMPTS_PER_ADDRESS_15MIN="5",
    )
    instances = [
        await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
        for _ in range(3)
    ]
    statuses = []
    for i in range(9):
        resp = await instances[i % 3].post(
            "/api/v1/auth/token", json={"login": f"user{i}", "password": "guess"}
        )
        statuses.append(resp.status)
    assert statuses == [401] * 5 + [429] * 4


async def test_the_shared_throttle_falls_back_to_its_own_count_when_redis_is_away() -> None:
    import redis.asyncio as aioredis

    from contact_center.http.auth import SharedLoginThrottle

    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    throttle = SharedLoginThrottle(LoginThrottle(3, per_address=100), dead, "cctest-dead")
    try:
        for _ in range(3):
            await throttle.check("10.0.0.7", "admin")
            await throttle.failed("10.0.0.7", "admin")
        with pytest.raises(RateLimited):
            await throttle.check("10.0.0.7", "admin")
        assert throttle.circuit.degraded
    finally:
        await dead.aclose()


# ---------------------------------------------------------------- health


async def test_healthz_fails_on_a_database_recreated_empty(client: Any) -> None:
    from sqlalchemy import inspect, text

    from contact_center.keys import ENGINE

    engine = client.app[ENGINE]
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        else:
            await conn.execute(text("PRAGMA foreign_keys=OFF"))
            names = await conn.run_sync(lambda c: inspect(c).get_table_names())
            for name in names:
                await conn.execute(text(f'DROP TABLE "{name}"'))
    resp = await client.get("/healthz")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["status"] == "fail" and "migrate" in doc["database"]["error"]


async def test_redis_out_of_connections_is_a_503_not_a_500() -> None:
    """Under a burst the Redis pool ran out of connections and every request past it was a
    500 (bench/tracking.py's probe found it); the pool now waits, and a Redis failure that
    does reach the edge is a 503 with the error shape."""
    import redis.asyncio as aioredis
    from redis.exceptions import MaxConnectionsError

    from contact_center.http.errors import error_middleware

    async def busy(_request: web.Request) -> web.Response:
        raise MaxConnectionsError("Too many connections")

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/api/v1/busy", busy)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        body = await _error(await client.get("/api/v1/busy"), 503)
        assert body["error"] == "redis-unavailable"
    finally:
        await client.close()
    assert issubclass(aioredis.BlockingConnectionPool, aioredis.ConnectionPool)
