"""Errors of the clients slice; each names the offending field or record in ``details``."""

from __future__ import annotations

from crm_core.errors import Conflict, InvalidInput, NotFound


class ContactNotFound(NotFound):
    error_id = "contact-not-found"


class CompanyNotFound(NotFound):
    error_id = "company-not-found"


class LegalEntityNotFound(NotFound):
    error_id = "legal-entity-not-found"


class RequisitesNotFound(NotFound):
    error_id = "requisites-not-found"


class LinkNotFound(NotFound):
    error_id = "contact-company-link-not-found"


class ClientMerged(NotFound):
    """The record was merged into another; ``details["merged_into_id"]`` is the survivor."""

    error_id = "client-merged"


class DuplicateClient(Conflict):
    """A phone, e-mail, messenger id or INN already belongs to another client;
    ``details["duplicates"]`` lists ``{"type", "id", "matched_on", "value"}``."""

    error_id = "duplicate-client"


class RequisitesRetired(Conflict):
    error_id = "requisites-retired"


class ClientHasHistory(Conflict):
    """A client with deals, activities, calls, invoices or leads is merged, not deleted."""

    error_id = "client-has-history"


class LinkExists(Conflict):
    error_id = "contact-company-link-exists"


class InvalidReference(InvalidInput):
    """An id in the input names nothing usable (no such region, an inactive user...)."""

    error_id = "invalid-reference"


class CompanyGroupCycle(InvalidInput):
    """A head organisation cannot be one of its own members."""

    error_id = "company-group-cycle"


class MergeNotAllowed(InvalidInput):
    error_id = "merge-not-allowed"
