"""Regions and sources over REST: everyone reads, head and admin write."""

from __future__ import annotations

from typing import Any

from tests.api.test_clients_api import setup_team


async def test_regions(client: Any) -> None:
    ctx = await setup_team(client)
    body = {"code": "RU-MOW", "name": "Москва", "timezone": "Europe/Moscow"}
    for who, status in (("ivan", 403), ("anna", 403), (None, 401)):
        assert (await ctx.call(who, "POST", "/regions", json=body))[0] == status
    status, moscow = await ctx.call("boss", "POST", "/regions", json=body)
    assert status == 201 and moscow["code"] == "RU-MOW" and moscow["is_active"]
    status, out = await ctx.call("adm", "POST", "/regions", json=body)
    assert status == 409 and out["error"] == "reference-code-taken"
    status, zel = await ctx.call(
        "adm",
        "POST",
        "/regions",
        json={"code": "zelenograd", "name": "Зеленоград", "parent_id": moscow["id"]},
    )
    assert status == 201 and zel["parent_id"] == moscow["id"]
    status, out = await ctx.call(
        "adm", "PATCH", f"/regions/{moscow['id']}", json={"parent_id": zel["id"]}
    )
    assert status == 422 and out["details"]["field"] == "parent_id"  # a cycle
    status, out = await ctx.call("adm", "PATCH", f"/regions/{moscow['id']}", json={"name": None})
    assert status == 422 and out["details"]["field"] == "name"
    for who in ("ivan", "anna", "boss", "adm"):
        status, rows = await ctx.call(who, "GET", "/regions")
        assert status == 200 and [r["code"] for r in rows] == ["zelenograd", "RU-MOW"], (
            who
        )  # by name
        assert (await ctx.call(who, "GET", f"/regions/{zel['id']}"))[0] == 200
    assert (await ctx.call(None, "GET", "/regions"))[0] == 401
    assert (await ctx.call("ivan", "PATCH", f"/regions/{zel['id']}", json={"name": "З"}))[0] == 403
    status, out = await ctx.call(
        "boss", "PATCH", f"/regions/{zel['id']}", json={"name": "Зеленоград (Москва)"}
    )
    assert status == 200 and out["name"] == "Зеленоград (Москва)"
    assert (await ctx.call("ivan", "DELETE", f"/regions/{zel['id']}"))[0] == 403
    assert (await ctx.call("adm", "DELETE", f"/regions/{zel['id']}"))[0] == 204
    status, rows = await ctx.call("ivan", "GET", "/regions")
    assert [r["code"] for r in rows] == ["RU-MOW"]
    status, rows = await ctx.call("ivan", "GET", "/regions", params={"include_inactive": "true"})
    assert len(rows) == 2
    assert (await ctx.call("adm", "GET", "/regions/999999"))[0] == 404
    assert (await ctx.call("adm", "PATCH", "/regions/999999", json={"name": "x"}))[0] == 404
    # An inactive region is not offered for new cards.
    status, out = await ctx.call(
        "ivan", "POST", "/contacts", json={"name": "X", "region_id": zel["id"]}
    )
    assert status == 422 and out["details"]["field"] == "region_id"
    status, _ = await ctx.call(
        "ivan", "POST", "/contacts", json={"name": "X", "region_id": moscow["id"]}
    )
    assert status == 201


async def test_sources(client: Any) -> None:
    ctx = await setup_team(client)
    direct = {"kind": "ad_channel", "code": "yandex_direct", "name": "Яндекс Директ"}
    for who, status in (("ivan", 403), (None, 401)):
        assert (await ctx.call(who, "POST", "/sources", json=direct))[0] == status
    status, channel = await ctx.call("boss", "POST", "/sources", json=direct)
    assert status == 201 and channel["kind_name_ru"] == "Рекламный канал"
    assert (await ctx.call("adm", "POST", "/sources", json=direct))[0] == 409
    campaign = {
        "kind": "campaign",
        "code": "spring",
        "name": "Весна",
        "parent_id": channel["id"],
        "utm": {"utm_source": "yandex", "utm_campaign": "spring"},
    }
    status, spring = await ctx.call("adm", "POST", "/sources", json=campaign)
    assert status == 201 and spring["utm"]["utm_campaign"] == "spring"
    status, out = await ctx.call("adm", "POST", "/sources", json={**direct, "kind": "tv"})
    assert status == 422 and "kind" in out["details"]["fields"]
    status, rows = await ctx.call("anna", "GET", "/sources", params={"kind": "campaign"})
    assert status == 200 and [r["code"] for r in rows] == ["spring"]
    assert (await ctx.call("anna", "GET", f"/sources/{spring['id']}"))[0] == 200
    assert (await ctx.call("anna", "PATCH", f"/sources/{spring['id']}", json={"name": "x"}))[
        0
    ] == 403
    status, out = await ctx.call(
        "boss",
        "PATCH",
        f"/sources/{spring['id']}",
        json={"code": "yandex_direct", "kind": "ad_channel"},
    )
    assert status == 409
    status, out = await ctx.call(
        "boss", "PATCH", f"/sources/{spring['id']}", json={"name": "Весна-2026"}
    )
    assert status == 200 and out["name"] == "Весна-2026"
    assert (await ctx.call("anna", "DELETE", f"/sources/{spring['id']}"))[0] == 403
    assert (await ctx.call("boss", "DELETE", f"/sources/{spring['id']}"))[0] == 204
    status, rows = await ctx.call("anna", "GET", "/sources")
    assert [r["code"] for r in rows] == ["yandex_direct"]
    assert (await ctx.call("adm", "DELETE", "/sources/999999"))[0] == 404
