"""``contact-center demo``: the server with seeded data and a simulated PBX on loopback.

Within a minute of starting, the simulated carrier calls the demo's tracking numbers from
known clients and new numbers (answered, missed, abandoned, busy, outbound), so a newcomer
sees pop-ups, call logs, leads and call-back tasks move without an Asterisk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import SecretStr

from ami.simulator import SimulatedPbx
from contact_center import db, demo_data, demo_tracking, logs
from contact_center.app import create_app, freeze_heap_after_startup
from contact_center.config import PbxSettings, Settings
from contact_center.keys import TRACKER

log = logging.getLogger(__name__)

DEMO_DATABASE = "sqlite+aiosqlite:///./data/demo.sqlite3"


def demo_settings(settings: Settings, pbx_port: int, *, database_url: str | None) -> Settings:
    """The operator's settings with the simulated PBX and, unless given, a demo database."""
    pbx = PbxSettings(
        name="demo",
        host="127.0.0.1",
        port=pbx_port,
        username="cc",
        secret=SecretStr("demo"),
        trunks=["provider"],
        extension_pattern=r"^\d{3}$",
    )
    database = settings.database.model_copy(update={"url": database_url or DEMO_DATABASE})
    return settings.model_copy(update={"pbx": [pbx], "database": database})


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


async def run(settings: Settings, *, database_url: str | None, call_every_s: float) -> int:
    simulator = SimulatedPbx(username="cc", secret="demo")
    await simulator.start()
    settings = demo_settings(settings, simulator.port, database_url=database_url)
    engine = db.create_engine(settings.database)
    try:
        await db.wait_for_database(engine, give_up_after=30)
        await db.migrate(engine)
        async with db.sessionmaker(engine)() as session:
            seeded = await demo_data.seed(session, scrypt_n=settings.auth.scrypt_n)
            await demo_tracking.seed(session)
            await session.commit()
    finally:
        await engine.dispose()

    app = create_app(settings)
    freeze_heap_after_startup(app)
    runner = web.AppRunner(
        app,
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("contact_center.access"),
        shutdown_timeout=settings.server.shutdown_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    url = f"http://{settings.server.host}:{settings.server.port}"
    print(
        f"\ncontact-center demo is running at {url}/\n"
        f"  sign in as ivan (extension 101), anna (102) or boss (head of sales), "
        f"password {demo_data.DEMO_PASSWORD}\n"
        f"  the simulated PBX (AMI on 127.0.0.1:{simulator.port}) places a call every "
        f"~{call_every_s:.0f} s to the tracking numbers {', '.join(demo_data.TRACKING_NUMBERS)}\n"
        + f"  a customer's site with call tracking: {url}/demo/landing "
        f"(try ?utm_source=yandex&utm_campaign=x and the city selector)\n"
        + ("  demo data seeded\n" if seeded.created else "  demo data already present\n"),
        flush=True,
    )
    traffic = asyncio.get_running_loop().create_task(
        simulator.run_traffic(
            outside_numbers=demo_data.caller_numbers(),
            dids=demo_data.tracking_dids(),
            every_s=call_every_s,
            prefer_did=_held_pool_number(app),
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        traffic.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await traffic
        await runner.cleanup()
        await simulator.close()
    print("demo stopped", file=sys.stderr)
    return 0
