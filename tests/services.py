"""Services a test owns and may break, never the machine's shared ones: its own
``redis-server`` on a free port, killed and started again on the same port, and its own
PostgreSQL cluster (``initdb`` in a temporary folder, a free port, trust authentication),
stopped, restarted or killed by the test."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need_service
from tests.helpers import free_port


class OwnRedis:
    """A ``redis-server`` of the test's own: nothing kept on disk, same port across restarts."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            need_service("redis-server is not installed")
        self.binary = str(binary)
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if probe.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        """SIGKILL: connections drop at once, nothing is saved."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


# ---------------------------------------------------------------- PostgreSQL

PG_VERSION = "15"


def _pg_bindir() -> Path | None:
    """The server binaries of PostgreSQL 15 (Debian keeps them off the PATH), else any."""
    candidates = [Path(f"/usr/lib/postgresql/{PG_VERSION}/bin")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
            candidates.append(Path(out.stdout.strip()))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (PostgreSQL's backends and workers)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


class OwnPostgres:
    """A PostgreSQL cluster of the test's own: ``initdb`` in a temporary folder (under /tmp,
    which the ``postgres`` user can reach), a free port on 127.0.0.1, trust authentication.

    PostgreSQL refuses to run as root; as root (CI, the dev machines) every server command
    runs as the ``postgres`` OS user (``setpriv``) and the folder is handed to it.
    ``fsync`` is off: a restart or a ``kill`` of the server keeps what was committed (the WAL
    is written at each commit, into the OS's cache), only a crash of the machine would not,
    and tests never crash the machine. (``synchronous_commit=off`` would lose commits.)
    ``template`` is a cluster made by ``initdb`` already, copied instead of made again."""

    def __init__(self, template: Path | None = None) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            need_service(f"PostgreSQL {PG_VERSION} server binaries (initdb, pg_ctl) not installed")
        assert bindir is not None
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="cc-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        if template is not None:
            subprocess.run(["cp", "-a", str(template), str(self.data)], check=True)
        else:
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
                "--no-instructions",
            )

    def _command(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        if not self.as_root:
            return cmd
        # setpriv executes the command in its own process (runuser would stay its parent).
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]

    def _run(self, tool: str, *args: str, timeout: float = 60) -> str:
        proc = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}"
                f"\n{self.log_tail()}"
            )
        return proc.stdout

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def start(self) -> None:
        """Start (waiting until it accepts connections); the port stays the same. The
        postmaster is this process's child, so a killed one is reaped (no zombie keeps its
        lock file looking alive)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self._command(
                    "postgres",
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-k",
                    str(self.root),
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"postgres exited with {self.proc.returncode}\n{self.log_tail()}"
                )
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                timeout=10,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres on port {self.port} did not start\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: connections are ended, committed work kept; ``immediate``: the server
        stops at once, as after a crash, and recovers from its WAL at the next start."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT if mode == "fast" else signal.SIGQUIT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill_process(proc)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend: the server is gone at once."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self.kill_process(proc)

    @staticmethod
    def kill_process(proc: subprocess.Popen[bytes]) -> None:
        children = _children(proc.pid)
        for victim in (proc.pid, *children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.02)

    def create_database(self, name: str) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)

    def remove(self) -> None:
        """Stop the server if it runs and delete its folder."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster_template() -> Iterator[Path]:
    """One ``initdb`` per test run; each :class:`OwnPostgres` copies it."""
    made = OwnPostgres()
    yield made.data
    made.remove()


@pytest.fixture
def own_postgres(postgres_cluster_template: Path) -> Iterator[OwnPostgres]:
    """A running PostgreSQL of the test's own with an empty database ``cc``."""
    server = OwnPostgres(postgres_cluster_template)
    try:
        server.start()
        server.create_database("cc")
        yield server
    finally:
        server.remove()
