"""Listing and search: Cyrillic names on both databases, INN, phones, filters, scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients import service as clients
from crm_core.clients.model import Company, Contact
from crm_core.clients.schemas import (
    CompanyInput,
    CompanyLinkInput,
    ContactInput,
    LegalEntityInput,
    RequisitesInput,
)
from crm_core.clients.search import ClientFilter, list_companies, list_contacts
from crm_core.rules import CrmRules

from .conftest import Team


async def _world(session: AsyncSession, team: Team, rules: CrmRules) -> dict[str, int]:
    romashka, _ = await clients.create_company(
        session,
        CompanyInput(
            name="ООО «РОМАШКА»",
            client_type="wholesaler",
            phones=["+74951234567"],
            legal_entities=[
                LegalEntityInput(
                    name="ООО «Ромашка»",
                    requisites=[RequisitesInput(full_name="ООО «Ромашка»", inn="7707083893")],
                )
            ],
        ),
        actor=team.ivan,
        rules=rules,
    )
    member, _ = await clients.create_company(
        session,
        CompanyInput(name="Ромашка-Юг", head_id=romashka.id, client_type="retail"),
        actor=team.ivan,
        rules=rules,
    )
    hotel, _ = await clients.create_company(
        session,
        CompanyInput(name="Отель «Ёлка»", client_type="end_customer_hotel"),
        actor=team.anna,
        rules=rules,
    )
    sergey, _ = await clients.create_contact(
        session,
        ContactInput(
            name="Сергей Ковалёв",
            phones=["+79161234567"],
            emails=["sergey@romashka.ru"],
            companies=[CompanyLinkInput(company_id=member.id)],
        ),
        actor=team.ivan,
        rules=rules,
    )
    maria, _ = await clients.create_contact(
        session,
        ContactInput(name="Мария Орлова", phones=["+78125550011"]),
        actor=team.anna,
        rules=rules,
    )
    await session.commit()
    return {
        "romashka": romashka.id,
        "member": member.id,
        "hotel": hotel.id,
        "sergey": sergey.id,
        "maria": maria.id,
    }


async def _companies(session: AsyncSession, team: Team, rules: CrmRules, **flt: Any) -> list[int]:
    rows, total = await list_companies(session, ClientFilter(**flt), actor=team.head, rules=rules)
    assert total == len(rows)
    return [r.id for r in rows]


async def _contacts(session: AsyncSession, team: Team, rules: CrmRules, **flt: Any) -> list[int]:
    rows, total = await list_contacts(session, ClientFilter(**flt), actor=team.head, rules=rules)
    assert total == len(rows)
    return [r.id for r in rows]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("ромашка", ["romashka", "member"]),
        ("РоМаШкА-юг", ["member"]),
        ("елка", ["hotel"]),  # "ё" is read as "е"
        ("ЁЛКА", ["hotel"]),
        ("7707083893", ["romashka"]),  # INN
        ("8 (495) 123-45-67", ["romashka"]),
        ("4567", ["romashka"]),  # the last digits
        ("%", []),
        ("нет такой", []),
    ],
)
async def test_company_search(
    session: AsyncSession, team: Team, rules: CrmRules, q: str, expected: list[str]
) -> None:
    ids = await _world(session, team, rules)
    assert sorted(await _companies(session, team, rules, q=q)) == sorted(ids[n] for n in expected)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("ковалёв", ["sergey"]),
        ("КОВАЛЕВ", ["sergey"]),
        ("+7 916 123-45-67", ["sergey"]),
        ("89161234567", ["sergey"]),
        ("0011", ["maria"]),
        ("SERGEY@romashka.ru", ["sergey"]),
        ("7707083893", []),  # Sergey works at the member, not at the INN's company
    ],
)
async def test_contact_search(
    session: AsyncSession, team: Team, rules: CrmRules, q: str, expected: list[str]
) -> None:
    ids = await _world(session, team, rules)
    assert sorted(await _contacts(session, team, rules, q=q)) == sorted(ids[n] for n in expected)


async def test_digits_match_names_phones_and_inns_at_once(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    """Digits can be a phone's last digits, an INN, or part of a name: all of them match
    (one UNION of the parts, each served by its index)."""
    ids = await _world(session, team, rules)
    store, _ = await clients.create_company(
        session, CompanyInput(name="Магазин 4567"), actor=team.ivan, rules=rules
    )
    inn_named, _ = await clients.create_company(
        session, CompanyInput(name="Склад 7707083893"), actor=team.ivan, rules=rules
    )
    await session.commit()
    assert sorted(await _companies(session, team, rules, q="4567")) == sorted(
        [ids["romashka"], store.id]
    )
    assert sorted(await _companies(session, team, rules, q="7707083893")) == sorted(
        [ids["romashka"], inn_named.id]
    )
    rows, total = await list_companies(
        session, ClientFilter(q="4567"), actor=team.head, rules=rules, limit=1
    )
    assert total == 2 and len(rows) == 1


async def test_filters(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    ids = await _world(session, team, rules)
    assert await _companies(session, team, rules, client_type="retail") == [ids["member"]]
    assert sorted(await _companies(session, team, rules, head_id=ids["romashka"])) == sorted(
        [ids["romashka"], ids["member"]]
    )
    assert await _companies(session, team, rules, responsible_id=team.anna.id) == [ids["hotel"]]
    assert await _contacts(session, team, rules, head_id=ids["romashka"]) == [ids["sergey"]]
    assert await _contacts(session, team, rules, company_id=ids["member"]) == [ids["sergey"]]
    now = datetime.now(UTC)
    assert len(await _contacts(session, team, rules, created_from=now - timedelta(hours=1))) == 2
    assert await _contacts(session, team, rules, created_to=now - timedelta(hours=1)) == []


async def test_scope_and_pagination(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    ids = await _world(session, team, rules)
    rows, total = await list_companies(session, ClientFilter(), actor=team.ivan, rules=rules)
    assert total == 2 and {r.id for r in rows} == {ids["romashka"], ids["member"]}
    rows, total = await list_companies(
        session, ClientFilter(), actor=team.ivan, rules=CrmRules(managers_read_all=True)
    )
    assert total == 3
    rows, total = await list_companies(
        session, ClientFilter(), actor=team.head, rules=rules, limit=1, offset=1
    )
    assert total == 3 and len(rows) == 1
    # Sorted by the folded name: "ооо «ромашка»" < "отель «елка»" < "ромашка-юг".
    assert rows[0].id == ids["hotel"]


async def test_merged_records_are_hidden(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    a = Contact(name="Дубль", responsible_id=team.ivan.id)
    b = Contact(name="Дубль", responsible_id=team.ivan.id)
    session.add_all([a, b, Company(name="Пусто")])
    await session.commit()
    await clients.merge_contacts(session, a.id, b.id, actor=team.ivan, rules=rules)
    await session.commit()
    assert await _contacts(session, team, rules, q="дубль") == [a.id]
    assert len(await _contacts(session, team, rules, q="дубль", include_merged=True)) == 2
