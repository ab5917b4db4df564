"""The configurable business rules of the CRM, as plain data the services take.

The composition root builds one :class:`CrmRules` from ``config.yaml`` (section ``crm``); the
defaults below are the customer's own process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CustomFieldType = Literal["string", "number", "date", "enum", "bool"]

# Logical card requirements a lead gate can name (plus "custom.<field>").
GATE_REQUIREMENTS = {
    "name": "contact name or company name",
    "contact": "at least one phone or e-mail",
    "source": "source / channel",
    "client_type": "client type",
    "potential": "potential (amount in RUB and one-off or regular purchasing)",
    "region": "region",
    "decision_maker": "whether the decision maker was reached",
    "needs": "needs (what they buy)",
    "responsible": "responsible manager",
    "inn": "INN",
}


@dataclass(frozen=True)
class StageDef:
    code: str
    name_ru: str
    name_en: str
    kind: Literal["open", "won", "lost"] = "open"


@dataclass(frozen=True)
class PipelineDef:
    code: str
    name_ru: str
    name_en: str
    stages: tuple[StageDef, ...]
    is_default: bool = False


@dataclass(frozen=True)
class CustomFieldDef:
    name: str
    type: CustomFieldType
    label_ru: str = ""
    label_en: str = ""
    options: tuple[str, ...] = ()  # for enum: the values stored
    # (value, label_ru, label_en) of the enum values that have labels
    option_labels: tuple[tuple[str, str, str], ...] = ()
    applies_to: tuple[str, ...] = ("lead", "contact", "company")


DEFAULT_CLIENT_TYPES = (
    "wholesaler",
    "chain_retail",
    "retail",
    "web_shop",
    "tender_bidder",
    "kitting_supplier",
    "end_customer_hotel",
    "end_customer_restaurant",
    "end_customer_office",
)

DEFAULT_LEAD_STAGES = (
    StageDef("new", "Новый", "New"),
    StageDef("in_work", "В работе", "In work"),
    StageDef("qualified", "Квалифицирован", "Qualified"),
    StageDef("converted", "Сконвертирован", "Converted", "won"),
    StageDef("junk", "Некачественный", "Junk", "lost"),
)

# Requirements to ENTER each stage; they accumulate along the stage order.
DEFAULT_LEAD_GATE: dict[str, tuple[str, ...]] = {
    "in_work": ("name", "contact", "source", "client_type", "potential"),
    "qualified": ("region", "decision_maker"),
}

DEFAULT_PIPELINE = PipelineDef(
    code="sales",
    name_ru="Продажи",
    name_en="Sales",
    is_default=True,
    stages=(
        StageDef("contact", "Контакт установлен", "Contact established"),
        StageDef("needs", "Разговор с ЛПР / выявление потребностей", "Decision maker / needs"),
        StageDef("proposal_sent", "КП отправлено", "Proposal sent"),
        StageDef("proposal_viewed", "КП просмотрено", "Proposal viewed"),
        StageDef("request", "Получена заявка", "Request received"),
        StageDef(
            "request_in_work",
            "Заявка в работе (счёт, ассортимент, возражения)",
            "Request in work (invoice, assortment, objections)",
        ),
        StageDef("invoice", "Счёт / договор", "Invoice / contract"),
        StageDef("payment", "Оплата", "Payment"),
        StageDef("shipment", "Отгрузка", "Shipment"),
        StageDef("won", "Сделка успешна", "Won", "won"),
        StageDef("lost", "Сделка провалена", "Lost", "lost"),
    ),
)

DEFAULT_LOST_REASONS = (
    "price",
    "competitor",
    "no_need",
    "no_budget",
    "no_response",
    "assortment",
    "delivery_terms",
    "other",
)

DEFAULT_JUNK_REASONS = ("spam", "duplicate", "wrong_number", "not_target", "other")


@dataclass(frozen=True)
class CrmRules:
    """Everything configurable the CRM services decide by."""

    default_region: str = "RU"
    client_types: tuple[str, ...] = DEFAULT_CLIENT_TYPES
    lead_stages: tuple[StageDef, ...] = DEFAULT_LEAD_STAGES
    lead_gate: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_LEAD_GATE))
    pipelines: tuple[PipelineDef, ...] = (DEFAULT_PIPELINE,)
    lost_reasons: tuple[str, ...] = DEFAULT_LOST_REASONS
    junk_reasons: tuple[str, ...] = DEFAULT_JUNK_REASONS
    custom_fields: tuple[CustomFieldDef, ...] = ()
    # Days before the due date on which the responsible is reminded of an unpaid invoice
    # (0 = on the due date).
    invoice_reminder_days: tuple[int, ...] = (3, 0)
    # Managers may read (not change) clients, deals and tasks of others.
    managers_read_all: bool = False

    def lead_stage_codes(self) -> list[str]:
        return [s.code for s in self.lead_stages]

    def gate_for(self, stage: str) -> list[str]:
        """Requirements to enter ``stage``: its own and those of every earlier open stage."""
        needed: list[str] = []
        for s in self.lead_stages:
            if s.kind == "lost":
                continue
            for req in self.lead_gate.get(s.code, ()):
                if req not in needed:
                    needed.append(req)
            if s.code == stage:
                break
        return needed

    def custom_field(self, name: str) -> CustomFieldDef | None:
        return next((f for f in self.custom_fields if f.name == name), None)

    @staticmethod
    def from_mapping(data: dict[str, Any]) -> CrmRules:
        """Build from the ``crm`` config section (already validated for shape)."""
        kwargs: dict[str, Any] = {}
        if "default_region" in data:
            kwargs["default_region"] = data["default_region"]
        if data.get("client_types"):
            kwargs["client_types"] = tuple(data["client_types"])
        if data.get("lead_stages"):
            kwargs["lead_stages"] = tuple(StageDef(**s) for s in data["lead_stages"])
        if data.get("lead_gate") is not None:
            kwargs["lead_gate"] = {k: tuple(v) for k, v in data["lead_gate"].items()}
        if data.get("pipelines"):
            kwargs["pipelines"] = tuple(
                PipelineDef(
                    code=p["code"],
                    name_ru=p["name_ru"],
                    name_en=p.get("name_en", p["name_ru"]),
                    is_default=p.get("is_default", False),
                    stages=tuple(StageDef(**s) for s in p["stages"]),
                )
                for p in data["pipelines"]
            )
        for key in ("lost_reasons", "junk_reasons"):
            if data.get(key):
                kwargs[key] = tuple(data[key])
        if data.get("custom_fields"):
            kwargs["custom_fields"] = tuple(
                CustomFieldDef(
                    name=f["name"],
                    type=f["type"],
                    label_ru=f.get("label_ru", ""),
                    label_en=f.get("label_en", ""),
                    options=tuple(
                        o if isinstance(o, str) else str(o["value"]) for o in f.get("options", ())
                    ),
                    option_labels=tuple(
                        (str(o["value"]), o.get("label_ru") or "", o.get("label_en") or "")
                        for o in f.get("options", ())
                        if isinstance(o, dict)
                    ),
                    applies_to=tuple(f.get("applies_to", ("lead", "contact", "company"))),
                )
                for f in data["custom_fields"]
            )
        if data.get("invoice_reminder_days") is not None:
            kwargs["invoice_reminder_days"] = tuple(data["invoice_reminder_days"])
        if "managers_read_all" in data:
            kwargs["managers_read_all"] = bool(data["managers_read_all"])
        return CrmRules(**kwargs)
