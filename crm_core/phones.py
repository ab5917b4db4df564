"""Phone numbers: everything is stored in E.164 (``+74951234567``).

"8 (495) 123-45-67", "+7 495 1234567" and "74951234567" are one number. Parsing uses
``phonenumbers`` with a default region (RU), so local formats work; an 11-digit number starting
with 7 or 8 is read as Russian even without a "+".
"""

from __future__ import annotations

import functools
import re

import phonenumbers

from crm_core.errors import InvalidInput

_DIGITS = re.compile(r"\d")


class InvalidPhone(InvalidInput):
    error_id = "invalid-phone"


def normalize_phone(raw: str, region: str = "RU") -> str:
    """Return ``raw`` in E.164 or raise ``InvalidPhone`` naming the value."""
    text = (raw or "").strip()
    if not text:
        raise InvalidPhone("empty phone number", details={"value": raw})
    e164 = _parse(text, region)
    if e164 == _NOT_A_NUMBER:
        raise InvalidPhone(f"not a phone number: {raw!r}", details={"value": raw})
    if e164 == _IMPOSSIBLE:
        raise InvalidPhone(f"not a possible phone number: {raw!r}", details={"value": raw})
    return e164


_NOT_A_NUMBER = "not a number"
_IMPOSSIBLE = "impossible"


@functools.lru_cache(maxsize=16384)
def _parse(text: str, region: str) -> str:
    # Memoised: parsing costs ~0.1 ms, and the hot paths (a ringing call, the dialplan's
    # lookup) see the same numbers again: the DID on every call, a caller normalised by the
    # router and again by the lookup, a client calling back.
    digits = "".join(_DIGITS.findall(text))
    candidate = text
    if not text.startswith("+"):
        if region == "RU" and len(digits) == 11 and digits[0] in "78":
            candidate = "+7" + digits[1:]
        elif len(digits) > 11 and not text.startswith(("8", "0")):
            candidate = "+" + digits  # an international number written without "+"
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return _NOT_A_NUMBER
    if not phonenumbers.is_possible_number(number):
        return _IMPOSSIBLE
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


# How a PBX reports a withheld or missing caller ID.
_NO_NUMBER = frozenset({"", "<unknown>", "unknown", "anonymous", "<anonymous>"})


@functools.lru_cache(maxsize=8192)
def normalize_call_number(raw: str | None, region: str = "RU") -> str | None:
    """A number as a call presents it (caller ID, dialed digits): E.164 when it is a phone
    number, else the text as written, stripped (a short code such as ``112``, an extension);
    None when it names no number at all (empty, ``anonymous``, ``<unknown>``, no digit).

    The same rules as :func:`normalize_phone`, so a caller's number is the one his card holds.
    """
    if raw is None:
        return None
    text = raw.strip()
    if text.lower() in _NO_NUMBER or not _DIGITS.search(text):
        return None
    e164 = _parse(text, region)
    return text if e164 in (_NOT_A_NUMBER, _IMPOSSIBLE) else e164


def try_normalize_phone(raw: str | None, region: str = "RU") -> str | None:
    """E.164 or None, for inputs that may legitimately be something else (an extension)."""
    if not raw:
        return None
    try:
        return normalize_phone(raw, region)
    except InvalidPhone:
        return None


def digits_reversed(e164: str) -> str:
    """The number's digits, last first: "ends with 4567" becomes a prefix (index) search."""
    return "".join(_DIGITS.findall(e164))[::-1]


def digits_of(text: str) -> str:
    return "".join(_DIGITS.findall(text))
