"""Events of invoices. The audience is the responsible manager; dates travel as ISO strings
(the event codec carries datetimes, not dates) and amounts as Decimal."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class InvoiceChanged(DomainEvent):
    """An invoice was issued, changed, paid or cancelled (``change`` says which)."""

    name = "invoice.changed"
    invoice_id: int
    change: str  # created, updated, paid, cancelled
    number: str
    amount: Decimal
    due_on: str
    status: str
    company_id: int | None = None
    deal_id: int | None = None
    responsible_id: int | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class InvoiceReminder(DomainEvent):
    """An unpaid invoice is due in ``days_left`` days (0: today), published by the scheduler
    on the configured days before the due date."""

    name = "invoice.reminder"
    invoice_id: int
    number: str
    amount: Decimal
    due_on: str
    days_left: int
    company_id: int | None = None
    deal_id: int | None = None
    responsible_id: int | None = None
