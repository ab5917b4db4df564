"""The simulated PBX the live-path tests connect the server to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ami.simulator import SimulatedPbx
from contact_center.app import create_app
from contact_center.keys import SESSIONS
from crm_core.clock import Clock
from crm_core.users import service as users


@pytest.fixture
async def pbx() -> AsyncIterator[SimulatedPbx]:
    sim = SimulatedPbx(speed=40.0, username="cc", secret="s3cret")
    await sim.start()
    yield sim
    await sim.close()


def pbx_config(port: int, **more: Any) -> dict[str, Any]:
    """PBX ``main`` (trunk ``provider``, extensions of three digits) on loopback ``port``."""
    return {
        "name": "main",
        "host": "127.0.0.1",
        "port": port,
        "username": "cc",
        "secret": "s3cret",
        "trunks": ["provider"],
        "extension_pattern": "^\\d{3}$",
        **more,
    }


def pbx_setting(pbx: SimulatedPbx) -> str:
    """``CC_PBX`` for a server following ``pbx`` as PBX ``main`` (trunk ``provider``)."""
    return json.dumps([pbx_config(pbx.port)])


async def server_with_ivan(
    make_settings: Callable[..., Any],
    aiohttp_client_factory: Callable[..., Any],
    pbx: dict[str, Any],
    clock: Clock,
    **env: str,
) -> Any:
    """The application following ``pbx`` on ``clock``, manager ivan at extension 101."""
    settings = make_settings(CC_PBX=json.dumps([pbx]), **env)
    client = await aiohttp_client_factory(
        create_app(settings, announce=lambda _t: None, clock=clock)
    )
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="ivan",
            role="manager",
            password="password1",
            extensions=("101",),
            scrypt_n=1024,
        )
        await session.commit()
    return client
