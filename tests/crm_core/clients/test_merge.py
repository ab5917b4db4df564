"""Merging duplicates moves everything to the survivor, in one transaction, with an audit."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.activities.model import Activity
from crm_core.audit.model import AuditEntry
from crm_core.calls.model import Call
from crm_core.clients import events as client_events
from crm_core.clients import service as clients
from crm_core.clients.errors import ClientMerged, ContactNotFound, MergeNotAllowed
from crm_core.clients.model import (
    Company,
    Contact,
    ContactCompany,
    Email,
    LegalEntity,
    MessengerId,
    Phone,
    Requisites,
)
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.errors import PermissionDenied
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task

from .conftest import RULES, Team

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def phone(number: str, **owner: int) -> Phone:
    return Phone(e164=number, digits_rev=digits_reversed(number), **owner)


async def _stage(session: AsyncSession) -> tuple[int, int]:
    pipeline = Pipeline(code="sales", name="Продажи")
    session.add(pipeline)
    await session.flush()
    stage = PipelineStage(pipeline_id=pipeline.id, code="contact", name_ru="К", name_en="C")
    session.add(stage)
    await session.flush()
    return pipeline.id, stage.id


def _history(session: AsyncSession, pipeline: tuple[int, int], **owner: int) -> None:
    session.add_all(
        [
            Activity(kind="note", subject="заметка", **owner),
            Deal(title="Сделка", pipeline_id=pipeline[0], stage_id=pipeline[1], **owner),
            Task(kind="call_back", title="Перезвонить", **owner),
            Lead(stage="converted", **owner),
            Call(
                pbx="main",
                call_id=f"c{len(owner)}{next(iter(owner.values()))}",
                direction="inbound",
                disposition="answered",
                started_at=T0,
                ended_at=T0,
                **owner,
            ),
        ]
    )


async def _count(session: AsyncSession, model: type, **where: int) -> int:
    stmt = select(func.count()).select_from(model)
    for key, value in where.items():
        stmt = stmt.where(getattr(model, key) == value)
    return int(await session.scalar(stmt) or 0)


async def test_merge_contacts_moves_everything(session: AsyncSession, team: Team) -> None:
    pipeline = await _stage(session)
    x = Company(name="X", responsible_id=team.ivan.id)
    y = Company(name="Y", responsible_id=team.ivan.id)
    survivor = Contact(name="Сергей", responsible_id=team.ivan.id, custom={"segment": "A"})
    loser = Contact(
        name="С. Ковалёв",
        responsible_id=team.ivan.id,
        position="закупщик",
        client_type="wholesaler",
        potential_amount=Decimal("100000"),
        custom={"segment": "B", "vip": True},
    )
    session.add_all([x, y, survivor, loser])
    await session.flush()
    s, lo = survivor.id, loser.id
    session.add_all(
        [
            phone("+74951234567", contact_id=s),
            phone("+74951234567", contact_id=lo),  # the same number on both
            phone("+79160001122", contact_id=lo),
            Email(contact_id=lo, address="s@x.ru"),
            MessengerId(contact_id=lo, channel="telegram", external_id="42"),
            ContactCompany(contact_id=s, company_id=x.id),
            ContactCompany(contact_id=lo, company_id=x.id, position="ЛПР", is_decision_maker=True),
            ContactCompany(contact_id=lo, company_id=y.id),
        ]
    )
    _history(session, pipeline, contact_id=lo)
    await session.commit()

    merged, _ = await clients.merge_contacts(session, s, lo, actor=team.ivan, rules=RULES)
    await session.commit()

    assert merged.id == s
    for model in (Activity, Deal, Task, Lead, Call, Email, MessengerId):
        assert await _count(session, model, contact_id=lo) == 0, model
        assert await _count(session, model, contact_id=s) == 1, model
    assert sorted(await session.scalars(select(Phone.e164).where(Phone.contact_id == s))) == [
        "+74951234567",
        "+79160001122",
    ]
    assert await _count(session, Phone, contact_id=lo) == 0
    links = {
        row.company_id: (row.position, row.is_decision_maker)
        for row in await session.scalars(select(ContactCompany))
    }
    assert links == {x.id: ("ЛПР", True), y.id: (None, False)}
    assert await _count(session, ContactCompany, contact_id=s) == 2
    session.expunge_all()
    kept = await session.get(Contact, s)
    gone = await session.get(Contact, lo)
    assert kept is not None and gone is not None
    assert gone.merged_into_id == s
    assert kept.name == "Сергей"  # the survivor keeps its own values
    assert (kept.position, kept.client_type, kept.potential_amount) == (
        "закупщик",
        "wholesaler",
        Decimal("100000.00"),
    )
    assert kept.custom == {"segment": "A", "vip": True}
    audit = await session.scalar(select(AuditEntry))
    assert audit is not None and audit.action == "contact.merge" and audit.object_id == str(s)
    assert audit.user_id == team.ivan.id and audit.details is not None
    assert audit.details["loser_id"] == lo
    assert audit.details["moved"]["activities.contact_id"] == 1
    assert "client_type" in audit.details["filled"]
    with pytest.raises(ClientMerged):
        await clients.merge_contacts(session, s, lo, actor=team.ivan, rules=RULES)


async def test_merge_refusals(session: AsyncSession, team: Team) -> None:
    a = Contact(name="A", responsible_id=team.ivan.id)
    b = Contact(name="B", responsible_id=team.anna.id)
    session.add_all([a, b])
    await session.commit()
    with pytest.raises(MergeNotAllowed):
        await clients.merge_contacts(session, a.id, a.id, actor=team.head, rules=RULES)
    with pytest.raises(ContactNotFound):
        await clients.merge_contacts(session, a.id, b.id, actor=team.ivan, rules=RULES)
    shared = CrmRules(managers_read_all=True)  # Ivan may read B, not change it
    with pytest.raises(PermissionDenied):
        await clients.merge_contacts(session, a.id, b.id, actor=team.ivan, rules=shared)
    with pytest.raises(ContactNotFound):
        await clients.merge_contacts(session, a.id, 999, actor=team.head, rules=RULES)
    _, events = await clients.merge_contacts(session, a.id, b.id, actor=team.head, rules=RULES)
    [event] = events
    assert isinstance(event, client_events.ClientMerged)
    assert (event.name, event.survivor_id, event.loser_id) == ("client.merged", a.id, b.id)
    assert event.audience == (f"user:{team.ivan.id}", f"user:{team.anna.id}", "role:head")


async def test_merge_companies_moves_everything(session: AsyncSession, team: Team) -> None:
    pipeline = await _stage(session)
    top = Company(name="Верх", responsible_id=team.head.id)
    session.add(top)
    await session.flush()
    loser = Company(
        name="ООО Ромашка", head_id=top.id, responsible_id=team.ivan.id, website="romashka.ru"
    )
    session.add(loser)
    await session.flush()
    survivor = Company(name="Ромашка", head_id=loser.id, responsible_id=team.ivan.id)
    member = Company(name="Филиал", head_id=loser.id, responsible_id=team.ivan.id)
    dm = Contact(name="ЛПР")
    other_dm = Contact(name="Другой ЛПР")
    session.add_all([survivor, member, dm, other_dm])
    await session.flush()
    s, lo = survivor.id, loser.id
    entity = LegalEntity(company_id=lo, name="ООО «Ромашка»")
    session.add(entity)
    await session.flush()
    session.add_all(
        [
            Requisites(legal_entity_id=entity.id, full_name="ООО «Ромашка»", inn="7707083893"),
            phone("+74951234567", company_id=lo),
            Email(company_id=lo, address="info@romashka.ru"),
            ContactCompany(contact_id=dm.id, company_id=s, is_decision_maker=True),
            ContactCompany(contact_id=other_dm.id, company_id=lo, is_decision_maker=True),
            Invoice(
                number="1",
                company_id=lo,
                legal_entity_id=entity.id,
                amount=Decimal("1000"),
                issued_on=date(2026, 3, 1),
                due_on=date(2026, 3, 10),
            ),
        ]
    )
    _history(session, pipeline, company_id=lo)
    await session.commit()
    entity_id, member_id, top_id, dm_id, other_dm_id = (
        entity.id,
        member.id,
        top.id,
        dm.id,
        other_dm.id,
    )

    merged, _ = await clients.merge_companies(session, s, lo, actor=team.head, rules=RULES)
    await session.commit()

    assert merged.id == s
    for model in (Activity, Deal, Task, Lead, Call, Invoice, Phone, Email, LegalEntity):
        assert await _count(session, model, company_id=lo) == 0, model
        assert await _count(session, model, company_id=s) == 1, model
    invoice = await session.scalar(select(Invoice))
    assert invoice is not None and invoice.legal_entity_id == entity_id  # the entity moved along
    assert await clients.find_duplicates(session, inn="7707083893") == [
        clients.DuplicateRef("company", s, "inn", "7707083893", team.head.id)
    ]
    session.expunge_all()
    kept = await session.get(Company, s)
    sub = await session.get(Company, member_id)
    gone = await session.get(Company, lo)
    assert kept is not None and sub is not None and gone is not None
    assert kept.head_id == top_id  # the survivor takes the loser's place in the group
    assert sub.head_id == s
    assert gone.merged_into_id == s and kept.website == "romashka.ru"
    rows = await session.execute(
        select(ContactCompany.contact_id, ContactCompany.is_decision_maker)
    )
    flags = {contact_id: flag for contact_id, flag in rows}
    assert flags == {dm_id: True, other_dm_id: False}  # still one decision maker
    assert await clients.group_company_ids(session, top_id) == sorted([top_id, s, member_id])
    audit = await session.scalar(select(AuditEntry))
    assert audit is not None and audit.action == "company.merge"
    assert audit.details is not None and audit.details["moved"]["legal_entities.company_id"] == 1


async def test_merge_into_a_member_of_the_loser_cannot_make_a_cycle(
    session: AsyncSession, team: Team
) -> None:
    loser = Company(name="L")
    session.add(loser)
    await session.flush()
    survivor = Company(name="S", head_id=loser.id)
    session.add(survivor)
    await session.flush()
    await clients.merge_companies(session, survivor.id, loser.id, actor=team.admin, rules=RULES)
    await session.commit()
    session.expunge_all()
    kept = await session.get(Company, survivor.id)
    assert kept is not None and kept.head_id is None


async def test_merge_is_one_transaction(session: AsyncSession, team: Team) -> None:
    a = Contact(name="A", responsible_id=team.ivan.id)
    b = Contact(name="B", responsible_id=team.ivan.id)
    session.add_all([a, b])
    await session.flush()
    session.add(phone("+74951234567", contact_id=b.id))
    await session.commit()
    a_id, b_id = a.id, b.id
    await clients.merge_contacts(session, a_id, b_id, actor=team.ivan, rules=RULES)
    await session.rollback()  # the caller fails after the merge: nothing of it stays
    session.expunge_all()
    assert await _count(session, Phone, contact_id=b_id) == 1
    gone = await session.get(Contact, b_id)
    assert gone is not None and gone.merged_into_id is None
    assert await _count(session, AuditEntry) == 0
