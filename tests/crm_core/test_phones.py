"""Phone normalisation: E.164 from any format; the memo of parsed numbers changes nothing."""

from __future__ import annotations

import pytest

from crm_core.phones import (
    InvalidPhone,
    normalize_call_number,
    normalize_phone,
    try_normalize_phone,
)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("8 (495) 123-45-67", "+74951234567"),
        ("+7 495 1234567", "+74951234567"),
        ("74951234567", "+74951234567"),
        ("4951234567", "+74951234567"),
        ("375291234567", "+375291234567"),
    ],
)
def test_formats_give_e164_every_time(raw: str, e164: str) -> None:
    assert [normalize_phone(raw) for _ in range(3)] == [e164] * 3


def test_errors_are_raised_again_for_a_number_seen_before() -> None:
    for _ in range(2):
        with pytest.raises(InvalidPhone, match="not a possible phone number: '12'") as err:
            normalize_phone("12")
        assert err.value.details == {"value": "12"}
        with pytest.raises(InvalidPhone, match="not a phone number: 'call me'"):
            normalize_phone("call me")
        with pytest.raises(InvalidPhone, match="empty phone number"):
            normalize_phone("  ")
        assert try_normalize_phone("101") is None


def test_the_region_is_part_of_what_is_remembered() -> None:
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"
    assert try_normalize_phone("020 7946 0018", "RU") != "+442079460018"
    assert normalize_phone("020 7946 0018", "GB") == "+442079460018"


def test_a_call_number_is_e164_or_left_as_the_pbx_gave_it() -> None:
    """Caller IDs and dialed digits (the call fold): the same rules, but a short code or an
    extension stays as written and a withheld number is None."""
    assert normalize_call_number("74951112233") == "+74951112233"
    assert normalize_call_number("84951112233") == "+74951112233"
    assert normalize_call_number("+7 (916) 123-45-67") == "+79161234567"
    assert normalize_call_number("4951112233") == "+74951112233"
    assert normalize_call_number("+4930123456") == "+4930123456"
    assert normalize_call_number("112") == "112"
    assert normalize_call_number(" 101 ") == "101"
    for nothing in (None, "", "<unknown>", "anonymous", "s"):
        assert normalize_call_number(nothing) is None
    # One normaliser: what the CRM stores for a number is what the call carries.
    for raw in ("375291234567", "8 (495) 123-45-67", "+7 495 1234567"):
        assert normalize_call_number(raw) == normalize_phone(raw)
