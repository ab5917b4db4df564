"""The call log API: who sees which calls."""

from __future__ import annotations

from typing import Any

import pytest

from contact_center.keys import SESSIONS
from crm_core.calls import service as calls
from crm_core.users import service as users
from tests.ami._support import folded_call


async def _setup(client: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with client.app[SESSIONS]() as session:
        for login, role, exts in (
            ("adm", "admin", ()),
            ("boss", "head", ()),
            ("ivan", "manager", ("101",)),
            ("anna", "manager", ("102",)),
        ):
            user, _ = await users.create_user(
                session,
                login=login,
                role=role,
                password="password1",
                extensions=exts,
                scrypt_n=1024,
            )
            out[login] = user.id
        for trace in ("a_inbound_queue_answered", "d_outbound_answered"):
            record = folded_call(trace)
            owner = await calls.extension_owner(session, "main", record.extension)
            call, _ = await calls.store_call(
                session, "main", record, user_id=owner.id if owner else None
            )
            out[trace] = call.id
        await session.commit()
    for login in ("adm", "boss", "ivan", "anna"):
        resp = await client.post(
            "/api/v1/auth/token", json={"login": login, "password": "password1"}
        )
        out[f"{login}_token"] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return out


@pytest.mark.parametrize(
    ("who", "expected"),
    [("adm", 2), ("boss", 2), ("ivan", 1), ("anna", 1)],
)
async def test_list_calls_by_role(client: Any, who: str, expected: int) -> None:
    ctx = await _setup(client)
    resp = await client.get("/api/v1/calls", headers=ctx[f"{who}_token"])
    assert resp.status == 200
    body = await resp.json()
    assert body["total"] == expected
    if who == "ivan":
        assert body["items"][0]["extension"] == "101"


async def test_get_call_permissions(client: Any) -> None:
    ctx = await _setup(client)
    ivans = ctx["a_inbound_queue_answered"]
    ok = await client.get(f"/api/v1/calls/{ivans}", headers=ctx["ivan_token"])
    assert ok.status == 200 and (await ok.json())["queue"] == "sales"
    assert (await client.get(f"/api/v1/calls/{ivans}", headers=ctx["anna_token"])).status == 404
    assert (await client.get(f"/api/v1/calls/{ivans}", headers=ctx["boss_token"])).status == 200
    assert (await client.get("/api/v1/calls/999999", headers=ctx["adm_token"])).status == 404
    assert (await client.get(f"/api/v1/calls/{ivans}")).status == 401


async def test_filter_by_number_in_any_format(client: Any) -> None:
    ctx = await _setup(client)
    resp = await client.get("/api/v1/calls?number=8 (495) 123-45-67", headers=ctx["adm_token"])
    body = await resp.json()
    assert body["total"] == 1 and body["items"][0]["caller"] == "+74951234567"
    bad = await client.get("/api/v1/calls?direction=sideways", headers=ctx["adm_token"])
    assert bad.status == 422 and "direction" in (await bad.json())["details"]["fields"]
