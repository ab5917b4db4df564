"""Input and output shapes of leads, their moves and their conversion. The services take the
inputs; the REST API validates requests and documents itself with the same models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crm_core.clients.schemas import CardInput, CardOut, InterestLiteral, PurchaseModeLiteral
from crm_core.deals.schemas import Money
from crm_core.leads.model import Lead

Origin = Literal["call", "web", "message", "import", "manual"]
_TEXT = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LeadInput(CardInput):
    """A new lead. It starts in the first stage unless ``stage`` says otherwise (the gate of
    that stage applies; a junk stage needs ``reason``). The responsible manager defaults to the
    creator."""

    title: str = Field("", max_length=300)
    origin: Origin = "manual"
    contact_name: str | None = Field(None, max_length=300)
    company_name: str | None = Field(None, max_length=300)
    phones: list[str] = Field(default_factory=list, description="any format; stored E.164")
    emails: list[str] = Field(default_factory=list)
    inn: str | None = Field(None, description="10 or 12 digits, checksum verified")
    comment: str | None = Field(None, max_length=_TEXT)
    tracking: dict[str, Any] | None = Field(None, description="visitor, utm, landing page")
    stage: str | None = Field(None, max_length=32)
    reason: str | None = Field(None, max_length=200, description="junk reason")


class LeadPatch(_Strict):
    """Only the fields sent change; ``null`` clears. A ``stage`` here is a move like
    ``POST /leads/{id}/move`` and is checked against the card as changed by this same patch."""

    title: str | None = Field(None, max_length=300)
    contact_name: str | None = Field(None, max_length=300)
    company_name: str | None = Field(None, max_length=300)
    phones: list[str] | None = Field(None, description="replaces the set")
    emails: list[str] | None = Field(None, description="replaces the set")
    inn: str | None = None
    comment: str | None = Field(None, max_length=_TEXT)
    tracking: dict[str, Any] | None = None
    client_type: str | None = None
    potential_amount: Money | None = None
    purchase_mode: PurchaseModeLiteral | None = None
    target_fit: bool | None = None
    interest: InterestLiteral | None = None
    decision_maker_reached: bool | None = None
    decision_maker_name: str | None = Field(None, max_length=200)
    needs_products: str | None = Field(None, max_length=_TEXT)
    current_suppliers: str | None = Field(None, max_length=_TEXT)
    conditions: str | None = Field(None, max_length=_TEXT)
    current_need: str | None = Field(None, max_length=_TEXT)
    region_id: int | None = None
    source_id: int | None = None
    responsible_id: int | None = None
    custom: dict[str, Any] | None = Field(
        None, description="keys given are set; a null value removes the key"
    )
    stage: str | None = Field(None, max_length=32)
    reason: str | None = Field(None, max_length=200, description="junk reason")


class LeadMove(_Strict):
    stage: str = Field(min_length=1, max_length=32)
    reason: str | None = Field(
        None, max_length=200, description="required for junk: one of crm.junk_reasons"
    )


class ConvertInput(_Strict):
    """How to convert: link to an existing contact/company (else found by phone, e-mail and INN,
    else created from the lead) and optionally open a deal."""

    contact_id: int | None = Field(None, description="link this contact instead")
    company_id: int | None = Field(None, description="link this company instead")
    create_deal: bool = False
    pipeline: str | None = Field(None, max_length=64, description="default: the default one")
    deal_title: str | None = Field(None, min_length=1, max_length=300)
    deal_amount: Money | None = None
    deal_margin: Money | None = None


# ---------------------------------------------------------------- outputs


class DuplicateOut(BaseModel):
    type: str
    id: int | None = Field(description="null for a client of another manager you may not read")
    matched_on: str
    value: str


class LeadOut(CardOut):
    id: int
    title: str
    stage: str
    origin: str
    contact_name: str | None
    company_name: str | None
    phones: list[str]
    emails: list[str]
    inn: str | None
    comment: str | None
    tracking: dict[str, Any] | None
    junk_reason: str | None
    stage_changed_at: datetime
    converted_at: datetime | None
    contact_id: int | None
    company_id: int | None
    deal_id: int | None
    gate: dict[str, list[str]] = Field(
        default_factory=dict,
        description="for each later stage, the requirements the lead still lacks to enter it",
    )
    duplicates: list[DuplicateOut] | None = Field(
        None, description="clients already having its phones, e-mails or INN (single lead only)"
    )

    @classmethod
    def of(
        cls,
        lead: Lead,
        *,
        phones: list[str],
        emails: list[str],
        gate: dict[str, list[str]] | None = None,
        duplicates: list[DuplicateOut] | None = None,
    ) -> LeadOut:
        computed = {"phones", "emails", "gate", "duplicates", "custom"}
        data = {k: getattr(lead, k) for k in cls.model_fields if k not in computed}
        return cls.model_validate(
            {
                **data,
                "custom": dict(lead.custom or {}),
                "phones": phones,
                "emails": emails,
                "gate": gate or {},
                "duplicates": duplicates,
            }
        )


class LeadStageChangeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    from_stage: str | None
    to_stage: str
    user_id: int | None
    at: datetime
    reason: str | None


class ConversionOut(BaseModel):
    lead: LeadOut
    contact_id: int | None
    company_id: int | None
    deal_id: int | None
    contact_created: bool
    company_created: bool
    linked: list[DuplicateOut] = Field(
        description="existing clients the lead was linked to instead of creating new ones"
    )


class LeadStageOut(BaseModel):
    code: str
    name_ru: str
    name_en: str
    kind: str
    requires: list[str] = Field(description="cumulative gate to enter this stage")


class LeadStagesOut(BaseModel):
    stages: list[LeadStageOut]
    requirements: dict[str, str] = Field(description="what each requirement name means")
    junk_reasons: list[str]
