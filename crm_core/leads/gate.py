"""The lead gate: which card requirements a lead lacks to enter a stage. Pure functions over
plain facts, so the rule is the same on every transition path and easy to test.

Requirements (``crm.lead_gate``, see :data:`crm_core.rules.GATE_REQUIREMENTS`): ``name`` (a
contact or company name), ``contact`` (a phone or an e-mail), ``source``, ``client_type``,
``potential`` (the amount and one-off/regular purchasing), ``region``, ``decision_maker``
(reached or not, but answered), ``needs`` (what they buy), ``responsible``, ``inn`` and
``custom.<field>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from crm_core.leads.errors import LeadGateMissingFields
from crm_core.rules import CrmRules, StageDef


@dataclass(frozen=True)
class LeadFacts:
    """What the gate looks at in a lead."""

    contact_name: str | None = None
    company_name: str | None = None
    phones: int = 0
    emails: int = 0
    source_id: int | None = None
    client_type: str | None = None
    potential_amount: Decimal | None = None
    purchase_mode: str | None = None
    region_id: int | None = None
    decision_maker_reached: bool | None = None
    needs_products: str | None = None
    responsible_id: int | None = None
    inn: str | None = None
    custom: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, lead: Any, *, phones: int, emails: int) -> LeadFacts:
        """The facts of a lead (any object with the card's attributes)."""
        return cls(
            contact_name=lead.contact_name,
            company_name=lead.company_name,
            phones=phones,
            emails=emails,
            source_id=lead.source_id,
            client_type=lead.client_type,
            potential_amount=lead.potential_amount,
            purchase_mode=lead.purchase_mode,
            region_id=lead.region_id,
            decision_maker_reached=lead.decision_maker_reached,
            needs_products=lead.needs_products,
            responsible_id=lead.responsible_id,
            inn=lead.inn,
            custom=dict(lead.custom or {}),
        )


def _filled(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, str | list | dict | tuple):
        return bool(value.strip() if isinstance(value, str) else value)
    return True


_CHECKS: dict[str, Callable[[LeadFacts], bool]] = {
    "name": lambda f: _filled(f.contact_name) or _filled(f.company_name),
    "contact": lambda f: f.phones + f.emails > 0,
    "source": lambda f: f.source_id is not None,
    "client_type": lambda f: _filled(f.client_type),
    "potential": lambda f: f.potential_amount is not None and _filled(f.purchase_mode),
    "region": lambda f: f.region_id is not None,
    "decision_maker": lambda f: f.decision_maker_reached is not None,
    "needs": lambda f: _filled(f.needs_products),
    "responsible": lambda f: f.responsible_id is not None,
    "inn": lambda f: _filled(f.inn),
}


def is_met(facts: LeadFacts, requirement: str) -> bool:
    """Whether ``facts`` satisfy one requirement. An unknown name (the configuration refuses
    them) never passes, so a typo cannot open the gate."""
    if requirement.startswith("custom."):
        return _filled(facts.custom.get(requirement.removeprefix("custom.")))
    check = _CHECKS.get(requirement)
    return check is not None and check(facts)


def missing(facts: LeadFacts, requirements: Sequence[str]) -> list[str]:
    """The requirements not met, in the order given (the gate's order)."""
    return [r for r in requirements if not is_met(facts, r)]


def stage_def(rules: CrmRules, code: str) -> StageDef | None:
    return next((s for s in rules.lead_stages if s.code == code), None)


def requirements_for(rules: CrmRules, stage: str) -> list[str]:
    """What entering ``stage`` needs: the cumulative gate of an open or won stage; a lost stage
    (junk) has no gate, it needs a reason instead."""
    sdef = stage_def(rules, stage)
    if sdef is None or sdef.kind == "lost":
        return []
    return rules.gate_for(stage)


def is_backward(rules: CrmRules, current: str | None, target: str) -> bool:
    """A move back along the open stages (``qualified`` → ``in_work``): no gate applies."""
    codes = [s.code for s in rules.lead_stages if s.kind == "open"]
    if current not in codes or target not in codes:
        return False
    return codes.index(target) < codes.index(current)


def check(facts: LeadFacts, rules: CrmRules, stage: str) -> None:
    """Refuse entering ``stage`` (422 ``lead-gate-missing-fields``) naming exactly the
    requirements the lead lacks, in the gate's order."""
    lacking = missing(facts, requirements_for(rules, stage))
    if lacking:
        raise LeadGateMissingFields(
            f"cannot move the lead to {stage}: missing {', '.join(lacking)}",
            details={"stage": stage, "missing": lacking},
        )


def open_gates(facts: LeadFacts, rules: CrmRules, current: str) -> dict[str, list[str]]:
    """For each stage after ``current`` along the funnel (open and won ones), what the lead
    still lacks to enter it; the UI shows it next to the move buttons."""
    out: dict[str, list[str]] = {}
    codes = [s.code for s in rules.lead_stages if s.kind != "lost"]
    start = codes.index(current) + 1 if current in codes else 0
    for code in codes[start:]:
        out[code] = missing(facts, requirements_for(rules, code))
    return out
