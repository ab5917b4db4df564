"""A server whose database is not there yet answers on its port at once (503 on /healthz,
naming what it waits for) and becomes the real server when the database comes up; before,
nothing listened until then ("connection refused", no /healthz to say why)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path

import aiohttp
from sqlalchemy.engine import make_url

from tests.helpers import free_port
from tests.test_cli import _cli, _env


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _forward_to(host: str, port: int, listen_port: int) -> asyncio.Server:
    """A TCP forwarder: the database 'comes up' when this starts listening."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", listen_port)


async def _health(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    try:
        async with http.get(url) as resp:
            return resp.status, await resp.json()
    except aiohttp.ClientError:
        return 0, {}


async def test_the_port_answers_while_the_database_is_away(
    tmp_path: Path, postgres_url: str
) -> None:
    db = make_url(postgres_url)
    db_port = free_port()  # nothing listens there yet
    url = db.set(port=db_port).render_as_string(hide_password=False)
    port = free_port()
    env = _env(tmp_path, CC_DATABASE_URL=url, CC_SERVER_PORT=str(port))
    proc = await asyncio.create_subprocess_exec(
        *_cli("serve"), env=env, cwd=tmp_path, stderr=asyncio.subprocess.DEVNULL
    )
    forwarder: asyncio.Server | None = None
    health = f"http://127.0.0.1:{port}/healthz"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 60
            while True:  # the stand-in answers, naming the database's error
                status, doc = await _health(http, health)
                if status == 503 and doc.get("database"):
                    break
                assert time.monotonic() < deadline, (status, doc)
                await asyncio.sleep(0.2)
            assert doc["status"] == "starting" and doc["step"] == "waiting for the database"
            assert "refused" in doc["database"]["error"].lower()
            async with http.get(f"http://127.0.0.1:{port}/api/v1/contacts") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "5"
                assert (await resp.json())["error"] == "starting"

            forwarder = await _forward_to(db.host or "127.0.0.1", db.port or 5432, db_port)
            deadline = time.monotonic() + 90
            while True:  # the real server takes the port over
                status, doc = await _health(http, health)
                if status == 200:
                    break
                assert time.monotonic() < deadline, (status, doc)
                await asyncio.sleep(0.3)
            assert doc["database"]["status"] == "ok" and doc["database"]["backend"] == "postgresql"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if forwarder is not None:
            forwarder.close()
