"""A small sales team and the web client's sign-in for the workspace's page tests."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from contact_center.keys import SESSIONS
from crm_core.users import service as users

PASSWORD = "password1"


@dataclass
class Team:
    admin: int
    boss: int
    ivan: int
    anna: int


async def team(client: Any) -> Team:
    ids = {}
    async with client.app[SESSIONS]() as session:
        for login, role, exts, name in (
            ("adm", "admin", (), "Админ Системы"),
            ("boss", "head", (), "Ольга Руководитель"),
            ("ivan", "manager", ("101",), "Иван Петров"),
            ("anna", "manager", ("102",), "Анна Смирнова"),
        ):
            user, _ = await users.create_user(
                session,
                login=login,
                role=role,
                password=PASSWORD,
                extensions=exts,
                display_name=name,
                scrypt_n=1024,
            )
            ids[login] = user.id
        await session.commit()
    return Team(admin=ids["adm"], boss=ids["boss"], ivan=ids["ivan"], anna=ids["anna"])


async def sign_in(client: Any, login: str, password: str = PASSWORD) -> Any:
    """A fresh cookie session for ``login``; returns the sign-in response (303)."""
    client.session.cookie_jar.clear()
    resp = await client.post(
        "/login", data={"login": login, "password": password}, allow_redirects=False
    )
    assert resp.status == 303, await resp.text()
    return resp


async def csrf(client: Any, path: str = "/settings/profile") -> str:
    text = await (await client.get(path)).text()
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def rows(html: str) -> list[str]:
    """The data rows of the page's list table (``<tr data-href=...>`` or with an id)."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return re.findall(r"<tr[ >].*?</tr>", body, flags=re.S)


def visible(html: str) -> str:
    """The page without its script elements (the catalogue for the browser names every code)."""
    return re.sub(r"<script\b.*?</script>", "", html, flags=re.S)
