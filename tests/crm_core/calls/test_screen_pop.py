"""The screen-pop's card summary: what a manager sees about a caller before he answers, and
what of it a manager who may not read the card sees."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.activities.model import Activity
from crm_core.calls import service as calls
from crm_core.calls.screen_pop import (
    Viewer,
    card_as_seen_by,
    card_summary,
    extension_viewers,
    viewer_of,
)
from crm_core.clients.model import Company, Contact, ContactCompany, Phone
from crm_core.deals.model import Deal, PipelineStage
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from crm_core.users import service as users
from tests.crm_core.deals.world import T0, make_team

PHONE = "+74951234567"


def _phone(number: str, **owner: int) -> Phone:
    return Phone(e164=number, digits_rev=digits_reversed(number), **owner)


async def _stages(session: AsyncSession) -> dict[str, PipelineStage]:
    return {s.kind + ":" + s.code: s for s in (await session.scalars(select(PipelineStage))).all()}


async def test_contact_of_a_company_shows_the_company_card(session: AsyncSession) -> None:
    team = await make_team(session)
    company = Company(
        name="ООО «Ромашка»",
        client_type="wholesaler",
        potential_amount=Decimal("1500000.00"),
        purchase_mode="regular",
        region_id=team.spb,
        source_id=team.expo,
        responsible_id=team.anna.id,
    )
    contact = Contact(name="Сергей Ковалёв", responsible_id=team.ivan.id, region_id=team.moscow)
    session.add_all([company, contact])
    await session.flush()
    session.add(
        ContactCompany(contact_id=contact.id, company_id=company.id, is_decision_maker=True)
    )
    session.add(_phone(PHONE, contact_id=contact.id))
    stages = await _stages(session)
    open_stage = next(s for k, s in stages.items() if k.startswith("open:"))
    won_stage = next(s for k, s in stages.items() if k.startswith("won:"))
    for i, stage in enumerate([open_stage, open_stage, won_stage]):
        session.add(
            Deal(
                title=f"Сделка {i}",
                pipeline_id=stage.pipeline_id,
                stage_id=stage.id,
                amount=Decimal("250000.00"),
                company_id=company.id,
                updated_at=T0 + timedelta(hours=i),
            )
        )
    for i in range(7):
        session.add(
            Activity(
                kind="call",
                direction="inbound",
                subject=f"Звонок {i}",
                occurred_at=T0 + timedelta(days=i),
                contact_id=contact.id,
            )
        )
    # The newest entry is a letter of a personal mailbox: not the pop-up's to show.
    session.add(
        Activity(
            kind="email",
            direction="inbound",
            subject="Личное письмо",
            occurred_at=T0 + timedelta(days=10),
            contact_id=contact.id,
            private_to_id=team.anna.id,
        )
    )
    session.add_all(
        [
            Task(kind="call_back", title="Перезвонить", due_at=T0, contact_id=contact.id),
            Task(kind="call_back", title="Готово", status="done", company_id=company.id),
        ]
    )
    await session.commit()

    card = await card_summary(session, PHONE, rules=CrmRules())

    assert card is not None
    assert (card["type"], card["id"], card["company_id"]) == ("contact", contact.id, company.id)
    assert card["name"] == "Сергей Ковалёв" and card["company"] == "ООО «Ромашка»"
    # Type, potential, region and source come from the company's card, not the contact's.
    assert card["client_type"] == "wholesaler"
    assert card["potential"] == "1 500 000 ₽"
    assert card["purchase_mode"] == "regular"
    assert card["region"] == "Санкт-Петербург" and card["source"] == "Выставка 2026"
    assert card["responsible_id"] == team.ivan.id and card["responsible"] == team.ivan.display_name
    assert [d["title"] for d in card["deals"]] == ["Сделка 1", "Сделка 0"]  # open only, newest
    assert card["deals"][0] == {
        "id": card["deals"][0]["id"],
        "title": "Сделка 1",
        "amount": "250 000",
        "stage": open_stage.name_ru,
    }
    assert [a["subject"] for a in card["activities"]] == [f"Звонок {i}" for i in (6, 5, 4, 3, 2)]
    assert card["activities"][0]["kind"] == "call"
    assert card["activities"][0]["direction"] == "inbound"
    assert card["activities"][0]["occurred_at"].startswith(
        (T0 + timedelta(days=6)).date().isoformat()
    )
    assert [t["title"] for t in card["tasks"]] == ["Перезвонить"]
    assert card["url"] == f"/clients/contact/{contact.id}"


async def test_open_lead_and_unknown_number(session: AsyncSession) -> None:
    team = await make_team(session)
    lead = Lead(title="Звонок с +74957654321", stage="new", responsible_id=team.anna.id)
    session.add(lead)
    await session.flush()
    session.add(_phone("+74957654321", lead_id=lead.id))
    await session.commit()

    card = await card_summary(session, "+74957654321", rules=CrmRules())
    assert card is not None
    assert (card["type"], card["id"], card["lead_id"]) == ("lead", lead.id, lead.id)
    assert card["company"] is None and card["region"] is None and card["potential"] is None
    assert card["responsible"] == team.anna.display_name
    assert card["deals"] == [] and card["activities"] == [] and card["tasks"] == []
    assert card["url"] == f"/clients/lead/{lead.id}"

    assert await card_summary(session, "+74950000001", rules=CrmRules()) is None
    assert await card_summary(session, "101", rules=CrmRules()) is None


async def test_a_lead_names_the_company_typed_on_it(session: AsyncSession) -> None:
    team = await make_team(session)
    lead = Lead(
        title="Заявка с сайта: текстиль",
        stage="new",
        contact_name="Мария",
        company_name="Отель «Невский»",
        responsible_id=team.ivan.id,
    )
    session.add(lead)
    await session.flush()
    session.add(_phone("+78125550011", lead_id=lead.id))
    await session.commit()

    card = await card_summary(session, "+78125550011", rules=CrmRules())
    assert card is not None and card["type"] == "lead"
    assert (card["name"], card["company"]) == ("Мария", "Отель «Невский»")


async def test_a_card_is_whole_for_who_may_read_it_else_only_who_is_calling(
    session: AsyncSession,
) -> None:
    team = await make_team(session)
    contact = Contact(name="Сергей Ковалёв", responsible_id=team.anna.id)
    session.add(contact)
    await session.flush()
    session.add(_phone(PHONE, contact_id=contact.id))
    await session.commit()
    card = await card_summary(session, PHONE, rules=CrmRules())
    assert card is not None

    for user in (team.anna, team.head, team.admin):
        assert card_as_seen_by(card, user, CrmRules()) is card
    assert card_as_seen_by(card, team.ivan, CrmRules(managers_read_all=True)) is card
    restricted = {
        "name": "Сергей Ковалёв",
        "company": None,
        "responsible": team.anna.display_name,
        "restricted": True,
    }
    assert card_as_seen_by(card, team.ivan, CrmRules()) == restricted
    # A phone nobody owns: nobody known to show the card to.
    assert card_as_seen_by(card, None, CrmRules()) == restricted
    assert card_as_seen_by(None, team.ivan, CrmRules()) is None


async def test_the_viewer_of_an_extension_is_its_active_owner(session: AsyncSession) -> None:
    anyone, _ = await users.create_user(
        session, login="a", role="manager", password="password1", extensions=["101"], scrypt_n=1024
    )
    specific, _ = await users.create_user(
        session,
        login="b",
        role="head",
        password="password1",
        extensions=["101"],
        pbx="branch",
        scrypt_n=1024,
    )
    gone, _ = await users.create_user(
        session, login="c", role="admin", password="password1", extensions=["102"], scrypt_n=1024
    )
    gone.is_active = False
    await session.commit()
    viewers = await extension_viewers(session)
    assert viewer_of(viewers, "main", "101") == Viewer(anyone.id, "manager")
    assert viewer_of(viewers, "branch", "101") == Viewer(specific.id, "head")
    assert viewer_of(viewers, "main", "102") is None
    assert viewer_of(viewers, "main", "999") is None
    # The same answer as the call log's own lookup.
    for pbx, extension in (("main", "101"), ("branch", "101"), ("main", "102")):
        owner = await calls.extension_owner(session, pbx, extension)
        viewer = viewer_of(viewers, pbx, extension)
        assert (owner.id if owner else None) == (viewer.id if viewer else None)


async def test_the_card_takes_two_round_trips_whatever_it_holds(session: AsyncSession) -> None:
    """Who is calling, then the whole card (its own fields, deals, activities, tasks) in one
    statement: the pop-up waits on each round trip."""
    team = await make_team(session)
    company = Company(name="ООО «Ромашка»", responsible_id=team.anna.id, region_id=team.spb)
    contact = Contact(name="Сергей Ковалёв", responsible_id=team.ivan.id)
    session.add_all([company, contact])
    await session.flush()
    session.add(ContactCompany(contact_id=contact.id, company_id=company.id))
    session.add(_phone(PHONE, contact_id=contact.id))
    session.add(Task(kind="call_back", title="Перезвонить", due_at=T0, contact_id=contact.id))
    await session.commit()
    statements: list[str] = []

    def note(*args: object) -> None:
        statements.append(str(args[2]))

    engine = (await session.connection()).engine.sync_engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        card = await card_summary(session, PHONE, rules=CrmRules())
    finally:
        event.remove(engine, "before_cursor_execute", note)
    assert card is not None and card["company"] == "ООО «Ромашка»"
    assert card["region"] == "Санкт-Петербург" and [t["title"] for t in card["tasks"]] == [
        "Перезвонить"
    ]
    assert len(statements) == 2, statements
