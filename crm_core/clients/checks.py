"""What every client card write shares: normalising phones, e-mails and messenger ids,
validating the card fields, and filling one card from another (merges, conversions)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients.errors import InvalidReference
from crm_core.clients.schemas import (
    CARD_FIELDS,
    CardInput,
    CompanyPatch,
    ContactPatch,
    MessengerInput,
)
from crm_core.phones import InvalidPhone, normalize_phone
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.users.model import User
from crm_core.validation import normalize_email, validate_client_type, validate_custom_fields

ClientType = Literal["contact", "company"]
OnDuplicate = Literal["refuse", "merge"]


def normalize_phones(raw: Iterable[str], *, region: str = "RU", field: str = "phones") -> list[str]:
    """E.164 of every number, in order, without repeats; an invalid one is refused naming its
    position (``phones.1``)."""
    out: list[str] = []
    for i, number in enumerate(raw):
        try:
            e164 = normalize_phone(number, region)
        except InvalidPhone as exc:
            raise InvalidPhone(
                exc.message, details={"field": f"{field}.{i}", "value": number}
            ) from None
        if e164 not in out:
            out.append(e164)
    return out


def normalize_emails(raw: Iterable[str], *, field: str = "emails") -> list[str]:
    """Lower-cased addresses, in order, without repeats."""
    out: list[str] = []
    for i, address in enumerate(raw):
        value = normalize_email(address, field=f"{field}.{i}")
        if value not in out:
            out.append(value)
    return out


def messenger_pairs(items: Iterable[MessengerInput]) -> list[tuple[str, str]]:
    """``(channel, external_id)`` of each messenger id, in order, without repeats."""
    out: list[tuple[str, str]] = []
    for m in items:
        pair = (m.channel, m.external_id.strip())
        if pair not in out:
            out.append(pair)
    return out


async def check_card(
    session: AsyncSession,
    values: Mapping[str, Any],
    rules: CrmRules,
    *,
    applies_to: str,
) -> dict[str, Any] | None:
    """Validate the card fields present in ``values``; return the validated custom fields."""
    if "client_type" in values:
        validate_client_type(values["client_type"], rules)
    for key, model, what in (("region_id", Region, "region"), ("source_id", Source, "source")):
        ref_id = values.get(key)
        if ref_id is None:
            continue
        active = await session.scalar(select(model.is_active).where(model.id == ref_id))
        if not active:
            raise InvalidReference(
                f"{key}: no active {what} {ref_id}", details={"field": key, "value": ref_id}
            )
    user_id = values.get("responsible_id")
    if user_id is not None:
        user = await session.get(User, user_id)
        if user is None or not user.is_active:
            raise InvalidReference(
                f"responsible_id: no active user {user_id}",
                details={"field": "responsible_id", "value": user_id},
            )
    custom = values.get("custom")
    if custom is None:
        return None
    return validate_custom_fields(custom, rules, applies_to=applies_to)


def check_name(given: set[str], name: str | None) -> None:
    """A patch that sends ``name`` sends a non-blank one."""
    if "name" in given and not (name or "").strip():
        raise InvalidReference("name: required", details={"field": "name", "value": name})


def check_handover(actor: Actor, current: int | None, patch: ContactPatch | CompanyPatch) -> None:
    """A patch that changes the responsible manager is the head's, an admin's or the system's."""
    if "responsible_id" in patch.model_fields_set:
        access.check_handover(actor, current, patch.responsible_id)


def card_values(data: CardInput) -> dict[str, Any]:
    """The shared card fields of an input."""
    return {name: getattr(data, name) for name in CARD_FIELDS}


def changed_fields(model: Any, *skip: str) -> tuple[str, ...]:
    """The fields a request sent (what a ``client.updated`` event names), sorted."""
    return tuple(sorted(set(model.model_fields_set) - set(skip)))


def fill_empty(target: Any, values: Mapping[str, Any]) -> list[str]:
    """Set each attribute of ``target`` that is empty (None or "") to the value given, when that
    value is not empty; return the names filled. Merges use it so the survivor keeps its own
    data and gains what only the other record knew."""
    filled: list[str] = []
    for name, value in values.items():
        if value is None or value == "":
            continue
        current = getattr(target, name)
        if current is None or current == "":
            setattr(target, name, value)
            filled.append(name)
    return filled


def merge_custom(target: Any, values: Mapping[str, Any] | None) -> list[str]:
    """Add the custom fields ``target`` lacks; return their names as ``custom.<name>``."""
    if not values:
        return []
    current = dict(target.custom or {})
    added = [k for k, v in values.items() if v is not None and current.get(k) is None]
    if added:
        current.update({k: values[k] for k in added})
        target.custom = current
    return [f"custom.{k}" for k in added]


def apply_custom(current: Mapping[str, Any] | None, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Custom fields after a patch: a None value removes the field."""
    out = dict(current or {})
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
