"""Events of the users slice."""

from __future__ import annotations

import dataclasses

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class UserCreated(DomainEvent):
    name = "user.created"
    user_id: int
    login: str
    role: str
    extensions: tuple[str, ...] = ()
