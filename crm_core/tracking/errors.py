"""Errors of call tracking; each names the offending field or value in ``details``."""

from __future__ import annotations

from crm_core.errors import Conflict, InvalidInput, NotFound


class TrackingNotFound(NotFound):
    """No site, pool or number with that id (``details.entity`` says which)."""

    error_id = "tracking-not-found"


class TrackingTaken(Conflict):
    """A site code, a pool code on its site, or a DID is already used."""

    error_id = "tracking-taken"


class InvalidTrackingData(InvalidInput):
    """A field refers to something that does not exist or does not fit (``details.field``)."""

    error_id = "tracking-invalid"
