"""Phone normalisation: E.164 from any format; the memo of parsed numbers changes nothing."""

from __future__ import annotations

import pytest

from crm_core.phones import InvalidPhone, normalize_phone, try_normalize_phone


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
