"""What every API slice uses: the unit of work, the acting user, pagination."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.http.api import USER, path_id
from contact_center.keys import BUS, CLOCK, RULES, SESSIONS, SETTINGS
from crm_core.clock import Clock
from crm_core.db import MAX_DB_INT
from crm_core.errors import NotAuthenticated
from crm_core.events import DomainEvent
from crm_core.notifications import service as notifications
from crm_core.rules import CrmRules
from crm_core.users.model import User

__all__ = ["PageQuery", "UnitOfWork", "actor", "page", "path_id", "uow"]


class UnitOfWork:
    """One session and the events to publish once it has committed (never before); the
    notifications they give rise to are stored in the same transaction."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.session: AsyncSession = request.app[SESSIONS]()
        self.events: list[DomainEvent] = []

    def emit(self, *events: DomainEvent) -> None:
        self.events.extend(events)

    async def commit(self) -> None:
        """Commit, with the notifications the events give rise to; then publish the events."""
        now = self._request.app[CLOCK].now()
        self.events.extend(await notifications.record(self.session, self.events, now=now))
        await self.session.commit()
        events, self.events = self.events, []
        bus = self._request.app[BUS]
        for event in events:
            await bus.publish(event)

    async def __aenter__(self) -> UnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            await self.session.rollback()
        self.events.clear()
        await self.session.close()


def uow(request: web.Request) -> UnitOfWork:
    return UnitOfWork(request)


def actor(request: web.Request) -> User:
    user: User | None = request.get(USER)
    if user is None:
        raise NotAuthenticated("authentication required")
    return user


def rules(request: web.Request) -> CrmRules:
    return request.app[RULES]


def clock(request: web.Request) -> Clock:
    return request.app[CLOCK]


def settings(request: web.Request) -> Any:
    return request.app[SETTINGS]


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=MAX_DB_INT)


def page(items: Sequence[Any], total: int, query: PageQuery) -> dict[str, Any]:
    return {"items": list(items), "total": total, "limit": query.limit, "offset": query.offset}
