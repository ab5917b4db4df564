"""The editable fields of the cards (contact, company, lead, deal, invoice): what each field is,
how its form reads into the patch the crm_core service takes, how its value is shown, and how a
refusal becomes a sentence next to the field.

Pure functions of the form and the record's view: the handlers in :mod:`cards` call the same
service functions as the REST API with the patch built here, so validation, duplicates, access
and events are the API's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from multidict import MultiMapping
from pydantic import ValidationError

from contact_center.i18n import Translate, error_text
from contact_center.web import formats
from crm_core.errors import DomainError
from crm_core.rules import CrmRules, CustomFieldDef

# A field of a card: ``kind`` says how it is edited and shown; ``attrs`` are the patch fields it
# sets (one, or two for the composite "potential" and "decision maker").
TEXT, AREA, SELECT, BOOL, MONEY, DATE = "text", "textarea", "select", "bool", "money", "date"
CLIENT = "client"  # a contact or company of the deal, typed by name (suggestions as you type)
PHONES, EMAILS, MESSENGERS, POTENTIAL, DECISION_MAKER = (
    "phones",
    "emails",
    "messengers",
    "potential",
    "decision_maker",
)
MESSENGER_CHANNELS = ("whatsapp", "telegram")


class FieldError(Exception):
    """A value the form cannot turn into a patch (a bad amount, a blank required name)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class FieldSpec:
    key: str
    label: str  # message id
    kind: str = TEXT
    attrs: tuple[str, ...] = ()
    options: str = ""  # client_type, region, source, user, interest, purchase
    required: bool = False
    maxlength: int = 300
    heads_only: bool = False  # only the head of sales and admins change it (the responsible)
    custom: CustomFieldDef | None = None  # one of crm.custom_fields (stored in ``custom``)

    @property
    def names(self) -> tuple[str, ...]:
        return self.attrs or (self.key,)


def _f(key: str, label: str, kind: str = TEXT, **kw: Any) -> FieldSpec:
    return FieldSpec(key, label, kind, **kw)


CLIENT_GROUPS: tuple[tuple[str, tuple[FieldSpec, ...]], ...] = (
    (
        "card.group.client",
        (
            _f("client_type", "card.client_type", SELECT, options="client_type"),
            _f("source_id", "card.source", SELECT, options="source"),
            _f("region_id", "card.region", SELECT, options="region"),
            _f("responsible_id", "card.responsible", SELECT, options="user", heads_only=True),
            _f("target_fit", "card.target_fit", BOOL),
            _f("interest", "card.interest", SELECT, options="interest"),
        ),
    ),
    (
        "card.group.potential",
        (
            _f(
                "potential",
                "card.potential",
                POTENTIAL,
                attrs=("potential_amount", "purchase_mode"),
            ),
        ),
    ),
    (
        "card.group.decision_maker",
        (
            _f(
                "decision_maker",
                "card.decision_maker_reached",
                DECISION_MAKER,
                attrs=("decision_maker_reached", "decision_maker_name"),
                maxlength=200,
            ),
        ),
    ),
    (
        "card.group.needs",
        (
            _f("needs_products", "card.needs_products", AREA, maxlength=10_000),
            _f("current_suppliers", "card.current_suppliers", AREA, maxlength=10_000),
            _f("conditions", "card.conditions", AREA, maxlength=10_000),
            _f("current_need", "card.current_need", AREA, maxlength=10_000),
        ),
    ),
)

MAIN: dict[str, tuple[FieldSpec, ...]] = {
    "contact": (
        _f("name", "card.name", required=True),
        _f("position", "card.position", maxlength=200),
        _f("phones", "card.phones", PHONES),
        _f("emails", "card.emails", EMAILS),
        _f("messengers", "card.messengers", MESSENGERS),
        _f("comment", "card.comment", AREA, maxlength=10_000),
    ),
    "company": (
        _f("name", "card.company_name", required=True),
        _f("website", "card.website"),
        _f("phones", "card.phones", PHONES),
        _f("emails", "card.emails", EMAILS),
        _f("comment", "card.comment", AREA, maxlength=10_000),
    ),
    "lead": (
        _f("title", "card.lead_title"),
        _f("contact_name", "card.contact_name"),
        _f("company_name", "card.company_name"),
        _f("phones", "card.phones", PHONES),
        _f("emails", "card.emails", EMAILS),
        _f("inn", "card.inn", maxlength=12),
        _f("comment", "card.comment", AREA, maxlength=10_000),
    ),
    "deal": (
        _f("title", "card.deal_title", required=True),
        _f("contact_id", "card.contact", CLIENT, options="contact", maxlength=200),
        _f("company_id", "card.company", CLIENT, options="company", maxlength=300),
        _f("amount", "card.amount", MONEY),
        _f("margin", "card.margin", MONEY),
        _f("products", "card.products", AREA, maxlength=20_000),
        _f("responsible_id", "card.responsible", SELECT, options="user", heads_only=True),
        _f("source_id", "card.source", SELECT, options="source"),
        _f("samples_sent_at", "card.samples_sent_at", DATE),
        _f("meeting_at", "card.meeting_at", DATE),
        _f("exhibition_invited_at", "card.exhibition_invited_at", DATE),
        _f("promotion_offered_at", "card.promotion_offered_at", DATE),
    ),
    "invoice": (
        _f("number", "card.invoice_number", required=True, maxlength=64),
        _f("amount", "card.amount", MONEY, required=True),
        _f("issued_on", "card.issued_on", DATE, required=True),
        _f("due_on", "card.due_on", DATE, required=True),
        _f("responsible_id", "card.responsible", SELECT, options="user", heads_only=True),
        _f("comment", "card.comment", AREA, maxlength=5000),
    ),
}


CUSTOM_PREFIX = "custom-"  # the key of a configured field (an element id, a URL segment)
_CUSTOM_KIND = {"string": TEXT, "number": TEXT, "date": DATE, "enum": SELECT, "bool": BOOL}


def custom_specs(kind: str, rules: CrmRules | None) -> tuple[FieldSpec, ...]:
    """The fields ``crm.custom_fields`` declares for this kind of card, in their order."""
    if rules is None:
        return ()
    return tuple(
        FieldSpec(
            CUSTOM_PREFIX + f.name,
            "field.custom." + f.name,  # a configured text (see configured_texts)
            _CUSTOM_KIND[f.type],
            options="custom" if f.type == "enum" else "",
            maxlength=1000,
            custom=f,
        )
        for f in rules.custom_fields
        if kind in f.applies_to
    )


def configured_texts(rules: CrmRules) -> dict[str, dict[str, str]]:
    """The labels of the configured fields, as the translators look them up: the field's own
    label on the card and in refusals, and the requirement's in the lead gate."""
    out: dict[str, dict[str, str]] = {"ru": {}, "en": {}}
    for f in rules.custom_fields:
        ru = f.label_ru or f.label_en or f.name
        en = f.label_en or f.label_ru or f.name
        for key in ("field.custom." + f.name, "requirement.custom." + f.name):
            out["ru"][key], out["en"][key] = ru, en
        for value, label_ru, label_en in f.option_labels:
            key = option_key(f.name, value)
            out["ru"][key] = label_ru or label_en or value
            out["en"][key] = label_en or label_ru or value
    return out


def option_key(field: str, value: str) -> str:
    """The text key of an enum field's option label (a configured text)."""
    return f"custom.option.{field}.{value}"


def option_label(t: Translate, field: str, value: str) -> str:
    """What a person reads for an enum field's ``value``: its configured label in his
    language, else the value itself."""
    key = option_key(field, value)
    text = t(key)
    return value if text == key else text


PIPELINE = _f("pipeline", "card.pipeline", SELECT, options="pipeline")


def groups_of(kind: str, rules: CrmRules | None = None) -> list[tuple[str, tuple[FieldSpec, ...]]]:
    """The card's fields grouped as the customer thinks of them; the configured fields last."""
    main = MAIN[kind]
    if kind == "deal" and rules is not None and len(rules.pipelines) > 1:
        main = (main[0], PIPELINE, *main[1:])  # which pipeline, when there is a choice
    out: list[tuple[str, tuple[FieldSpec, ...]]] = [("card.group.main", main)]
    if kind in ("contact", "company", "lead"):
        out.extend(CLIENT_GROUPS)
    extra = custom_specs(kind, rules)
    if extra:
        out.append(("card.group.custom", extra))
    return out


def requirement_field(requirement: str, fixed: Mapping[str, str]) -> str | None:
    """The card field that fills a gate requirement (a configured one: its own field)."""
    if requirement.startswith("custom."):
        return CUSTOM_PREFIX + requirement.removeprefix("custom.")
    return fixed.get(requirement)


def spec_of(kind: str, key: str, rules: CrmRules | None = None) -> FieldSpec | None:
    for _, specs in groups_of(kind, rules):
        for spec in specs:
            if spec.key == key:
                return spec
    return None


# ---------------------------------------------------------------- form → patch


def parse_money(text: str, label: str, t: Translate) -> Decimal | None:
    """``1 200 000,50`` (spaces, narrow spaces, a comma or a point, a trailing ₽) → Decimal."""
    raw = (
        text.replace("\u202f", "")
        .replace("\u00a0", "")
        .replace(" ", "")
        .replace("₽", "")
        .replace(",", ".")
        .strip()
    )
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise FieldError(t("card.error.money", field=label)) from None
    if not value.is_finite() or value < 0:
        raise FieldError(t("card.error.money", field=label))
    return value


def parse_date(text: str, label: str, t: Translate) -> date | None:
    """``дд.мм.гггг`` or ``гггг-мм-дд``."""
    raw = text.strip()
    if not raw:
        return None
    try:
        if "." in raw:
            d, m, y = raw.split(".")
            return date(int(y), int(m), int(d))
        return date.fromisoformat(raw)
    except ValueError:
        raise FieldError(t("card.error.date", field=label)) from None


def _bool(text: str) -> bool | None:
    return {"yes": True, "no": False}.get(text)


def _text(form: MultiMapping[str], name: str) -> str:
    value = form.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _all(form: MultiMapping[str], name: str) -> list[str]:
    return [v.strip() for v in form.getall(name, []) if isinstance(v, str) and v.strip()]


def values_from_form(spec: FieldSpec, form: MultiMapping[str], t: Translate) -> dict[str, Any]:
    """The patch values the field's form asks for (``None`` clears a field)."""
    label = t(spec.label)
    if spec.custom is not None:
        return {"custom": {spec.custom.name: _custom_value(spec, form, label, t)}}
    if spec.kind in (TEXT, AREA):
        text = _text(form, spec.key)
        if spec.required and not text:
            raise FieldError(t("card.error.required", field=label))
        return {spec.key: text or None}
    if spec.kind == SELECT:
        raw = _text(form, spec.key)
        if spec.options in ("region", "source", "user"):
            return {spec.key: int(raw) if raw.isdigit() else None}
        return {spec.key: raw or None}
    if spec.kind == BOOL:
        return {spec.key: _bool(_text(form, spec.key))}
    if spec.kind == MONEY:
        amount = parse_money(_text(form, spec.key), label, t)
        if spec.required and amount is None:
            raise FieldError(t("card.error.required", field=label))
        return {spec.key: amount}
    if spec.kind == DATE:
        day = parse_date(_text(form, spec.key), label, t)
        if spec.required and day is None:
            raise FieldError(t("card.error.required", field=label))
        return {spec.key: day}
    if spec.kind in (PHONES, EMAILS):
        return {spec.key: _all(form, spec.key)}
    if spec.kind == MESSENGERS:
        channels = form.getall("channel", [])
        ids = form.getall("external_id", [])
        pairs = []
        for channel, external in zip(channels, ids, strict=False):
            if isinstance(channel, str) and isinstance(external, str) and external.strip():
                pairs.append({"channel": channel, "external_id": external.strip()})
        return {"messengers": pairs}
    if spec.kind == POTENTIAL:
        amount = parse_money(_text(form, "potential_amount"), t("card.potential_amount"), t)
        return {
            "potential_amount": amount,
            "purchase_mode": _text(form, "purchase_mode") or None,
        }
    if spec.kind == DECISION_MAKER:
        return {
            "decision_maker_reached": _bool(_text(form, "decision_maker_reached")),
            "decision_maker_name": _text(form, "decision_maker_name") or None,
        }
    raise ValueError(f"unknown field kind {spec.kind}")


def _custom_value(spec: FieldSpec, form: MultiMapping[str], label: str, t: Translate) -> Any:
    """A configured field's value as the service validates it (``None`` clears it)."""
    assert spec.custom is not None
    raw = _text(form, spec.key)
    kind = spec.custom.type
    if kind == "bool":
        return _bool(raw)
    if not raw:
        return None
    if kind == "number":
        number = raw.replace("\u202f", "").replace("\u00a0", "").replace(" ", "").replace(",", ".")
        try:
            if not Decimal(number).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise FieldError(t("card.error.number", field=label)) from None
        return number
    if kind == "date":
        day = parse_date(raw, label, t)
        return day.isoformat() if day else None
    return raw


# ---------------------------------------------------------------- refusals as sentences

_PYDANTIC = {
    "string_too_long": "card.error.too_long",
    "greater_than_equal": "card.error.negative",
    "greater_than": "card.error.positive",
    "decimal_max_digits": "card.error.too_big",
    "decimal_max_places": "card.error.kopecks",
    "decimal_whole_digits": "card.error.too_big",
    "literal_error": "card.error.choice",
    "string_too_short": "card.error.required",
}


def validation_message(exc: ValidationError, spec: FieldSpec, t: Translate) -> str:
    """A pydantic refusal of the patch as a sentence naming the field."""
    errors = exc.errors()
    kind = str(errors[0]["type"]) if errors else ""
    key = _PYDANTIC.get(kind, "card.error.invalid")
    return t(key, field=t(spec.label))


@dataclass(frozen=True)
class Refusal:
    """What to show next to a field the service refused: the sentence and, for a duplicate the
    reader may see, the record it duplicates (its name and card)."""

    message: str
    link_text: str | None = None
    link_url: str | None = None
    index: int | None = None  # which entry of a list field (phones.1) is wrong


def duplicate_refusal(
    details: Mapping[str, Any], names: Mapping[tuple[str, int], str], t: Translate
) -> Refusal:
    """A ``duplicate-client`` refusal: "Телефон +7 (495) … уже есть у контакта «…»" with a link,
    or, for a client of another manager, that it exists and whom to ask."""
    dups: Sequence[Mapping[str, Any]] = details.get("duplicates") or []
    if not dups:
        return Refusal(t("error.duplicate-client"))
    first = dups[0]
    what = str(first.get("matched_on", ""))
    value = str(first.get("value", ""))
    shown = formats.phone(value) if what == "phone" else value
    if what == "messenger":
        shown = value.split(":", 1)[-1]
    matched = t("card.matched." + what) if what else ""
    kind = str(first.get("type", "contact"))
    record_id = first.get("id")
    if isinstance(record_id, int):
        name = names.get((kind, record_id)) or f"#{record_id}"
        return Refusal(
            t("card.error.duplicate_of_" + kind, what=matched, value=shown),
            link_text=name,
            link_url=f"/clients/{kind}/{record_id}",
        )
    return Refusal(t("card.error.duplicate_hidden", what=matched, value=shown))


def refusal_of(exc: DomainError, names: Mapping[tuple[str, int], str], t: Translate) -> Refusal:
    """A domain refusal as a sentence a person reads, next to the field."""
    if exc.error_id in ("duplicate-client", "lead-duplicate-belongs-to-another-manager"):
        return duplicate_refusal(exc.details, names, t)
    if exc.error_id in ("invalid-phone", "invalid-email"):
        value = exc.details.get("value")
        tail = str(exc.details.get("field", "")).rsplit(".", 1)[-1]
        index = int(tail) if tail.isdigit() else None
        key = "card.error.phone" if exc.error_id == "invalid-phone" else "card.error.email"
        text = t(key, value=value) if value else t("error." + exc.error_id)
        return Refusal(text, index=index)
    if exc.error_id == "permission-denied":
        if exc.details.get("field") == "responsible_id":
            return Refusal(t("card.error.handover"))
        return Refusal(t("card.error.read_only"))
    return Refusal(error_text(t, exc.error_id, exc.details))


def duplicate_ids(details: Mapping[str, Any]) -> list[tuple[str, int]]:
    """The (kind, id) of the duplicates a refusal names (to look their names up)."""
    out = []
    for d in details.get("duplicates") or []:
        if isinstance(d.get("id"), int) and d.get("type") in ("contact", "company"):
            out.append((str(d["type"]), int(d["id"])))
    return out
