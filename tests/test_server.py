"""The HTTP server: health, metrics, OpenAPI, sign-in, tokens, roles, the web UI language."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from contact_center.app import create_app
from contact_center.config import Settings
from contact_center.keys import BUS, SESSIONS
from crm_core.users import service as users
from tests.conftest import pg_admin
from tests.helpers import until


async def _user(client: Any, login: str, role: str, password: str = "password1", exts=()) -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session, login=login, role=role, password=password, extensions=exts, scrypt_n=1024
        )
        await session.commit()


async def _token(client: Any, login: str, password: str = "password1") -> str:
    resp = await client.post("/api/v1/auth/token", json={"login": login, "password": password})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_reports_components(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    doc = await resp.json()
    assert doc["status"] == "ok"
    assert doc["database"]["status"] == "ok"
    assert doc["database"]["backend"] in ("sqlite", "postgresql")
    assert doc["redis"] == {"status": "disabled"}
    assert doc["bus"]["mode"] == "in-process"


async def test_metrics_count_requests_and_bus_events(client: Any) -> None:
    await client.get("/healthz")
    await client.get("/api/v1/me")  # 401
    await _user(client, "adm", "admin")
    token = await _token(client, "adm")
    resp = await client.post(
        "/api/v1/users",
        headers=_bearer(token),
        json={"login": "new", "role": "manager", "password": "password1"},
    )
    assert resp.status == 201
    text = await (await client.get("/metrics")).text()
    assert 'cc_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
    assert 'cc_http_requests_total{method="GET",route="/api/v1/me",status="401"} 1.0' in text
    assert "cc_http_request_duration_seconds_bucket" in text
    assert 'cc_bus_events_published_total{event="user.created"} 1.0' in text


async def test_openapi_lists_operations_with_schemas(client: Any) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/api/v1/auth/token"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[1]
    assert set(doc["components"]["schemas"][name]["required"]) == {"login", "password"}
    assert "security" not in post
    assert doc["paths"]["/api/v1/users"]["post"]["security"]
    # Every $ref points at a schema that exists.
    import json

    for target in json.dumps(doc).split('"$ref": "')[1:]:
        key = target.split('"', 1)[0].rsplit("/", 1)[1]
        assert key in doc["components"]["schemas"], key


async def test_token_sign_in_and_bearer_use(client: Any) -> None:
    await _user(client, "ivan", "manager", exts=["101"])
    token = await _token(client, "ivan")
    me = await client.get("/api/v1/me", headers=_bearer(token))
    assert me.status == 200
    body = await me.json()
    assert body["login"] == "ivan" and body["role"] == "manager" and body["extensions"] == ["101"]

    bad = await client.post("/api/v1/auth/token", json={"login": "ivan", "password": "nope"})
    assert bad.status == 401
    assert (await bad.json())["error"] == "invalid-credentials"
    forged = await client.get("/api/v1/me", headers=_bearer("forged"))
    assert forged.status == 401


async def test_token_request_validation_names_fields(client: Any) -> None:
    resp = await client.post("/api/v1/auth/token", json={"login": ""})
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "validation-failed"
    assert set(body["details"]["fields"]) == {"login", "password"}
    resp = await client.post(
        "/api/v1/auth/token", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 422
    assert "not valid JSON" in (await resp.json())["message"]


async def test_revoked_token_stops_working(client: Any) -> None:
    await _user(client, "rev", "manager")
    token = await _token(client, "rev")
    tokens = await (await client.get("/api/v1/auth/tokens", headers=_bearer(token))).json()
    assert len(tokens) == 1 and tokens[0]["revoked_at"] is None
    resp = await client.delete(f"/api/v1/auth/tokens/{tokens[0]['id']}", headers=_bearer(token))
    assert resp.status == 204
    assert (await client.get("/api/v1/me", headers=_bearer(token))).status == 401


async def test_manager_cannot_revoke_someone_elses_token(client: Any) -> None:
    await _user(client, "m1", "manager")
    await _user(client, "m2", "manager")
    t1, t2 = await _token(client, "m1"), await _token(client, "m2")
    other = (await (await client.get("/api/v1/auth/tokens", headers=_bearer(t2))).json())[0]["id"]
    resp = await client.delete(f"/api/v1/auth/tokens/{other}", headers=_bearer(t1))
    assert resp.status == 404
    assert (await client.get("/api/v1/me", headers=_bearer(t2))).status == 200


@pytest.mark.parametrize(
    ("role", "list_status", "create_status"),
    [("admin", 200, 201), ("head", 200, 403), ("manager", 403, 403)],
)
async def test_users_api_role_matrix(
    client: Any, role: str, list_status: int, create_status: int
) -> None:
    await _user(client, "who", role)
    token = await _token(client, "who")
    assert (await client.get("/api/v1/users", headers=_bearer(token))).status == list_status
    resp = await client.post(
        "/api/v1/users",
        headers=_bearer(token),
        json={"login": "x1", "role": "manager", "password": "password1", "extensions": ["150"]},
    )
    assert resp.status == create_status
    assert (await client.get("/api/v1/users")).status == 401


async def test_create_user_conflict_is_409(client: Any) -> None:
    await _user(client, "adm", "admin", exts=["100"])
    token = await _token(client, "adm")
    resp = await client.post(
        "/api/v1/users",
        headers=_bearer(token),
        json={"login": "y", "role": "manager", "password": "password1", "extensions": ["100"]},
    )
    assert resp.status == 409
    assert (await resp.json())["error"] == "extension-taken"


async def test_sign_in_is_throttled(
    make_settings: Callable[..., Settings], database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(CC_DATABASE_URL=database_url, CC_AUTH_LOGIN_ATTEMPTS_PER_15MIN="3")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await _user(client, "t", "manager")
    for _ in range(3):
        resp = await client.post("/api/v1/auth/token", json={"login": "t", "password": "bad"})
        assert resp.status == 401
    resp = await client.post("/api/v1/auth/token", json={"login": "t", "password": "password1"})
    assert resp.status == 429


async def test_web_sign_in_sets_http_only_cookie_and_speaks_russian(client: Any) -> None:
    page = await client.get("/login")
    text = await page.text()
    assert page.status == 200 and 'lang="ru"' in text and "Войти" in text
    english = await (await client.get("/login?lang=en")).text()
    assert "Sign in" in english
    assert 'lang="en"' in await (await client.get("/login")).text()  # the choice is remembered
    await client.get("/login?lang=ru")

    assert (await client.get("/", allow_redirects=False)).status == 303
    await _user(client, "anna", "manager", exts=["102"])
    wrong = await client.post("/login", data={"login": "anna", "password": "x"})
    assert wrong.status == 401 and "Неверный логин или пароль" in await wrong.text()

    resp = await client.post(
        "/login", data={"login": "anna", "password": "password1"}, allow_redirects=False
    )
    assert resp.status == 303
    cookie = resp.headers["Set-Cookie"]
    assert "cc_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    home = await client.get("/")
    assert home.status == 200
    text = await home.text()
    assert "anna" in text and "102" in text and "Звонки" in text
    # The cookie works for the API too, but a cross-site POST with it is refused.
    assert (await client.get("/api/v1/me")).status == 200
    evil = await client.post(
        "/api/v1/me/password",
        json={"current_password": "password1", "new_password": "password2"},
        headers={"Origin": "https://evil.example"},
    )
    assert evil.status == 403
    out = await client.post("/logout", allow_redirects=False)
    assert out.status == 303
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_password_change(client: Any) -> None:
    await _user(client, "pw", "manager")
    token = await _token(client, "pw")
    resp = await client.post(
        "/api/v1/me/password",
        headers=_bearer(token),
        json={"current_password": "wrong", "new_password": "password2"},
    )
    assert resp.status == 401
    resp = await client.post(
        "/api/v1/me/password",
        headers=_bearer(token),
        json={"current_password": "password1", "new_password": "password2"},
    )
    assert resp.status == 204
    await _token(client, "pw", "password2")


async def test_user_created_event_reaches_subscribers(client: Any) -> None:
    seen: list[Any] = []

    async def on(event: Any) -> None:
        seen.append(event)

    client.app[BUS].subscribe(on, name="test", events=["user.created"])
    await _user(client, "adm", "admin")
    token = await _token(client, "adm")
    await client.post(
        "/api/v1/users",
        headers=_bearer(token),
        json={"login": "ev", "role": "manager", "password": "password1", "extensions": ["170"]},
    )
    await until(lambda: seen)
    assert seen[0].login == "ev" and seen[0].extensions == ("170",)


async def test_healthz_is_503_when_the_database_goes_away(
    make_settings: Callable[..., Settings],
    postgres_url: str,
    postgres_template: tuple[str, str],
    aiohttp_client_factory: Any,
) -> None:
    settings = make_settings(CC_DATABASE_URL=postgres_url)
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    assert (await client.get("/healthz")).status == 200
    name = make_url(postgres_url).database
    await pg_admin(postgres_template[0], f'DROP DATABASE "{name}" WITH (FORCE)')
    resp = await client.get("/healthz")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["status"] == "fail" and doc["database"]["status"] == "fail"
    assert doc["database"]["error"]
