"""Errors of the leads slice; each names the offending field or value in ``details``."""

from __future__ import annotations

from crm_core.errors import Conflict, InvalidInput, NotFound, PermissionDenied


class LeadNotFound(NotFound):
    error_id = "lead-not-found"


class LeadGateMissingFields(InvalidInput):
    """The lead lacks card requirements to enter a stage; ``details`` =
    ``{"stage": "qualified", "missing": ["region", "decision_maker"]}`` in the gate's order."""

    error_id = "lead-gate-missing-fields"


class UnknownLeadStage(InvalidInput):
    error_id = "lead-unknown-stage"


class JunkReasonRequired(InvalidInput):
    """A move to a junk (lost) stage needs a reason from ``crm.junk_reasons``."""

    error_id = "lead-junk-reason-required"


class ConversionRequired(InvalidInput):
    """The converted stage is entered only by converting the lead (``POST /leads/{id}/convert``),
    which creates what the lead became."""

    error_id = "lead-conversion-required"


class NothingToConvert(InvalidInput):
    """The lead names no contact and no company, and none was chosen or found."""

    error_id = "lead-nothing-to-convert"


class LeadAlreadyConverted(Conflict):
    """A converted lead is final: it is neither moved nor converted again."""

    error_id = "lead-already-converted"


class InvalidLeadInput(InvalidInput):
    error_id = "invalid-lead"


class DuplicateNotAccessible(PermissionDenied):
    """Conversion found the lead's client already in the CRM, but it belongs to another
    manager; ``details["duplicates"]`` names it, so the head of sales can hand it over."""

    error_id = "lead-duplicate-belongs-to-another-manager"
