"""Domain events: frozen dataclasses with a stable wire name and an audience.

Every concrete event class declares ``name`` (``"call.ringing"``) and is registered by it, so an
event can travel as JSON (between server instances over Redis) and come back as the same type.
``audience`` says who may see it on the WebSocket: ``"user:<id>"``, ``"ext:<number>"``,
``"role:<role>"``; an empty audience means internal only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from crm_core.db import utcnow

_REGISTRY: dict[str, type[DomainEvent]] = {}


class UnknownEvent(Exception):
    """An event name no class is registered for (e.g. from a newer server version)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Base of every domain event."""

    name: ClassVar[str] = ""
    event_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    occurred_at: datetime = dataclasses.field(default_factory=utcnow)
    audience: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if name:
            existing = _REGISTRY.get(name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise TypeError(f"event name {name!r} already used by {existing.__qualname__}")
            _REGISTRY[name] = cls

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ``{"name": ..., "data": {...}}``."""
        data = {f.name: _dump(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"name": self.name, "data": data}

    @staticmethod
    def from_dict(payload: dict[str, Any]) -> DomainEvent:
        """Rebuild an event from :meth:`to_dict` output."""
        name = payload.get("name")
        cls = _REGISTRY.get(str(name))
        if cls is None:
            raise UnknownEvent(f"no event type registered as {name!r}")
        data = payload.get("data") or {}
        kwargs = {name: _load(hint, data[name]) for name, hint in _fields(cls) if name in data}
        return cls(**kwargs)


_FIELDS: dict[type[DomainEvent], tuple[tuple[str, Any], ...]] = {}


def _fields(cls: type[DomainEvent]) -> tuple[tuple[str, Any], ...]:
    """An event type's fields and their types, resolved once (``get_type_hints`` evaluates
    every annotation: most of what rebuilding an event from another instance cost)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        hints = typing.get_type_hints(cls)
        fields = _FIELDS[cls] = tuple((f.name, hints[f.name]) for f in dataclasses.fields(cls))
    return fields


def _dump(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


def _load(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _load(inner[0], value) if len(inner) == 1 else value
    if hint is datetime:
        return datetime.fromisoformat(value)
    if hint is date:
        return date.fromisoformat(value)
    if hint is Decimal:
        return Decimal(value)
    if origin is tuple:
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_load(item, v) for v in value)
    if origin is list:
        args = typing.get_args(hint)
        return [_load(args[0] if args else Any, v) for v in value]
    return value
