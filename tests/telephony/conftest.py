"""The simulated PBX the live-path tests connect the server to."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from ami.simulator import SimulatedPbx


@pytest.fixture
async def pbx() -> AsyncIterator[SimulatedPbx]:
    sim = SimulatedPbx(speed=40.0, username="cc", secret="s3cret")
    await sim.start()
    yield sim
    await sim.close()


def pbx_setting(pbx: SimulatedPbx) -> str:
    """``CC_PBX`` for a server following ``pbx`` as PBX ``main`` (trunk ``provider``)."""
    return json.dumps(
        [
            {
                "name": "main",
                "host": "127.0.0.1",
                "port": pbx.port,
                "username": "cc",
                "secret": "s3cret",
                "trunks": ["provider"],
                "extension_pattern": "^\\d{3}$",
            }
        ]
    )
