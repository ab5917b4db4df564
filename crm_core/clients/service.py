"""The clients service: use cases of the client cards, one import away.

The use cases live in modules of their own, none importing this one:

- :mod:`~crm_core.clients.contacts`, :mod:`~crm_core.clients.companies`: create (refusing or
  merging into a duplicate), change, delete; a head organisation's group;
- :mod:`~crm_core.clients.links`: contact-company links;
- :mod:`~crm_core.clients.legal`: legal entities and requisites kept as history;
- :mod:`~crm_core.clients.merge`: merging a duplicate into a survivor;
- :mod:`~crm_core.clients.lookup`: who is calling (the screen-pop);
- :mod:`~crm_core.clients.search`: listings;
- :mod:`~crm_core.clients.records`: access-checked loading (the check every use case starts
  with); :mod:`~crm_core.clients.duplicates`, :mod:`~crm_core.clients.checks`,
  :mod:`~crm_core.clients.cards`: duplicate detection, input checks, the API's view.

Every use case takes an actor (a user, or :data:`crm_core.access.SYSTEM`) and the caller's
session; it flushes, and returns the events to publish once the caller has committed.
"""

from __future__ import annotations

from crm_core.clients.cards import company_cards, contact_cards, legal_entity_out
from crm_core.clients.checks import (
    ClientType,
    OnDuplicate,
    fill_empty,
    merge_custom,
    normalize_emails,
    normalize_phones,
)
from crm_core.clients.companies import (
    CompanyGroup,
    company_group,
    create_company,
    delete_company,
    group_company_ids,
    save_company,
    top_head_id,
    update_company,
)
from crm_core.clients.contacts import (
    create_contact,
    delete_contact,
    save_contact,
    update_contact,
)
from crm_core.clients.duplicates import DuplicateRef, duplicate_error, find_duplicates
from crm_core.clients.legal import (
    add_legal_entity,
    add_requisites,
    change_requisites,
    get_legal_entity,
    get_requisites,
    requisites_history,
    retire_requisites,
    update_legal_entity,
)
from crm_core.clients.links import (
    add_link,
    get_link,
    link_contact_company,
    unlink_contact_company,
    update_link,
)
from crm_core.clients.lookup import (
    ClientMatch,
    digits_rev_prefix,
    find_client_by_phone,
    find_clients_by_phones,
)
from crm_core.clients.merge import merge_companies, merge_contacts
from crm_core.clients.records import (
    SaveResult,
    complete_card,
    get_company,
    get_contact,
    referencing_columns,
)
from crm_core.clients.search import ClientFilter, list_companies, list_contacts

__all__ = [
    "ClientFilter",
    "ClientMatch",
    "ClientType",
    "CompanyGroup",
    "DuplicateRef",
    "OnDuplicate",
    "SaveResult",
    "add_legal_entity",
    "add_link",
    "add_requisites",
    "change_requisites",
    "company_cards",
    "company_group",
    "complete_card",
    "contact_cards",
    "create_company",
    "create_contact",
    "delete_company",
    "delete_contact",
    "digits_rev_prefix",
    "duplicate_error",
    "fill_empty",
    "find_client_by_phone",
    "find_clients_by_phones",
    "find_duplicates",
    "get_company",
    "get_contact",
    "get_legal_entity",
    "get_link",
    "get_requisites",
    "group_company_ids",
    "legal_entity_out",
    "link_contact_company",
    "list_companies",
    "list_contacts",
    "merge_companies",
    "merge_contacts",
    "merge_custom",
    "normalize_emails",
    "normalize_phones",
    "referencing_columns",
    "requisites_history",
    "retire_requisites",
    "save_company",
    "save_contact",
    "top_head_id",
    "unlink_contact_company",
    "update_company",
    "update_contact",
    "update_legal_entity",
    "update_link",
]
