"""Two instances, one PBX: the holder dies mid-call, the other takes over the calls in progress.

The holder's death is played in-process: its lease stops being renewed (nor released) and its
AMI connection goes, as with SIGKILL; ``bench/failover.py`` does it with real processes.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.keys import PBX, SESSIONS
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from tests.fakes.ami_server import ChannelTable, FakeAmiServer, capture, event_frames, headers_of
from tests.helpers import until


def _pbx(server: FakeAmiServer) -> str:
    return json.dumps(
        [
            {
                "name": "main",
                "host": "127.0.0.1",
                "port": server.port,
                "username": "cc",
                "secret": "s3cret",
                "trunks": ["provider"],
                "extension_pattern": "^\\d{3}$",
            }
        ]
    )


def _following(client: Any) -> bool:
    link = client.app[PBX]["main"]
    return link.keeper.held and link.link is not None and link.link.connected


async def test_a_call_that_ends_while_nobody_follows_the_pbx_is_stored_once_by_the_next_holder(
    make_settings: Any,
    database_url: str,
    redis_url: str,
    redis_prefix: str,
    aiohttp_client_factory: Any,
) -> None:
    table = ChannelTable()
    server = await FakeAmiServer(table=table).start()
    try:
        settings = make_settings(
            CC_DATABASE_URL=database_url,
            CC_REDIS_URL=redis_url,
            CC_REDIS_PREFIX=redis_prefix,
            CC_TELEPHONY_PBX_LEASE_TTL_S="2",
            CC_PBX=_pbx(server),
        )
        one = await aiohttp_client_factory(
            create_app(settings, instance_id="one", announce=lambda _t: None)
        )
        await until(lambda: _following(one), timeout=30)
        two = await aiohttp_client_factory(
            create_app(settings, instance_id="two", announce=lambda _t: None)
        )
        frames = event_frames(capture("c_inbound_short_answered"))
        call_id = next(headers_of(f)["Linkedid"] for f in frames if b"Linkedid" in f)
        hangup = next(i for i, f in enumerate(frames) if f.startswith(b"Event: Hangup"))

        # The first instance follows the call up to (not including) its first Hangup ...
        session = server.logged_in_sessions()[0]
        await session.send_frames(frames[:hangup], table=table)
        link_one = one.app[PBX]["main"]
        await until(
            lambda: any(c.call_id == call_id for c in link_one.folder.live_calls()), timeout=30
        )
        assert link_one.journal is not None
        await link_one.journal.flush()

        # ... and dies: no more renewals, no release, its AMI connection gone.
        assert link_one.keeper._task is not None
        link_one.keeper._task.cancel()
        await link_one._disconnect()
        # The call ends at the PBX while nobody follows it.
        table.apply_all(frames[hangup:])

        await until(lambda: _following(two), timeout=30)

        async def stored() -> int:
            async with two.app[SESSIONS]() as s:
                return int(
                    await s.scalar(
                        select(func.count()).select_from(Call).where(Call.call_id == call_id)
                    )
                    or 0
                )

        await until(stored, timeout=30)
        assert await stored() == 1
        async with two.app[SESSIONS]() as s:
            activities = await s.scalar(
                select(func.count())
                .select_from(Activity)
                .where(Activity.external_id == f"call:main:{call_id}")
            )
        assert activities == 1
        # Stored, it left the journal.
        link_two = two.app[PBX]["main"]
        assert link_two.journal is not None
        await until(lambda: not link_two.folder.live_calls(), timeout=30)
        await link_two.journal.flush()
        assert await link_two.journal.load() == []
    finally:
        await server.close()


async def test_two_instances_writing_the_same_finished_call_store_it_once_without_error(
    make_settings: Any, database_url: str
) -> None:
    """While the lease changes hands both instances may still write a call (the loser its
    queued call log, the winner the journal's): one row, one activity, no failure."""
    from datetime import UTC, datetime

    from ami.fold import CallEnded, CallFolder
    from ami.frames import FrameParser
    from contact_center import db, tracking_service
    from contact_center.bus import EventBus
    from contact_center.telephony import Telephony
    from crm_core.clock import ManualClock

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_PBX='[{"name": "main", "username": "u", "secret": "s", "trunks": ["provider"]}]',
    )
    engine = db.create_engine(settings.database)
    sessions = db.sessionmaker(engine)
    clock = ManualClock(datetime(2026, 11, 26, 20, 0, tzinfo=UTC))
    tracker, _ = await tracking_service.open_service(
        settings, sessions=sessions, redis=None, clock=clock
    )
    pbx = settings.pbx[0]
    folded = CallFolder(pbx.trunks, pbx.extension_pattern, 60.0).feed_many(
        FrameParser().feed(capture("c_inbound_short_answered"))
    )
    ended = next(e for e in folded if isinstance(e, CallEnded))
    stored: list[str] = []
    services = []
    try:
        for _ in range(2):
            bus = EventBus()
            await bus.start()
            tel = Telephony(
                settings=settings,
                sessions=sessions,
                bus=bus,
                rules=settings.crm.rules(),
                clock=clock,
                tracker=tracker,
            )
            tel.when_stored(lambda _pbx, call: stored.append(call))
            services.append((tel, bus))
        await asyncio.gather(*(tel.handle("main", ended) for tel, _ in services))
        async with sessions() as s:
            rows = await s.scalar(
                select(func.count()).select_from(Call).where(Call.call_id == ended.call_id)
            )
            activities = await s.scalar(
                select(func.count())
                .select_from(Activity)
                .where(Activity.external_id == f"call:main:{ended.call_id}")
            )
        assert (rows, activities) == (1, 1)
        assert stored == [ended.call_id, ended.call_id]  # both let the journal go
    finally:
        for tel, bus in services:
            await tel.close()
            await bus.close()
        await engine.dispose()
