"""Errors of the deals slice; each names the offending field or value in ``details``."""

from __future__ import annotations

from crm_core.errors import InvalidInput, NotFound


class DealNotFound(NotFound):
    error_id = "deal-not-found"


class UnknownPipeline(InvalidInput):
    """No pipeline with that code (``details``: ``field``, ``value``, ``allowed``)."""

    error_id = "deal-unknown-pipeline"


class StageNotInPipeline(InvalidInput):
    """The stage (a code or an id) is not one of the deal's pipeline; a deal never leaves its
    pipeline by a stage move."""

    error_id = "deal-stage-not-in-pipeline"


class LostReasonRequired(InvalidInput):
    """A move to a lost stage needs a reason from ``crm.lost_reasons``."""

    error_id = "deal-lost-reason-required"


class LegalEntityMismatch(InvalidInput):
    """The legal entity belongs to another company than the deal's."""

    error_id = "deal-legal-entity-mismatch"


class InvalidDealInput(InvalidInput):
    error_id = "invalid-deal"
