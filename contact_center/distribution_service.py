"""Distribution wired into the server: the rule book cached for the dialplan, the answer to
"which extension for this caller on this DID", and the policy the request services take."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

from contact_center.config import Settings
from contact_center.keys import BUS, CLOCK, RULES, SESSIONS, SETTINGS
from contact_center.tracking_service import TRACKER
from crm_core.distribution import service as distribution
from crm_core.distribution.requests import Policy
from crm_core.events import DomainEvent
from crm_core.phones import try_normalize_phone

log = logging.getLogger(__name__)

# Events after which the cached rule book is wrong (tracking.changed: regions and sources,
# rare admin writes). Changes that publish no event (a user deactivated, an extension
# edited) are picked up within rule_cache_s.
INVALIDATING = ("distribution.rules_changed", "user.created", "tracking.changed")


def policy_of(settings: Settings) -> Policy:
    cfg = settings.distribution
    return Policy(
        callback_minutes=cfg.callback_minutes,
        default_timezone=settings.locale.timezone,
        queue_audience=tuple(cfg.queue_audience),
    )


class RuleCache:
    """The rule book in memory: read at most every ``max_age_s`` and dropped at once by a
    change event (from any instance, over the bus). One reload at a time: a burst of calls
    after a change costs one read."""

    def __init__(self, max_age_s: float) -> None:
        self.max_age_s = max_age_s
        self._book: distribution.RuleBook | None = None
        self._loaded_at = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._book = None
        self._generation += 1

    async def on_event(self, event: DomainEvent) -> None:
        self.invalidate()

    def _fresh(self) -> distribution.RuleBook | None:
        if self._book is not None and time.monotonic() - self._loaded_at < self.max_age_s:
            return self._book
        return None

    async def get(self, app: web.Application) -> distribution.RuleBook:
        book = self._fresh()
        if book is not None:
            return book
        async with self._lock:
            book = self._fresh()  # loaded while this call waited
            if book is not None:
                return book
            generation = self._generation
            async with app[SESSIONS]() as session:
                book = await distribution.load_rulebook(
                    session, default_timezone=app[SETTINGS].locale.timezone
                )
            if generation == self._generation:  # no change arrived while reading
                self._book, self._loaded_at = book, time.monotonic()
            return book


RULE_CACHE = web.AppKey("distribution_rule_cache", RuleCache)


class DialSessions:
    """Sessions for the dialplan's lookups. On PostgreSQL, a small engine of its own: autocommit
    (no ``BEGIN``/``COMMIT`` round trips around its two statements), no pre-ping, and
    ``synchronous_commit`` off, so a round-robin turn does not wait on the WAL flush (a crash
    may forget the last turns: harmless for taking turns). SQLite shares the server's engine.
    """

    def __init__(self, settings: Settings, sessions: async_sessionmaker[Any]) -> None:
        self._engine: AsyncEngine | None = None
        self.factory = sessions
        if make_url(settings.database.url).get_backend_name() == "postgresql":
            self._engine = create_async_engine(
                settings.database.url,
                pool_size=_DIAL_POOL,
                max_overflow=0,
                isolation_level="AUTOCOMMIT",
                connect_args={"server_settings": {"synchronous_commit": "off"}},
            )
            self.factory = async_sessionmaker(self._engine, expire_on_commit=False)

    @property
    def autocommit(self) -> bool:
        """Whether every statement commits itself (the PostgreSQL engine): nothing to commit."""
        return self._engine is not None

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()


DIAL_SESSIONS = web.AppKey("distribution_dial_sessions", DialSessions)
_DIAL_POOL = 4  # concurrent lookups; more would only queue at the database of a small server


def setup(app: web.Application) -> None:
    """The rule cache (dropped by change events) and the dialplan's own sessions."""
    cache = RuleCache(app[SETTINGS].distribution.rule_cache_s)
    app[RULE_CACHE] = cache

    async def resources(app: web.Application) -> AsyncIterator[None]:
        app[BUS].subscribe(cache.on_event, name="distribution-rule-cache", events=INVALIDATING)
        app[DIAL_SESSIONS] = DialSessions(app[SETTINGS], app[SESSIONS])
        yield
        await app[DIAL_SESSIONS].close()

    app.cleanup_ctx.append(resources)


@dataclass(frozen=True)
class DialAnswer:
    extension: str
    user_id: int | None = None
    reason: str = "default"
    queued: bool = False
    region_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "extension": self.extension,
            "user_id": self.user_id,
            "reason": self.reason,
            "queued": self.queued,
            "region_id": self.region_id,
        }


async def dial(app: web.Application, caller: str, did: str, pbx: str | None) -> DialAnswer:
    """The extension for ``caller`` dialing ``did``; ``distribution.default_extension`` when
    nobody fits, when anything fails, or when the answer takes longer than
    ``distribution.dial_timeout_ms`` (the PBX must never wait on us)."""
    cfg = app[SETTINGS].distribution
    try:
        async with asyncio.timeout(cfg.dial_timeout_ms / 1000):
            return await _decide(app, caller, did, pbx)
    except TimeoutError:
        log.warning("dialplan lookup for %s on %s timed out; default extension", caller, did)
        return DialAnswer(cfg.default_extension, reason="timeout")
    except Exception:  # the safe default is the point: log it and let the call through
        log.exception("dialplan lookup for %s on %s failed; default extension", caller, did)
        return DialAnswer(cfg.default_extension, reason="error")


async def _decide(app: web.Application, caller: str, did: str, pbx: str | None) -> DialAnswer:
    """The call's region is the one its lead will get (:meth:`TrackingService.locate_call`:
    the tracking session holding a pool number, the number's region, ``did_regions``,
    ``default_region``); a pool number costs one lease-store read, the directory and the
    rule book are in memory."""
    cfg = app[SETTINGS].distribution
    rules = app[RULES]
    book = await app[RULE_CACHE].get(app)
    did_e164 = try_normalize_phone(did, rules.default_region) or did
    now = app[CLOCK].now()
    dial_sessions = app[DIAL_SESSIONS]
    async with dial_sessions.factory() as session:
        _, region = await app[TRACKER].locate_call(session, did_e164, now)
        region_id = region.id
        assignment = await distribution.distribute(
            session,
            region_id,
            try_normalize_phone(caller, rules.default_region),
            now,
            "call",
            rules=rules,
            book=book,
        )
        if not dial_sessions.autocommit:
            await session.commit()  # a round-robin turn was taken
    extension = book.extension_of(assignment.user_id, pbx)
    return DialAnswer(
        extension=extension or cfg.default_extension,
        user_id=assignment.user_id if extension else None,
        reason=assignment.reason if extension else f"{assignment.reason}:no_extension",
        queued=assignment.queued,
        region_id=region_id,
    )
