"""A private Dovecot IMAP server for the IMAP tests: a real server, not a fake.

Each instance has its own configuration, runtime and Maildir under a temporary directory,
listens on 127.0.0.1 on a free port, allows plain-text login (loopback only, no TLS) for the
users of a passwd-file, and stops with the test. Messages are delivered with IMAP APPEND (as a
delivery agent would), so the server assigns UIDs and tells IDLE sessions about them.

Dovecot refuses to serve mail as root, so when the tests run as root (CI) mail is owned by the
``dovecot`` system user the Debian package creates; otherwise the current user runs everything.
``scripts/install-system-deps.sh`` installs ``dovecot-imapd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def dovecot_binary() -> str | None:
    return shutil.which("dovecot") or (
        "/usr/sbin/dovecot" if os.access("/usr/sbin/dovecot", os.X_OK) else None
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dovecot:
    host: str
    port: int
    users: dict[str, str]
    root: Path
    process: subprocess.Popen[bytes]

    def append(self, user: str, raw: bytes, mailbox: str = "INBOX") -> int:
        """Deliver ``raw`` into ``user``'s mailbox; returns the UID the server gave it."""
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(user, self.users[user])
            typ, data = imap.append(mailbox, None, None, raw)
            assert typ == "OK", data
            text = data[0].decode() if data and data[0] else ""
        finally:
            imap.logout()
        # "[APPENDUID <uidvalidity> <uid>] Append completed."
        return int(text.split("APPENDUID", 1)[1].split("]", 1)[0].split()[1])

    def create_mailbox(self, user: str, mailbox: str) -> None:
        imap = imaplib.IMAP4(self.host, self.port, timeout=10)
        try:
            imap.login(user, self.users[user])
            imap.create(mailbox)
        finally:
            imap.logout()

    async def append_async(self, user: str, raw: bytes, mailbox: str = "INBOX") -> int:
        """:meth:`append` off the event loop (the IMAP client under test shares the loop)."""
        return await asyncio.to_thread(self.append, user, raw, mailbox)

    def log_tail(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def restart(self) -> None:
        """Stop the server (every IMAP session breaks) and start it again on the same port."""
        self.stop()
        binary = dovecot_binary()
        assert binary is not None
        self.process = _spawn(binary, self.root / "dovecot.conf")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not come back: {self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


_CONF = """\
base_dir = {root}/run
state_dir = {root}/state
instance_name = cc-test-{port}
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {first_uid}
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_uid} gid={mail_gid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
service auth {{
  chroot =
}}
"""


def _spawn(binary: str, conf: Path) -> subprocess.Popen[bytes]:
    # dovecot logs to its log_path; nothing to read on stdout/stderr
    return subprocess.Popen(
        [binary, "-F", "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def running_dovecot(users: dict[str, str]) -> Iterator[Dovecot]:
    """Start a private Dovecot with ``users`` ({login: password}); stop it afterwards."""
    binary = dovecot_binary()
    if binary is None:
        raise FileNotFoundError("dovecot is not installed")
    # Not pytest's tmp_path: its parents are 0700 and the mail user must traverse to the Maildir.
    root = Path(tempfile.mkdtemp(prefix="cc-dovecot-"))
    root.chmod(0o755)
    port = _free_port()
    if os.geteuid() == 0:
        account = pwd.getpwnam("dovecot")
        mail_uid, mail_gid = account.pw_uid, account.pw_gid
        internal_user, login_user = "dovecot", "dovenull"
    else:
        me = pwd.getpwuid(os.geteuid())
        mail_uid, mail_gid = me.pw_uid, me.pw_gid
        internal_user = login_user = me.pw_name
    for sub in ("run", "state", "mail"):
        (root / sub).mkdir()
    os.chown(root / "mail", mail_uid, mail_gid)
    (root / "passwd").write_text("".join(f"{u}:{{PLAIN}}{p}\n" for u, p in users.items()))
    conf = root / "dovecot.conf"
    conf.write_text(
        _CONF.format(
            root=root,
            port=port,
            internal_user=internal_user,
            login_user=login_user,
            first_uid=min(mail_uid, 500) or 1,
            mail_uid=mail_uid,
            mail_gid=mail_gid,
        )
    )
    server = Dovecot("127.0.0.1", port, dict(users), root, _spawn(binary, conf))
    try:
        deadline = time.monotonic() + 15
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"dovecot exited: {server.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"* OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not answer on {port}: {server.log_tail()}")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
