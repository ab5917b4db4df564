"""Errors of distribution; each names the offending field or value in ``details``."""

from __future__ import annotations

from crm_core.errors import Conflict, InvalidInput, NotFound


class RuleNotFound(NotFound):
    error_id = "distribution-rule-not-found"


class RuleExists(Conflict):
    """The region (or the default slot) already has a rule: change that one."""

    error_id = "distribution-rule-exists"


class WebRequestNotFound(NotFound):
    error_id = "web-request-not-found"


class NotQueued(Conflict):
    """Only a request waiting in the manual queue can be assigned from it."""

    error_id = "web-request-not-queued"


class InvalidWebRequest(InvalidInput):
    """A website form field that cannot be used (``details.field`` names it)."""

    error_id = "web-request-invalid"
