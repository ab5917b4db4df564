"""The workspace shell: who may open which page, sign-in and the forced password change, the
CSRF token, the language, escaping, and the catalogues."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from contact_center.i18n import catalogue
from contact_center.keys import SESSIONS
from crm_core.clients.model import Contact
from crm_core.users import service as users
from tests.web.world import csrf, sign_in, team, visible

PAGES = [
    "/",
    "/today",
    "/leads",
    "/clients",
    "/clients?kind=company",
    "/deals",
    "/tasks",
    "/inbox",
    "/calls",
    "/invoices",
    "/settings/profile",
    "/search?q=test",
]
HEAD_PAGES = ["/plans", "/distribution", "/tracking"]
ADMIN_PAGES = ["/users"]
TEMPLATES = Path(__file__).resolve().parents[2] / "contact_center" / "web" / "templates"


@pytest.mark.parametrize(
    ("login", "head_status", "admin_status"),
    [("ivan", 403, 403), ("boss", 200, 403), ("adm", 200, 200)],
)
async def test_every_page_renders_for_each_role_and_others_get_a_403_page(
    client: Any, login: str, head_status: int, admin_status: int
) -> None:
    await team(client)
    await sign_in(client, login)
    for path in PAGES:
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 200, (path, await resp.text())
        text = await resp.text()
        assert 'lang="ru"' in text and "Мой день" in text
    for paths, status in ((HEAD_PAGES, head_status), (ADMIN_PAGES, admin_status)):
        for path in paths:
            resp = await client.get(path, allow_redirects=False)
            assert resp.status == status, path
            if status == 403:
                assert "Нет доступа" in await resp.text()


async def test_the_menu_follows_the_role(client: Any) -> None:
    await team(client)
    menus = {}
    for login in ("ivan", "boss", "adm"):
        await sign_in(client, login)
        text = await (await client.get("/today")).text()
        menus[login] = re.findall(r'<li><a href="(/[a-z]*)"', text)
    assert menus["ivan"] == [
        "/today",
        "/leads",
        "/deals",
        "/clients",
        "/tasks",
        "/inbox",
        "/calls",
        "/invoices",
    ]
    assert menus["boss"] == menus["ivan"] + ["/plans", "/distribution", "/tracking"]
    assert menus["adm"] == menus["boss"] + ["/users"]


async def test_a_visitor_without_a_session_signs_in_and_comes_back(client: Any) -> None:
    await team(client)
    resp = await client.get("/leads?stage=new", allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/login?next=/leads?stage%3Dnew"
    page = await client.get("/login?next=/leads?stage%3Dnew")
    assert 'name="next" value="/leads?stage=new"' in await page.text()
    resp = await client.post(
        "/login",
        data={"login": "ivan", "password": "password1", "next": "/leads?stage=new"},
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/leads?stage=new"
    evil = await client.post(
        "/login",
        data={"login": "ivan", "password": "password1", "next": "//evil.example/"},
        allow_redirects=False,
    )
    assert evil.headers["Location"] == "/"
    hx = await client.get("/leads", headers={"HX-Request": "true"}, allow_redirects=False)
    assert hx.status == 200  # signed in now
    client.session.cookie_jar.clear()
    hx = await client.get("/leads", headers={"HX-Request": "true"}, allow_redirects=False)
    assert hx.status == 401 and hx.headers["HX-Redirect"].startswith("/login")


async def test_a_one_time_password_must_be_changed_before_anything_else(client: Any) -> None:
    async with client.app[SESSIONS]() as session:
        await users.create_user(
            session,
            login="new",
            role="manager",
            password="temporary1",
            must_change_password=True,
            scrypt_n=1024,
        )
        await session.commit()
    resp = await sign_in(client, "new", "temporary1")
    assert resp.headers["Location"] == "/settings/password"
    for path in ("/", "/leads", "/settings/profile"):
        resp = await client.get(path, allow_redirects=False)
        assert (resp.status, resp.headers["Location"]) == (303, "/settings/password")
    token = await csrf(client, "/settings/password")
    base = {"csrf_token": token, "current_password": "temporary1"}
    short = await client.post(
        "/settings/password", data={**base, "new_password": "x", "new_password_again": "x"}
    )
    assert short.status == 422 and "не меньше 8 символов" in await short.text()
    differ = await client.post(
        "/settings/password",
        data={**base, "new_password": "longenough1", "new_password_again": "longenough2"},
    )
    assert differ.status == 422 and "Пароли не совпадают" in await differ.text()
    wrong = await client.post(
        "/settings/password",
        data={
            **base,
            "current_password": "nope",
            "new_password": "longenough1",
            "new_password_again": "longenough1",
        },
    )
    assert wrong.status == 422 and "Текущий пароль неверен" in await wrong.text()
    done = await client.post(
        "/settings/password",
        data={**base, "new_password": "longenough1", "new_password_again": "longenough1"},
        allow_redirects=False,
    )
    assert (done.status, done.headers["Location"]) == (303, "/")
    # The page he lands on confirms the change, once.
    landed = await client.get("/", allow_redirects=False)
    assert landed.status == 200 and "Пароль изменён" in visible(await landed.text())
    assert 'id="flash"' not in await (await client.get("/")).text()
    assert (await client.get("/leads", allow_redirects=False)).status == 200
    await sign_in(client, "new", "longenough1")
    assert (await client.get("/today", allow_redirects=False)).status == 200


async def test_forms_need_the_csrf_token(client: Any) -> None:
    await team(client)
    await sign_in(client, "ivan")
    data = {"form": "language", "locale": "en"}
    refused = await client.post("/settings/profile", data=data)
    assert refused.status == 403 and "Форма устарела" in await refused.text()
    token = await csrf(client)
    other = await client.post("/settings/profile", data={**data, "csrf_token": "0" * 40})
    assert other.status == 403
    ok = await client.post(
        "/settings/profile", data={**data, "csrf_token": token}, allow_redirects=False
    )
    assert ok.status == 303
    english = await (await client.get("/today")).text()
    assert 'lang="en"' in english and "My day" in english
    hx = await client.post(
        "/settings/profile",
        data={"form": "language", "locale": "ru"},
        headers={"X-CSRF-Token": token, "HX-Request": "true"},
        allow_redirects=False,
    )
    assert hx.status == 303


async def test_a_form_past_the_body_limit_is_refused_in_russian(client: Any) -> None:
    """A pasted novel (or a chunked body with no length) is refused by the page in the
    user's language, not with aiohttp's English "Maximum request body size"."""
    await team(client)
    await sign_in(client, "ivan")
    token = await csrf(client)

    async def chunked() -> Any:
        yield f"csrf_token={token}&form=language&locale=".encode()
        for _ in range(3):
            yield b"x" * (1024 * 1024)

    novel = urlencode({"csrf_token": token, "form": "name", "name": "я" * (1024 * 1024)})
    for data in (io.BytesIO(novel.encode()), chunked()):
        resp = await client.post(
            "/settings/profile",
            data=data,
            headers={"Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"},
        )
        assert resp.status == 413
        assert "Слишком большой запрос" in await resp.text()


async def test_language_by_query_then_cookie(client: Any) -> None:
    await team(client)
    await sign_in(client, "ivan")
    assert "My day" in await (await client.get("/today?lang=en")).text()
    assert "My day" in await (await client.get("/leads")).text()  # remembered
    assert "Мой день" in await (await client.get("/leads?lang=ru")).text()


async def test_a_typed_script_renders_as_text(client: Any) -> None:
    ids = await team(client)
    evil = "<script>alert(1)</script>"
    async with client.app[SESSIONS]() as session:
        session.add(Contact(name=evil, responsible_id=ids.ivan))
        await session.commit()
    await sign_in(client, "ivan")
    for path in ("/clients", "/search?q=alert"):
        text = await (await client.get(path)).text()
        assert evil not in text, path
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
    query = await (await client.get("/leads?q=%3Cscript%3Ealert(1)%3C/script%3E")).text()
    assert evil not in query and "&lt;script&gt;" in query


async def test_profile_changes_the_password_and_keeps_the_session(client: Any) -> None:
    await team(client)
    await sign_in(client, "anna")
    token = await csrf(client)
    resp = await client.post(
        "/settings/profile",
        data={
            "csrf_token": token,
            "form": "password",
            "current_password": "password1",
            "new_password": "password22",
            "new_password_again": "password22",
        },
        allow_redirects=False,
    )
    assert resp.headers["Location"] == "/settings/profile"
    page = await client.get("/settings/profile", allow_redirects=False)
    assert page.status == 200 and "Пароль изменён" in visible(await page.text())
    assert 'id="flash"' not in await (await client.get("/settings/profile")).text()
    await sign_in(client, "anna", "password22")


async def test_roles_show_by_their_names(client: Any) -> None:
    await team(client)
    await sign_in(client, "adm")
    page = visible(await (await client.get("/users")).text())
    for name in ("Менеджер", "Руководитель", "Администратор"):
        assert f"<td>{name}</td>" in page
    assert "<td>менеджер</td>" not in page
    await sign_in(client, "ivan")
    header = visible(await (await client.get("/settings/profile")).text())
    assert "<small>Менеджер" in header and "<dd>Менеджер</dd>" in header


def test_the_catalogues_have_the_same_keys_and_every_key_the_pages_use() -> None:
    ru, en = catalogue("ru"), catalogue("en")
    assert set(ru) == set(en)
    used: set[str] = set()
    for path in TEMPLATES.rglob("*.html"):
        used.update(re.findall(r"""_\(["']([a-z][a-z0-9_.-]*[a-z0-9_])["']""", path.read_text()))
    missing = sorted(k for k in used if k not in ru)
    assert not missing
    assert all(ru[k] for k in ru)


async def test_the_pbx_state_piece_refreshes(client: Any) -> None:
    await team(client)
    await sign_in(client, "ivan")
    resp = await client.get("/ui/pbx-state")
    assert resp.status == 200 and 'id="pbx-state"' in await resp.text()
    assert "АТС не подключена" in await resp.text()  # the tests configure no PBX
