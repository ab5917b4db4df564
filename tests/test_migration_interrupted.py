"""A migration stopped midway (SIGTERM at start-up, a crash, a power cut) leaves the schema as
it was, so the next start migrates it. On SQLite the driver used to commit each CREATE TABLE at
once: a server stopped during its first start could never start again ("table users already
exists")."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

from tests.test_cli import _cli, _env


def _tables(path: Path) -> int:
    """Tables a reader sees in ``path`` now (0 while it is locked or not a database yet)."""
    conn = sqlite3.connect(path, timeout=0.05)
    try:
        row = conn.execute("select count(*) from sqlite_master where type='table'").fetchone()
        return int(row[0])
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def test_a_migration_killed_midway_leaves_nothing_half_built(tmp_path: Path) -> None:
    env = _env(tmp_path)
    database = tmp_path / "data" / "cc.sqlite3"
    proc = subprocess.Popen(
        _cli("migrate"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        # Kill it the moment any table can be seen: with migrations in one transaction that is
        # only once all of them have committed.
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if database.exists() and _tables(database) > 0:
                break
        proc.kill()
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    seen = _tables(database)
    again = subprocess.run(_cli("migrate"), env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "database at revision" in again.stdout
    full = _tables(database)
    assert seen in (0, full), f"{seen} of {full} tables were left by the killed migration"
