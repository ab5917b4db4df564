"""Legal entities and requisites over REST: checksums, history, who may and who may not."""

from __future__ import annotations

from typing import Any

from tests.api.test_clients_api import SBER, new_company, setup_team


async def test_requisites_lifecycle_and_permissions(client: Any) -> None:
    ctx = await setup_team(client)
    company = await new_company(ctx, "ivan", name="Сбер")
    entities = f"/companies/{company['id']}/legal-entities"
    body = {"name": "ПАО Сбербанк", "requisites": [SBER]}
    assert (await ctx.call("anna", "POST", entities, json=body))[0] == 404
    assert (await ctx.call(None, "POST", entities, json=body))[0] == 401
    status, entity = await ctx.call("ivan", "POST", entities, json=body)
    assert status == 201 and entity["requisites"][0]["inn"] == "7707083893"
    first = entity["requisites"][0]["id"]
    history = f"/legal-entities/{entity['id']}/requisites"

    # Change: a new set; the old one is retired and points to it.
    changed = {**SBER, "legal_address": "Москва, ул. Вавилова, 19"}
    assert (await ctx.call("anna", "PUT", f"/requisites/{first}", json=changed))[0] == 404
    status, new = await ctx.call("ivan", "PUT", f"/requisites/{first}", json=changed)
    assert status == 201 and new["legal_address"] == "Москва, ул. Вавилова, 19"
    status, body = await ctx.call("ivan", "PUT", f"/requisites/{first}", json=changed)
    assert status == 409 and body["error"] == "requisites-retired"
    status, rows = await ctx.call("ivan", "GET", history)
    assert [(r["id"], r["replaced_by_id"], r["retired_at"] is None) for r in rows] == [
        (first, new["id"], False),
        (new["id"], None, True),
    ]
    status, rows = await ctx.call("ivan", "GET", history, params={"include_retired": "false"})
    assert [r["id"] for r in rows] == [new["id"]]
    assert (await ctx.call("anna", "GET", history))[0] == 404
    assert (await ctx.call("boss", "GET", history))[0] == 200

    # Add and retire.
    extra = {"label": "для отгрузок", "full_name": "ПАО Сбербанк", "inn": "7707083893"}
    add = f"/legal-entities/{entity['id']}/requisites"
    assert (await ctx.call("anna", "POST", add, json=extra))[0] == 404
    status, added = await ctx.call("boss", "POST", add, json=extra)
    assert status == 201 and added["created_by_id"] == ctx.ids["boss"]
    assert (await ctx.call("anna", "POST", f"/requisites/{added['id']}/retire"))[0] == 404
    status, retired = await ctx.call("ivan", "POST", f"/requisites/{added['id']}/retire")
    assert status == 200 and retired["retired_at"] is not None
    assert (await ctx.call("ivan", "POST", f"/requisites/{added['id']}/retire"))[0] == 409
    status, card = await ctx.call("ivan", "GET", f"/companies/{company['id']}")
    assert [r["id"] for r in card["legal_entities"][0]["requisites"]] == [new["id"]]

    # Rename and deactivate the legal entity.
    patch = f"/legal-entities/{entity['id']}"
    assert (await ctx.call("anna", "PATCH", patch, json={"name": "X"}))[0] == 404
    status, out = await ctx.call("adm", "PATCH", patch, json={"is_active": False})
    assert status == 200 and not out["is_active"] and out["requisites"] == []
    assert (await ctx.call("adm", "GET", "/legal-entities/999999/requisites"))[0] == 404
    assert (await ctx.call("adm", "PUT", "/requisites/999999", json=SBER))[0] == 404


async def test_read_only_manager_gets_403(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    from contact_center.app import create_app

    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_MANAGERS_READ_ALL="true")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    ctx = await setup_team(client)
    company = await new_company(
        ctx, "ivan", name="Сбер", legal_entities=[{"name": "ЮЛ", "requisites": [SBER]}]
    )
    entity = company["legal_entities"][0]
    req_id = entity["requisites"][0]["id"]
    assert (await ctx.call("anna", "GET", f"/legal-entities/{entity['id']}/requisites"))[0] == 200
    assert (await ctx.call("anna", "PUT", f"/requisites/{req_id}", json=SBER))[0] == 403
    assert (await ctx.call("anna", "POST", f"/requisites/{req_id}/retire"))[0] == 403
    status, _ = await ctx.call(
        "anna", "POST", f"/companies/{company['id']}/legal-entities", json={"name": "X"}
    )
    assert status == 403


async def test_checksums_and_duplicates(client: Any) -> None:
    ctx = await setup_team(client)
    cases = [
        ({"inn": "7707083894"}, "invalid-inn", "inn"),
        ({"ogrn": "1027700132196"}, "invalid-ogrn", "ogrn"),
        ({"kpp": "77360100"}, "invalid-kpp", "kpp"),
        ({"bik": "144525225"}, "invalid-bik", "bik"),
        ({"settlement_account": "40702810938000000002"}, "invalid-account", "settlement_account"),
        (
            {"correspondent_account": "30101810400000000226"},
            "invalid-account",
            "correspondent_account",
        ),
        ({"inn": "500100732259"}, "inconsistent-requisites", "kpp"),  # an ИП has no KPP
    ]
    for change, error, field in cases:
        body = {"name": "X", "legal_entities": [{"name": "ЮЛ", "requisites": [{**SBER, **change}]}]}
        status, out = await ctx.call("ivan", "POST", "/companies", json=body)
        assert status == 422, (change, out)
        assert out["error"] == error
        assert out["details"]["field"] == f"legal_entities.0.requisites.0.{field}"
    ip = {"full_name": "ИП Иванов", "inn": "500100732259", "ogrn": "304500116000157"}
    status, _ = await ctx.call(
        "ivan",
        "POST",
        "/companies",
        json={"name": "ИП", "legal_entities": [{"name": "ИП", "requisites": [ip]}]},
    )
    assert status == 201
    owner = await new_company(
        ctx, "ivan", name="Сбер", legal_entities=[{"name": "ЮЛ", "requisites": [SBER]}]
    )
    other = await new_company(ctx, "ivan", name="Другая")
    status, out = await ctx.call(
        "ivan",
        "POST",
        f"/companies/{other['id']}/legal-entities",
        json={"name": "ЮЛ", "requisites": [SBER]},
    )
    assert status == 409 and out["details"]["duplicates"][0]["id"] == owner["id"]
    status, out = await ctx.call(
        "ivan",
        "POST",
        f"/legal-entities/{owner['legal_entities'][0]['id']}/requisites",
        json={**SBER, "inn": "12"},
    )
    assert status == 422 and out["details"] == {"field": "inn", "value": "12"}
