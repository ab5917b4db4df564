"""Companies, legal entities with requisites (kept with history), contacts and their
phones, e-mails and messenger ids."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, declared_attr, mapped_column, validates

from crm_core.db import Base, JsonDoc, Money, utcnow


def last10_of(number: str) -> str:
    """The last 10 digits of a number (all of them if it has fewer)."""
    return "".join(ch for ch in number if ch.isdigit())[-10:]


def fold_name(text: str | None) -> str:
    """The search key of a name: case-folded in Python (SQLite's ``lower()`` knows only ASCII),
    "ё" read as "е", whitespace collapsed. Compare it with a query folded the same way."""
    return " ".join((text or "").casefold().replace("ё", "е").split())


def _name_default(context: Any) -> str:
    # Core inserts that leave the column out (bulk imports); the ORM sets it in _fold_name.
    return fold_name(context.get_current_parameters().get("name"))


def _digits_rev_default(context: Any) -> str:
    number = context.get_current_parameters().get("e164") or ""
    return "".join(ch for ch in number if ch.isdigit())[::-1]


def _last10_default(context: Any) -> str:
    return last10_of(context.get_current_parameters().get("e164") or "")


def responsible_index(table: str, include: Sequence[str] = ()) -> Index:
    """``(responsible_id, id)``: a manager's records in one index range, their ids included
    (and, on PostgreSQL, the ``include`` columns)."""
    return Index(
        f"ix_{table}_responsible_id_id", "responsible_id", "id", postgresql_include=list(include)
    )


# What a client list filters on: on PostgreSQL the name index and the responsible index carry
# these columns (INCLUDE), so the first page of a list by name, searched or filtered, and a
# manager's filtered total are read from an index alone; only the page's 50 rows come from the
# table (migration 0016_pagesfast).
LIST_FILTERS = ("merged_into_id", "client_type", "region_id", "source_id", "purchase_mode")


def name_index(table: str) -> Index:
    """``(name_search, id)``: a client list in its default order, with what it filters on."""
    return Index(
        f"ix_{table}_name_search_id",
        "name_search",
        "id",
        postgresql_include=["responsible_id", *LIST_FILTERS],
    )


class CardFields:
    """The client card's fields, shared by leads, contacts and companies."""

    client_type: Mapped[str | None] = mapped_column(String(64), index=True)
    potential_amount: Mapped[Decimal | None] = mapped_column(Money())
    purchase_mode: Mapped[str | None] = mapped_column(String(16))
    target_fit: Mapped[bool | None]
    interest: Mapped[str | None] = mapped_column(String(16))
    decision_maker_reached: Mapped[bool | None]
    decision_maker_name: Mapped[str | None] = mapped_column(String(200))
    needs_products: Mapped[str | None] = mapped_column(Text)  # what they buy
    current_suppliers: Mapped[str | None] = mapped_column(Text)
    conditions: Mapped[str | None] = mapped_column(Text)  # payment, delivery, prices
    current_need: Mapped[str | None] = mapped_column(Text)
    custom: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)  # crm.custom_fields
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @declared_attr
    def source_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("sources.id", ondelete="SET NULL"), index=True)

    @declared_attr
    def region_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("regions.id", ondelete="SET NULL"), index=True)

    @declared_attr
    def responsible_id(cls) -> Mapped[int | None]:
        # Indexed with the id by each table (responsible_index): "the ids of a manager's
        # records", which every manager's access check asks, is then read from the index alone.
        return mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    @declared_attr
    def created_by_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class Company(CardFields, Base):
    """A client organisation as the sales team sees it; a head organisation (holding) may have
    member companies (``head_id``) and has one or more legal entities."""

    __tablename__ = "companies"
    __table_args__ = (
        responsible_index("companies", include=LIST_FILTERS),
        name_index("companies"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), index=True)
    name_search: Mapped[str] = mapped_column(String(300), default=_name_default)
    head_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL"), index=True
    )
    website: Mapped[str | None] = mapped_column(String(300))
    comment: Mapped[str | None] = mapped_column(Text)
    legal_hold: Mapped[bool] = mapped_column(default=False)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("companies.id", ondelete="SET NULL")
    )

    @validates("name")
    def _fold_name(self, _key: str, value: str) -> str:
        self.name_search = fold_name(value)
        return value


class LegalEntity(Base):
    """A legal entity of a client (ООО, АО, ИП); its requisites are kept with history."""

    __tablename__ = "legal_entities"

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(300))
    is_active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Requisites(Base):
    """One set of requisites. A change writes a new row and retires the old one
    (``retired_at``, ``replaced_by_id``), so history is never overwritten."""

    __tablename__ = "requisites"
    __table_args__ = (Index("ix_requisites_inn_live", "inn", "retired_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    legal_entity_id: Mapped[int] = mapped_column(
        ForeignKey("legal_entities.id", ondelete="CASCADE"), index=True
    )
    label: Mapped[str] = mapped_column(String(100), default="")  # "основные", "для отгрузок"
    full_name: Mapped[str] = mapped_column(String(500))
    inn: Mapped[str | None] = mapped_column(String(12))
    kpp: Mapped[str | None] = mapped_column(String(9))
    ogrn: Mapped[str | None] = mapped_column(String(15))  # OGRN (13) or OGRNIP (15)
    legal_address: Mapped[str | None] = mapped_column(Text)
    actual_address: Mapped[str | None] = mapped_column(Text)
    bank_name: Mapped[str | None] = mapped_column(String(300))
    bik: Mapped[str | None] = mapped_column(String(9))
    settlement_account: Mapped[str | None] = mapped_column(String(20))
    correspondent_account: Mapped[str | None] = mapped_column(String(20))
    vat_payer: Mapped[bool | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    retired_at: Mapped[datetime | None]
    replaced_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("requisites.id", ondelete="SET NULL")
    )


class Contact(CardFields, Base):
    """A person: a client's employee or a private client."""

    __tablename__ = "contacts"
    __table_args__ = (
        responsible_index("contacts", include=LIST_FILTERS),
        name_index("contacts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), index=True)  # as the manager writes it
    name_search: Mapped[str] = mapped_column(String(300), default=_name_default)
    position: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    legal_hold: Mapped[bool] = mapped_column(default=False)
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL")
    )

    @validates("name")
    def _fold_name(self, _key: str, value: str) -> str:
        self.name_search = fold_name(value)
        return value


class ContactCompany(Base):
    """A contact works at a company; one per company can be its decision maker (ЛПР)."""

    __tablename__ = "contact_companies"
    __table_args__ = (UniqueConstraint("contact_id", "company_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    company_id: Mapped[int] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[str | None] = mapped_column(String(200))
    is_decision_maker: Mapped[bool] = mapped_column(default=False)


def _one_owner() -> CheckConstraint:
    return CheckConstraint(
        "(CASE WHEN contact_id IS NULL THEN 0 ELSE 1 END)"
        " + (CASE WHEN company_id IS NULL THEN 0 ELSE 1 END)"
        " + (CASE WHEN lead_id IS NULL THEN 0 ELSE 1 END) = 1",
        name="one_owner",
    )


class _Owned:
    """Belongs to exactly one of a contact, a company or a lead."""

    @declared_attr
    def contact_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)

    @declared_attr
    def company_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("companies.id", ondelete="CASCADE"), index=True)

    @declared_attr
    def lead_id(cls) -> Mapped[int | None]:
        return mapped_column(ForeignKey("leads.id", ondelete="CASCADE"), index=True)


class Phone(_Owned, Base):
    """A phone number in E.164; ``digits_rev`` (its digits reversed) serves "ends with" search,
    ``last10`` the screen-pop. Both are derived from ``e164`` (ORM and Core inserts alike)."""

    __tablename__ = "phones"
    __table_args__ = (_one_owner(),)

    id: Mapped[int] = mapped_column(primary_key=True)
    e164: Mapped[str] = mapped_column(String(16), index=True)
    digits_rev: Mapped[str] = mapped_column(String(16), default=_digits_rev_default, index=True)
    # The number's last 10 digits (set from e164): the screen-pop finds a caller with one
    # equality lookup whether the country code matches or not.
    last10: Mapped[str] = mapped_column(String(10), default=_last10_default, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="work")  # work, mobile, home, fax
    extension: Mapped[str | None] = mapped_column(String(10))  # доб. 123
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @validates("e164")
    def _derive_search_keys(self, _key: str, value: str) -> str:
        self.digits_rev = "".join(ch for ch in value if ch.isdigit())[::-1]
        self.last10 = last10_of(value)
        return value


class Email(_Owned, Base):
    """An e-mail address, stored lower-cased."""

    __tablename__ = "emails"
    __table_args__ = (_one_owner(),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MessengerId(Base):
    """A contact's identity on a channel (WhatsApp wa_id, Telegram user id)."""

    __tablename__ = "messenger_ids"
    __table_args__ = (UniqueConstraint("channel", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        ForeignKey("contacts.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(32))  # whatsapp, telegram
    external_id: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
