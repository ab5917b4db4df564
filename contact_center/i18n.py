"""Interface texts, from the gettext catalogues in ``contact_center/locale/<lang>/LC_MESSAGES``.

Russian is the default language; English is available. A message id is a stable key
(``login.title``, ``menu.leads``, ``error.lead-gate-missing-fields``): the browser scripts
look texts up by the same keys. The catalogues are ``.po`` files a translator edits; they are
read once (Babel's ``read_po``, no compile step) the first time a language is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web
from babel.messages.pofile import read_po

LANGUAGES = ("ru", "en")
LOCALE_DIR = Path(__file__).parent / "locale"

Translate = Callable[..., str]


@functools.cache
def catalogue(lang: str) -> Mapping[str, str]:
    """Every translated message of ``lang`` by its id (read once)."""
    path = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as fh:
        cat = read_po(fh, locale=lang)
    return {
        str(m.id): str(m.string) for m in cat if m.id and isinstance(m.string, str) and m.string
    }


# Texts the configuration adds (the labels of ``crm.custom_fields``), by language: consulted
# after the catalogue, so a configured label never hides a translated interface text.
_CONFIGURED: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}


def add_configured_texts(texts: Mapping[str, Mapping[str, str]]) -> None:
    """Make configured texts (``{"ru": {key: text}, "en": {...}}``) known to every translator."""
    for lang, entries in texts.items():
        if lang in _CONFIGURED:
            _CONFIGURED[lang].update(entries)


def pick_language(request: web.Request, default: str, user_locale: str | None = None) -> str:
    """``?lang=`` beats the ``cc_lang`` cookie, which beats the user's setting and the default."""
    for candidate in (request.query.get("lang"), request.cookies.get("cc_lang"), user_locale):
        if candidate in LANGUAGES:
            return candidate
    return default if default in LANGUAGES else "ru"


def table(lang: str) -> dict[str, str]:
    """Every text of ``lang`` (English filling any gap), for the browser."""
    lang = lang if lang in LANGUAGES else "ru"
    return {**_CONFIGURED["en"], **catalogue("en"), **_CONFIGURED[lang], **catalogue(lang)}


def translator(lang: str) -> Translate:
    """``t(key, **values)``: the text of ``key`` in ``lang`` with ``{values}`` filled in; an
    unknown key comes back as itself (visible in a test, never a crash)."""
    lang = lang if lang in LANGUAGES else "ru"
    texts, configured = catalogue(lang), _CONFIGURED[lang]
    fallback, configured_fallback = catalogue("en"), _CONFIGURED["en"]

    def t(key: str, **kwargs: Any) -> str:
        text = (
            texts.get(key)
            or configured.get(key)
            or fallback.get(key)
            or configured_fallback.get(key)
            or key
        )
        if not kwargs:
            return text
        try:
            return text.format(**kwargs)
        except (KeyError, IndexError, ValueError):
            return text

    return t


def has(lang: str, key: str) -> bool:
    return key in catalogue(lang if lang in LANGUAGES else "ru")


def error_text(t: Translate, error_id: str, details: Mapping[str, Any] | None = None) -> str:
    """A domain error (stable ``error_id`` and ``details``) as a sentence a person reads: what
    is wrong and what to do. Field names in the details are translated too."""
    details = details or {}
    lang_has = t("error." + error_id) != "error." + error_id
    if error_id == "lead-gate-missing-fields":
        missing = [t("requirement." + str(m)) for m in details.get("missing", [])]
        return t("error.lead-gate-missing-fields", fields=", ".join(missing))
    field = details.get("field")
    if isinstance(field, str):
        label = field_label(t, field)
        key = f"error.{error_id}.field"
        text = t(key, field=label)
        if text != key:
            return text
    if lang_has:
        return t("error." + error_id)
    return t("error.generic")


def field_label(t: Translate, field: str) -> str:
    """A field named in a refusal as a person reads it: ``phones.1`` is the second phone,
    ``custom.fleet_size`` the configured label, ``card.inn`` the INN."""
    parts = field.split(".")
    position = ""
    if len(parts) > 1 and parts[-1].isdigit():
        position = f" {int(parts[-1]) + 1}"
        parts = parts[:-1]
    for key in ("field." + ".".join(parts), "field." + parts[-1]):
        label = t(key)
        if label != key:
            return label + position
    return field
