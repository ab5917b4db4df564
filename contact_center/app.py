"""The composition root: the one place that builds the server's objects and hands them on.

:func:`create_app` shows the whole object graph. The runtime is a list of steps, in dependency
order; each step builds its services from those built before it (passing them in by
constructor), stores them under a typed key of :mod:`contact_center.keys`, and is one
``cleanup_ctx`` entry: started in order when the server starts, stopped in reverse, and only
if it started. HTTP slices then only register routes; their handlers read the services through
the same keys. No service looks another up at run time.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contact_center import api as api_slices
from contact_center import db as database
from contact_center import distribution_service, i18n, recordings_service, tracking_service, ws
from contact_center.bus import BusMetrics, EventBus, RedisEventBus
from contact_center.config import Settings
from contact_center.health import StatusAggregator
from contact_center.http import auth, ops, proxies, security, webhooks
from contact_center.http.api import DEFAULT_MAX_BODY, Api
from contact_center.http.errors import error_middleware
from contact_center.inbox_service import Inbox
from contact_center.keys import (
    API,
    BUS,
    CLOCK,
    DIALPLAN,
    ENGINE,
    HEALTH,
    INBOX,
    INSTANCE_ID,
    LIMITER,
    METRICS,
    PBX,
    RECORDINGS,
    REDIS,
    RULES,
    SCHEDULER,
    SESSIONS,
    SETTINGS,
    TELEPHONY,
    TRACKER,
)
from contact_center.pbx import PbxLinks
from contact_center.rate_limit import RateLimiter
from contact_center.scheduler import JobHandlers, Scheduler
from contact_center.startup import StartupProgress
from contact_center.telephony import Telephony
from contact_center.web import card_fields, pages
from contact_center.web.shell import MENU_KEY
from crm_core.clock import Clock, SystemClock
from crm_core.conversations import service as conversations
from crm_core.deals.pipelines import sync_pipelines
from crm_core.invoices import service as invoices
from crm_core.jobs.service import JobHandler
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tracking.events import TrackingChanged
from crm_core.users import service as users
from crm_core.users.events import TokensRevoked

log = logging.getLogger(__name__)

Step = Callable[[web.Application], AsyncIterator[None]]


def _stdout(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def create_app(
    settings: Settings,
    *,
    instance_id: str | None = None,
    announce: Callable[[str], None] = _stdout,
    clock: Clock | None = None,
    progress: StartupProgress | None = None,
) -> web.Application:
    """The server for ``settings``.

    ``announce`` receives the one-time text meant for the operator's terminal (the first admin's
    password); it never goes to the log. ``clock`` defaults to the system clock. ``progress``
    learns what the start waits for (``serve`` shows it on the port meanwhile).
    """
    registry = CollectorRegistry()
    http_metrics = ops.HttpMetrics(registry)
    middlewares: list[Any] = [http_metrics.middleware, error_middleware]
    if settings.server.trusted_proxies:
        middlewares.append(proxies.middleware(proxies.networks(settings.server.trusted_proxies)))
    middlewares.append(auth.auth_middleware)
    # Operations raise or lower it for their own body (Api.route(max_body=...)).
    app = web.Application(middlewares=middlewares, client_max_size=DEFAULT_MAX_BODY)

    # What everything else is built from.
    app[SETTINGS] = settings
    app[INSTANCE_ID] = instance_id or uuid.uuid4().hex[:12]
    app[CLOCK] = clock or SystemClock()
    app[RULES] = settings.crm.rules()
    i18n.add_configured_texts(card_fields.configured_texts(app[RULES]))  # custom field labels
    app[METRICS] = registry
    app[HEALTH] = StatusAggregator()
    app[ws.HUB] = ws.Hub()
    app[HEALTH].add("ws", app[ws.HUB].provide_status)
    _template_engine(app)  # the workspace's pages are rendered from templates
    app[MENU_KEY] = pages.menu()

    # The runtime, in dependency order.
    app.cleanup_ctx.extend(
        (
            _database(announce, progress or StartupProgress()),  # ENGINE, SESSIONS
            _redis,  # REDIS (None: the embedded mode)
            _bus,  # BUS: in-process, or fanned out over Redis pub/sub
            _rate_limits,  # LIMITER of the public endpoints, THROTTLE of sign-ins
            _tracking,  # TRACKER: call tracking (number leases, attribution)
            _distribution,  # DIALPLAN: who takes a call of a region
            _recordings,  # RECORDINGS: storage and converters (None when switched off)
            _channels,  # INBOX: the channel adapters (before the scheduler runs their outbox)
            _scheduler,  # SCHEDULER: durable jobs of tasks, invoices, recordings
            _telephony,  # TELEPHONY and PBX: the AMI links feeding the call service
            _websocket_hub,  # HUB: the bus's events to the browsers
        )
    )

    # HTTP: routes only; handlers read the services above through contact_center.keys.
    api = Api()
    api.operations.extend(auth.api.operations)
    app[API] = api
    security.setup(app)  # security headers on every response
    auth.routes(app)
    ws.routes(app)
    app.on_shutdown.append(ws.on_shutdown)  # sockets closed before in-flight requests drain
    webhooks.routes(app)
    pages.routes(app)
    api_slices.install(app, api)
    api.install(app)
    ops.routes(app)
    return app


def _template_engine(app: web.Application) -> None:
    """Jinja2 through aiohttp-jinja2: every template autoescaped, an undefined name an error."""
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader(*pages.TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"], default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["zip"] = zip


# ---------------------------------------------------------------- the runtime's steps


def _database(announce: Callable[[str], None], progress: StartupProgress) -> Step:
    """The engine, once the database answers; migrated, the first admin, the pipelines."""

    async def step(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        engine = database.create_engine(settings.database)
        try:
            log.info("connecting to database %s", database.safe_url(settings.database.url))
            await database.wait_for_database(
                engine,
                max_delay=settings.database.connect_retry_max_s,
                on_retry=progress.database_unreachable,
            )
            progress.step = "migrating the database"
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
            await _sync_pipelines(sessions, app[RULES])
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

    return step


async def _sync_pipelines(sessions: async_sessionmaker[AsyncSession], rules: CrmRules) -> None:
    """Mirror the configured pipelines into the database. Several instances may start at once;
    the loser of the insert race finds the rows there."""
    for attempt in (1, 2):
        async with sessions() as session:
            try:
                report = await sync_pipelines(session, rules)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                if attempt == 2:
                    raise
                continue
        if report.changed:
            log.info(
                "pipelines synchronised: created %s, updated %s, deactivated %s",
                report.created,
                report.updated,
                report.deactivated,
            )
        return


async def _redis(app: web.Application) -> AsyncIterator[None]:
    url = app[SETTINGS].redis.url
    if not url:
        app[REDIS] = None
        app[HEALTH].add("redis", lambda: {"status": "disabled"})
        yield
        return
    cfg = app[SETTINGS].redis
    # A bounded pool: past max_connections an operation waits (pool_timeout_s) for one instead
    # of failing; a connection Redis dropped (a restart) is retried once on a fresh one.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=cfg.max_connections,
        timeout=cfg.pool_timeout_s,
        socket_timeout=cfg.socket_timeout_s,
        socket_connect_timeout=cfg.socket_timeout_s,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    client = aioredis.Redis.from_pool(pool)  # the client closes the pool
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


async def _bus(app: web.Application) -> AsyncIterator[None]:
    metrics = BusMetrics(app[METRICS])
    redis = app[REDIS]
    bus = (
        RedisEventBus(
            redis,
            prefix=app[SETTINGS].redis.prefix,
            instance_id=app[INSTANCE_ID],
            metrics=metrics,
        )
        if redis is not None
        else EventBus(metrics=metrics)
    )
    app[BUS] = bus
    app[HEALTH].add("bus", bus.provide_status)
    await bus.start()
    yield
    await bus.close()


async def _rate_limits(app: web.Application) -> AsyncIterator[None]:
    clock = app[CLOCK]
    app[LIMITER] = RateLimiter(
        app[REDIS], app[SETTINGS].redis.prefix, clock=lambda: clock.now().timestamp()
    )
    auth_settings = app[SETTINGS].auth
    app[auth.THROTTLE] = auth.SharedLoginThrottle(
        auth.LoginThrottle(
            auth_settings.login_attempts_per_15min,
            per_address=auth_settings.login_attempts_per_address_15min,
        ),
        app[REDIS],
        app[SETTINGS].redis.prefix,
        clock=lambda: clock.now().timestamp(),
    )
    yield


async def _tracking(app: web.Application) -> AsyncIterator[None]:
    tracker, config_changed = await tracking_service.open_service(
        app[SETTINGS], sessions=app[SESSIONS], redis=app[REDIS], clock=app[CLOCK]
    )
    app[TRACKER] = tracker
    app[HEALTH].add("tracking", tracker.provide_status)
    bus = app[BUS]
    bus.subscribe(tracker.on_event, name="tracking-directory", events=("tracking.changed",))
    if config_changed:  # other running instances reload their directories
        await bus.publish(TrackingChanged(entity="config", entity_id=0))
    tracker.writer.start()
    yield
    await tracker.writer.close()


async def _distribution(app: web.Application) -> AsyncIterator[None]:
    dialplan = distribution_service.Dialplan(
        app[SETTINGS],
        sessions=app[SESSIONS],
        tracker=app[TRACKER],
        rules=app[RULES],
        clock=app[CLOCK],
    )
    app[DIALPLAN] = dialplan
    app[BUS].subscribe(
        dialplan.cache.on_event,
        name="distribution-rule-cache",
        events=distribution_service.INVALIDATING,
    )
    yield
    await dialplan.close()


async def _recordings(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    if not settings.recordings.enabled:
        app[RECORDINGS] = None
        yield
        return
    runtime = recordings_service.open_runtime(
        settings.recordings,
        clock=app[CLOCK],
        timezone=settings.locale.timezone,
        registry=app[METRICS],
    )
    app[RECORDINGS] = runtime
    app[HEALTH].add("recordings", runtime.provide_status)
    try:
        yield
    finally:
        app[HEALTH].remove("recordings")
        await runtime.close()


async def _channels(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    recordings = app[RECORDINGS]
    inbox = Inbox(
        settings.channels,
        sessions=app[SESSIONS],
        bus=app[BUS],
        rules=app[RULES],
        clock=app[CLOCK],
        timezone=settings.locale.timezone,
        rulebook=app[DIALPLAN].cache.get,
        capacity=settings.distribution.max_open_conversations,
        off_hours_reply=settings.distribution.off_hours_reply,
        storage=recordings.storage if recordings is not None else None,
        work_dir=Path(settings.recordings.work_dir),
        ack_wait=settings.inbox.ack_wait_s,
        batch=settings.inbox.batch,
        direct_below=settings.inbox.direct_below,
        direct_wait=settings.inbox.direct_wait_s,
    )
    app[INBOX] = inbox
    app[HEALTH].add("channels", inbox.provide_status)
    inbox.start()  # the deliveries' worker and the IMAP readers; stopped by close()
    try:
        yield
    finally:
        app[HEALTH].remove("channels")
        await inbox.close()


async def _scheduler(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].scheduler
    handlers: dict[str, JobHandler] = {
        tasks.REMINDER_JOB: tasks.remind_task,
        invoices.REMINDER_JOB: invoices.remind_invoice,
        conversations.SEND_JOB: app[INBOX].send_job,
        conversations.MEDIA_JOB: app[INBOX].media_job,
    }
    recordings = app[RECORDINGS]
    if recordings is not None:
        handlers.update(recordings_service.job_handlers(recordings))
    scheduler = Scheduler(
        sessions=app[SESSIONS],
        bus=app[BUS],
        clock=app[CLOCK],
        handlers=JobHandlers(handlers),
        worker_id=f"{app[INSTANCE_ID]}:{os.getpid()}",
        interval=settings.interval_s,
        batch=settings.batch,
        concurrency=settings.concurrency,
        lease=timedelta(seconds=settings.lease_s),
        registry=app[METRICS],
    )
    app[SCHEDULER] = scheduler
    app[HEALTH].add("scheduler", scheduler.provide_status)
    scheduler.start()
    yield
    await scheduler.close()
    app[HEALTH].remove("scheduler")


async def _telephony(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    telephony = Telephony(
        settings=settings,
        sessions=app[SESSIONS],
        bus=app[BUS],
        rules=app[RULES],
        clock=app[CLOCK],
        tracker=app[TRACKER],
    )
    links = PbxLinks(
        settings,
        telephony=telephony,
        clock=app[CLOCK],
        redis=app[REDIS],
        instance_id=app[INSTANCE_ID],
    )
    app[TELEPHONY] = telephony
    app[PBX] = links
    app[HEALTH].add("telephony", telephony.provide_status)
    for name, link in links.links.items():
        app[HEALTH].add_to_group("pbx", name, link.provide_status)
    app[METRICS].register(links.collector())
    await telephony.start()
    await links.start()
    yield
    await links.close()
    await telephony.close()


async def _websocket_hub(app: web.Application) -> AsyncIterator[None]:
    hub, bus = app[ws.HUB], app[BUS]
    # Pushes inline (the pop-up's latency); revocations close sockets, so they are queued.
    pushes = bus.subscribe_inline(hub.deliver, name="ws")
    revocations = bus.subscribe(hub.on_event, name="ws-revocations", events=(TokensRevoked.name,))
    yield
    await bus.unsubscribe(revocations)
    await bus.unsubscribe(pushes)


# ---------------------------------------------------------------- long-running processes


async def _freeze_heap(_app: web.Application) -> None:
    """Move what start-up built (modules, metadata, compiled statements: most of the heap)
    out of the garbage collector's reach. A full collection otherwise walks it all and stalls
    the event loop for ~100 ms every few minutes under load, which is a pop-up shown late."""
    gc.collect()
    gc.freeze()


def freeze_heap_after_startup(app: web.Application) -> None:
    """For long-running processes (``serve``, ``demo``); tests build many apps and skip it."""
    app.on_startup.append(_freeze_heap)
