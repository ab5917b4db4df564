"""The screen-pop lookup: a number in any format to a contact, company or open lead."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import SYSTEM, Actor
from crm_core.clients import service as clients
from crm_core.clients.lookup import _suffix_range
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules

from .conftest import RULES, Team


def phone(number: str, **owner: int) -> Phone:
    return Phone(e164=number, digits_rev=digits_reversed(number), **owner)


@pytest.mark.parametrize(
    "raw", ["8 (495) 123-45-67", "+7 495 1234567", "74951234567", "+74951234567", "4951234567"]
)
async def test_contact_found_from_any_format(session: AsyncSession, team: Team, raw: str) -> None:
    contact = Contact(name="Сергей Ковалёв", responsible_id=None)
    side = Company(name="Другая", responsible_id=team.anna.id)
    main = Company(name="Ромашка", responsible_id=team.ivan.id)
    session.add_all([contact, side, main])
    await session.flush()
    session.add_all(
        [
            phone("+74951234567", contact_id=contact.id),
            ContactCompany(contact_id=contact.id, company_id=side.id),
            ContactCompany(contact_id=contact.id, company_id=main.id, is_decision_maker=True),
        ]
    )
    await session.commit()
    match = await clients.find_client_by_phone(session, raw, actor=SYSTEM, rules=RULES)
    assert match == clients.ClientMatch(
        contact_id=contact.id,
        company_id=main.id,  # where he is the decision maker
        lead_id=None,
        responsible_id=team.ivan.id,  # the contact has none: the company's
        name="Сергей Ковалёв",
        matched_on="e164",
        phone="+74951234567",
    )


async def test_contact_wins_over_company_and_lead(session: AsyncSession, team: Team) -> None:
    contact = Contact(name="Пётр", responsible_id=team.anna.id)
    company = Company(name="Ромашка", responsible_id=team.ivan.id)
    lead = Lead(stage="new", contact_name="Лид", responsible_id=team.ivan.id)
    session.add_all([contact, company, lead])
    await session.flush()
    session.add_all(
        [
            phone("+74951234567", lead_id=lead.id),
            phone("+74951234567", company_id=company.id),
            phone("+74951234567", contact_id=contact.id),
        ]
    )
    await session.commit()
    match = await clients.find_client_by_phone(session, "84951234567", actor=SYSTEM, rules=RULES)
    assert match is not None and match.contact_id == contact.id
    assert match.responsible_id == team.anna.id and match.company_id is None


async def test_company_then_open_lead(session: AsyncSession, team: Team) -> None:
    company = Company(name="Ромашка", responsible_id=team.ivan.id)
    open_lead = Lead(stage="in_work", company_name="ООО Лид", responsible_id=team.anna.id)
    done = Lead(stage="converted", contact_name="Старый", responsible_id=team.anna.id)
    session.add_all([company, open_lead, done])
    await session.flush()
    session.add_all(
        [
            phone("+74951110000", company_id=company.id),
            phone("+74952220000", lead_id=open_lead.id),
            phone("+74953330000", lead_id=done.id),
        ]
    )
    await session.commit()
    by_company = await clients.find_client_by_phone(
        session, "+7 495 111-00-00", actor=SYSTEM, rules=RULES
    )
    assert by_company == clients.ClientMatch(
        None, company.id, None, team.ivan.id, "Ромашка", "e164", "+74951110000"
    )
    by_lead = await clients.find_client_by_phone(session, "84952220000", actor=SYSTEM, rules=RULES)
    assert by_lead is not None and by_lead.lead_id == open_lead.id
    assert by_lead.name == "ООО Лид" and by_lead.responsible_id == team.anna.id
    assert (
        await clients.find_client_by_phone(session, "84953330000", actor=SYSTEM, rules=RULES)
        is None
    )  # converted
    custom = CrmRules(lead_stages=CrmRules().lead_stages[:1])  # only "new" is open
    assert (
        await clients.find_client_by_phone(session, "84952220000", actor=SYSTEM, rules=custom)
        is None
    )


async def test_merged_records_are_not_found(session: AsyncSession, team: Team) -> None:
    survivor = Contact(name="Живой")
    session.add(survivor)
    await session.flush()
    loser = Contact(name="Слитый", merged_into_id=survivor.id)
    session.add(loser)
    await session.flush()
    session.add(phone("+74951234567", contact_id=loser.id))
    await session.commit()
    assert (
        await clients.find_client_by_phone(session, "+74951234567", actor=SYSTEM, rules=RULES)
        is None
    )


async def test_last_ten_digits_when_the_country_differs(session: AsyncSession, team: Team) -> None:
    contact = Contact(name="Импорт")
    session.add(contact)
    await session.flush()
    # Imported with a wrong country code; the national number is the same.
    session.add(phone("+374951234567", contact_id=contact.id))
    await session.commit()
    match = await clients.find_client_by_phone(
        session, "8 (495) 123-45-67", actor=SYSTEM, rules=RULES
    )
    assert match is not None and match.contact_id == contact.id
    assert match.matched_on == "last_digits" and match.phone == "+374951234567"


@pytest.mark.parametrize("raw", ["+74959999999", "101", "", "abc", "+1 202 555 0100"])
async def test_unknown_numbers(session: AsyncSession, team: Team, raw: str) -> None:
    contact = Contact(name="X")
    session.add(contact)
    await session.flush()
    session.add(phone("+74951234567", contact_id=contact.id))
    await session.commit()
    assert await clients.find_client_by_phone(session, raw, actor=SYSTEM, rules=RULES) is None


def test_suffix_range_stays_within_digits() -> None:
    assert _suffix_range("7654") == ("7654", "7655")
    assert _suffix_range("7659") == ("7659", "766")
    assert _suffix_range("999") == ("999", None)


async def test_core_inserts_get_the_derived_columns(session: AsyncSession, team: Team) -> None:
    """Bulk imports through Core inserts still find their numbers and names."""
    from sqlalchemy import insert, select

    contact_id = (
        await session.execute(insert(Contact).values(name="Ёлкин Пётр").returning(Contact.id))
    ).scalar_one()
    await session.execute(insert(Phone).values(contact_id=contact_id, e164="+74951234567"))
    await session.commit()
    assert await session.scalar(select(Contact.name_search)) == "елкин петр"
    row = (await session.execute(select(Phone.digits_rev, Phone.last10))).one()
    assert tuple(row) == ("76543215947", "4951234567")
    match = await clients.find_client_by_phone(
        session, "8 495 123 45 67", actor=SYSTEM, rules=RULES
    )
    assert match is not None and match.contact_id == contact_id


async def test_a_manager_finds_only_what_he_may_read(session: AsyncSession, team: Team) -> None:
    """Issue 15: the lookup followed no access rule and told any manager whose number it is."""
    annas = Contact(name="Анин клиент", responsible_id=team.anna.id)
    ivans = Company(name="Иванова компания", responsible_id=team.ivan.id)
    lead = Lead(stage="new", contact_name="Лид Анны", responsible_id=team.anna.id)
    session.add_all([annas, ivans, lead])
    await session.flush()
    session.add_all(
        [
            phone("+74951234567", contact_id=annas.id),
            phone("+74951234567", company_id=ivans.id),
            phone("+74957654321", lead_id=lead.id),
        ]
    )
    await session.commit()

    async def who(actor: Actor, raw: str, rules: CrmRules = RULES) -> tuple[int | None, ...]:
        match = await clients.find_client_by_phone(session, raw, actor=actor, rules=rules)
        return (match.contact_id, match.company_id, match.lead_id) if match else ()

    both = "+74951234567"
    assert await who(team.anna, both) == (annas.id, None, None)
    assert await who(team.head, both) == (annas.id, None, None)
    assert await who(SYSTEM, both) == (annas.id, None, None)
    # Ivan may not read Anna's contact: the number is his company's for him.
    assert await who(team.ivan, both) == (None, ivans.id, None)
    assert await who(team.ivan, both, CrmRules(managers_read_all=True)) == (annas.id, None, None)
    assert await who(team.anna, "+74957654321") == (None, None, lead.id)
    assert await who(team.ivan, "+74957654321") == ()
    assert await who(team.ivan, "4957654321") == ()  # nor by its last digits
