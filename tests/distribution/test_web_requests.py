"""Website requests: leads, tasks and notifications; spam; joining; the manual queue."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from crm_core.clients.model import Contact, Phone
from crm_core.distribution import requests as web
from crm_core.distribution.errors import InvalidWebRequest, NotQueued
from crm_core.distribution.schemas import WebForm
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from crm_core.users.model import User
from tests.distribution.world import NOON_MSK, add_rule, build

RULES = CrmRules()
POLICY = web.Policy(callback_minutes=10)


async def submit(session: Any, intake: web.Intake | None = None, **form: Any) -> Any:
    row, events = await web.submit(
        session,
        WebForm.model_validate(form),
        intake or web.Intake(site="main"),
        rules=RULES,
        policy=POLICY,
        now=NOON_MSK,
    )
    await session.commit()
    return row, {e.name: e for e in events}


async def count(session: Any, model: Any) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)))


async def test_a_request_becomes_a_lead_and_a_task_for_the_regions_manager(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["spb"], "fixed", w["anna"])
    intake = web.Intake(
        site="main",
        attribution={"source": "Yandex Direct", "campaign": "spring", "visitor_id": "v1"},
        ip="203.0.113.5",
    )
    row, events = await submit(
        session, intake, name="Ольга", phone="8 (812) 555-01-01", region="RU-SPE", visitor_id="v1"
    )
    assert (row.status, row.reason, row.responsible_id) == ("assigned", "fixed", w["anna"])
    assert row.phone == "+78125550101" and row.region_id == w["spb"]
    lead = await session.get(Lead, row.lead_id)
    assert (lead.origin, lead.responsible_id, lead.region_id) == ("web", w["anna"], w["spb"])
    assert lead.tracking["campaign"] == "spring" and lead.tracking["site"] == "main"
    task = await session.get(Task, row.task_id)
    assert (task.kind, task.responsible_id, task.lead_id) == ("call_back", w["anna"], lead.id)
    assert task.due_at == NOON_MSK.replace(minute=10)
    received = events["web_request.received"]
    assert received.audience == (f"user:{w['anna']}",) and received.region == "RU-SPE"
    assert received.source == "Yandex Direct" and not received.queued
    assert {"lead.created", "task.created"} <= set(events)


async def test_region_comes_from_the_form_then_the_visitor_then_the_address_then_the_site(
    session: Any,
) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "fixed", w["ivan"])
    await add_rule(session, w["spb"], "fixed", w["anna"])
    visitor = web.Intake(
        site="main",
        attribution={"region_id": w["spb"]},
        ip_region_id=w["kazan"],
        site_region_id=w["moscow"],
    )
    row, _ = await submit(session, visitor, phone="+79990000001", region="XX-UNKNOWN")
    assert (row.region_id, row.responsible_id) == (w["spb"], w["anna"])
    row, _ = await submit(
        session, web.Intake(site="main", site_region_id=w["moscow"]), phone="+79990000002"
    )
    assert (row.region_id, row.responsible_id) == (w["moscow"], w["ivan"])
    # The sender's address (the local IP table) places a request nothing else places.
    by_address = web.Intake(site="main", ip_region_id=w["spb"], site_region_id=w["moscow"])
    row, _ = await submit(session, by_address, phone="+79990000003")
    assert (row.region_id, row.responsible_id) == (w["spb"], w["anna"])


async def test_spam_is_stored_as_posted_but_leaves_no_lead(session: Any) -> None:
    await build(session)
    bot = {"phone": "not-a-phone", "website": "http://spam.example", "x": "y"}
    row, events = await web.store_spam(session, web.Intake(site="main", fields=bot), now=NOON_MSK)
    await session.commit()
    assert (row.status, row.is_spam, row.lead_id, events) == ("spam", True, None, [])
    assert (row.phone, row.form) == ("not-a-phone", bot)
    assert await count(session, Lead) == 0


async def test_the_same_visitor_or_client_joins_instead_of_a_duplicate(session: Any) -> None:
    w = await build(session)
    await add_rule(session, None, "round_robin", w["ivan"], w["anna"])
    first, _ = await submit(session, phone="+79990000004", visitor_id="v9")
    again, events = await submit(session, email="new@example.ru", visitor_id="v9")
    assert again.lead_id == first.lead_id and again.responsible_id == first.responsible_id
    assert again.reason == "existing_client" and "lead.created" not in events
    assert await count(session, Lead) == 1
    # A known contact's number: his manager, his card, no lead.
    contact = Contact(name="Клиент", responsible_id=w["petr"])
    session.add(contact)
    await session.flush()
    session.add(
        Phone(
            contact_id=contact.id, e164="+74957770000", digits_rev=digits_reversed("+74957770000")
        )
    )
    await session.commit()
    known, _ = await submit(session, phone="+7 495 777-00-00")
    assert (known.contact_id, known.lead_id, known.responsible_id) == (contact.id, None, w["petr"])
    task = await session.get(Task, known.task_id)
    assert (task.contact_id, task.responsible_id) == (contact.id, w["petr"])
    assert await count(session, Lead) == 1


async def test_a_bad_phone_names_the_field(session: Any) -> None:
    await build(session)
    with pytest.raises(InvalidWebRequest) as err:
        await submit(session, phone="12")
    assert err.value.details["field"] == "phone"
    with pytest.raises(InvalidWebRequest) as err:
        await submit(session, name="no way to reach")
    assert err.value.details["field"] == "phone"


async def test_manual_queue_and_assignment(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["moscow"], "manual")
    row, events = await submit(session, name="Ждёт", phone="+74950001122", region="RU-MOW")
    assert (row.status, row.reason, row.responsible_id, row.task_id) == (
        "queued",
        "manual",
        None,
        None,
    )
    assert events["web_request.received"].audience == ("role:head", "role:admin")
    assert (await session.get(Lead, row.lead_id)).responsible_id is None
    queue, total = await web.list_queue(session, limit=10, offset=0)
    assert total == 1 and [r.id for r in queue] == [row.id]

    boss = await session.get(User, w["boss"])
    done, events = await web.assign(
        session, row.id, w["ivan"], actor=boss, rules=RULES, policy=POLICY, now=NOON_MSK
    )
    await session.commit()
    assert (done.status, done.responsible_id, done.assigned_by_id) == (
        "assigned",
        w["ivan"],
        w["boss"],
    )
    assert (await session.get(Lead, row.lead_id)).responsible_id == w["ivan"]
    assert (await session.get(Task, done.task_id)).responsible_id == w["ivan"]
    assigned = [e for e in events if e.name == "web_request.assigned"]
    assert assigned and assigned[0].audience == (f"user:{w['ivan']}",)
    assert (await web.list_queue(session, limit=10, offset=0))[1] == 0
    with pytest.raises(NotQueued):
        await web.assign(
            session, row.id, w["anna"], actor=boss, rules=RULES, policy=POLICY, now=NOON_MSK
        )
