"""The batch of a webhook worker (receive_many) follows receive's rules, in one go: strangers
become one lead each however many messages they send in the batch, a known number joins its
contact, the same person on a second channel joins the same client, a redelivery is stored
once, round robin turns and the capacity count hold within the batch."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center import db
from crm_core.activities.model import Activity
from crm_core.clients.model import MessengerId, Phone
from crm_core.conversations import service as conversations
from crm_core.conversations.batch import receive_many
from crm_core.conversations.model import Conversation, Message
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.errors import Conflict
from crm_core.leads.model import Lead
from crm_core.rules import CrmRules
from tests.crm_core.conversations.test_conversations_service import wa
from tests.crm_core.tasks.world import T0, World, build_world

RULES = CrmRules()


async def _count(session: AsyncSession, model: type) -> int:
    return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_a_batch_follows_receives_rules(session: AsyncSession) -> None:
    world: World = await build_world(session)
    await distribution_rules.create_rule(
        session,
        RuleInput(
            strategy="round_robin",
            managers=[ManagerInput(user_id=world["anna"]), ManagerInput(user_id=world["ivan"])],
        ),
        now=T0,
    )
    session.add(Phone(contact_id=world["contact"], e164="+79161112233"))
    await session.commit()
    leads_before = await _count(session, Lead)
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
    batch = [
        wa("b1", wa_id="79000000001"),  # a stranger ...
        wa("b2", wa_id="79000000001", text="ещё"),  # ... twice: one conversation, one lead
        wa("b3", wa_id="79000000002"),  # another stranger: the next turn
        wa("b4", wa_id="79161112233"),  # the contact's number
        tg,  # the same person on Telegram
        wa("b1", wa_id="79000000001"),  # redelivered within the batch
    ]
    got = await receive_many(session, batch, rules=RULES, now=T0)
    await session.commit()
    assert got.stored == 5 and [r.provider_message_id for r in got.repeated] == ["b1"]
    convs = {c.identity_value: c for c in await session.scalars(select(Conversation))}
    assert set(convs) == {"79000000001", "79000000002", "79161112233", "555"}
    stranger, other = convs["79000000001"], convs["79000000002"]
    assert stranger.unread == 2 and stranger.preview == "ещё" and stranger.lead_id is not None
    assert {stranger.assignee_id, other.assignee_id} == {world["anna"], world["ivan"]}
    assert await _count(session, Lead) == leads_before + 2
    lead = await session.get(Lead, stranger.lead_id)
    assert lead is not None and lead.responsible_id == stranger.assignee_id
    assert convs["79161112233"].contact_id == world["contact"]
    assert convs["555"].contact_id == world["contact"]
    assert convs["79161112233"].assignee_id == world["ivan"]  # the contact's responsible
    assert await _count(session, Message) == 5 and await _count(session, Activity) == 5
    names = [e.name for e in got.events]
    assert names.count("lead.created") == 2 and names.count("message.new") == 5
    # Delivered again in a later batch: stored once.
    again = await receive_many(session, [wa("b3", wa_id="79000000002")], rules=RULES, now=T0)
    assert again.stored == 0 and len(again.repeated) == 1
    assert await _count(session, Message) == 5


async def test_a_messenger_id_and_an_identity_linked_elsewhere_join_their_clients(
    session: AsyncSession,
) -> None:
    """No number to go by: a WhatsApp id a contact is known by joins that contact; a WhatsApp
    id already linked to a lead on another channel joins that lead (both looked up at once)."""
    world: World = await build_world(session)
    session.add(
        MessengerId(contact_id=world["contact"], channel="whatsapp", external_id="79000000777")
    )
    await session.commit()
    first = await receive_many(session, [wa("s1", wa_id="79000000009")], rules=RULES, now=T0)
    await session.commit()
    assert first.stored == 1
    leads_before = await _count(session, Lead)
    known = wa("s3", wa_id="79000000777", phone=None, text="это я, с другого телефона")
    second_line = wa("s2", wa_id="79000000009", channel="wa-second", phone=None)
    got = await receive_many(session, [known, second_line], rules=RULES, now=T0)
    await session.commit()
    assert got.stored == 2
    convs = {(c.channel, c.identity_value): c for c in await session.scalars(select(Conversation))}
    lead_id = convs[("wa-main", "79000000009")].lead_id
    assert lead_id is not None
    assert convs[("wa-second", "79000000009")].lead_id == lead_id
    assert convs[("wa-main", "79000000777")].contact_id == world["contact"]
    assert await _count(session, Lead) == leads_before  # neither is a stranger


async def test_the_capacity_counts_within_the_batch(session: AsyncSession) -> None:
    world: World = await build_world(session)
    await distribution_rules.create_rule(
        session,
        RuleInput(strategy="fixed", managers=[ManagerInput(user_id=world["anna"])]),
        now=T0,
    )
    got = await receive_many(
        session,
        [wa("c1", wa_id="79000000001"), replace(wa("c2", wa_id="79000000002"))],
        rules=RULES,
        now=T0,
        capacity=1,
    )
    await session.commit()
    assert got.stored == 2
    convs = {c.identity_value: c for c in await session.scalars(select(Conversation))}
    assert convs["79000000001"].assignee_id == world["anna"]
    assert convs["79000000002"].assignee_id is None  # anna reached her capacity in the batch


@pytest.mark.parametrize("take", ["batch", "one"])
async def test_two_workers_on_one_conversation_lose_no_update(engine: Any, take: str) -> None:
    """Two workers (two instances) take messages of one sender at once, as a batch or one by
    one (a failed batch's retry): the second reads the conversation only once the first has
    committed, so its unread count, preview and assignee build on the first's instead of
    overwriting them."""

    async def store(session: AsyncSession, incoming: conversations.Incoming) -> None:
        if take == "batch":
            await receive_many(session, [incoming], rules=RULES, now=T0)
        else:
            await conversations.receive(session, incoming, rules=RULES, now=T0)

    make = db.sessionmaker(engine)
    async with make() as session:
        world: World = await build_world(session)
        await distribution_rules.create_rule(
            session,
            RuleInput(strategy="fixed", managers=[ManagerInput(user_id=world["anna"])]),
            now=T0,
        )
        await store(session, wa("d1", wa_id="79000000009"))
        await session.commit()
    async with make() as first, make() as second:
        await store(first, wa("d2", wa_id="79000000009"))

        async def other_worker() -> None:
            for _ in range(3):  # as the queue does: a batch that failed is taken again
                try:
                    await store(second, wa("d3", wa_id="79000000009", text="третье"))
                    await second.commit()
                    return
                except DBAPIError:
                    await second.rollback()
            raise AssertionError("the second batch never went in")

        racing = asyncio.create_task(other_worker())
        await asyncio.sleep(0.3)  # the second worker is at the conversation by now
        await first.commit()
        await racing
    async with make() as session:
        conv = (await session.scalars(select(Conversation))).one()
        assert conv.unread == 3
        assert conv.preview == "третье"
        assert conv.assignee_id == world["anna"]
        assert await _count(session, Message) == 3


async def test_two_managers_taking_one_conversation_at_once_one_gets_it(engine: Any) -> None:
    """«Взять себе» pressed by two managers at the same moment: the second waits for the
    first's commit and is refused, instead of both being told it is theirs."""
    make = db.sessionmaker(engine)
    async with make() as session:
        world: World = await build_world(session)
        stranger = await conversations.receive(
            session, wa("t1", wa_id="79000000011"), rules=RULES, now=T0
        )
        await session.commit()
        conv_id = stranger.conversation.id
        assert stranger.conversation.assignee_id is None
    ivan, anna = world.user("ivan"), world.user("anna")
    async with make() as first, make() as second:
        await conversations.assign(first, conv_id, world["ivan"], actor=ivan, rules=RULES)

        async def anna_takes() -> str:
            try:
                await conversations.assign(second, conv_id, world["anna"], actor=anna, rules=RULES)
                await second.commit()
                return "taken"
            except Conflict as exc:
                await second.rollback()
                return exc.message

        racing = asyncio.create_task(anna_takes())
        await asyncio.sleep(0.3)
        await first.commit()
        assert await racing == "разговор уже взял другой менеджер"
    async with make() as session:
        conv = await session.get(Conversation, conv_id)
        assert conv is not None and conv.assignee_id == world["ivan"]
