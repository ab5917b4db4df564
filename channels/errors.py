"""Errors of the channel adapters.

Each carries a stable ``error_id`` and ``details`` (``crm_core.errors.DomainError``), so the HTTP
edge maps them once: a refused webhook (:class:`SignatureInvalid`) is a 403 whose ``reason`` is
logged, a malformed one (:class:`PayloadInvalid`) a 400, a bad channel configuration
(:class:`ChannelConfigInvalid`) names every offending key. :class:`ChannelSendFailed` says whether
trying again later can help (``retryable``): the outbox turns a retryable failure into a retry
with back-off and a permanent one into a message stored as failed with the provider's error.
"""

from __future__ import annotations

from typing import Any

from crm_core.errors import DomainError, InvalidInput, NotAuthenticated, Unavailable


class ChannelError(DomainError):
    """Base of every error the channel adapters raise on purpose."""

    error_id = "channel-error"


class SignatureInvalid(ChannelError, NotAuthenticated):
    """A webhook (or the verification handshake) that is not from the provider: missing or
    wrong signature, secret token or verify token. ``reason`` is meant for the log line."""

    error_id = "channel-signature-invalid"

    def __init__(self, reason: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason, details=details)
        self.reason = reason


class PayloadInvalid(ChannelError, InvalidInput):
    """An authentic webhook whose body cannot be read (not JSON, not a form, no update)."""

    error_id = "channel-payload-invalid"


class ChannelConfigInvalid(ChannelError, InvalidInput):
    """A channel configuration with missing or wrong keys; ``details["problems"]`` maps each
    key path (``"channels[2].app_secret"``-style, relative to the channel) to what is wrong."""

    error_id = "channel-config-invalid"

    def __init__(self, message: str, *, problems: dict[str, str]) -> None:
        super().__init__(message, details={"problems": problems})
        self.problems = problems


class ChannelSendFailed(ChannelError, Unavailable):
    """The provider did not take an outbound message.

    ``code`` is the provider's error code as text (Graph API ``131047``, Telegram ``403``, SMSC
    ``7``, SMTP ``550``, or ``"transport"`` for a connection that failed), ``retryable`` whether
    sending the same message again later may succeed (transport errors, rate limits, 5xx).
    """

    error_id = "channel-send-failed"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message, details={"code": code, "retryable": retryable, **(details or {})})
        self.code = code
        self.retryable = retryable


class MediaRefused(ChannelError, InvalidInput):
    """A media file that is not fetched: larger than the cap, or of a content type that does not
    match what the provider announced or is not allowed."""

    error_id = "channel-media-refused"


class MediaUnavailable(ChannelError, Unavailable):
    """A media file that cannot be fetched now (expired reference, provider or network error)."""

    error_id = "channel-media-unavailable"
