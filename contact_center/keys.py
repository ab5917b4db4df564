"""Typed keys of the long-lived objects held by the aiohttp application."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from contact_center.bus import EventBus
from contact_center.config import Settings
from contact_center.health import StatusAggregator
from contact_center.http.api import Api
from crm_core.clock import Clock
from crm_core.rules import CrmRules

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
SESSIONS = web.AppKey("sessions", async_sessionmaker[Any])
BUS = web.AppKey("bus", EventBus)
REDIS = web.AppKey("redis", aioredis.Redis)
METRICS = web.AppKey("metrics", CollectorRegistry)
HEALTH = web.AppKey("health", StatusAggregator)
API = web.AppKey("api", Api)
INSTANCE_ID = web.AppKey("instance_id", str)
RULES = web.AppKey("rules", CrmRules)
CLOCK = web.AppKey("clock", Clock)
