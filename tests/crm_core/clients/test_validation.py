"""Requisites checksums and card field rules (pure functions, no database)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from crm_core import validation as v
from crm_core.errors import InvalidInput
from crm_core.rules import CrmRules, CustomFieldDef

# Sberbank's own requisites (public).
SBER = {
    "inn": "7707083893",
    "kpp": "773601001",
    "ogrn": "1027700132195",
    "bik": "044525225",
    "correspondent_account": "30101810400000000225",
    "settlement_account": "40702810938000000001",
}
IP_INN = "500100732259"  # a valid 12-digit INN
IP_OGRNIP = "304500116000157"  # a valid 15-digit OGRNIP


@pytest.mark.parametrize("inn", ["7707083893", "7736050003", IP_INN, " 7707083893 "])
def test_valid_inns(inn: str) -> None:
    assert v.validate_inn(inn) == inn.strip()


@pytest.mark.parametrize(
    "inn",
    ["7707083894", "500100732258", "500100732269", "770708389", "77070838930", "77070838a3", ""],
)
def test_broken_inns_name_the_field_and_value(inn: str) -> None:
    with pytest.raises(v.InvalidInn) as err:
        v.validate_inn(inn, field="legal_entities.0.requisites.0.inn")
    assert err.value.error_id == "invalid-inn"
    assert err.value.details == {"field": "legal_entities.0.requisites.0.inn", "value": inn}


def test_inn_length_can_be_demanded() -> None:
    with pytest.raises(v.InvalidInn, match="expected 10 digits"):
        v.validate_inn(IP_INN, length=10)


@pytest.mark.parametrize("ogrn", [SBER["ogrn"], IP_OGRNIP])
def test_valid_ogrn_and_ogrnip(ogrn: str) -> None:
    assert v.validate_ogrn(ogrn) == ogrn


@pytest.mark.parametrize("ogrn", ["1027700132196", "304500116000158", "102770013219", "1" * 14])
def test_broken_ogrn(ogrn: str) -> None:
    with pytest.raises(v.InvalidOgrn) as err:
        v.validate_ogrn(ogrn)
    assert err.value.error_id == "invalid-ogrn" and err.value.details["value"] == ogrn


def test_kpp() -> None:
    assert v.validate_kpp("773601001") == "773601001"
    assert v.validate_kpp("7736ab001") == "7736AB001"  # letters allowed in the 5th-6th place
    for bad in ("77360100", "7736010011", "77a601001"):
        with pytest.raises(v.InvalidKpp):
            v.validate_kpp(bad)


def test_bik() -> None:
    assert v.validate_bik("044525225") == "044525225"
    for bad in ("144525225", "04452522", "04452522x"):
        with pytest.raises(v.InvalidBik) as err:
            v.validate_bik(bad)
        assert err.value.error_id == "invalid-bik"


def test_accounts_are_keyed_to_the_bik() -> None:
    bik = SBER["bik"]
    assert v.validate_correspondent_account(SBER["correspondent_account"], bik)
    assert v.validate_settlement_account(SBER["settlement_account"], bik)
    with pytest.raises(v.InvalidAccount, match="control key"):
        v.validate_correspondent_account("30101810400000000226", bik)
    with pytest.raises(v.InvalidAccount, match="control key"):
        v.validate_settlement_account("40702810938000000002", bik)
    with pytest.raises(v.InvalidAccount, match="control key"):
        # Right account, another bank (VTB's BIK).
        v.validate_settlement_account(SBER["settlement_account"], "044525187")
    with pytest.raises(v.InvalidAccount, match="20 digits"):
        v.validate_settlement_account("4070281093800000000", bik)
    with pytest.raises(v.InvalidAccount, match="starts with 301"):
        v.validate_correspondent_account(SBER["settlement_account"], bik)


def test_requisites_set_and_consistency() -> None:
    out = v.validate_requisites({**SBER, "full_name": "ПАО Сбербанк", "kpp": "773601001 "})
    assert out["kpp"] == "773601001" and out["inn"] == SBER["inn"]
    assert v.validate_requisites({"inn": "", "kpp": None})["inn"] is None
    cases: list[tuple[dict[str, Any], type[InvalidInput], str]] = [
        ({"inn": IP_INN, "kpp": "773601001"}, v.InconsistentRequisites, "kpp"),
        ({"inn": SBER["inn"], "ogrn": IP_OGRNIP}, v.InconsistentRequisites, "ogrn"),
        (
            {"settlement_account": SBER["settlement_account"]},
            v.InconsistentRequisites,
            "settlement_account",
        ),
        ({**SBER, "ogrn": "1027700132196"}, v.InvalidOgrn, "ogrn"),
    ]
    for data, exc, field in cases:
        with pytest.raises(exc) as err:
            v.validate_requisites(data, prefix="requisites.0.")
        assert err.value.details["field"] == f"requisites.0.{field}"
    ip = v.validate_requisites({"inn": IP_INN, "ogrn": IP_OGRNIP})
    assert ip["ogrn"] == IP_OGRNIP


def test_email() -> None:
    assert v.normalize_email(" Ivan@Example.RU ") == "ivan@example.ru"
    with pytest.raises(v.InvalidEmail) as err:
        v.normalize_email("ivan@", field="emails.1")
    assert err.value.details == {"field": "emails.1", "value": "ivan@"}


RULES = CrmRules(
    custom_fields=(
        CustomFieldDef("segment", "enum", options=("A", "B")),
        CustomFieldDef("employees", "number"),
        CustomFieldDef("founded", "date", applies_to=("company",)),
        CustomFieldDef("vip", "bool"),
        CustomFieldDef("note", "string"),
    )
)


def test_custom_fields_by_type() -> None:
    out = v.validate_custom_fields(
        {"segment": "A", "employees": "120", "founded": "2001-05-17", "vip": True, "note": "x"},
        RULES,
        applies_to="company",
    )
    assert out == {
        "segment": "A",
        "employees": 120,
        "founded": "2001-05-17",
        "vip": True,
        "note": "x",
    }
    assert v.validate_custom_fields({"employees": Decimal("1.5")}, RULES, applies_to="lead") == {
        "employees": 1.5
    }
    assert v.validate_custom_fields({"vip": None}, RULES, applies_to="contact") == {"vip": None}


@pytest.mark.parametrize(
    ("values", "error_id", "field"),
    [
        ({"segment": "Z"}, "invalid-custom-field", "custom.segment"),
        ({"employees": "many"}, "invalid-custom-field", "custom.employees"),
        ({"employees": True}, "invalid-custom-field", "custom.employees"),
        ({"vip": "yes"}, "invalid-custom-field", "custom.vip"),
        ({"note": 5}, "invalid-custom-field", "custom.note"),
        ({"founded": "17.05.2001"}, "invalid-custom-field", "custom.founded"),
        ({"colour": "red"}, "unknown-custom-field", "custom.colour"),
    ],
)
def test_custom_field_errors_name_the_field(
    values: dict[str, Any], error_id: str, field: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        v.validate_custom_fields(values, RULES, applies_to="company")
    assert err.value.error_id == error_id and err.value.details["field"] == field


def test_custom_field_declared_for_another_kind_is_unknown() -> None:
    with pytest.raises(v.UnknownCustomField):
        v.validate_custom_fields({"founded": "2001-05-17"}, RULES, applies_to="contact")


def test_client_type_from_the_configured_list() -> None:
    v.validate_client_type("wholesaler", RULES)
    v.validate_client_type(None, RULES)
    with pytest.raises(v.InvalidCardField) as err:
        v.validate_client_type("pirate", RULES)
    assert err.value.details == {"field": "client_type", "value": "pirate"}
