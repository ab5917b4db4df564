"""What the benchmarks that run the server as its own process share: a database of their own
and a ``contact-center serve`` child process on this repository's config.yaml.

``BENCH_PYSPY=FILE`` samples each server with py-spy (raw format; the second server's in
``FILE.1``), ``BENCH_PYSPY_RATE`` times a second (250 by default)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench import crm_lookup

CONFIG = str(Path(__file__).resolve().parent.parent / "config.yaml")
_samplers: list[asyncio.subprocess.Process] = []  # py-spy processes (BENCH_PYSPY)


async def recreate_database(url: str, name: str) -> None:
    """Drop the bench's database ``name`` on the server of ``url`` if it is there; create it."""
    admin = await asyncpg.connect(crm_lookup._dsn(url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop_database(url: str, name: str) -> None:
    admin = await asyncpg.connect(crm_lookup._dsn(url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def serve(settings: Mapping[str, str]) -> asyncio.subprocess.Process:
    """``contact-center serve`` with config.yaml and ``settings`` (``CC_*`` variables; none of
    this process's own ``CC_*`` leak in), logging warnings only, output discarded (appended to
    the file ``BENCH_SERVER_LOG`` names, when set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_")}
    env.update(CC_CONFIG=CONFIG, CC_PBX="[]", CC_SERVER_LOG_LEVEL="WARNING")
    env.update(settings)
    log = os.environ.get("BENCH_SERVER_LOG")
    out: Any = open(log, "ab") if log else asyncio.subprocess.DEVNULL  # noqa: SIM115, ASYNC230
    try:
        profile = os.environ.get("BENCH_PROFILE")
        profiler = ["-m", "cProfile", "-o", profile] if profile else []
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            *profiler,
            "-m",
            "contact_center",
            "serve",
            env=env,
            stdout=out,
            stderr=out,
        )
        sampled = os.environ.get("BENCH_PYSPY")
        if sampled and _samplers:  # the second server's samples beside the first's
            sampled = f"{sampled}.{len(_samplers)}"
        if sampled:
            # It stops by itself when the server does, writing the file.
            _samplers.append(
                await asyncio.create_subprocess_exec(
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--rate",
                    os.environ.get("BENCH_PYSPY_RATE", "250"),
                    "--output",
                    sampled,
                    "--pid",
                    str(server.pid),
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        return server
    finally:
        if log:
            out.close()


async def stop(server: asyncio.subprocess.Process, timeout: float = 30) -> None:
    """SIGTERM, and SIGKILL if it has not stopped within ``timeout`` (no orphan left)."""
    if server.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        server.terminate()
    try:
        await asyncio.wait_for(server.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        await server.wait()
    while _samplers:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_samplers.pop().wait(), timeout)


async def wait_ready(
    base: str, ready: Callable[[dict[str, Any]], bool] = lambda _doc: True, timeout: float = 120
) -> None:
    """Until ``/healthz`` answers 200 with a document ``ready`` accepts."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"{base}/healthz") as resp:
                    if resp.status == 200 and ready(await resp.json()):
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"server at {base} not ready within {timeout} s")
