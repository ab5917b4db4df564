"""Conversations on SQLite and PostgreSQL: identification, leads for strangers, idempotent
redelivery, the outbox, statuses, the timeline, access, call-back tasks."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.call_outcomes import missed_call_key
from crm_core import access
from crm_core.activities.model import Activity
from crm_core.clients.model import Contact, Email, Phone
from crm_core.conversations import service as conversations
from crm_core.conversations.events import MessageStatusChanged
from crm_core.conversations.model import Conversation, Message
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.errors import InvalidInput, NotFound, PermissionDenied
from crm_core.jobs.model import ScheduledJob
from crm_core.leads.model import Lead
from crm_core.reference.model import Source
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import Task, TaskKind
from crm_core.tasks.schemas import TaskInput
from crm_core.tracking.model import TrackingSite, TrackingVisitor
from tests.crm_core.tasks.world import T0, World, build_world

RULES = CrmRules()


def wa(mid: str, wa_id: str = "79161112233", text: str = "Здравствуйте", **kw: Any):
    base = conversations.Incoming(
        channel="wa-main",
        channel_kind="whatsapp",
        provider_message_id=mid,
        identity_kind="wa_id",
        identity_value=wa_id,
        sent_at=T0,
        text=text,
        sender_name="Мария",
        phone="+" + wa_id,
    )
    return replace(base, **kw)


@pytest.fixture
async def world(session: AsyncSession) -> World:
    return await build_world(session)


async def _count(session: AsyncSession, model: type) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_channels_source_and_lead_take_its_configured_name_not_its_code(
    session: AsyncSession, world: World
) -> None:
    # A source an earlier version named after the code takes the name; a renamed one keeps its.
    session.add(Source(kind="other", code="channel-wa-main", name="WhatsApp (wa-main)"))
    session.add(Source(kind="other", code="channel-tg-main", name="Телеграм сайта"))
    await session.flush()
    got = await conversations.receive(
        session, wa("wamid.n1", channel_name="WhatsApp отдела продаж"), rules=RULES, now=T0
    )
    tg = await conversations.receive(
        session,
        replace(
            wa("tg.n1", wa_id="555", channel_name="Telegram-бот"),
            channel="tg-main",
            channel_kind="telegram",
            identity_kind="telegram",
            phone=None,
        ),
        rules=RULES,
        now=T0,
    )
    await session.commit()
    lead = await session.get(Lead, got.lead_id)
    assert lead is not None and lead.title.startswith("WhatsApp отдела продаж: ")
    source = await session.get(Source, lead.source_id)
    assert source is not None and source.name == "WhatsApp отдела продаж"
    tg_lead = await session.get(Lead, tg.lead_id)
    assert tg_lead is not None
    tg_source = await session.get(Source, tg_lead.source_id)
    assert tg_source is not None and tg_source.name == "Телеграм сайта"


async def test_unknown_sender_becomes_a_lead_with_the_channel_as_source(
    session: AsyncSession, world: World
) -> None:
    await distribution_rules.create_rule(
        session,
        RuleInput(strategy="fixed", managers=[ManagerInput(user_id=world["anna"])]),
        now=T0,
    )
    got = await conversations.receive(session, wa("wamid.1"), rules=RULES, now=T0)
    await session.commit()
    assert got.created and got.lead_id is not None
    lead = await session.get(Lead, got.lead_id)
    assert lead is not None and lead.origin == "message" and lead.responsible_id == world["anna"]
    source = await session.get(Source, lead.source_id)
    assert source is not None and source.name == "WhatsApp"  # the kind's, never the code
    assert got.conversation.assignee_id == world["anna"] and got.conversation.unread == 1
    assert got.conversation.lead_id == lead.id and got.conversation.phone == "+79161112233"
    names = [e.name for e in got.events]
    assert "lead.created" in names and "message.new" in names and "activity.recorded" in names
    new = next(e for e in got.events if e.name == "message.new")
    assert new.audience == (f"user:{world['anna']}", "role:head")
    activity = await session.scalar(select(Activity).where(Activity.lead_id == lead.id))
    assert activity is not None and activity.kind == "message" and activity.direction == "inbound"


async def test_a_redelivered_message_is_stored_once(session: AsyncSession, world: World) -> None:
    first = await conversations.receive(session, wa("wamid.dup"), rules=RULES, now=T0)
    again = await conversations.receive(session, wa("wamid.dup"), rules=RULES, now=T0)
    await session.commit()
    assert first.created and not again.created and again.events == []
    assert again.message.id == first.message.id
    assert await _count(session, Message) == 1 and await _count(session, Lead) == 2  # + world's
    conv = await session.get(Conversation, first.conversation.id)
    assert conv is not None and conv.unread == 1


async def test_a_known_phone_joins_the_contact_and_his_manager(
    session: AsyncSession, world: World
) -> None:
    session.add(Phone(contact_id=world["contact"], e164="+79161112233"))
    await session.commit()
    got = await conversations.receive(session, wa("wamid.2"), rules=RULES, now=T0)
    await session.commit()
    assert got.lead_id is None and got.conversation.contact_id == world["contact"]
    assert got.conversation.assignee_id == world["ivan"]
    # The same person on Telegram, having shared his number: the same client.
    tg = conversations.Incoming(
        channel="tg-bot",
        channel_kind="telegram",
        provider_message_id="tg:1",
        identity_kind="telegram",
        identity_value="555",
        sent_at=T0,
        text="и тут привет",
        phone="+79161112233",
    )
    other = await conversations.receive(session, tg, rules=RULES, now=T0)
    await session.commit()
    assert other.conversation.contact_id == world["contact"]
    assert other.conversation.id != got.conversation.id


async def test_a_second_message_from_a_stranger_uses_the_same_lead(
    session: AsyncSession, world: World
) -> None:
    one = await conversations.receive(session, wa("wamid.a"), rules=RULES, now=T0)
    two = await conversations.receive(
        session, wa("wamid.b", text="ещё"), rules=RULES, now=T0 + timedelta(minutes=1)
    )
    await session.commit()
    assert one.conversation.id == two.conversation.id and two.lead_id is None
    assert two.conversation.unread == 2 and two.conversation.preview == "ещё"


async def test_email_sender_found_by_address_and_auto_reply_creates_nothing(
    session: AsyncSession, world: World
) -> None:
    mail = conversations.Incoming(
        channel="sales",
        channel_kind="email",
        provider_message_id="<x@example.ru>",
        identity_kind="email",
        identity_value="robot@example.ru",
        sent_at=T0,
        text="Я в отпуске",
        email="robot@example.ru",
        creates_client=False,
    )
    got = await conversations.receive(session, mail, rules=RULES, now=T0)
    await session.commit()
    assert got.created and got.lead_id is None and got.conversation.lead_id is None
    assert await _count(session, Lead) == 1


async def test_reply_goes_through_the_outbox_and_statuses_move_forward(
    session: AsyncSession, world: World
) -> None:
    got = await conversations.receive(session, wa("wamid.in"), rules=RULES, now=T0)
    await session.commit()
    ivan = world.user("ivan")
    msg, events = await conversations.queue_reply(
        session, got.conversation.id, "  Добрый день!  ", actor=ivan, rules=RULES, now=T0
    )
    await session.commit()
    assert msg.status == "queued" and msg.text == "Добрый день!" and msg.author_id == ivan.id
    # An unassigned conversation is taken by whoever answers it.
    conv = await session.get(Conversation, got.conversation.id)
    assert conv is not None and conv.assignee_id == ivan.id and conv.unread == 0
    job = await session.scalar(select(ScheduledJob).where(ScheduledJob.kind == "conversation.send"))
    assert job is not None and job.payload == {
        "message_id": msg.id,
        "lane": f"conversation:{conv.id}",  # one conversation's messages go out in order
    }
    out = await conversations.outgoing(session, msg.id)
    assert out is not None and out.to == "79161112233" and out.text == "Добрый день!"
    await conversations.mark_sent(session, msg.id, "wamid.out.1", now=T0)
    await session.commit()
    assert await conversations.outgoing(session, msg.id) is None  # a second run sends nothing
    for status, expected in (("read", "read"), ("delivered", "read"), ("sent", "read")):
        _, evs = await conversations.apply_status(session, "wa-main", "wamid.out.1", status, at=T0)
        stored = await conversations.find_message(session, "wa-main", "wamid.out.1")
        assert stored is not None and stored.status == expected
    _, evs = await conversations.apply_status(
        session, "wa-main", "wamid.unknown", "delivered", at=T0
    )
    assert evs == []
    assert "message.new" in [e.name for e in events]


async def test_a_batch_of_status_reports_applies_each_in_order_as_one_at_a_time(
    session: AsyncSession, world: World
) -> None:
    ivan = world.user("ivan")
    sent = []
    for n, wa_id in enumerate(("79161112233", "79162223344")):
        got = await conversations.receive(
            session, wa(f"wamid.in{n}", wa_id=wa_id), rules=RULES, now=T0
        )
        msg, _ = await conversations.queue_reply(
            session, got.conversation.id, f"Ответ {n}", actor=ivan, rules=RULES, now=T0
        )
        await conversations.mark_sent(session, msg.id, f"wamid.out{n}", now=T0)
        sent.append(msg.id)
    await session.commit()
    reports = [
        conversations.StatusReport("wa-main", "wamid.out0", "delivered", at=T0),
        conversations.StatusReport("wa-main", "wamid.out0", "read", at=T0),
        conversations.StatusReport("wa-main", "wamid.out0", "sent", at=T0),  # late: nothing
        conversations.StatusReport(
            "wa-main", "wamid.out1", "failed", at=T0, error="131047: окно закрыто"
        ),
        conversations.StatusReport("wa-main", "wamid.in0", "read", at=T0),  # not ours
        conversations.StatusReport("wa-main", "wamid.nobody", "read", at=T0),
    ]
    events = await conversations.apply_statuses(session, reports)
    await session.commit()
    assert [(e.message_id, e.status) for e in events if isinstance(e, MessageStatusChanged)] == [
        (sent[0], "delivered"),
        (sent[0], "read"),
        (sent[1], "failed"),
    ]
    session.expunge_all()
    first = await session.get(Message, sent[0])
    second = await session.get(Message, sent[1])
    assert first is not None and first.status == "read" and first.status_at is not None
    assert second is not None and second.status == "failed"
    assert second.error == "131047: окно закрыто"


async def test_outside_the_window_a_reply_is_refused_in_russian(
    session: AsyncSession, world: World
) -> None:
    got = await conversations.receive(session, wa("wamid.old"), rules=RULES, now=T0)
    await session.commit()
    with pytest.raises(conversations.WindowClosed, match="24 часов"):
        await conversations.queue_reply(
            session,
            got.conversation.id,
            "поздно",
            actor=world.user("boss"),
            rules=RULES,
            window_open=False,
        )
    await session.rollback()
    assert await _count(session, ScheduledJob) == 0


async def test_a_failure_shows_on_the_message(session: AsyncSession, world: World) -> None:
    got = await conversations.receive(session, wa("wamid.f"), rules=RULES, now=T0)
    msg, _ = await conversations.queue_reply(
        session, got.conversation.id, "ответ", actor=world.user("boss"), rules=RULES, now=T0
    )
    events = await conversations.mark_failed(session, msg.id, "131047: Re-engagement", now=T0)
    await session.commit()
    (event,) = events
    assert isinstance(event, MessageStatusChanged) and event.status == "failed"
    stored = await session.get(Message, msg.id)
    assert stored is not None and stored.status == "failed" and "131047" in (stored.error or "")


async def test_reaching_the_client_closes_the_missed_call_task(
    session: AsyncSession, world: World
) -> None:
    number = "+79161112233"
    assert missed_call_key(number) == conversations.MISSED_CALL_PREFIX + number
    task, _ = await tasks.create_task(
        session,
        TaskInput(
            kind=TaskKind.CALL_BACK,
            title="Перезвонить",
            due_at=T0,
            responsible_id=world["ivan"],
            origin_key=missed_call_key(number),
        ),
        actor=access.SYSTEM,
        rules=RULES,
        now=T0,
    )
    got = await conversations.receive(session, wa("wamid.cb"), rules=RULES, now=T0)
    msg, _ = await conversations.queue_reply(
        session, got.conversation.id, "Вы звонили?", actor=world.user("ivan"), rules=RULES
    )
    still = await session.get(Task, task.id)
    assert still is not None and still.status == "open"  # queued is not reached yet
    await conversations.mark_sent(session, msg.id, "wamid.cb.out", now=T0)
    await session.commit()
    session.expunge_all()
    done = await session.get(Task, task.id)
    assert done is not None and done.status == "done"


async def test_access_lists_and_notes(session: AsyncSession, world: World) -> None:
    session.add(Phone(contact_id=world["anna_contact"], e164="+79990000001"))
    await session.commit()
    anna_conv = (
        await conversations.receive(session, wa("m1", wa_id="79990000001"), rules=RULES, now=T0)
    ).conversation
    stranger = (await conversations.receive(session, wa("m2"), rules=RULES, now=T0)).conversation
    await session.commit()
    assert anna_conv.assignee_id == world["anna"] and stranger.assignee_id is None
    ivan, anna, boss = world.user("ivan"), world.user("anna"), world.user("boss")
    rows, total = await conversations.list_conversations(session, actor=ivan, rules=RULES)
    assert total == 1 and rows[0].id == stranger.id  # the unassigned one only
    rows, total = await conversations.list_conversations(
        session, actor=anna, rules=RULES, view="mine"
    )
    assert [r.id for r in rows] == [anna_conv.id]
    _, total = await conversations.list_conversations(session, actor=boss, rules=RULES)
    assert total == 2
    with pytest.raises(NotFound):
        await conversations.get_conversation(session, anna_conv.id, actor=ivan, rules=RULES)
    with pytest.raises(NotFound):
        await conversations.queue_reply(session, anna_conv.id, "x", actor=ivan, rules=RULES)
    with pytest.raises(PermissionDenied):
        await conversations.assign(session, anna_conv.id, world["ivan"], actor=anna, rules=RULES)
    note, _ = await conversations.add_note(
        session, anna_conv.id, "клиент капризный", actor=anna, rules=RULES
    )
    assert note.direction == "internal" and note.status == "note"
    counts = await conversations.unread_counts(session, actor=anna, rules=RULES)
    assert counts == {"mine": 1, "unassigned": 1}
    conv, _ = await conversations.mark_read(session, anna_conv.id, actor=anna, rules=RULES)
    assert conv.unread == 0
    conv, evs = await conversations.set_status(
        session, anna_conv.id, "resolved", actor=anna, rules=RULES
    )
    assert conv.status == "resolved" and evs[0].name == "conversation.changed"
    conv, evs = await conversations.assign(
        session, anna_conv.id, world["ivan"], actor=boss, rules=RULES
    )
    assert conv.assignee_id == world["ivan"] and f"user:{world['anna']}" in evs[0].audience
    # a message reopens a resolved conversation
    again = await conversations.receive(session, wa("m3", wa_id="79990000001"), rules=RULES, now=T0)
    assert again.conversation.status == "open"
    assert await session.scalar(select(func.count()).select_from(Contact)) == 2


async def test_capacity_leaves_a_new_clients_conversation_in_the_queue(
    session: AsyncSession, world: World
) -> None:
    await distribution_rules.create_rule(
        session,
        RuleInput(strategy="fixed", managers=[ManagerInput(user_id=world["anna"])]),
        now=T0,
    )
    first = await conversations.receive(
        session, wa("c1", wa_id="79000000001"), rules=RULES, now=T0, capacity=1
    )
    second = await conversations.receive(
        session, wa("c2", wa_id="79000000002"), rules=RULES, now=T0, capacity=1
    )
    assert first.conversation.assignee_id == world["anna"]
    assert second.conversation.assignee_id is None  # anna is at capacity
    await conversations.set_status(
        session, first.conversation.id, "resolved", actor=world.user("anna"), rules=RULES
    )
    again = await conversations.receive(
        session, wa("c3", wa_id="79000000002"), rules=RULES, now=T0, capacity=1
    )
    assert again.conversation.assignee_id == world["anna"]  # room again: the rules retry


async def test_a_click_to_whatsapp_ad_is_the_leads_source_and_campaign(
    session: AsyncSession, world: World
) -> None:
    referral = {
        "source_id": "120200001",
        "source_type": "ad",
        "source_url": "https://fb.me/ad",
        "headline": "Коробки оптом со скидкой",
        "body": None,
        "ctwa_clid": "ARAkLkA8rmlFeiCktEJQ",
    }
    got = await conversations.receive(
        session, wa("wamid.ad", payload={"referral": referral}), rules=RULES, now=T0
    )
    await session.commit()
    lead = await session.get(Lead, got.lead_id)
    assert lead is not None and lead.tracking is not None
    source = await session.get(Source, lead.source_id)
    assert source is not None and source.kind == "campaign"
    assert source.name == "Коробки оптом со скидкой"
    parent = await session.get(Source, source.parent_id)
    assert parent is not None and parent.kind == "ad_channel"
    assert lead.tracking["ctwa_clid"] == "ARAkLkA8rmlFeiCktEJQ"
    assert lead.tracking["campaign"] == "Коробки оптом со скидкой"


async def test_a_telegram_deep_link_joins_the_website_visitors_source(
    session: AsyncSession, world: World
) -> None:
    site = TrackingSite(code="shop", name="Магазин")
    session.add(site)
    await session.flush()
    session.add(
        TrackingVisitor(
            site_id=site.id,
            visitor_id="v-42",
            kind="paid",
            channel="yandex",
            source_id=world["expo"],
            campaign="spring",
            utm={"utm_source": "yandex"},
            region_id=world["spb"],
        )
    )
    await session.commit()
    tg = conversations.Incoming(
        channel="tg-bot",
        channel_kind="telegram",
        provider_message_id="tg:start",
        identity_kind="telegram",
        identity_value="777",
        sent_at=T0,
        text="/start v-42",
        sender_name="Сергей",
        payload={"start_payload": "v-42"},
    )
    got = await conversations.receive(session, tg, rules=RULES, now=T0)
    await session.commit()
    lead = await session.get(Lead, got.lead_id)
    assert lead is not None and lead.source_id == world["expo"] and lead.region_id == world["spb"]
    assert lead.tracking is not None and lead.tracking["visitor_id"] == "v-42"
    assert lead.tracking["campaign"] == "spring"


async def test_outside_working_hours_a_new_client_gets_the_automatic_reply(
    session: AsyncSession, world: World
) -> None:
    await distribution_rules.create_rule(
        session,
        RuleInput(
            strategy="round_robin",
            managers=[ManagerInput(user_id=world["anna"], hours={"mon": ["09:00-10:00"]})],
        ),
        now=T0,
    )
    late = T0 + timedelta(hours=5)  # Monday 15:00 in Moscow: anna has gone
    reply = "Здравствуйте! Сейчас нерабочее время — ответим в 9:00."
    got = await conversations.receive(
        session, wa("wamid.late"), rules=RULES, now=late, off_hours_reply=reply
    )
    await session.commit()
    assert got.conversation.assignee_id is None and got.conversation.unread == 1
    sent = await session.scalar(
        select(Message).where(Message.direction == "outbound", Message.author_kind == "bot")
    )
    assert sent is not None and sent.text == reply and sent.status == "queued"
    again = await conversations.receive(
        session, wa("wamid.late2", text="ау"), rules=RULES, now=late, off_hours_reply=reply
    )
    assert [e.name for e in again.events].count("message.new") == 1  # one automatic reply
    on_duty = await conversations.receive(
        session,
        wa("wamid.day", wa_id="79000000111"),
        rules=RULES,
        now=T0 - timedelta(minutes=30),  # 09:30 in Moscow
        off_hours_reply=reply,
    )
    assert on_duty.conversation.assignee_id == world["anna"]
    assert [e.name for e in on_duty.events].count("message.new") == 1


def letter(mid: str, sender: str = "newbie@example.ru", **kw: Any) -> conversations.Incoming:
    base = conversations.Incoming(
        channel="ivan-mail",
        channel_kind="email",
        provider_message_id=mid,
        identity_kind="email",
        identity_value=sender,
        sent_at=T0,
        kind="email",
        text="Добрый день",
        sender_name="Пётр",
        email=sender,
        thread_key=mid,
        payload={"email": {"subject": "Заявка", "message_id": mid, "references": []}},
    )
    return replace(base, **kw)


@pytest.mark.parametrize("read_all", [False, True])
async def test_a_personal_mailbox_is_its_managers_alone(
    session: AsyncSession, world: World, read_all: bool
) -> None:
    rules = CrmRules(managers_read_all=read_all)
    await distribution_rules.create_rule(
        session,
        RuleInput(strategy="fixed", managers=[ManagerInput(user_id=world["anna"])]),
        now=T0,
    )
    got = await conversations.receive(
        session, letter("<p1@example.ru>", owner_id=world["ivan"]), rules=rules, now=T0
    )
    # a client of anna's writing to ivan's own mailbox reaches ivan, not his responsible
    session.add(Email(contact_id=world["anna_contact"], address="known@example.ru"))
    known = await conversations.receive(
        session,
        letter("<p2@example.ru>", sender="known@example.ru", owner_id=world["ivan"]),
        rules=rules,
        now=T0,
    )
    shared = await conversations.receive(
        session, letter("<s1@example.ru>", sender="other@example.ru", channel="sales"), rules=rules
    )
    await session.commit()
    conv = got.conversation
    assert conv.owner_id == world["ivan"] and conv.assignee_id == world["ivan"]
    lead = await session.get(Lead, got.lead_id)
    assert lead is not None and lead.responsible_id == world["ivan"]  # not the rules' anna
    assert known.conversation.contact_id == world["anna_contact"] and known.lead_id is None
    assert known.conversation.assignee_id == world["ivan"]
    assert shared.conversation.owner_id is None
    assert shared.conversation.assignee_id == world["anna"]  # the distribution rules
    anna, ivan, boss = world.user("anna"), world.user("ivan"), world.user("boss")
    seen, _ = await conversations.list_conversations(session, actor=anna, rules=rules)
    assert conv.id not in {c.id for c in seen} and shared.conversation.id in {c.id for c in seen}
    with pytest.raises(NotFound):
        await conversations.get_conversation(session, conv.id, actor=anna, rules=rules)
    with pytest.raises(NotFound):
        await conversations.queue_reply(session, conv.id, "я отвечу", actor=anna, rules=rules)
    for reader in (ivan, boss):
        seen, _ = await conversations.list_conversations(session, actor=reader, rules=rules)
        assert conv.id in {c.id for c in seen}
        await conversations.get_conversation(session, conv.id, actor=reader, rules=rules)
    # the head hands it to anna: now she sees it too, and ivan still does
    await conversations.assign(session, conv.id, world["anna"], actor=boss, rules=rules)
    for reader in (anna, ivan):
        await conversations.get_conversation(session, conv.id, actor=reader, rules=rules)
        seen, _ = await conversations.list_conversations(session, actor=reader, rules=rules)
        assert conv.id in {c.id for c in seen}


async def test_a_bounce_is_remembered_per_address_until_the_address_writes(
    session: AsyncSession, world: World
) -> None:
    await conversations.record_bounce(
        session,
        "Buyer@Example.ru",
        at=T0,
        channel="sales",
        status="5.1.1",
        reason="smtp; 550 5.1.1 User unknown",
        message_id="<ours-1@shop.test>",
    )
    later = T0 + timedelta(days=1)
    await conversations.record_bounce(
        session,
        "buyer@example.ru",
        at=later,
        channel="sales",
        status="5.2.2",
        reason="mailbox full",
    )
    await session.commit()
    found = await conversations.bounces(session, ["BUYER@example.ru", "other@example.ru"])
    assert list(found) == ["buyer@example.ru"]
    assert found["buyer@example.ru"].status == "5.2.2"  # the latest report
    assert found["buyer@example.ru"].reason == "mailbox full"
    await conversations.receive(
        session,
        letter("<back@example.ru>", sender="buyer@example.ru", channel="sales"),
        rules=RULES,
        now=later,
    )
    await session.commit()
    assert await conversations.bounces(session, ["buyer@example.ru"]) == {}


async def test_an_email_reply_keeps_the_chosen_subject_and_the_letter_it_answers(
    session: AsyncSession, world: World
) -> None:
    first = await conversations.receive(session, letter("<a1@example.ru>"), rules=RULES, now=T0)
    second = await conversations.receive(
        session,
        letter(
            "<a2@example.ru>",
            thread_key="<a1@example.ru>",
            text="И ещё картон",
            payload={
                "email": {
                    "subject": "Re: Заявка",
                    "message_id": "<a2@example.ru>",
                    "references": ["<a1@example.ru>"],
                }
            },
        ),
        rules=RULES,
        now=T0,
    )
    assert second.conversation.id == first.conversation.id  # one thread
    conv_id = second.conversation.id
    boss = world.user("boss")
    default, _ = await conversations.queue_reply(session, conv_id, "Ответ", actor=boss, rules=RULES)
    out = await conversations.outgoing(session, default.id)
    assert out is not None and out.subject == "Re: Заявка" and out.reply_to == "<a2@example.ru>"
    assert out.references == ("<a1@example.ru>", "<a2@example.ru>")
    assert out.quote is not None and out.quote.text == "И ещё картон"
    with pytest.raises(InvalidInput, match="subject"):
        await conversations.queue_reply(
            session, conv_id, "Ответ", actor=boss, rules=RULES, subject="x" * 301
        )
    with pytest.raises(InvalidInput, match="reply_to_message_id"):
        await conversations.queue_reply(
            session, conv_id, "Ответ", actor=boss, rules=RULES, reply_to_message_id=default.id
        )
    chosen, _ = await conversations.queue_reply(
        session,
        conv_id,
        "Ответ",
        actor=boss,
        rules=RULES,
        subject="Счёт\r\nBcc: spy@evil.test",  # a line break cannot start another header
        reply_to_message_id=second.message.id,
        quote=False,
    )
    out = await conversations.outgoing(session, chosen.id)
    assert out is not None and out.subject == "Счёт Bcc: spy@evil.test" and out.quote is None
