"""Input and output shapes of invoices."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from crm_core.invoices.model import Invoice, InvoiceStatus

STATUS_LABELS: dict[str, tuple[str, str]] = {
    InvoiceStatus.ISSUED: ("Выставлен", "Issued"),
    InvoiceStatus.PAID: ("Оплачен", "Paid"),
    InvoiceStatus.CANCELLED: ("Отменён", "Cancelled"),
    "overdue": ("Просрочен", "Overdue"),  # derived: issued and past its due date
}


class InvoiceInput(BaseModel):
    """A new invoice. The company is taken from the legal entity or the deal when not given;
    ``responsible_id`` defaults to the deal's, else the company's responsible, else the
    creator."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=64)
    company_id: int | None = None
    legal_entity_id: int | None = None
    deal_id: int | None = None
    amount: Decimal = Field(gt=0, max_digits=15, decimal_places=2, description="RUB")
    issued_on: date
    due_on: date
    responsible_id: int | None = None
    comment: str | None = Field(None, max_length=5000)

    @model_validator(mode="after")
    def _due_after_issue(self) -> InvoiceInput:
        if self.due_on < self.issued_on:
            raise ValueError("due_on must not be before issued_on")
        return self


class InvoicePatch(BaseModel):
    """Changes to an issued invoice; only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    number: str | None = Field(None, min_length=1, max_length=64)
    legal_entity_id: int | None = None
    deal_id: int | None = None
    amount: Decimal | None = Field(None, gt=0, max_digits=15, decimal_places=2)
    issued_on: date | None = None
    due_on: date | None = None
    responsible_id: int | None = None
    comment: str | None = Field(None, max_length=5000)


class PayInput(BaseModel):
    """When the money arrived (a query parameter of ``POST /invoices/{id}/pay``)."""

    paid_at: AwareDatetime | None = Field(None, description="default: now")


class InvoiceOut(BaseModel):
    id: int
    number: str
    company_id: int | None
    legal_entity_id: int | None
    deal_id: int | None
    amount: Decimal = Field(description="RUB, as a string")
    issued_on: date
    due_on: date
    status: str
    overdue: bool = Field(description="issued and past its due date")
    days_left: int | None = Field(description="days until the due date (negative: overdue)")
    paid_at: datetime | None
    responsible_id: int | None
    comment: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, invoice: Invoice, today: date) -> InvoiceOut:
        issued = invoice.status == InvoiceStatus.ISSUED.value
        data = {k: getattr(invoice, k) for k in cls.model_fields if hasattr(invoice, k)}
        data["overdue"] = issued and invoice.due_on < today
        data["days_left"] = (invoice.due_on - today).days if issued else None
        return cls.model_validate(data)
