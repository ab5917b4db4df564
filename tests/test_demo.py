"""``contact-center demo``: the living team it seeds, recordings that exist and play, a fresh
start unless ``--keep``, and a real run whose log never says a recording is missing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import wave
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from ami.simulator import SimulatedPbx
from contact_center import demo, demo_calls, demo_data, demo_messages
from contact_center.app import create_app
from contact_center.config import Settings
from contact_center.keys import INBOX, RECORDINGS, SESSIONS
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.clients.model import Contact
from crm_core.conversations.model import Conversation, Message
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.phones import normalize_phone
from crm_core.recordings.model import Recording, RecordingState
from crm_core.reference.model import Source
from crm_core.tasks.model import DailyPlan, Task
from crm_core.users.model import User
from tests.helpers import free_port, until
from tests.web.world import sign_in

ROOT = Path(__file__).resolve().parent.parent
MOSCOW = ZoneInfo("Europe/Moscow")


def _valid_wav(data_or_path: Path) -> float:
    """The length in seconds of a readable, non-empty WAV file (raises otherwise)."""
    with wave.open(str(data_or_path), "rb") as w:
        assert w.getnframes() > 0 and w.getframerate() > 0
        return w.getnframes() / w.getframerate()


@pytest.fixture
def demo_env(
    make_settings: Callable[..., Settings], database_url: str, tmp_path: Path
) -> tuple[Settings, demo.DemoPaths]:
    paths = demo.DemoPaths(tmp_path / "demo")
    base = make_settings(
        CC_DATABASE_URL=database_url,
        CC_RECORDINGS_FORMAT="wav",
        CC_RECORDINGS_KEEP_ORIGINAL="true",  # every spool file stays to be checked
        CC_SCHEDULER_INTERVAL_S="0.2",
    )
    # The PBX link is not under test here: an unused port keeps it retrying quietly.
    return demo.demo_settings(base, free_port(), database_url=database_url, paths=paths), paths


async def _start(settings: Settings, factory: Any) -> Any:
    return await factory(create_app(settings, announce=lambda _t: None))


async def test_the_demo_seeds_a_living_team_whose_recordings_exist(
    demo_env: tuple[Settings, demo.DemoPaths], aiohttp_client_factory: Any
) -> None:
    settings, paths = demo_env
    await demo.prepare(settings, paths, keep=False)
    client = await _start(settings, aiohttp_client_factory)
    app = client.server.app
    recorder = demo_calls.Recorder(paths.spool, clips=2, seconds=3.0)
    seeded = await demo.seed(app, recorder)
    assert seeded.created and {"boss", "ivan", "anna"} <= set(seeded.users)
    now = datetime.now(UTC)
    today = now.astimezone(MOSCOW).date()
    async with app[SESSIONS]() as s:
        roles = {login: role for login, role in await s.execute(select(User.login, User.role))}
        assert roles["boss"] == "head" and roles["ivan"] == roles["anna"] == "manager"
        ivan, anna = seeded.users["ivan"], seeded.users["anna"]

        # Deals in every stage of every active pipeline.
        stages = (
            await s.execute(
                select(PipelineStage.id, PipelineStage.code)
                .join(Pipeline, Pipeline.id == PipelineStage.pipeline_id)
                .where(Pipeline.is_active.is_(True))
            )
        ).all()
        with_deals = set(await s.scalars(select(Deal.stage_id).distinct()))
        assert stages and {code for sid, code in stages if sid not in with_deals} == set()

        lead_stages = set(await s.scalars(select(Lead.stage).distinct()))
        assert {"new", "in_work", "qualified", "junk"} <= lead_stages

        for manager in (ivan, anna):
            open_tasks = list(
                await s.scalars(
                    select(Task).where(Task.responsible_id == manager, Task.status == "open")
                )
            )
            overdue = [t for t in open_tasks if t.due_at and t.due_at.replace(tzinfo=UTC) < now]
            due_today = [
                t
                for t in open_tasks
                if t.due_at
                and t.due_at.replace(tzinfo=UTC) >= now
                and t.due_at.replace(tzinfo=UTC).astimezone(MOSCOW).date() == today
            ]
            assert overdue and due_today, (manager, open_tasks)
            week = list(await s.scalars(select(DailyPlan).where(DailyPlan.user_id == manager)))
            assert len(week) == 7 and any(p.calls for p in week)
            assert await s.scalar(
                select(func.count())
                .select_from(Activity)
                .where(Activity.user_id == manager, Activity.kind == "meeting")
            )

        expiring = await s.scalar(
            select(func.count())
            .select_from(Invoice)
            .where(
                Invoice.status == "issued",
                Invoice.due_on >= today,
                Invoice.due_on <= today + timedelta(days=3),
            )
        )
        assert expiring and expiring >= 2

        calls = list(await s.scalars(select(Call)))
        assert len(calls) >= 30  # a week, five a day
        assert {c.disposition for c in calls} >= {"answered", "missed"}
        assert any(c.counted for c in calls) and any(c.lead_id for c in calls)  # new callers
        assert any(
            c.started_at.replace(tzinfo=UTC).astimezone(MOSCOW).date() == today for c in calls
        )

        # Every recording the history names exists in the spool and is a real WAV.
        recordings = list(await s.scalars(select(Recording)))
        assert len(recordings) == sum(1 for c in calls if c.recording) >= 15
        for row in recordings:
            assert _valid_wav(paths.spool / row.filename) >= 1.0, row.filename

    # The recordings service stores them (a playable WAV in storage, linked to the timeline).
    async def stored() -> list[Recording]:
        async with app[SESSIONS]() as s:
            return list(
                await s.scalars(
                    select(Recording).where(Recording.state == RecordingState.STORED.value)
                )
            )

    done = await until(stored, timeout=30, interval=0.2)
    runtime = app[RECORDINGS]
    assert runtime is not None
    for row in done:
        assert row.format == "wav" and row.activity_id is not None
        assert row.storage_key is not None
        assert _valid_wav(paths.recordings / row.storage_key) >= 1.0
    async with app[SESSIONS]() as s:
        bad = await s.scalar(
            select(func.count())
            .select_from(Recording)
            .where(Recording.state.in_(["missing", "failed"]))
        )
        assert bad == 0

    # The team's pages open on the seeded data, for a manager and for the head.
    for login, pages in (
        ("ivan", ("/today", "/leads", "/deals", "/clients", "/tasks", "/calls", "/invoices")),
        ("boss", ("/today", "/plans", "/calls", "/deals", "/distribution", "/tracking")),
    ):
        await sign_in(client, login, demo_data.DEMO_PASSWORD)
        for page in pages:
            resp = await client.get(page)
            assert resp.status == 200, (login, page, resp.status)
    await sign_in(client, "admin", demo_data.DEMO_PASSWORD)
    assert (await client.get("/users")).status == 200

    # The player on /calls plays a stored recording: its source answers a valid WAV.
    await sign_in(client, "boss", demo_data.DEMO_PASSWORD)
    sources = re.findall(r'<audio[^>]* src="([^"]+)"', await (await client.get("/calls")).text())
    assert sources
    resp = await client.get(sources[0])
    assert resp.status == 200 and resp.content_type == "audio/wav"
    played = paths.root / "played.wav"
    played.write_bytes(await resp.read())
    assert _valid_wav(played) >= 1.0


async def test_customers_write_on_whatsapp_telegram_and_email_and_replies_reach_the_fakes(
    make_settings: Callable[..., Settings],
    database_url: str,
    tmp_path: Path,
    aiohttp_client_factory: Any,
) -> None:
    """The demo's customers: WhatsApp (signed webhooks) and Telegram (secret header) through
    the server's webhooks, e-mail through the IMAP reader's store; known clients join their
    cards, strangers become leads named by the channel; the managers' replies reach the fake
    providers and WhatsApp's delivery statuses come back."""
    providers = demo_messages.DemoProviders(delivered_after_s=0.1, read_after_s=0.3)
    await providers.start()
    try:
        paths = demo.DemoPaths(tmp_path / "demo")
        base = make_settings(
            CC_DATABASE_URL=database_url,
            CC_SCHEDULER_INTERVAL_S="0.1",
            CC_RECORDINGS_FORMAT="wav",  # the history's recordings: no conversion to wait for
        )
        settings = demo.demo_settings(
            base, free_port(), database_url=database_url, paths=paths, providers=providers
        )
        await demo.prepare(settings, paths, keep=False)
        client = await _start(settings, aiohttp_client_factory)
        app = client.server.app
        await demo.seed(app, demo_calls.Recorder(paths.spool, clips=1, seconds=1.0))
        server = str(client.make_url("")).rstrip("/")
        providers.server_url = server
        known = demo.known_writers()
        assert known
        writers = demo_messages.Customers(server, app[INBOX], known=known, seed=7)
        try:
            for channel in (demo_messages.WHATSAPP, demo_messages.TELEGRAM, demo_messages.EMAIL):
                for _ in range(4):
                    assert await writers.write_one(channel)
            writers.known = known[:1]
            writers.rnd.random = lambda: 0.0  # type: ignore[method-assign]  # a known client
            assert await writers.write_one(demo_messages.WHATSAPP)
        finally:
            await writers.close()

        async with app[SESSIONS]() as s:
            convs = list(await s.scalars(select(Conversation)))
            by_channel = Counter(c.channel for c in convs)
            assert set(by_channel) == {"wa-demo", "tg-demo", "mail-demo"}, by_channel
            inbound = await s.scalar(
                select(func.count()).select_from(Message).where(Message.direction == "inbound")
            )
            assert inbound == 13
            client_phone = known[0][1]
            joined = [c for c in convs if c.phone == client_phone]
            assert joined and all(c.contact_id or c.company_id for c in joined)
            sources = set(
                await s.scalars(
                    select(Source.name)
                    .join(Lead, Lead.source_id == Source.id)
                    .where(Lead.origin == "message")
                )
            )
            assert {"WhatsApp отдела продаж", "Telegram-бот", "Почта отдела продаж"} <= sources

        # The head answers one conversation of each channel through the API.
        resp = await client.post(
            "/api/v1/auth/token", json={"login": "boss", "password": demo_data.DEMO_PASSWORD}
        )
        headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
        firsts = {c.channel: c for c in sorted(convs, key=lambda c: c.id)}
        for conv in firsts.values():
            resp = await client.post(
                f"/api/v1/conversations/{conv.id}/messages",
                json={"text": "Добрый день! Уже готовим ответ."},
                headers=headers,
            )
            assert resp.status in (200, 201), await resp.text()

        def all_taken() -> bool:
            return all(n >= 1 for n in providers.sent.values())

        await until(all_taken, timeout=30)

        async def read_on_whatsapp() -> bool:
            async with app[SESSIONS]() as s:
                status = await s.scalar(
                    select(Message.status).where(
                        Message.direction == "outbound",
                        Message.conversation_id == firsts["wa-demo"].id,
                    )
                )
            return status == "read"

        await until(read_on_whatsapp, timeout=15)
        assert providers.statuses >= 2

        # The inbox shows them, for the head of sales.
        await sign_in(client, "boss", demo_data.DEMO_PASSWORD)
        page = await (await client.get("/inbox?view=all")).text()
        assert "WhatsApp отдела продаж" in page and "Telegram-бот" in page
        assert "Почта отдела продаж" in page
    finally:
        await providers.close()


async def test_a_restart_starts_afresh_unless_keep(
    demo_env: tuple[Settings, demo.DemoPaths], aiohttp_client_factory: Any
) -> None:
    settings, paths = demo_env
    small = demo_calls.Recorder(paths.spool, clips=1, seconds=1.0)

    async def run_once(*, keep: bool) -> tuple[demo_data.DemoSeed, int, int]:
        await demo.prepare(settings, paths, keep=keep)
        client = await _start(settings, aiohttp_client_factory)
        seeded = await demo.seed(client.server.app, small)
        async with client.server.app[SESSIONS]() as s:
            markers = await s.scalar(
                select(func.count()).select_from(Contact).where(Contact.name == "Маркер")
            )
            calls = await s.scalar(select(func.count()).select_from(Call))
            if not markers:
                s.add(Contact(name="Маркер"))  # what a visitor typed during the run
                await s.commit()
        await client.close()
        return seeded, markers or 0, calls or 0

    first, markers, calls = await run_once(keep=False)
    assert first.created and markers == 0 and calls >= 30
    kept, markers, calls_kept = await run_once(keep=True)
    assert not kept.created and markers == 1 and calls_kept == calls  # nothing seeded twice
    fresh, markers, calls_fresh = await run_once(keep=False)
    assert fresh.created and markers == 0 and calls_fresh == calls


async def test_a_database_with_strangers_is_never_wiped(
    demo_env: tuple[Settings, demo.DemoPaths], aiohttp_client_factory: Any
) -> None:
    settings, paths = demo_env
    await demo.prepare(settings, paths, keep=False)
    client = await _start(settings, aiohttp_client_factory)
    async with client.server.app[SESSIONS]() as s:
        s.add(User(login="real.person", role="manager", password_hash="x", display_name="R"))
        await s.commit()
    await client.close()
    with pytest.raises(demo.NotADemoDatabase, match=r"real\.person"):
        await demo.prepare(settings, paths, keep=False)
    client = await _start(settings, aiohttp_client_factory)
    async with client.server.app[SESSIONS]() as s:
        assert await s.scalar(select(User.id).where(User.login == "real.person"))


def test_recording_names_in_ami_bytes_become_wav_files(tmp_path: Path) -> None:
    recorder = demo_calls.Recorder(tmp_path, clips=1, seconds=1.0)
    recorder.write_named_in(
        b"Event: VarSet\r\nVariable: MIXMONITOR_FILENAME\r\n"
        b"Value: /var/spool/asterisk/monitor/20261126-195308-in-79161234567-1.5.wav\r\n\r\n"
        b"AppData: 1?MixMonitor(20261126-195600-out-102-78125550011-2.7.wav,b)\r\n\r\n"
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "20261126-195308-in-79161234567-1.5.wav",
        "20261126-195600-out-102-78125550011-2.7.wav",
    ]
    assert all(_valid_wav(tmp_path / n) >= 1.0 for n in names)


@pytest.mark.timeout(150)
def test_a_real_demo_run_never_misses_a_recording(tmp_path: Path) -> None:
    """``contact-center demo`` for ~30 s with a call every ~2 s: recordings are stored and the
    log never says a recording file is missing ("no … wav")."""
    port = free_port()
    env = {
        **os.environ,
        "CC_SERVER_PORT": str(port),
        "CC_AUTH_SCRYPT_N": "1024",
        "CC_CONFIG": str(ROOT / "config.yaml"),
    }
    for name in ("CC_DATABASE_URL", "CC_REDIS_URL"):  # the demo's embedded defaults
        env.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "contact_center", "demo", "--call-every", "2"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert "demo data seeded" in out, out[-3000:]
    missing = re.findall(r".*\bno \S+\.wav.*", out)
    assert missing == [], missing[:5]
    assert "gave up" not in out
    assert "email channel=" not in out  # the demo's mailbox is not read over IMAP
    assert len(re.findall(r"recordings: call_id=\S+ stored ", out)) >= 10, out[-3000:]
    assert "Traceback" not in out, out[-5000:]
    assert proc.returncode == 0, out[-3000:]


class _Counting(SimulatedPbx):
    """The simulated PBX, counting the calls it is asked to place instead of playing them."""

    def __init__(self) -> None:
        super().__init__()
        self.placed: list[tuple[str, str, str | None]] = []

    def play(
        self,
        trace_name: str,
        *,
        outside: str,
        did: str | None = None,
        extension: str | None = None,
        action_id: str | None = None,
    ) -> asyncio.Task[None]:
        self.placed.append((trace_name, outside, did))
        return asyncio.get_running_loop().create_task(asyncio.sleep(0))


async def test_the_carrier_keeps_calling_from_new_numbers() -> None:
    pbx = _Counting()
    known = demo_data.caller_numbers()[: len(demo_data.CLIENTS)]
    calls = asyncio.ensure_future(
        demo.traffic(pbx, known=known, dids=demo_data.tracking_dids(), every_s=0.0005, seed=1)
    )
    await until(lambda: len(pbx.placed) >= 300, timeout=10)
    calls.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await calls
    inbound = [(o, d) for name, o, d in pbx.placed if pbx.traces[name].direction == "inbound"]
    new = {o for o, _ in inbound if o not in known}
    assert len(new) >= 0.3 * len(inbound)  # a new client's pop-up every other inbound call
    assert all(normalize_phone("+" + o) == "+" + o for o in new)  # real mobile numbers
    assert {o for _, o, _ in pbx.placed} & set(known)  # and the known clients call too
    assert all(d in demo_data.tracking_dids() for _, d in inbound)
