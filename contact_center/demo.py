"""``contact-center demo``: the server with seeded data and a simulated PBX on loopback.

Each start begins afresh (``--keep`` keeps the previous run's data): a sales team with
clients, deals in every stage, leads, tasks, invoices, this week's plans and a week of calls
with recordings. Within a minute the simulated carrier calls the demo's tracking numbers from
known clients and from numbers never seen before (answered, missed, abandoned, busy,
outbound), so a newcomer sees pop-ups, call logs, leads and call-back tasks move without an
Asterisk. Every recording the PBX names is written into the demo's spool directory, as
MixMonitor would, and stored by the recordings service like a real one. Beside the calls,
customers write on WhatsApp, Telegram and e-mail (:mod:`contact_center.demo_messages`: local
fakes of the providers), so Входящие moves too: the managers' replies reach the fakes and
WhatsApp's delivery statuses come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web
from pydantic import SecretStr
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ami.simulator import SimulatedPbx
from contact_center import db, demo_calls, demo_data, demo_messages, demo_tracking, logs
from contact_center.app import create_app, freeze_heap_after_startup
from contact_center.config import PbxSettings, Settings
from contact_center.keys import CLOCK, INBOX, SESSIONS, SETTINGS, TELEPHONY, TRACKER
from crm_core.users import service as users
from crm_core.users.model import User

log = logging.getLogger(__name__)

DATA_DIR = Path("data")


@dataclass(frozen=True)
class DemoPaths:
    """Where a demo keeps its files: ``root`` is ``./data`` unless a test says otherwise."""

    root: Path = DATA_DIR

    @property
    def database(self) -> Path:
        return self.root / "demo.sqlite3"

    @property
    def spool(self) -> Path:
        """The simulated PBX's MixMonitor spool directory."""
        return self.root / "demo-spool"

    @property
    def recordings(self) -> Path:
        return self.root / "demo-recordings"

    @property
    def work(self) -> Path:
        return self.root / "demo-recordings-work"


def demo_settings(
    settings: Settings,
    pbx_port: int,
    *,
    database_url: str | None,
    paths: DemoPaths = DemoPaths(),
    providers: demo_messages.DemoProviders | None = None,
) -> Settings:
    """The operator's settings with the simulated PBX, recordings in the demo's own folders,
    the demo's WhatsApp, Telegram and e-mail channels pointed at ``providers`` (when given)
    and, unless given, a demo database."""
    pbx = PbxSettings(
        name=demo_calls.PBX,
        host="127.0.0.1",
        port=pbx_port,
        username="cc",
        secret=SecretStr("demo"),
        trunks=["provider"],
        extension_pattern=r"^\d{3}$",
    )
    url = database_url or f"sqlite+aiosqlite:///{paths.database}"
    database = settings.database.model_copy(update={"url": url})
    recordings = settings.recordings.model_copy(
        update={
            "enabled": True,
            "storage": "local",
            "spool_dir": str(paths.spool),
            "storage_dir": str(paths.recordings),
            "work_dir": str(paths.work),
        }
    )
    update: dict[str, object] = {"pbx": [pbx], "database": database, "recordings": recordings}
    if providers is not None:
        update["channels"] = demo_messages.channel_settings(providers)
    return settings.model_copy(update=update)


# ---------------------------------------------------------------- a fresh start


class NotADemoDatabase(Exception):
    """The database holds users the demo did not make: it is not wiped."""


async def reset(settings: Settings, paths: DemoPaths) -> None:
    """Forget the previous run: its database (the SQLite file, or every table of another
    database) and its recordings. A database with users the demo did not create is refused
    (:class:`NotADemoDatabase`), so a mistyped ``--database-url`` cannot wipe real data."""
    url = make_url(settings.database.url)
    file = None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        file = Path(url.database)
    if file is None or file.exists():
        engine = db.create_engine(settings.database)
        try:
            await db.wait_for_database(engine, give_up_after=30)
            await _drop_demo_tables(engine, settings, drop=file is None)
        finally:
            await engine.dispose()
    if file is not None:
        for path in (file, *(file.with_name(file.name + s) for s in ("-wal", "-shm", "-journal"))):
            path.unlink(missing_ok=True)
    for folder in (paths.spool, paths.recordings, paths.work):
        shutil.rmtree(folder, ignore_errors=True)


async def _drop_demo_tables(engine: AsyncEngine, settings: Settings, *, drop: bool) -> None:
    demo_logins = {login for login, *_ in demo_data.TEAM} | {settings.auth.bootstrap_admin_login}
    async with engine.begin() as conn:
        tables: list[str] = await conn.run_sync(lambda c: inspect(c).get_table_names())
        if "users" in tables:
            logins = set(await conn.scalars(select(User.login)))
            strangers = sorted(logins - demo_logins)
            if strangers:
                raise NotADemoDatabase(
                    f"the database has users the demo did not create ({', '.join(strangers[:5])})"
                    ": not wiping it; give the demo an empty database of its own, or --keep"
                )
        if drop:
            for table in tables:
                await conn.execute(text(f'DROP TABLE IF EXISTS "{table}" CASCADE'))


async def prepare(settings: Settings, paths: DemoPaths, *, keep: bool) -> None:
    """The demo's database, migrated: emptied first unless ``keep``."""
    if not keep:
        await reset(settings, paths)
    paths.root.mkdir(parents=True, exist_ok=True)
    engine = db.create_engine(settings.database)
    try:
        await db.wait_for_database(engine, give_up_after=30)
        await db.migrate(engine)
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- seeding


async def seed(app: web.Application, recorder: demo_calls.Recorder) -> demo_data.DemoSeed:
    """The demo's data in the started ``app``'s database, once: the team and its clients,
    deals, leads, tasks, invoices and plans, the tracking site, then a week of calls stored
    through the telephony's own call-end path (recordings written into the spool first)."""
    settings = app[SETTINGS]
    now = app[CLOCK].now()
    tz = ZoneInfo(settings.locale.timezone)
    async with app[SESSIONS]() as session:
        seeded = await demo_data.seed(session, scrypt_n=settings.auth.scrypt_n, now=now, tz=tz)
        await demo_tracking.seed(session)
        if seeded.created:
            await _admin_password(session, settings)
        await session.commit()
    if not seeded.created:
        return seeded
    records = demo_calls.history(
        _history_callers(),
        list(demo_data.TRACKING_NUMBERS),
        now=now,
        threshold_s=settings.telephony.count_threshold_s,
        tz=tz,
    )
    async with app[SESSIONS]() as session:
        await demo_calls.seed_history(session, app[TELEPHONY].outcomes, recorder, records)
        await session.commit()
    return seeded


async def _admin_password(session: AsyncSession, settings: Settings) -> None:
    """The first administrator gets the demo's password too (no one-time password to copy)."""
    admin = await session.scalar(
        select(User).where(User.login == settings.auth.bootstrap_admin_login)
    )
    if admin is not None:
        await users.set_password(
            session, admin, demo_data.DEMO_PASSWORD, scrypt_n=settings.auth.scrypt_n
        )


def known_writers() -> list[tuple[str, str]]:
    """(name, phone) of the demo's clients who write on WhatsApp: those with a mobile."""
    return [(c[3], c[4]) for c in demo_data.CLIENTS if c[4].startswith("+79")]


def _history_callers() -> list[demo_calls.HistoryCaller]:
    extension = {login: exts[0] for login, _, _, exts in demo_data.TEAM if exts}
    known = [demo_calls.HistoryCaller(c[4], extension[c[5]]) for c in demo_data.CLIENTS]
    new = [
        demo_calls.HistoryCaller(number, ("101", "102")[n % 2])
        for n, number in enumerate(demo_data.NEW_CALLERS)
    ]
    return known + new


# ---------------------------------------------------------------- the simulated PBX


class DemoPbx(SimulatedPbx):
    """The simulated PBX whose recordings exist: each MixMonitor file a call names is written
    into the spool before the event naming it goes out (long before the call ends)."""

    def __init__(self, recorder: demo_calls.Recorder, *, username: str, secret: str) -> None:
        super().__init__(username=username, secret=secret)
        self.recorder = recorder

    def broadcast(self, data: bytes) -> None:
        self.recorder.write_named_in(data)
        super().broadcast(data)


# The mix of calls the carrier places (trace name -> weight), as in SimulatedPbx.run_traffic.
TRAFFIC = {
    "a_inbound_queue_answered": 4,
    "c_inbound_short_answered": 3,
    "b_inbound_missed": 2,
    "f_abandoned_in_queue": 1,
    "h_direct_busy": 1,
    "d_outbound_answered": 2,
}
MOBILE_CODES = ("916", "926", "903", "915", "921", "911", "981", "999")


def new_number(rnd: random.Random) -> str:
    """A Russian mobile number (digits, as the carrier sends them) nobody has called from."""
    return f"7{rnd.choice(MOBILE_CODES)}{rnd.randrange(10**7):07d}"


async def traffic(
    pbx: SimulatedPbx,
    *,
    known: Sequence[str],
    dids: Sequence[str],
    every_s: float,
    prefer_did: Callable[[random.Random], Awaitable[str | None]] | None = None,
    new_share: float = 0.5,
    seed: int | None = None,
) -> None:
    """Place calls forever: inbound calls come from a known client or, ``new_share`` of the
    time, from a number never seen before (a new client's pop-up, a new lead); outbound calls
    go to known clients."""
    rnd = random.Random(seed)
    names = [n for n in TRAFFIC if n in pbx.traces]
    while True:
        name = rnd.choices(names, weights=[TRAFFIC[n] for n in names])[0]
        trace = pbx.traces[name]
        did = None
        number = rnd.choice(known)
        if trace.direction == "inbound":
            did = (await prefer_did(rnd) if prefer_did else None) or rnd.choice(dids)
            if rnd.random() < new_share:
                number = new_number(rnd)
        pbx.play(name, outside=number, did=did)
        await asyncio.sleep(every_s * rnd.uniform(0.5, 1.5))


def _held_pool_number(app: web.Application) -> Callable[[random.Random], Awaitable[str | None]]:
    """Half of the simulated inbound calls go to a pool number a landing-page visitor holds
    (if any), so the demo shows a visit turn into an attributed call."""

    async def pick(rnd: random.Random) -> str | None:
        if rnd.random() < 0.5:
            return None
        dids = demo_tracking.pool_dids()
        for did in rnd.sample(dids, len(dids)):
            if await app[TRACKER].store.holder(did) is not None:
                return did.lstrip("+")
        return None

    return pick


# ---------------------------------------------------------------- the command


async def run(
    settings: Settings,
    *,
    database_url: str | None,
    call_every_s: float,
    keep: bool = False,
    paths: DemoPaths = DemoPaths(),
    message_every_s: float | None = None,
) -> int:
    recorder = await asyncio.to_thread(demo_calls.Recorder, paths.spool)
    simulator = DemoPbx(recorder, username="cc", secret="demo")
    await simulator.start()
    providers = demo_messages.DemoProviders()
    await providers.start()
    settings = demo_settings(
        settings, simulator.port, database_url=database_url, paths=paths, providers=providers
    )
    try:
        await prepare(settings, paths, keep=keep)
    except NotADemoDatabase as exc:
        await simulator.close()
        await providers.close()
        print(f"contact-center demo: {exc}", file=sys.stderr)
        return 2

    app = create_app(settings, announce=lambda _text: None)  # the admin gets the demo password
    freeze_heap_after_startup(app)
    runner = web.AppRunner(
        app,
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("contact_center.access"),
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    await runner.setup()
    seeded = await seed(app, recorder)
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    url = f"http://{settings.server.host}:{settings.server.port}"
    providers.server_url = url
    writers = demo_messages.Customers(url, app[INBOX], known=known_writers())
    message_every_s = message_every_s if message_every_s is not None else call_every_s
    admin = settings.auth.bootstrap_admin_login
    print(
        f"\ncontact-center demo is running at {url}/\n"
        f"  sign in as ivan (manager, extension 101), anna (manager, 102), boss (head of "
        f"sales) or {admin} (administrator), password {demo_data.DEMO_PASSWORD}\n"
        f"  the simulated PBX (AMI on 127.0.0.1:{simulator.port}) places a call every "
        f"~{call_every_s:.0f} s to the tracking numbers {', '.join(demo_data.TRACKING_NUMBERS)}\n"
        + f"  a customer's site with call tracking: {url}/demo/landing "
        f"(try ?utm_source=yandex&utm_campaign=x and the city selector)\n"
        + f"  customers write on WhatsApp, Telegram and e-mail every ~{message_every_s:.0f} s"
        f" (local fakes of the providers; replies from {url}/inbox go to them)\n"
        + (
            "  demo data seeded (a fresh start; --keep keeps the data of the last run)\n"
            if seeded.created
            else "  the previous run's data kept (--keep)\n"
        ),
        flush=True,
    )
    calls = asyncio.get_running_loop().create_task(
        traffic(
            simulator,
            known=demo_data.caller_numbers()[: len(demo_data.CLIENTS)],
            dids=demo_data.tracking_dids(),
            every_s=call_every_s,
            prefer_did=_held_pool_number(app),
        )
    )
    messages = asyncio.get_running_loop().create_task(
        demo_messages.customers(writers, every_s=message_every_s)
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in (calls, messages):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await writers.close()
        await runner.cleanup()
        await providers.close()
        await simulator.close()
    print("demo stopped", file=sys.stderr)
    return 0
