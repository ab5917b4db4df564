"""Input and output shapes of the clients slice. The services take the inputs, the REST API
validates requests and documents itself with the same models."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PurchaseModeLiteral = Literal["one_off", "regular"]
InterestLiteral = Literal["none", "low", "medium", "high"]
MessengerChannel = Literal["whatsapp", "telegram"]

# Card fields a patch may set (besides the per-kind ones); also what a merge fills in.
CARD_FIELDS = (
    "client_type",
    "potential_amount",
    "purchase_mode",
    "target_fit",
    "interest",
    "decision_maker_reached",
    "decision_maker_name",
    "needs_products",
    "current_suppliers",
    "conditions",
    "current_need",
    "region_id",
    "source_id",
    "responsible_id",
)

_TEXT = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CardInput(_Strict):
    """The client card's fields shared by contacts and companies (and leads)."""

    client_type: str | None = Field(None, description="one of crm.client_types")
    potential_amount: Decimal | None = Field(
        None, ge=0, max_digits=15, decimal_places=2, description="RUB"
    )
    purchase_mode: PurchaseModeLiteral | None = None
    target_fit: bool | None = Field(None, description="fits the target audience")
    interest: InterestLiteral | None = None
    decision_maker_reached: bool | None = None
    decision_maker_name: str | None = Field(None, max_length=200)
    needs_products: str | None = Field(None, max_length=_TEXT, description="what they buy")
    current_suppliers: str | None = Field(None, max_length=_TEXT)
    conditions: str | None = Field(None, max_length=_TEXT, description="payment, delivery")
    current_need: str | None = Field(None, max_length=_TEXT)
    region_id: int | None = None
    source_id: int | None = None
    responsible_id: int | None = Field(None, description="default: the user creating it")
    custom: dict[str, Any] = Field(default_factory=dict, description="crm.custom_fields")


class MessengerInput(_Strict):
    channel: MessengerChannel
    external_id: str = Field(min_length=1, max_length=200, description="wa_id, Telegram id")


class CompanyLinkInput(_Strict):
    """A contact works at a company (optionally as its decision maker, ЛПР)."""

    company_id: int
    position: str | None = Field(None, max_length=200)
    is_decision_maker: bool = False


class ContactInput(CardInput):
    """A new contact."""

    name: str = Field(min_length=1, max_length=300)
    phones: list[str] = Field(default_factory=list, description="any format; stored E.164")
    emails: list[str] = Field(default_factory=list)
    messengers: list[MessengerInput] = Field(default_factory=list)
    position: str | None = Field(None, max_length=200)
    comment: str | None = Field(None, max_length=_TEXT)
    companies: list[CompanyLinkInput] = Field(default_factory=list)


class RequisitesInput(_Strict):
    """One set of requisites of a legal entity; checksums are verified by the service."""

    label: str = Field("", max_length=100, description='"основные", "для отгрузок"')
    full_name: str = Field(min_length=1, max_length=500)
    inn: str | None = Field(None, description="10 digits (legal entity) or 12 (individual)")
    kpp: str | None = None
    ogrn: str | None = Field(None, description="OGRN (13 digits) or OGRNIP (15)")
    legal_address: str | None = Field(None, max_length=_TEXT)
    actual_address: str | None = Field(None, max_length=_TEXT)
    bank_name: str | None = Field(None, max_length=300)
    bik: str | None = None
    settlement_account: str | None = None
    correspondent_account: str | None = None
    vat_payer: bool | None = None


class LegalEntityInput(_Strict):
    name: str = Field(min_length=1, max_length=300)
    requisites: list[RequisitesInput] = Field(default_factory=list)


class LegalEntityPatch(_Strict):
    name: str | None = Field(None, min_length=1, max_length=300)
    is_active: bool | None = None


class CompanyInput(CardInput):
    """A new company, optionally a member of a head organisation, with its legal entities."""

    name: str = Field(min_length=1, max_length=300)
    phones: list[str] = Field(default_factory=list)
    emails: list[str] = Field(default_factory=list)
    website: str | None = Field(None, max_length=300)
    comment: str | None = Field(None, max_length=_TEXT)
    head_id: int | None = Field(None, description="the head organisation (holding)")
    legal_entities: list[LegalEntityInput] = Field(default_factory=list)


class _CardPatch(_Strict):
    """Only the fields present are changed; ``null`` clears a field."""

    client_type: str | None = None
    potential_amount: Decimal | None = Field(None, ge=0, max_digits=15, decimal_places=2)
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


class ContactPatch(_CardPatch):
    name: str | None = Field(None, min_length=1, max_length=300)
    phones: list[str] | None = Field(None, description="replaces the set")
    emails: list[str] | None = Field(None, description="replaces the set")
    messengers: list[MessengerInput] | None = Field(None, description="replaces the set")
    position: str | None = Field(None, max_length=200)
    comment: str | None = Field(None, max_length=_TEXT)


class CompanyPatch(_CardPatch):
    name: str | None = Field(None, min_length=1, max_length=300)
    phones: list[str] | None = Field(None, description="replaces the set")
    emails: list[str] | None = Field(None, description="replaces the set")
    website: str | None = Field(None, max_length=300)
    comment: str | None = Field(None, max_length=_TEXT)
    head_id: int | None = None


class LinkPatch(_Strict):
    position: str | None = Field(None, max_length=200)
    is_decision_maker: bool | None = None


# ---------------------------------------------------------------- outputs


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class CardOut(_Out):
    client_type: str | None
    potential_amount: Decimal | None = Field(description="RUB, serialised as a string")
    purchase_mode: str | None
    target_fit: bool | None
    interest: str | None
    decision_maker_reached: bool | None
    decision_maker_name: str | None
    needs_products: str | None
    current_suppliers: str | None
    conditions: str | None
    current_need: str | None
    region_id: int | None
    source_id: int | None
    responsible_id: int | None
    custom: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    created_by_id: int | None


class MessengerOut(_Out):
    channel: str
    external_id: str


class ContactLinkOut(_Out):
    """A contact's place at a company, seen from the contact."""

    company_id: int
    company_name: str
    position: str | None
    is_decision_maker: bool


class CompanyContactOut(_Out):
    """A contact's place at a company, seen from the company."""

    contact_id: int
    contact_name: str
    position: str | None
    is_decision_maker: bool


class ContactOut(CardOut):
    id: int
    name: str
    position: str | None
    comment: str | None
    phones: list[str]
    emails: list[str]
    messengers: list[MessengerOut]
    companies: list[ContactLinkOut]
    merged_into_id: int | None


class RequisitesOut(_Out):
    id: int
    legal_entity_id: int
    label: str
    full_name: str
    inn: str | None
    kpp: str | None
    ogrn: str | None
    legal_address: str | None
    actual_address: str | None
    bank_name: str | None
    bik: str | None
    settlement_account: str | None
    correspondent_account: str | None
    vat_payer: bool | None
    created_at: datetime
    created_by_id: int | None
    retired_at: datetime | None
    replaced_by_id: int | None


class LegalEntityOut(_Out):
    id: int
    company_id: int
    name: str
    is_active: bool
    created_at: datetime
    requisites: list[RequisitesOut] = Field(description="the live sets (history: /requisites)")


class CompanyOut(CardOut):
    id: int
    name: str
    head_id: int | None
    member_ids: list[int] = Field(description="direct members of this head organisation")
    website: str | None
    comment: str | None
    phones: list[str]
    emails: list[str]
    legal_entities: list[LegalEntityOut]
    contacts: list[CompanyContactOut]
    merged_into_id: int | None


class LinkOut(_Out):
    id: int
    contact_id: int
    company_id: int
    position: str | None
    is_decision_maker: bool
