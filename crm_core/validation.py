"""Validation of Russian company requisites and of the configurable card fields.

Checksums follow the Federal Tax Service (INN, OGRN/OGRNIP) and the Bank of Russia (account
control key) algorithms. Every error is an :class:`~crm_core.errors.InvalidInput` with a stable
``error_id`` whose ``details`` name the field and the offending value, so the API answers 422
with ``{"field": "legal_entities.0.requisites.0.inn", "value": "7707083894"}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from crm_core.errors import InvalidInput
from crm_core.rules import CrmRules


class InvalidRequisite(InvalidInput):
    """Base of the requisites errors; ``details`` = ``{"field", "value"}``."""

    error_id = "invalid-requisite"

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(
            f"{field}: {reason} (got {value!r})", details={"field": field, "value": value}
        )


class InvalidInn(InvalidRequisite):
    error_id = "invalid-inn"


class InvalidKpp(InvalidRequisite):
    error_id = "invalid-kpp"


class InvalidOgrn(InvalidRequisite):
    error_id = "invalid-ogrn"


class InvalidBik(InvalidRequisite):
    error_id = "invalid-bik"


class InvalidAccount(InvalidRequisite):
    error_id = "invalid-account"


class InconsistentRequisites(InvalidRequisite):
    """Each value is valid alone but they do not belong together (an ИП with a KPP)."""

    error_id = "inconsistent-requisites"


class InvalidEmail(InvalidRequisite):
    error_id = "invalid-email"


class InvalidCardField(InvalidRequisite):
    """A card field breaks a configured rule (client type not in the list)."""

    error_id = "invalid-card-field"


class UnknownCustomField(InvalidRequisite):
    error_id = "unknown-custom-field"


class InvalidCustomField(InvalidRequisite):
    error_id = "invalid-custom-field"


_INN10_WEIGHTS = (2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_WEIGHTS_11 = (7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_INN12_WEIGHTS_12 = (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8)
_ACCOUNT_WEIGHTS = (7, 1, 3)
_KPP_RE = re.compile(r"^\d{4}[\dA-Z]{2}\d{3}$")
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _control(digits: str, weights: tuple[int, ...]) -> int:
    return sum(int(d) * w for d, w in zip(digits, weights, strict=False)) % 11 % 10


def _clean(value: str | None) -> str:
    return (value or "").strip()


def validate_inn(value: str, *, field: str = "inn", length: int | None = None) -> str:
    """A 10-digit (legal entity) or 12-digit (individual, ИП) INN with valid check digits.

    ``length`` (10 or 12) demands one of the two forms.
    """
    inn = _clean(value)
    if not inn.isdigit() or len(inn) not in (10, 12):
        raise InvalidInn(field, value, "an INN has 10 digits (legal entity) or 12 (individual)")
    if length is not None and len(inn) != length:
        raise InvalidInn(field, value, f"expected {length} digits")
    if len(inn) == 10:
        ok = _control(inn, _INN10_WEIGHTS) == int(inn[9])
    else:
        ok = _control(inn, _INN12_WEIGHTS_11) == int(inn[10]) and _control(
            inn, _INN12_WEIGHTS_12
        ) == int(inn[11])
    if not ok:
        raise InvalidInn(field, value, "check digit mismatch")
    return inn


def validate_kpp(value: str, *, field: str = "kpp") -> str:
    """A KPP: 9 characters, the 5th and 6th may be capital Latin letters."""
    kpp = _clean(value).upper()
    if not _KPP_RE.match(kpp):
        raise InvalidKpp(
            field, value, "a KPP has 9 characters: 4 digits, 2 digits or letters, 3 digits"
        )
    return kpp


def validate_ogrn(value: str, *, field: str = "ogrn", length: int | None = None) -> str:
    """An OGRN (13 digits, check digit mod 11) or OGRNIP (15 digits, mod 13)."""
    ogrn = _clean(value)
    if not ogrn.isdigit() or len(ogrn) not in (13, 15):
        raise InvalidOgrn(field, value, "an OGRN has 13 digits, an OGRNIP 15")
    if length is not None and len(ogrn) != length:
        raise InvalidOgrn(field, value, f"expected {length} digits")
    modulus = 11 if len(ogrn) == 13 else 13
    if int(ogrn[:-1]) % modulus % 10 != int(ogrn[-1]):
        raise InvalidOgrn(field, value, "check digit mismatch")
    return ogrn


def validate_bik(value: str, *, field: str = "bik") -> str:
    """A Russian bank's BIK: 9 digits starting with 04."""
    bik = _clean(value)
    if not bik.isdigit() or len(bik) != 9 or not bik.startswith("04"):
        raise InvalidBik(field, value, "a BIK has 9 digits and starts with 04")
    return bik


def _account_key_ok(prefix: str, account: str) -> bool:
    digits = prefix + account
    total = sum(int(d) * _ACCOUNT_WEIGHTS[i % 3] for i, d in enumerate(digits))
    return total % 10 == 0


def validate_settlement_account(value: str, bik: str, *, field: str = "settlement_account") -> str:
    """A settlement account (расчётный счёт): 20 digits whose control key matches the bank
    (the BIK's last 3 digits)."""
    account = _clean(value)
    if not account.isdigit() or len(account) != 20:
        raise InvalidAccount(field, value, "an account number has 20 digits")
    if not _account_key_ok(bik[-3:], account):
        raise InvalidAccount(field, value, f"control key does not match BIK {bik}")
    return account


def validate_correspondent_account(
    value: str, bik: str, *, field: str = "correspondent_account"
) -> str:
    """A correspondent account (корр. счёт): 20 digits, starts with 301, control key computed
    with "0" and the BIK's 5th and 6th digits."""
    account = _clean(value)
    if not account.isdigit() or len(account) != 20:
        raise InvalidAccount(field, value, "an account number has 20 digits")
    if not account.startswith("301"):
        raise InvalidAccount(field, value, "a correspondent account starts with 301")
    if not _account_key_ok("0" + bik[4:6], account):
        raise InvalidAccount(field, value, f"control key does not match BIK {bik}")
    return account


def validate_requisites(data: Mapping[str, Any], *, prefix: str = "") -> dict[str, Any]:
    """Validate one set of requisites (INN, KPP, OGRN, BIK, accounts) and their consistency;
    return the values cleaned. ``prefix`` ("legal_entities.0.requisites.0.") goes before the
    field names in errors."""
    out = dict(data)

    def present(key: str) -> str | None:
        raw = data.get(key)
        if raw is None or not str(raw).strip():
            out[key] = None
            return None
        return str(raw)

    inn = present("inn")
    if inn is not None:
        out["inn"] = validate_inn(inn, field=prefix + "inn")
    kpp = present("kpp")
    if kpp is not None:
        out["kpp"] = validate_kpp(kpp, field=prefix + "kpp")
        if out["inn"] is not None and len(out["inn"]) != 10:
            raise InconsistentRequisites(
                prefix + "kpp", kpp, "an individual entrepreneur (12-digit INN) has no KPP"
            )
    ogrn = present("ogrn")
    if ogrn is not None:
        out["ogrn"] = validate_ogrn(ogrn, field=prefix + "ogrn")
        if out["inn"] is not None and (len(out["inn"]) == 10) != (len(out["ogrn"]) == 13):
            raise InconsistentRequisites(
                prefix + "ogrn",
                ogrn,
                "a legal entity has a 10-digit INN and a 13-digit OGRN, "
                "an individual entrepreneur a 12-digit INN and a 15-digit OGRNIP",
            )
    bik = present("bik")
    if bik is not None:
        out["bik"] = validate_bik(bik, field=prefix + "bik")
    for key, check in (
        ("settlement_account", validate_settlement_account),
        ("correspondent_account", validate_correspondent_account),
    ):
        account = present(key)
        if account is None:
            continue
        if out["bik"] is None:
            raise InconsistentRequisites(prefix + key, account, "an account needs the bank's BIK")
        out[key] = check(account, out["bik"], field=prefix + key)
    return out


def normalize_email(value: str, *, field: str = "emails") -> str:
    """An e-mail address trimmed and lower-cased; refuses anything without user@domain.tld."""
    address = _clean(value).lower()
    if not _EMAIL_RE.match(address) or len(address) > 320:
        raise InvalidEmail(field, value, "not an e-mail address")
    return address


def validate_client_type(value: str | None, rules: CrmRules, *, field: str = "client_type") -> None:
    """The client type must be one of ``crm.client_types`` (None is allowed: not yet known)."""
    if value is not None and value not in rules.client_types:
        raise InvalidCardField(field, value, f"one of {', '.join(rules.client_types)}")


def validate_custom_fields(
    values: Mapping[str, Any], rules: CrmRules, *, applies_to: str
) -> dict[str, Any]:
    """Check ``values`` against ``crm.custom_fields`` declared for ``applies_to`` ("lead",
    "contact", "company") and return them normalised for JSON storage.

    Types: string, number (stored as a JSON integer when whole, else a JSON number), date (ISO
    ``YYYY-MM-DD``, stored as text), enum (one of the options), bool. ``None`` means "clear the
    field". An undeclared name is refused naming it.
    """
    out: dict[str, Any] = {}
    for name, value in values.items():
        field = f"custom.{name}"
        spec = rules.custom_field(name)
        if spec is None or applies_to not in spec.applies_to:
            declared = [f.name for f in rules.custom_fields if applies_to in f.applies_to]
            raise UnknownCustomField(
                field, name, f"no such custom field; declared: {', '.join(declared) or 'none'}"
            )
        if value is None:
            out[name] = None
            continue
        if spec.type == "string":
            if not isinstance(value, str):
                raise InvalidCustomField(field, value, "expected a string")
            out[name] = value
        elif spec.type == "number":
            out[name] = _number(field, value)
        elif spec.type == "date":
            try:
                out[name] = date.fromisoformat(value).isoformat()
            except (TypeError, ValueError):
                raise InvalidCustomField(field, value, "expected a date YYYY-MM-DD") from None
        elif spec.type == "enum":
            if value not in spec.options:
                raise InvalidCustomField(field, value, f"one of {', '.join(spec.options)}")
            out[name] = value
        elif spec.type == "bool":
            if not isinstance(value, bool):
                raise InvalidCustomField(field, value, "expected true or false")
            out[name] = value
    return out


def _number(field: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise InvalidCustomField(field, value, "expected a number")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidCustomField(field, value, "expected a number") from None
    if not number.is_finite():
        raise InvalidCustomField(field, value, "expected a finite number")
    if number == number.to_integral_value():
        return int(number)
    return float(number)
