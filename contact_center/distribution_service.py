"""Distribution wired into the server: the rule book cached for the dialplan, the answer to
"which extension for this caller on this DID", and the policy the request services take."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from contact_center.config import Settings
from contact_center.tracking_service import TrackingService
from crm_core.clock import Clock
from crm_core.distribution import service as distribution
from crm_core.distribution.requests import Policy
from crm_core.events import DomainEvent
from crm_core.phones import try_normalize_phone
from crm_core.rules import CrmRules

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

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, max_age_s: float, timezone: str
    ) -> None:
        self._sessions = sessions
        self._timezone = timezone
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

    async def get(self) -> distribution.RuleBook:
        book = self._fresh()
        if book is not None:
            return book
        async with self._lock:
            book = self._fresh()  # loaded while this call waited
            if book is not None:
                return book
            generation = self._generation
            async with self._sessions() as session:
                book = await distribution.load_rulebook(session, default_timezone=self._timezone)
            if generation == self._generation:  # no change arrived while reading
                self._book, self._loaded_at = book, time.monotonic()
            return book


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


_DIAL_POOL = 4  # concurrent lookups; more would only queue at the database of a small server


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


class Dialplan:
    """The dialplan's question, "which extension for ``caller`` dialing ``did``": the call's
    region from call tracking, then the region's distribution rules (from the cached rule
    book), answered on sessions of its own."""

    def __init__(
        self,
        settings: Settings,
        *,
        sessions: async_sessionmaker[AsyncSession],
        tracker: TrackingService,
        rules: CrmRules,
        clock: Clock,
    ) -> None:
        self.settings = settings.distribution
        self.tracker = tracker
        self.rules = rules
        self.clock = clock
        self.cache = RuleCache(
            sessions, max_age_s=self.settings.rule_cache_s, timezone=settings.locale.timezone
        )
        self.sessions = DialSessions(settings, sessions)

    async def close(self) -> None:
        await self.sessions.close()

    async def dial(self, caller: str, did: str, pbx: str | None) -> DialAnswer:
        """The extension for ``caller`` dialing ``did``; ``distribution.default_extension``
        when nobody fits, when anything fails, or when the answer takes longer than
        ``distribution.dial_timeout_ms`` (the PBX must never wait on us)."""
        cfg = self.settings
        try:
            async with asyncio.timeout(cfg.dial_timeout_ms / 1000):
                return await self._decide(caller, did, pbx)
        except TimeoutError:
            log.warning("dialplan lookup for %s on %s timed out; default extension", caller, did)
            return DialAnswer(cfg.default_extension, reason="timeout")
        except Exception:  # the safe default is the point: log it and let the call through
            log.exception("dialplan lookup for %s on %s failed; default extension", caller, did)
            return DialAnswer(cfg.default_extension, reason="error")

    async def _decide(self, caller: str, did: str, pbx: str | None) -> DialAnswer:
        """The call's region is the one its lead will get (:meth:`TrackingService.locate_call`:
        the tracking session holding a pool number, the number's region, ``did_regions``,
        ``default_region``); a pool number costs one lease-store read, the directory and the
        rule book are in memory."""
        rules = self.rules
        book = await self.cache.get()
        did_e164 = try_normalize_phone(did, rules.default_region) or did
        now = self.clock.now()
        dial_sessions = self.sessions
        async with dial_sessions.factory() as session:
            _, region = await self.tracker.locate_call(session, did_e164, now)
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
            extension=extension or self.settings.default_extension,
            user_id=assignment.user_id if extension else None,
            reason=assignment.reason if extension else f"{assignment.reason}:no_extension",
            queued=assignment.queued,
            region_id=region_id,
        )
