"""IMAP in, against a real Dovecot: new mail, restarts that neither lose nor repeat, IDLE."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any, cast

import pytest

from channels.config import EmailConfig, parse_channels
from channels.mail import EmailAdapter, ImapReceiver, MailBatch, MailboxState
from contact_center.inbox_service import Inbox
from crm_core.clock import SystemClock
from crm_core.rules import CrmRules
from tests.conftest import need_service
from tests.fakes.dovecot import Dovecot, dovecot_binary, running_dovecot
from tests.helpers import until

USER, PASSWORD = "sales@shop.test", "imap-secret"


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    if dovecot_binary() is None:
        need_service("dovecot is not installed (scripts/install-system-deps.sh installs it)")
    with running_dovecot({USER: PASSWORD}) as server:
        yield server


def config(server: Dovecot, **over: object) -> EmailConfig:
    return EmailAdapter.validate_config(
        {
            "code": "mail-sales",
            "kind": "email",
            "address": USER,
            "imap_host": server.host,
            "imap_port": server.port,
            "imap_security": "none",
            "imap_password": PASSWORD,
            "smtp_host": "127.0.0.1",
            "smtp_security": "none",
            "timeout_s": 10,
            **over,
        }
    )


def letter(n: int, subject: str = "Заявка") -> bytes:
    encoded = base64.b64encode(f"{subject} {n}".encode("koi8-r")).decode()
    return (
        (
            f"From: client{n}@example.ru\r\nTo: {USER}\r\n"
            f"Subject: =?koi8-r?B?{encoded}?=\r\nMessage-ID: <m{n}@example.ru>\r\n"
            "Content-Type: text/plain; charset=koi8-r\r\n\r\n"
        ).encode()
        + f"Текст письма {n}".encode("koi8-r")
        + b"\r\n"
    )


@pytest.fixture
async def receivers():
    made: list[ImapReceiver] = []
    yield made
    for r in made:
        await r.close()


async def connected(cfg: EmailConfig, receivers: list[ImapReceiver]) -> ImapReceiver:
    receiver = EmailAdapter(cfg).receiver()
    receivers.append(receiver)
    await receiver.connect()
    return receiver


async def test_fetch_new_reads_every_message_once(dovecot: Dovecot, receivers) -> None:
    uids = [dovecot.append(USER, letter(n)) for n in (1, 2)]
    receiver = await connected(config(dovecot), receivers)
    batch = await receiver.fetch_new(MailboxState("INBOX"))
    assert [m.uid for m in batch.mails] == uids
    details = [m.message.email for m in batch.mails]
    assert [d.subject if d else None for d in details] == ["Заявка 1", "Заявка 2"]
    assert batch.mails[0].message.text == "Текст письма 1"
    assert batch.mails[0].message.provider_message_id == "<m1@example.ru>"
    assert batch.mails[0].raw == letter(1)
    assert batch.state.uidvalidity is not None
    assert batch.state.last_uid == uids[-1]
    assert not batch.more and not batch.uidvalidity_changed
    again = await receiver.fetch_new(batch.state)
    assert again.mails == [] and again.state == batch.state


async def test_a_restart_with_the_stored_state_neither_loses_nor_repeats(
    dovecot, receivers
) -> None:
    dovecot.append(USER, letter(1))
    first = await connected(config(dovecot), receivers)
    stored = (await first.fetch_new(MailboxState("INBOX"))).state
    await first.close()
    # while "we" were down, a letter arrived
    uid = dovecot.append(USER, letter(2))
    second = await connected(config(dovecot), receivers)
    batch = await second.fetch_new(stored)
    assert [m.uid for m in batch.mails] == [uid]
    assert [m.message.provider_message_id for m in batch.mails] == ["<m2@example.ru>"]
    assert (await second.fetch_new(batch.state)).mails == []


async def test_batches_are_bounded_and_say_when_more_wait(dovecot, receivers) -> None:
    for n in range(1, 6):
        dovecot.append(USER, letter(n))
    receiver = await connected(config(dovecot, fetch_batch=2), receivers)
    state, seen, rounds = MailboxState("INBOX"), [], 0
    while True:
        batch = await receiver.fetch_new(state)
        rounds += 1
        seen += [m.message.provider_message_id for m in batch.mails]
        state = batch.state
        if not batch.more:
            break
    assert seen == [f"<m{n}@example.ru>" for n in range(1, 6)]
    assert rounds == 3


async def test_a_changed_uidvalidity_reads_the_mailbox_anew(dovecot, receivers) -> None:
    dovecot.append(USER, letter(1))
    receiver = await connected(config(dovecot), receivers)
    state = (await receiver.fetch_new(MailboxState("INBOX"))).state
    assert state.uidvalidity is not None
    stale = MailboxState("INBOX", state.uidvalidity - 1, state.last_uid)
    batch = await receiver.fetch_new(stale)
    assert batch.uidvalidity_changed
    assert [m.message.provider_message_id for m in batch.mails] == ["<m1@example.ru>"]
    assert batch.state == state


async def test_idle_wakes_on_a_new_message(dovecot, receivers) -> None:
    receiver = await connected(config(dovecot), receivers)
    assert receiver.idle_supported
    state = (await receiver.fetch_new(MailboxState("INBOX"))).state
    # a generous timeout: returning True proves the server's push woke us, not the timer
    waiting = asyncio.create_task(receiver.wait_for_news(timeout=60))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    await dovecot.append_async(USER, letter(9))
    assert await asyncio.wait_for(waiting, 30) is True
    batch = await receiver.fetch_new(state)
    assert [m.message.provider_message_id for m in batch.mails] == ["<m9@example.ru>"]


@pytest.mark.parametrize("idle", [True, False], ids=["idle", "polling"])
async def test_watch_delivers_batches_with_their_state(dovecot, receivers, idle: bool) -> None:
    dovecot.append(USER, letter(1))
    receiver = EmailAdapter(config(dovecot, idle=idle, poll_interval_s=0.2)).receiver()
    receivers.append(receiver)
    batches: list[MailBatch] = []

    async def handle(batch: MailBatch) -> None:
        batches.append(batch)

    task = asyncio.create_task(receiver.watch({}, handle))
    try:
        await until(lambda: sum(len(b.mails) for b in batches) == 1, timeout=20)
        await dovecot.append_async(USER, letter(2))
        await until(lambda: sum(len(b.mails) for b in batches) == 2, timeout=20)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    ids = [m.message.provider_message_id for b in batches for m in b.mails]
    assert ids == ["<m1@example.ru>", "<m2@example.ru>"]
    assert batches[-1].state.last_uid == 2


async def test_watch_reconnects_after_the_server_goes_away(receivers) -> None:
    if dovecot_binary() is None:
        need_service("dovecot is not installed (scripts/install-system-deps.sh installs it)")
    batches: list[MailBatch] = []

    async def handle(batch: MailBatch) -> None:
        batches.append(batch)

    with running_dovecot({USER: PASSWORD}) as server:
        server.append(USER, letter(1))
        receiver = EmailAdapter(config(server, idle=False, poll_interval_s=0.2)).receiver()
        receivers.append(receiver)
        task = asyncio.create_task(receiver.watch({}, handle, backoff_s=(0.1,)))
        try:
            await until(lambda: len(batches) >= 1, timeout=20)
            status: dict = {}
            receiver.provide_status(status)
            assert status["channels"]["mail-sales"]["imap"] == "ok"
            # kill the IMAP session processes: the connection breaks, the loop reconnects
            await asyncio.to_thread(server.restart)
            await server.append_async(USER, letter(2))
            await until(lambda: sum(len(b.mails) for b in batches) == 2, timeout=30)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    ids = [m.message.provider_message_id for b in batches for m in b.mails]
    assert ids == ["<m1@example.ru>", "<m2@example.ru>"]


async def test_a_send_only_mailbox_gets_no_imap_reader() -> None:
    """``imap_enabled: false`` (the demo's mailbox): nothing reads it; the others are read."""

    def mailbox(code: str, **extra: Any) -> dict[str, Any]:
        return {
            "code": code,
            "kind": "email",
            "address": f"{code}@example.ru",
            "imap_host": "127.0.0.1",
            "imap_password": "x",
            "smtp_host": "127.0.0.1",
            **extra,
        }

    configs = parse_channels([mailbox("read"), mailbox("sendonly", imap_enabled=False)])
    nothing = cast(Any, None)  # no reader runs here: neither is used
    inbox = Inbox(configs, sessions=nothing, bus=nothing, rules=CrmRules(), clock=SystemClock())
    inbox.start_mail()
    try:
        assert [task.get_name() for task in inbox._mail_tasks] == ["imap:read"]
    finally:
        await inbox.stop_mail()


def test_a_channel_is_labelled_by_its_name_else_its_kind_and_only_then_its_code() -> None:
    def mailbox(code: str, **extra: Any) -> dict[str, Any]:
        return {
            "code": code,
            "kind": "email",
            "address": f"{code}@example.ru",
            "imap_host": "127.0.0.1",
            "imap_password": "x",
            "smtp_host": "127.0.0.1",
            **extra,
        }

    nothing = cast(Any, None)
    one = Inbox(
        parse_channels([mailbox("sales", name="Почта продаж"), mailbox("info")]),
        sessions=nothing,
        bus=nothing,
        rules=CrmRules(),
        clock=SystemClock(),
    )
    assert (one.label("sales"), one.label("info"), one.label("gone")) == (
        "Почта продаж",
        "E-mail",
        "gone",
    )
    two = Inbox(
        parse_channels([mailbox("info"), mailbox("hr")]),
        sessions=nothing,
        bus=nothing,
        rules=CrmRules(),
        clock=SystemClock(),
    )
    assert (two.label("info"), two.label("hr")) == ("E-mail info", "E-mail hr")
