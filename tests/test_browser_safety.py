"""What protects a signed-in browser: requests and sockets from other sites are refused, every
response carries the security headers, the session cookie is Secure over HTTPS, and a user with
a one-time password can do nothing but change it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from contact_center.app import create_app
from contact_center.config import Settings
from contact_center.keys import SESSIONS
from crm_core.users import service as users

PASSWORD = "password1"
TASK = {"title": "Перезвонить"}


async def _user(client: Any, login: str, role: str = "manager") -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(session, login=login, role=role, password=PASSWORD, scrypt_n=1024)
        await session.commit()


def _origin(client: Any) -> str:
    return str(client.make_url("/")).rstrip("/")


@pytest.fixture
async def signed_in(client: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """A browser signed in as the manager ivan (session cookie)."""
    await _user(client, "ivan")
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    resp = await http.post(
        f"{_origin(client)}/login",
        data={"login": "ivan", "password": PASSWORD},
        allow_redirects=False,
    )
    assert resp.status == 303
    yield http
    await http.close()


# ---------------------------------------------------------------- cross-site requests


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "null"},  # a same-site page's form, 307-redirected to us
        {"Origin": "https://evil.example"},
        {"Origin": "http://127.0.0.1:1"},  # same host, another port: another origin
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "null"},
    ],
)
async def test_cookie_requests_from_other_origins_are_refused(
    client: Any, signed_in: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    url = f"{_origin(client)}/api/v1/tasks"
    resp = await signed_in.post(url, json=TASK, headers=headers)
    assert resp.status == 403, await resp.text()
    assert (await resp.json())["error"] == "cross-origin-refused"
    listed = await (await signed_in.get(url)).json()
    assert listed["total"] == 0  # nothing was created in the victim's name


async def test_a_public_endpoint_takes_a_sibling_sites_form_despite_the_cookie(
    client: Any, signed_in: aiohttp.ClientSession
) -> None:
    """The company's website on a sibling domain posts to the public endpoints; the manager's
    browser carries his cookie along (same-site). The request goes on as anonymous."""
    resp = await signed_in.post(
        f"{_origin(client)}/api/v1/tracking/session",
        json={"site": "nosuch"},
        headers={"Origin": "https://shop.example.ru", "Sec-Fetch-Site": "same-site"},
    )
    assert resp.status == 404, await resp.text()  # no such site: it got past the cookie


async def test_cookie_requests_from_our_pages_pass(
    client: Any, signed_in: aiohttp.ClientSession
) -> None:
    url = f"{_origin(client)}/api/v1/tasks"
    for headers in (
        {"Origin": _origin(client), "Sec-Fetch-Site": "same-origin"},
        {},  # no browser headers at all: not a browser, nothing to forge
    ):
        resp = await signed_in.post(url, json=TASK, headers=headers)
        assert resp.status == 201, await resp.text()


async def test_websocket_from_another_origin_is_refused(
    client: Any, signed_in: aiohttp.ClientSession
) -> None:
    url = f"{_origin(client)}/ws"
    for origin in ("https://evil.example", "null"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await signed_in.ws_connect(url, headers={"Origin": origin})
        assert refused.value.status == 403
    ws = await signed_in.ws_connect(url, headers={"Origin": _origin(client)})
    assert (await ws.receive_json(timeout=2))["type"] == "hello"
    await ws.close()


async def test_login_form_from_another_site_is_refused(client: Any) -> None:
    await _user(client, "ivan")
    resp = await client.post(
        "/login",
        data={"login": "ivan", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 403
    assert "cc_session" not in resp.cookies


async def test_behind_a_trusted_proxy_the_forwarded_origin_is_ours(
    make_settings: Callable[..., Settings], database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_SERVER_TRUSTED_PROXIES='["127.0.0.1"]'
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    await _user(client, "ivan")
    proxy = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    proxy["X-Forwarded-Host"] = "crm.example.ru"
    resp = await client.post(
        "/login",
        data={"login": "ivan", "password": PASSWORD},
        headers={**proxy, "Origin": "https://crm.example.ru"},
        allow_redirects=False,
    )
    assert resp.status == 303
    cookie = resp.cookies["cc_session"]
    assert cookie["secure"]  # the visitor came over HTTPS, whatever auth.cookie_secure says
    jar = {"cc_session": cookie.value}
    ok = await client.post(
        "/api/v1/tasks",
        json=TASK,
        cookies=jar,
        headers={**proxy, "Origin": "https://crm.example.ru"},
    )
    assert ok.status == 201, await ok.text()
    # The proxy's own address is not the visitor's origin.
    refused = await client.post(
        "/api/v1/tasks", json=TASK, cookies=jar, headers={**proxy, "Origin": _origin(client)}
    )
    assert refused.status == 403


async def test_session_cookie_over_plain_http_is_not_secure(client: Any) -> None:
    await _user(client, "ivan")
    resp = await client.post(
        "/login", data={"login": "ivan", "password": PASSWORD}, allow_redirects=False
    )
    assert resp.status == 303 and not resp.cookies["cc_session"]["secure"]


# ---------------------------------------------------------------- headers


async def test_every_response_carries_the_security_headers(
    client: Any, signed_in: aiohttp.ClientSession
) -> None:
    base = _origin(client)
    for method, path in (
        ("GET", "/login"),
        ("GET", "/"),
        ("GET", "/healthz"),
        ("GET", "/static/app.css"),
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/nothing-here"),
        ("GET", "/no-such-page"),
        ("POST", "/api/v1/auth/token"),
        ("GET", "/demo/landing"),
    ):
        resp = await signed_in.request(method, base + path, allow_redirects=False)
        h = resp.headers
        assert h["X-Frame-Options"] == "DENY", path
        assert h["Referrer-Policy"] == "same-origin", path
        assert h["X-Content-Type-Options"] == "nosniff", path
        csp = {
            part.split()[0]: part.split()[1:] for part in h["Content-Security-Policy"].split("; ")
        }
        assert csp["default-src"] == ["'self'"], path
        assert csp["script-src"] == ["'self'"], path  # no 'unsafe-inline'
        assert csp["frame-ancestors"] == ["'none'"]
        assert csp["object-src"] == ["'none'"]
        assert csp["base-uri"] == ["'self'"] and csp["form-action"] == ["'self'"]
        assert "'self'" in csp["connect-src"] and "'self'" in csp["media-src"]


async def test_pages_hold_no_inline_script_or_style(
    client: Any, signed_in: aiohttp.ClientSession
) -> None:
    for path in ("/", "/login", "/demo/landing"):
        text = await (await signed_in.get(_origin(client) + path)).text()
        assert "<style" not in text and " style=" not in text, path
        assert " on" + "change=" not in text and " on" + "click=" not in text, path
        for tag in text.split("<script")[1:]:
            opening = tag.split(">", 1)[0]
            assert "src=" in opening or 'type="application/json"' in opening, (path, opening)


# ---------------------------------------------------------------- the one-time password


async def test_a_one_time_password_must_be_changed_before_anything_else(
    make_settings: Callable[..., Settings], database_url: str, aiohttp_client_factory: Any
) -> None:
    told: list[str] = []
    settings = make_settings(CC_DATABASE_URL=database_url)
    client = await aiohttp_client_factory(create_app(settings, announce=told.append))
    one_time = told[0].split("one-time password ")[1].split(" ")[0]
    token = await (
        await client.post("/api/v1/auth/token", json={"login": "admin", "password": one_time})
    ).json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    # The first admin, still on the printed password, creates no other admin ...
    new_admin = {"login": "boss", "role": "admin", "password": "password1"}
    resp = await client.post("/api/v1/users", json=new_admin, headers=bearer)
    assert resp.status == 403 and (await resp.json())["error"] == "password-change-required"
    for path in ("/api/v1/users", "/api/v1/tasks", "/api/v1/auth/tokens"):
        assert (await client.get(path, headers=bearer)).status == 403, path
    assert (await client.get(f"/ws?token={token['token']}")).status == 403
    me = await (await client.get("/api/v1/me", headers=bearer)).json()
    assert me["must_change_password"] is True
    # ... nor opens a page: every one leads to the password form.
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    base = _origin(client)
    try:
        resp = await http.post(
            f"{base}/login",
            data={"login": "admin", "password": one_time},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/settings/password"
        for page in ("/", "/clients/contact/1"):
            resp = await http.get(base + page, allow_redirects=False)
            assert resp.status == 303 and resp.headers["Location"] == "/settings/password", page
        form = await http.get(f"{base}/settings/password")
        text = await form.text()
        assert form.status == 200 and "Новый пароль" in text
        token = re.search(r'name="csrf-token" content="([0-9a-f]+)"', text)
        assert token is not None
        resp = await http.post(
            f"{base}/settings/password",
            data={
                "csrf_token": token.group(1),
                "current_password": one_time,
                "new_password": "password2",
                "new_password_again": "password2",
            },
            headers={"Origin": base},
            allow_redirects=False,
        )
        assert resp.status == 303 and resp.headers["Location"] == "/"
        assert (await http.get(f"{base}/", allow_redirects=False)).status == 200
    finally:
        await http.close()
    # The token taken with the one-time password died with it; a new one may do everything.
    assert (await client.get("/api/v1/me", headers=bearer)).status == 401
    token = await (
        await client.post("/api/v1/auth/token", json={"login": "admin", "password": "password2"})
    ).json()
    resp = await client.post(
        "/api/v1/users", json=new_admin, headers={"Authorization": f"Bearer {token['token']}"}
    )
    assert resp.status == 201


async def test_the_api_changes_a_one_time_password(
    make_settings: Callable[..., Settings], database_url: str, aiohttp_client_factory: Any
) -> None:
    told: list[str] = []
    settings = make_settings(CC_DATABASE_URL=database_url)
    client = await aiohttp_client_factory(create_app(settings, announce=told.append))
    one_time = told[0].split("one-time password ")[1].split(" ")[0]
    token = await (
        await client.post("/api/v1/auth/token", json={"login": "admin", "password": one_time})
    ).json()
    bearer = {"Authorization": f"Bearer {token['token']}"}
    resp = await client.post(
        "/api/v1/me/password",
        json={"current_password": one_time, "new_password": "password2"},
        headers=bearer,
    )
    assert resp.status == 204
    token = await (
        await client.post("/api/v1/auth/token", json={"login": "admin", "password": "password2"})
    ).json()
    me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token['token']}"})
    assert (await me.json())["must_change_password"] is False
