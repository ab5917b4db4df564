"""Domain errors. Each carries a stable ``error_id`` and ``details``; the HTTP edge maps the
class to a status code once, so services never think in HTTP terms."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    error_id = "domain-error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class NotFound(DomainError):
    error_id = "not-found"


class Conflict(DomainError):
    error_id = "conflict"


class InvalidInput(DomainError):
    """The request is well-formed but breaks a rule (a gate, a checksum, a format)."""

    error_id = "invalid-input"


class TooLarge(DomainError):
    """What was sent is larger than allowed (a request body, an uploaded file)."""

    error_id = "too-large"


class NotAuthenticated(DomainError):
    error_id = "not-authenticated"


class PermissionDenied(DomainError):
    error_id = "permission-denied"


class RateLimited(DomainError):
    error_id = "rate-limited"


class Unavailable(DomainError):
    """A collaborator outside the process (PBX, provider) cannot serve the request now."""

    error_id = "unavailable"
