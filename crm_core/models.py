"""Imports every model module so ``Base.metadata`` describes the whole schema."""

from crm_core.activities import model as activities_model
from crm_core.audit import model as audit_model
from crm_core.calls import model as calls_model
from crm_core.clients import model as clients_model
from crm_core.conversations import model as conversations_model
from crm_core.db import Base
from crm_core.deals import model as deals_model
from crm_core.distribution import model as distribution_model
from crm_core.invoices import model as invoices_model
from crm_core.jobs import model as jobs_model
from crm_core.leads import model as leads_model
from crm_core.notifications import model as notifications_model
from crm_core.recordings import model as recordings_model
from crm_core.reference import model as reference_model
from crm_core.tasks import model as tasks_model
from crm_core.tracking import model as tracking_model
from crm_core.users import model as users_model

__all__ = [
    "Base",
    "activities_model",
    "audit_model",
    "calls_model",
    "clients_model",
    "conversations_model",
    "deals_model",
    "distribution_model",
    "invoices_model",
    "jobs_model",
    "leads_model",
    "notifications_model",
    "recordings_model",
    "reference_model",
    "tasks_model",
    "tracking_model",
    "users_model",
]
