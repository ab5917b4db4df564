"""Пользователи (admin): the list, create a user (the one-time password shown once), change
the role, name and extensions, deactivate and reactivate, reset a password."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from contact_center.api.common import UnitOfWork
from contact_center.i18n import error_text
from contact_center.keys import SESSIONS, SETTINGS
from contact_center.web.shell import ADMIN, MenuEntry, page, t_of
from crm_core.errors import DomainError, NotFound
from crm_core.users import service as users
from crm_core.users.model import Role, User
from crm_core.users.passwords import new_password

MENU = (MenuEntry("users", "/users", "menu.users", "users", 200, frozenset({ADMIN}), "admin"),)
ROLES = tuple(r.value for r in Role)


def _extensions(raw: str) -> list[str]:
    return [e for e in (part.strip() for part in raw.replace(";", ",").split(",")) if e]


async def _listing(request: web.Request) -> dict[str, Any]:
    t = t_of(request)
    async with request.app[SESSIONS]() as session:
        rows = await users.list_users(session)
    return {
        "title": t("menu.users"),
        "users": [
            {
                "id": u.id,
                "login": u.login,
                "name": u.display_name,
                "role": u.role,
                "active": u.is_active,
                "must_change": u.must_change_password,
                "extensions": [e.extension for e in u.extensions],
                "pbx": next((e.pbx for e in u.extensions), ""),
            }
            for u in sorted(rows, key=lambda u: (not u.is_active, u.display_name.lower()))
        ],
        "roles": ROLES,
        "pbxes": [p.name for p in request.app[SETTINGS].pbx],
        "issued": None,
        "saved": None,
        "error": "",
        "form": {},
    }


@page("admin/users.html", roles=frozenset({ADMIN}))
async def users_page(request: web.Request, user: User) -> dict[str, Any]:
    data = await _listing(request)
    data["saved"] = request.query.get("saved")
    return data


@page("admin/users.html", roles=frozenset({ADMIN}))
async def create_user(request: web.Request, user: User) -> dict[str, Any]:
    form = await request.post()
    password = new_password()
    fields = {
        "login": str(form.get("login", "")).strip(),
        "display_name": str(form.get("display_name", "")).strip(),
        "role": str(form.get("role", "manager")),
        "extensions": str(form.get("extensions", "")),
        "pbx": str(form.get("pbx", "")),
    }
    try:
        async with UnitOfWork(request) as u:
            created, event = await users.create_user(
                u.session,
                login=fields["login"],
                role=fields["role"],
                password=password,
                display_name=fields["display_name"],
                extensions=_extensions(fields["extensions"]),
                pbx=fields["pbx"],
                must_change_password=True,
                scrypt_n=request.app[SETTINGS].auth.scrypt_n,
            )
            u.emit(event)
            await u.commit()
    except DomainError as exc:
        # The form stays filled in, with what is wrong said above it.
        data = await _listing(request)
        data.update(form=fields, error=error_text(t_of(request), exc.error_id, exc.details))
        data["_status"] = 409 if exc.error_id in ("login-taken", "extension-taken") else 422
        return data
    data = await _listing(request)
    data["issued"] = {"login": created.login, "name": created.display_name, "password": password}
    data["saved"] = None
    return data


async def _user(session: Any, user_id: int) -> User:
    found = await users.get_user(session, user_id)
    if found is None:
        raise NotFound(f"no user {user_id}")
    return found


@page("admin/users.html", roles=frozenset({ADMIN}))
async def change_user(request: web.Request, user: User) -> Any:
    form = await request.post()
    action = str(form.get("action", "save"))
    user_id = int(request.match_info["id"])
    issued = None
    async with UnitOfWork(request) as u:
        target = await _user(u.session, user_id)
        if action == "deactivate":
            await users.update_user(u.session, target, actor_id=user.id, is_active=False)
        elif action == "activate":
            await users.update_user(u.session, target, actor_id=user.id, is_active=True)
        elif action == "reset":
            password = await users.reset_password(
                u.session, target, scrypt_n=request.app[SETTINGS].auth.scrypt_n
            )
            issued = {"login": target.login, "name": target.display_name, "password": password}
        else:
            await users.update_user(
                u.session,
                target,
                actor_id=user.id,
                display_name=str(form.get("display_name", target.display_name)),
                role=str(form.get("role", target.role)),
                extensions=_extensions(str(form.get("extensions", ""))),
                pbx=str(form.get("pbx", "")),
            )
        await u.commit()
    if issued is None:
        raise web.HTTPSeeOther(f"/users?saved={action}")
    data = await _listing(request)
    data["issued"] = issued
    data["saved"] = None
    return data


def routes(app: web.Application) -> None:
    app.router.add_get("/users", users_page)
    app.router.add_post("/users", create_user)
    app.router.add_post(r"/users/{id:\d{1,18}}", change_user)
