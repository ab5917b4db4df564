"""Property-based fuzzing of the whole API from its own OpenAPI document (Schemathesis).

Every operation of ``GET /api/v1/openapi.json``, as each role (admin, head of sales, manager,
each with a bearer token), gets generated requests: no answer may be a 5xx, and every answer
must match the document (its status code is listed, its content type and body are the ones
described). The server runs on a thread of its own (Schemathesis' client is synchronous) over
a migrated database, SQLite and PostgreSQL (where ids past 2³¹ and NUL bytes are refused by the
database itself); examples per operation are kept low so each run takes a few minutes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from contact_center.app import create_app
from contact_center.keys import SESSIONS
from crm_core.users import service as users
from tests.helpers import free_port

T = TypeVar("T")
ROLES = ("admin", "head", "manager")
PASSWORD = "password1"
EXAMPLES = 6
NEGATIVE_EXAMPLES = 3


class ThreadedServer:
    """The application served on loopback from a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        self._thread.start()
        self.run(self._runner.setup())
        self.run(web.TCPSite(self._runner, "127.0.0.1", self.port).start())

    def stop(self) -> None:
        self.run(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


@pytest.fixture
def server(make_settings: Any, database_url: str, tmp_path: Path) -> Iterator[ThreadedServer]:
    settings = make_settings(
        CC_DATABASE_URL=database_url,  # a migrated database of its own: SQLite, PostgreSQL
        # Fuzzing signs in with wrong passwords thousands of times from one address.
        CC_AUTH_LOGIN_ATTEMPTS_PER_15MIN="1000000",
        CC_AUTH_LOGIN_ATTEMPTS_PER_ADDRESS_15MIN="1000000",
        CC_RECORDINGS_SPOOL_DIR=str(tmp_path / "spool"),
        CC_RECORDINGS_WORK_DIR=str(tmp_path / "work"),
        CC_RECORDINGS_UPLOAD_TOKENS='{"main": "pbx-secret-token"}',
    )
    (tmp_path / "spool").mkdir()
    srv = ThreadedServer(create_app(settings, announce=lambda _t: None))
    srv.start()

    async def seed() -> None:
        async with srv.app[SESSIONS]() as session:
            for i, role in enumerate(ROLES):
                await users.create_user(
                    session,
                    login=f"fuzz-{role}",
                    role=role,
                    password=PASSWORD,
                    extensions=[f"10{i}"],
                    scrypt_n=1024,
                )
            await session.commit()

    srv.run(seed())
    yield srv
    srv.stop()


def _token(http: requests.Session, base: str, role: str) -> str:
    """A fresh token of ``role`` (an operation may have revoked or deactivated the last one,
    changed the password or deactivated the user: then the admin puts him back)."""
    login = {"login": f"fuzz-{role}", "password": PASSWORD}
    resp = http.post(f"{base}/api/v1/auth/token", json=login)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["token"])


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _reactivate(srv: ThreadedServer) -> None:
    async def work() -> None:
        async with srv.app[SESSIONS]() as session:
            for user in await users.list_users(session):
                if user.login.startswith("fuzz-"):
                    user.is_active = True
                    await users.set_password(session, user, PASSWORD, scrypt_n=1024)
            await session.commit()

    srv.run(work())


CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _fuzz(
    operation: Any, base: str, http: requests.Session, headers: dict[str, str], mode: Any
) -> Any:
    """A hypothesis test of one operation with one role's headers: valid requests (the answer
    must match the document), or invalid ones (a documented 4xx, never a 5xx)."""
    positive = mode is GenerationMode.POSITIVE

    @settings(
        max_examples=EXAMPLES if positive else NEGATIVE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=base, session=http, headers=headers, timeout=30)
        assert response.status_code < 500, f"{response.status_code} {response.text[:300]}"
        case.validate_response(response, checks=CHECKS if positive else [status_code_conformance])

    return check


@pytest.mark.timeout(900)
def test_every_operation_as_every_role_answers_as_documented(server: ThreadedServer) -> None:
    base = server.url
    http = requests.Session()
    doc = http.get(f"{base}/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    schema.config.update(base_url=base)
    failures: list[str] = []
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # an operation the schema cannot describe
        operations.append(result.ok())
    assert len(operations) > 50

    tokens: dict[str, str] = {}
    for operation in operations:
        for role in ROLES:
            token = tokens.get(role)
            if token is None or not http.get(f"{base}/api/v1/me", headers=_bearer(token)).ok:
                _reactivate(server)  # the last operation deactivated him or changed a password
                token = tokens[role] = _token(http, base, role)
            headers = _bearer(token)
            if operation.path == "/api/v1/recordings" and operation.method.upper() == "POST":
                headers["X-PBX-Token"] = "pbx-secret-token"

            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(operation, base, http, headers, mode)()
                except Unsatisfiable:
                    # Nothing to make invalid: the operation declares no parameters or body
                    # (a multipart upload, a website form of free fields).
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except (Exception, BaseExceptionGroup) as exc:  # collect them all, then report
                    text = " | ".join(str(exc).strip().splitlines()[:6])[:600]
                    failures.append(f"{operation.label} as {role} ({mode.value}): {text}")
    http.close()
    assert not failures, "\n".join(failures)
