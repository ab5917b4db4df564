"""The gate as a pure rule: which requirements a lead lacks, in the gate's order."""

from __future__ import annotations

from decimal import Decimal

import pytest

from crm_core.leads import gate
from crm_core.leads.errors import LeadGateMissingFields
from crm_core.rules import CrmRules

DEFAULT_IN_WORK = ["name", "contact", "source", "client_type", "potential"]


def test_an_empty_lead_lacks_everything_in_gate_order() -> None:
    rules = CrmRules()
    facts = gate.LeadFacts()
    assert gate.missing(facts, rules.gate_for("in_work")) == DEFAULT_IN_WORK
    assert gate.missing(facts, rules.gate_for("qualified")) == [
        *DEFAULT_IN_WORK,
        "region",
        "decision_maker",
    ]
    assert gate.requirements_for(rules, "new") == []
    assert gate.requirements_for(rules, "junk") == []  # a reason instead
    assert gate.requirements_for(rules, "converted") == rules.gate_for("qualified")


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (gate.LeadFacts(company_name="Ромашка", emails=1), ["source", "client_type", "potential"]),
        (
            gate.LeadFacts(contact_name="  ", phones=1, source_id=1),
            ["name", "client_type", "potential"],
        ),
        (
            # An amount without one-off/regular is not a potential yet.
            gate.LeadFacts(
                contact_name="Пётр",
                phones=1,
                source_id=1,
                client_type="retail",
                potential_amount=Decimal("10"),
            ),
            ["potential"],
        ),
        (
            gate.LeadFacts(
                contact_name="Пётр",
                phones=1,
                source_id=1,
                client_type="retail",
                potential_amount=Decimal("0"),
                purchase_mode="one_off",
            ),
            [],
        ),
    ],
)
def test_requirement_combinations(facts: gate.LeadFacts, expected: list[str]) -> None:
    assert gate.missing(facts, CrmRules().gate_for("in_work")) == expected


def test_decision_maker_is_met_by_an_answer_even_no() -> None:
    assert gate.is_met(gate.LeadFacts(decision_maker_reached=False), "decision_maker")
    assert not gate.is_met(gate.LeadFacts(decision_maker_reached=None), "decision_maker")


def test_custom_and_other_requirements() -> None:
    facts = gate.LeadFacts(custom={"segment": "A", "vip": False, "note": ""})
    assert gate.is_met(facts, "custom.segment")
    assert gate.is_met(facts, "custom.vip")  # false is an answer
    assert not gate.is_met(facts, "custom.note")
    assert not gate.is_met(facts, "custom.other")
    assert not gate.is_met(facts, "no_such_requirement")
    assert gate.missing(gate.LeadFacts(inn="7707083893"), ["inn", "needs", "responsible"]) == [
        "needs",
        "responsible",
    ]


def test_check_raises_with_stage_and_exact_missing() -> None:
    with pytest.raises(LeadGateMissingFields) as info:
        gate.check(gate.LeadFacts(contact_name="x", phones=1), CrmRules(), "qualified")
    assert info.value.error_id == "lead-gate-missing-fields"
    assert info.value.details == {
        "stage": "qualified",
        "missing": ["source", "client_type", "potential", "region", "decision_maker"],
    }


def test_backward_is_only_along_open_stages() -> None:
    rules = CrmRules()
    assert gate.is_backward(rules, "qualified", "in_work")
    assert gate.is_backward(rules, "in_work", "new")
    assert not gate.is_backward(rules, "new", "in_work")
    assert not gate.is_backward(rules, "junk", "new")  # reviving a junk lead passes the gate
    assert not gate.is_backward(rules, None, "new")


def test_open_gates_lists_later_stages() -> None:
    gates = gate.open_gates(gate.LeadFacts(contact_name="x", phones=1), CrmRules(), "in_work")
    assert list(gates) == ["qualified", "converted"]
    assert gates["qualified"] == ["source", "client_type", "potential", "region", "decision_maker"]
