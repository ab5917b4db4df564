"""The composition root: builds every long-lived object from the settings and hands them on.

Each resource is one ``cleanup_ctx`` entry (set up in order, torn down in reverse, and only if
its set-up succeeded), stored under a typed key from :mod:`contact_center.keys`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from contact_center import __version__, pbx, ws
from contact_center import api as api_slices
from contact_center import db as database
from contact_center.bus import BusMetrics, EventBus, RedisEventBus
from contact_center.config import Settings
from contact_center.health import StatusAggregator
from contact_center.http import auth, proxies, security
from contact_center.http.api import DEFAULT_MAX_BODY, Api
from contact_center.http.errors import error_middleware
from contact_center.keys import (
    API,
    BUS,
    CLOCK,
    ENGINE,
    HEALTH,
    INSTANCE_ID,
    METRICS,
    REDIS,
    RULES,
    SESSIONS,
    SETTINGS,
)
from contact_center.web import pages
from crm_core.clock import Clock, SystemClock
from crm_core.users import service as users

log = logging.getLogger(__name__)

HTTP_METRICS = web.AppKey("http_metrics", tuple)


def _stdout(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


async def _freeze_heap(_app: web.Application) -> None:
    """Move what start-up built (modules, metadata, compiled statements: most of the heap)
    out of the garbage collector's reach. A full collection otherwise walks it all and stalls
    the event loop for ~100 ms every few minutes under load, which is a pop-up shown late."""
    gc.collect()
    gc.freeze()


def freeze_heap_after_startup(app: web.Application) -> None:
    """For long-running processes (``serve``, ``demo``); tests build many apps and skip it."""
    app.on_startup.append(_freeze_heap)


def create_app(
    settings: Settings,
    *,
    instance_id: str | None = None,
    announce: Callable[[str], None] = _stdout,
    clock: Clock | None = None,
) -> web.Application:
    """Build the aiohttp application for ``settings``.

    ``announce`` receives the one-time text meant for the operator's terminal (the first admin's
    password); it never goes to the log. ``clock`` defaults to the system clock.
    """
    middlewares: list[Any] = [_metrics_middleware, error_middleware]
    if settings.server.trusted_proxies:
        middlewares.append(proxies.middleware(proxies.networks(settings.server.trusted_proxies)))
    middlewares.append(auth.auth_middleware)
    # Operations raise or lower it for their own body (Api.route(max_body=...)).
    app = web.Application(middlewares=middlewares, client_max_size=DEFAULT_MAX_BODY)
    app[SETTINGS] = settings
    app[INSTANCE_ID] = instance_id or uuid.uuid4().hex[:12]
    registry = CollectorRegistry()
    app[METRICS] = registry
    app[HTTP_METRICS] = (
        Counter(
            "cc_http_requests_total",
            "HTTP requests",
            ["method", "route", "status"],
            registry=registry,
        ),
        Histogram(
            "cc_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        ),
    )
    app[HEALTH] = StatusAggregator()

    app[RULES] = settings.crm.rules()
    app[CLOCK] = clock or SystemClock()
    api = Api()
    api.operations.extend(auth.api.operations)
    app[API] = api

    app.cleanup_ctx.append(_redis_ctx)
    app.cleanup_ctx.append(_database_ctx(announce))
    app.cleanup_ctx.append(_bus_ctx)

    security.setup(app)
    auth.setup(app)
    ws.setup(app)
    pages.setup(app)
    api_slices.install(app, api)
    pbx.setup(app)
    api.install(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    return app


# ---------------------------------------------------------------- resources


async def _redis_ctx(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].redis.url
    if not url:
        app[HEALTH].add("redis", lambda: {"status": "disabled"})
        yield
        return
    # A blocking pool: past max_connections a request waits (up to 5 s) for a free connection;
    # the default pool raised "Too many connections" (a 500) under a burst of page sessions.
    client = aioredis.Redis.from_pool(
        aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
    )
    app[REDIS] = client

    async def probe() -> dict[str, Any]:
        try:
            async with asyncio.timeout(2):
                await client.ping()
        except (aioredis.RedisError, OSError, TimeoutError) as exc:
            return {"status": "fail", "error": f"{type(exc).__name__}: {exc}"}
        return {"status": "ok"}

    app[HEALTH].add("redis", probe)
    yield
    await client.aclose()


def _database_ctx(
    announce: Callable[[str], None],
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        engine = database.create_engine(settings.database)
        try:
            log.info("connecting to database %s", database.safe_url(settings.database.url))
            await database.wait_for_database(
                engine, max_delay=settings.database.connect_retry_max_s
            )
            if settings.database.migrate_on_start:
                await database.migrate(engine)
            sessions = database.sessionmaker(engine)
            async with sessions() as session:
                created = await users.ensure_bootstrap_admin(
                    session,
                    login=settings.auth.bootstrap_admin_login,
                    scrypt_n=settings.auth.scrypt_n,
                )
                await session.commit()
        except BaseException:
            await engine.dispose()
            raise
        if created is not None:
            user, password = created
            log.warning("first start: created administrator %r", user.login)
            announce(
                f"First start: created administrator {user.login!r} with one-time password "
                f"{password} — sign in and change it; it is not shown again."
            )
        app[ENGINE] = engine
        app[SESSIONS] = sessions
        schema = database.SchemaCheck(engine)

        async def probe() -> dict[str, Any]:
            started = time.perf_counter()
            try:
                await database.ping(engine, timeout=2.0)
            except Exception as exc:
                return {"status": "fail", "error": database.describe_error(exc)}
            problem = await schema.problem()
            if problem is not None:
                return {"status": "fail", "backend": engine.dialect.name, "error": problem}
            return {
                "status": "ok",
                "backend": engine.dialect.name,
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            }

        app[HEALTH].add("database", probe)
        yield
        await engine.dispose()

    return ctx


async def _bus_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = BusMetrics(app[METRICS])
    bus: EventBus
    if REDIS in app:
        bus = RedisEventBus(
            app[REDIS],
            prefix=app[SETTINGS].redis.prefix,
            instance_id=app[INSTANCE_ID],
            metrics=metrics,
        )
    else:
        bus = EventBus(metrics=metrics)
    app[BUS] = bus
    app[HEALTH].add("bus", bus.provide_status)
    await bus.start()
    yield
    await bus.close()


# ---------------------------------------------------------------- handlers


@web.middleware
async def _metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        # The route pattern, not the path, keeps label cardinality bounded.
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        requests, latency = request.app[HTTP_METRICS]
        requests.labels(request.method, route, str(status)).inc()
        latency.labels(request.method, route).observe(time.perf_counter() - started)


async def healthz(request: web.Request) -> web.Response:
    healthy, doc = await request.app[HEALTH].collect()
    doc["version"] = __version__
    doc["instance"] = request.app[INSTANCE_ID]
    return web.json_response(doc, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS])
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[API].openapi())
