"""Call tracking for tests that drive the call path without a server: the real
:class:`~contact_center.tracking_service.TrackingService` over the test's database, with the
in-memory number leases (no Redis) and without its history writer running."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from contact_center.config import Settings
from contact_center.tracking_service import RegionFallbacks, TrackingService
from crm_core.clock import Clock, SystemClock
from routing.number_leases import MemoryLeaseStore


def tracking_service(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], clock: Clock | None = None
) -> TrackingService:
    """What ``contact_center.tracking_service.setup`` builds, minus its background writer."""
    return TrackingService(
        settings.tracking,
        sessions,
        MemoryLeaseStore(),
        clock or SystemClock(),
        fallbacks=RegionFallbacks.of(settings),
    )
