"""Contacts: phones in any format, duplicates refused or merged, card rules, company links."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients import service as clients
from crm_core.clients.errors import DuplicateClient, InvalidReference, LinkNotFound
from crm_core.clients.events import ClientUpdated
from crm_core.clients.model import Company, ContactCompany, MessengerId, Phone
from crm_core.clients.schemas import CompanyLinkInput, ContactInput, ContactPatch, MessengerInput
from crm_core.errors import InvalidInput, PermissionDenied
from crm_core.phones import InvalidPhone
from crm_core.reference.model import Region
from crm_core.rules import CrmRules
from crm_core.validation import UnknownCustomField

from .conftest import Acting, Team


async def test_phone_formats_are_one_number(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    contact, _ = await clients.create_contact(
        session,
        ContactInput(
            name="Сергей Ковалёв",
            phones=["8 (495) 123-45-67", "+7 495 1234567", "74951234567", "+7 916 000-11-22"],
            emails=["Sergey@Romashka.RU", "sergey@romashka.ru"],
        ),
        actor=team.ivan,
        rules=rules,
    )
    await session.commit()
    card = (await clients.contact_cards(session, [contact]))[0]
    assert card.phones == ["+74951234567", "+79160001122"]
    assert card.emails == ["sergey@romashka.ru"]
    assert card.responsible_id == team.ivan.id and card.created_by_id == team.ivan.id
    stored = await session.scalar(select(Phone).where(Phone.e164 == "+74951234567"))
    assert stored is not None and stored.digits_rev == "76543215947"


async def test_invalid_phone_names_its_position(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    with pytest.raises(InvalidPhone) as err:
        await clients.create_contact(
            session,
            ContactInput(name="X", phones=["+74951234567", "12"]),
            actor=team.ivan,
            rules=rules,
        )
    assert err.value.details == {"field": "phones.1", "value": "12"}


async def test_duplicate_phone_email_messenger_refused_with_pointer(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    first, _ = await clients.create_contact(
        session,
        ContactInput(
            name="Мария",
            phones=["+74951234567"],
            emails=["maria@hotel.ru"],
            messengers=[MessengerInput(channel="telegram", external_id="4242")],
        ),
        actor=team.anna,
        rules=rules,
    )
    await session.commit()
    first_id = first.id
    for data, matched_on, value in (
        (ContactInput(name="M", phones=["8 495 123 45 67"]), "phone", "+74951234567"),
        (ContactInput(name="M", emails=["MARIA@hotel.ru"]), "email", "maria@hotel.ru"),
        (
            ContactInput(
                name="M", messengers=[MessengerInput(channel="telegram", external_id="4242")]
            ),
            "messenger",
            "telegram:4242",
        ),
    ):
        # The pointer for whoever may read the duplicate; another manager learns only that
        # it exists and on what (issue 15: no ids of records he may not see).
        for who, shown_id in ((team.head, first_id), (team.anna, first_id), (team.ivan, None)):
            with pytest.raises(DuplicateClient) as err:
                await clients.create_contact(session, data, actor=who, rules=rules)
            assert err.value.error_id == "duplicate-client"
            assert err.value.details == {
                "duplicates": [
                    {"type": "contact", "id": shown_id, "matched_on": matched_on, "value": value}
                ]
            }
            assert (f"contact {first_id}" in err.value.message) == (shown_id is not None)
            assert "Мария" not in err.value.message
            await session.rollback()


async def test_company_phone_on_a_person_is_not_a_duplicate(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    from crm_core.clients.schemas import CompanyInput

    company, _ = await clients.create_company(
        session, CompanyInput(name="Ромашка", phones=["+74951234567"]), actor=team.ivan, rules=rules
    )
    contact, _ = await clients.create_contact(
        session,
        ContactInput(name="Секретарь", phones=["+74951234567"]),
        actor=team.ivan,
        rules=rules,
    )
    dups = await clients.find_duplicates(session, phones=["8-495-123-45-67"])
    assert [(d.type, d.id) for d in dups] == [("company", company.id), ("contact", contact.id)]
    assert await clients.find_duplicates(
        session, phones=["84951234567"], exclude=("contact", contact.id)
    ) == [clients.DuplicateRef("company", company.id, "phone", "+74951234567")]
    assert await clients.find_duplicates(session, phones=["not a phone"], emails=[""]) == []


async def test_on_duplicate_merge_adds_to_the_existing_contact(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    company = Company(name="Балтика", responsible_id=team.anna.id)
    session.add(company)
    existing, _ = await clients.create_contact(
        session,
        ContactInput(name="Мария Орлова", phones=["+78125550011"], client_type="retail"),
        actor=team.anna,
        rules=rules,
    )
    await session.commit()
    result, events = await clients.save_contact(
        session,
        ContactInput(
            name="М. Орлова",
            phones=["8 812 555-00-11", "+79990001122"],
            emails=["orlova@baltika.ru"],
            client_type="wholesaler",
            potential_amount=Decimal("600000"),
            custom={"segment": "B"},
            companies=[CompanyLinkInput(company_id=company.id, is_decision_maker=True)],
        ),
        actor=team.anna,
        rules=rules,
        on_duplicate="merge",
    )
    await session.commit()
    assert not result.created and result.client.id == existing.id
    [event] = events
    assert isinstance(event, ClientUpdated)
    assert (event.name, event.client_id) == ("client.updated", existing.id)
    card = (await clients.contact_cards(session, [result.client]))[0]
    assert card.name == "Мария Орлова"  # the existing record keeps its own values
    assert card.client_type == "retail"
    assert card.potential_amount == Decimal("600000.00")  # empty fields are filled
    assert card.custom == {"segment": "B"}
    assert card.phones == ["+78125550011", "+79990001122"]
    assert card.emails == ["orlova@baltika.ru"]
    assert [(c.company_id, c.is_decision_maker) for c in card.companies] == [(company.id, True)]


async def test_on_duplicate_merge_needs_write_access(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    await clients.create_contact(
        session, ContactInput(name="A", phones=["+74951234567"]), actor=team.anna, rules=rules
    )
    with pytest.raises(PermissionDenied):
        await clients.create_contact(
            session,
            ContactInput(name="B", phones=["+74951234567"]),
            actor=team.ivan,
            rules=rules,
            on_duplicate="merge",
        )


async def test_card_rules(session: AsyncSession, team: Team, rules: CrmRules) -> None:
    with pytest.raises(InvalidInput) as err:
        await clients.create_contact(
            session, ContactInput(name="X", client_type="pirate"), actor=team.ivan, rules=rules
        )
    assert err.value.details == {"field": "client_type", "value": "pirate"}
    with pytest.raises(UnknownCustomField) as err2:
        await clients.create_contact(
            session, ContactInput(name="X", custom={"colour": "red"}), actor=team.ivan, rules=rules
        )
    assert err2.value.details["field"] == "custom.colour"
    with pytest.raises(InvalidReference) as err3:
        await clients.create_contact(
            session, ContactInput(name="X", region_id=999), actor=team.ivan, rules=rules
        )
    assert err3.value.details == {"field": "region_id", "value": 999}
    with pytest.raises(InvalidReference):
        await clients.create_contact(
            session,
            ContactInput(name="X", companies=[CompanyLinkInput(company_id=999)]),
            actor=team.ivan,
            rules=rules,
        )


async def test_manager_cannot_assign_another_manager(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    with pytest.raises(PermissionDenied):
        await clients.create_contact(
            session,
            ContactInput(name="X", responsible_id=team.anna.id),
            actor=team.ivan,
            rules=rules,
        )
    made, _ = await clients.create_contact(
        session, ContactInput(name="X", responsible_id=team.anna.id), actor=team.head, rules=rules
    )
    assert made.responsible_id == team.anna.id
    with pytest.raises(PermissionDenied):
        await clients.update_contact(
            session,
            made.id,
            ContactPatch(responsible_id=team.ivan.id),
            actor=team.anna,
            rules=rules,
        )


async def test_update_replaces_sets_and_checks_duplicates(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    region = Region(code="RU-MOW", name="Москва")
    session.add(region)
    a, _ = await clients.create_contact(
        session,
        ContactInput(
            name="A",
            phones=["+74951234567", "+74951234568"],
            messengers=[MessengerInput(channel="whatsapp", external_id="79160001122")],
            custom={"segment": "A", "vip": True},
        ),
        actor=team.ivan,
        rules=rules,
    )
    b, _ = await clients.create_contact(
        session, ContactInput(name="B", phones=["+74990000000"]), actor=team.ivan, rules=rules
    )
    await session.commit()
    await clients.update_contact(
        session,
        a.id,
        ContactPatch(
            name="Алексей",
            phones=["84951234568", "+79160001122"],
            messengers=[],
            region_id=region.id,
            custom={"vip": None, "employees": 5},
        ),
        actor=team.ivan,
        rules=rules,
    )
    await session.commit()
    card = (await clients.contact_cards(session, [a]))[0]
    assert card.name == "Алексей" and card.region_id == region.id
    assert sorted(card.phones) == ["+74951234568", "+79160001122"]
    assert card.messengers == [] and card.custom == {"segment": "A", "employees": 5}
    assert await session.scalar(select(MessengerId.id)) is None
    b_id = b.id
    with pytest.raises(DuplicateClient) as err:
        await clients.update_contact(
            session, b_id, ContactPatch(phones=["+79160001122"]), actor=team.ivan, rules=rules
        )
    assert err.value.details["duplicates"][0]["id"] == a.id
    await session.rollback()
    with pytest.raises(InvalidReference):
        await clients.update_contact(
            session, b_id, ContactPatch(name=" "), actor=team.ivan, rules=rules
        )


async def test_update_needs_write_access(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    from crm_core.errors import NotFound

    c, _ = await clients.create_contact(
        session, ContactInput(name="A"), actor=team.anna, rules=rules
    )
    with pytest.raises(NotFound):
        await clients.update_contact(
            session, c.id, ContactPatch(name="B"), actor=team.ivan, rules=rules
        )
    with pytest.raises(PermissionDenied):
        await clients.update_contact(
            session,
            c.id,
            ContactPatch(name="B"),
            actor=team.ivan,
            rules=CrmRules(managers_read_all=True),
        )
    await clients.update_contact(
        session, c.id, ContactPatch(name="B"), actor=team.head, rules=rules
    )


async def test_one_decision_maker_per_company(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    company = Company(name="Ромашка", responsible_id=team.ivan.id)
    session.add(company)
    await session.flush()
    a, _ = await clients.create_contact(
        session, ContactInput(name="A"), actor=team.ivan, rules=rules
    )
    b, _ = await clients.create_contact(
        session, ContactInput(name="B"), actor=team.ivan, rules=rules
    )
    ivan: Acting = {"actor": team.ivan, "rules": rules}
    await clients.link_contact_company(
        session, a.id, company.id, position="директор", is_decision_maker=True, **ivan
    )
    link = await clients.link_contact_company(
        session, b.id, company.id, is_decision_maker=True, **ivan
    )
    again = await clients.link_contact_company(
        session, b.id, company.id, position="закупщик", **ivan
    )
    await session.commit()
    assert again.id == link.id and again.position == "закупщик" and again.is_decision_maker
    flags = dict(
        (
            await session.execute(
                select(ContactCompany.contact_id, ContactCompany.is_decision_maker)
            )
        ).all()
    )
    assert flags == {a.id: False, b.id: True}
    await clients.update_link(session, a.id, company.id, is_decision_maker=True, **ivan)
    await session.commit()
    card = (await clients.company_cards(session, [company]))[0]
    assert [(c.contact_id, c.is_decision_maker) for c in card.contacts] == [
        (a.id, True),
        (b.id, False),
    ]
    await clients.unlink_contact_company(session, a.id, company.id, **ivan)
    with pytest.raises(LinkNotFound):
        await clients.get_link(session, a.id, company.id, **ivan)


async def test_delete_refused_with_history(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    from crm_core.activities.model import Activity
    from crm_core.clients.errors import ClientHasHistory

    a, _ = await clients.create_contact(
        session, ContactInput(name="A", phones=["+74951234567"]), actor=team.ivan, rules=rules
    )
    b, _ = await clients.create_contact(
        session, ContactInput(name="B"), actor=team.ivan, rules=rules
    )
    session.add(Activity(kind="note", contact_id=b.id))
    await session.commit()
    with pytest.raises(PermissionDenied):
        await clients.delete_contact(session, a.id, actor=team.ivan, rules=rules)
    with pytest.raises(ClientHasHistory) as err:
        await clients.delete_contact(session, b.id, actor=team.head, rules=rules)
    assert err.value.details["referenced_by"] == ["activities"]
    await clients.delete_contact(session, a.id, actor=team.head, rules=rules)
    await session.commit()
    assert await session.scalar(select(Phone.id)) is None  # the card's parts go with it
