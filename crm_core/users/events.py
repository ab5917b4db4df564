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


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokensRevoked(DomainEvent):
    """Tokens of a user stopped being valid: every one (``token_ids`` empty: a password
    change, a deactivation) or those listed (sign-out, a revoked API token). Internal (no
    audience): each instance's /ws hub closes the sockets those tokens opened."""

    name = "user.tokens_revoked"
    user_id: int
    token_ids: tuple[int, ...] = ()
