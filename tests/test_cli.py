"""The ``contact-center`` command as an operator runs it: real processes, real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_")}
    env.update(
        CC_CONFIG=str(ROOT / "config.yaml"),
        CC_AUTH_SCRYPT_N="1024",
        CC_PBX="[]",
        CC_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/data/cc.sqlite3",
    )
    env.update(extra)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "contact_center", *args]


def test_broken_config_value_gives_one_line_naming_the_key(tmp_path: Path) -> None:
    proc = subprocess.run(
        _cli("migrate"),
        env=_env(tmp_path, CC_SERVER_PORT="http"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("config: server.port = 'http': ")
    assert "CC_SERVER_PORT" in lines[0]
    assert "Traceback" not in proc.stderr


def test_migrate_user_add_and_list(tmp_path: Path) -> None:
    env = _env(tmp_path)
    out = subprocess.run(_cli("migrate"), env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "database at revision" in out.stdout
    add = subprocess.run(
        _cli(
            "user",
            "add",
            "--login",
            "ivan",
            "--role",
            "manager",
            "--extension",
            "101",
            "--extension",
            "102",
            "--password-stdin",
        ),
        env=env,
        input="password1\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    assert "created manager 'ivan'" in add.stdout and "101, 102" in add.stdout
    assert "password1" not in add.stdout + add.stderr
    again = subprocess.run(
        _cli("user", "add", "--login", "ivan", "--role", "manager"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 4 and "login 'ivan' is taken" in again.stderr
    gen = subprocess.run(
        _cli("user", "add", "--login", "head", "--role", "head"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert gen.returncode == 0 and "one-time password: " in gen.stdout
    listing = subprocess.run(
        _cli("user", "list"), env=env, capture_output=True, text=True, timeout=60
    )
    rows = [line.split("\t") for line in listing.stdout.strip().splitlines()]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("ivan", "manager", "101,102"),
        ("head", "head", "-"),
    ]


def test_database_down_at_start_is_a_clear_retry_not_a_traceback(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    env = _env(
        tmp_path,
        CC_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{port}/cc",
        CC_SERVER_PORT=str(free_port()),
    )
    proc = subprocess.Popen(
        _cli("serve"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines: list[str] = []
    try:
        # Two retries logged (however long a loaded machine takes to start the process), and
        # the server still waiting for its database.
        while sum("unreachable" in line for line in lines) < 2:
            line = proc.stderr.readline()
            assert line, "the server must keep retrying:\n" + "".join(lines)
            lines.append(line)
        assert proc.poll() is None, "the server must keep retrying"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=20)
    err = "".join(lines) + rest
    retries = [line for line in err.splitlines() if "unreachable" in line]
    assert len(retries) >= 2, err
    assert f"database postgresql+asyncpg://postgres@127.0.0.1:{port}/cc unreachable" in retries[0]
    assert "retrying in" in retries[0]
    assert "Traceback" not in err


def test_migrate_gives_up_with_one_line_when_database_stays_down(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        CC_DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/cc",
        CC_DATABASE_CONNECT_RETRY_MAX_S="1",
    )
    proc = subprocess.run(_cli("migrate"), env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines()[-1].startswith("error: database ")
    assert "Traceback" not in proc.stderr


async def _wait_healthy(url: str, proc: asyncio.subprocess.Process, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert proc.returncode is None, "the server exited before becoming healthy"
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return await resp.json()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError("server not healthy in time")


async def test_serve_answers_healthz_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = _env(tmp_path, CC_SERVER_PORT=str(port), CC_SERVER_LOG_FORMAT="json")
    for run in (1, 2):
        proc = await asyncio.create_subprocess_exec(
            *_cli("serve"),
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            doc = await _wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
            assert doc["database"]["backend"] == "sqlite"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out_b, err_b = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        out, err = out_b.decode(), err_b.decode()
        assert proc.returncode == 0, err
        assert time.monotonic() - started < 15
        first_start = "one-time password" in out
        assert first_start == (run == 1), out  # printed once, on the first start only
        assert "one-time password" not in err  # and never into the log
        records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        assert records and all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
        assert any(r["msg"] == "contact-center stopped" for r in records)
    assert (tmp_path / "data" / "cc.sqlite3").exists()


def test_replay_without_pbx_config_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "t.ami"
    trace.write_bytes(b"Asterisk Call Manager/11.0.0\r\n")
    proc = subprocess.run(
        _cli("replay", str(trace)), env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "lists no PBX" in proc.stderr


@pytest.mark.parametrize(
    "command", [["serve", "--help"], ["user", "add", "--help"], ["replay", "--help"]]
)
def test_help_is_available(command: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        _cli(*command), env=_env(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "usage: contact-center" in proc.stdout


FIXTURES = ROOT / "tests" / "fixtures" / "ami"


@pytest.mark.parametrize(
    "trace", sorted(p.stem for p in FIXTURES.glob("*.ami") if not p.stem.startswith("resync"))
)
def test_replay_prints_the_expected_calls(trace: str, tmp_path: Path) -> None:
    """The stable `replay` interface: one JSON object per finished call, in order of call end."""
    proc = subprocess.run(
        _cli("replay", str(FIXTURES / f"{trace}.ami"), "--config", str(ROOT / "config.yaml")),
        env=_env(
            tmp_path,
            CC_PBX='[{"name": "t", "username": "u", "secret": "s", '
            '"trunks": ["provider"], "extension_pattern": "^\\\\d{3}$"}]',
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    got = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = [
        json.loads(line)
        for line in (FIXTURES / f"{trace}.expected.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert list(g) == list(e)  # exactly the stable keys, in order
        for key in ("ring_seconds", "talk_seconds"):
            assert abs(g.pop(key) - e.pop(key)) <= 1
        assert g == e
