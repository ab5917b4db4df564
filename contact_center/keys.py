"""Typed keys of the long-lived objects held by the aiohttp application.

Every object here is built once, by :func:`contact_center.app.create_app` and the runtime it
lists, and handed to whoever needs it; HTTP handlers read them through these keys.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from contact_center.bus import EventBus
from contact_center.config import Settings
from contact_center.distribution_service import Dialplan
from contact_center.health import StatusAggregator
from contact_center.http.api import Api
from contact_center.inbox_service import Inbox
from contact_center.pbx import PbxLinks
from contact_center.rate_limit import RateLimiter
from contact_center.recordings_service import RecordingsRuntime
from contact_center.scheduler import Scheduler
from contact_center.telephony import Telephony
from contact_center.tracking_service import TrackingService
from crm_core.clock import Clock
from crm_core.rules import CrmRules

# What create_app sets before anything runs.
SETTINGS = web.AppKey("settings", Settings)
INSTANCE_ID = web.AppKey("instance_id", str)
CLOCK = web.AppKey("clock", Clock)
RULES = web.AppKey("rules", CrmRules)
METRICS = web.AppKey("metrics", CollectorRegistry)
HEALTH = web.AppKey("health", StatusAggregator)
API = web.AppKey("api", Api)

# The runtime, in the order it is built (see contact_center.app).
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[Any])
REDIS: web.AppKey[aioredis.Redis | None] = web.AppKey("redis")  # None: embedded mode
BUS = web.AppKey("bus", EventBus)
LIMITER = web.AppKey("rate_limiter", RateLimiter)  # website requests, number lookups
TRACKER = web.AppKey("tracking", TrackingService)
DIALPLAN = web.AppKey("dialplan", Dialplan)
RECORDINGS: web.AppKey[RecordingsRuntime | None] = web.AppKey("recordings")  # None: disabled
INBOX = web.AppKey("inbox", Inbox)  # the channels: webhooks in, the outbox out
SCHEDULER = web.AppKey("scheduler", Scheduler)
TELEPHONY = web.AppKey("telephony", Telephony)
PBX = web.AppKey("pbx", PbxLinks)
