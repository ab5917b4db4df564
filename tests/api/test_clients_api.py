"""Client cards over REST: who may and who may not, duplicates, merges, search, the lookup."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from contact_center.keys import BUS, SESSIONS
from crm_core.users import service as users
from tests.helpers import until

SBER = {
    "full_name": "ПАО Сбербанк",
    "inn": "7707083893",
    "kpp": "773601001",
    "ogrn": "1027700132195",
    "bik": "044525225",
    "correspondent_account": "30101810400000000225",
    "settlement_account": "40702810938000000001",
}


class Ctx:
    """Users and their auth headers: adm (admin), boss (head), ivan and anna (managers)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.ids: dict[str, int] = {}
        self.headers: dict[str, dict[str, str]] = {}

    async def call(self, who: str | None, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = self.headers[who] if who else {}
        resp = await self.client.request(method, "/api/v1" + path, headers=headers, **kw)
        body = await resp.json() if resp.content_type == "application/json" else None
        return resp.status, body


async def setup_team(client: Any) -> Ctx:
    ctx = Ctx(client)
    async with client.app[SESSIONS]() as session:
        for login, role in (
            ("adm", "admin"),
            ("boss", "head"),
            ("ivan", "manager"),
            ("anna", "manager"),
        ):
            user, _ = await users.create_user(
                session, login=login, role=role, password="password1", scrypt_n=1024
            )
            ctx.ids[login] = user.id
        await session.commit()
    await login_all(ctx)
    return ctx


async def login_all(ctx: Ctx) -> None:
    for login in ctx.ids:
        resp = await ctx.client.post(
            "/api/v1/auth/token", json={"login": login, "password": "password1"}
        )
        ctx.headers[login] = {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def new_contact(ctx: Ctx, who: str, **body: Any) -> dict[str, Any]:
    status, out = await ctx.call(who, "POST", "/contacts", json={"name": "Контакт", **body})
    assert status == 201, out
    return out


async def new_company(ctx: Ctx, who: str, **body: Any) -> dict[str, Any]:
    status, out = await ctx.call(who, "POST", "/companies", json={"name": "Компания", **body})
    assert status == 201, out
    return out


async def test_contact_permissions(client: Any) -> None:
    ctx = await setup_team(client)
    made = await new_contact(
        ctx, "ivan", name="Сергей", phones=["8 (495) 123-45-67"], potential_amount="2500000.50"
    )
    assert made["responsible_id"] == ctx.ids["ivan"] and made["phones"] == ["+74951234567"]
    assert made["potential_amount"] == "2500000.50"  # money travels as a string
    path = f"/contacts/{made['id']}"
    for who, status in (("ivan", 200), ("boss", 200), ("adm", 200), ("anna", 404), (None, 401)):
        assert (await ctx.call(who, "GET", path))[0] == status, who
    for who, status in (("anna", 404), ("ivan", 200), ("boss", 200), ("adm", 200), (None, 401)):
        got, body = await ctx.call(who, "PATCH", path, json={"position": who or "x"})
        assert got == status, (who, body)
    # The list shows a manager his own only.
    await new_contact(ctx, "anna", name="Мария")
    for who, total in (("ivan", 1), ("anna", 1), ("boss", 2), ("adm", 2)):
        status, body = await ctx.call(who, "GET", "/contacts")
        assert status == 200 and body["total"] == total, who
    assert (await ctx.call(None, "GET", "/contacts"))[0] == 401
    # Delete: head and admin only; the owner manager may not.
    assert (await ctx.call("ivan", "DELETE", path))[0] == 403
    assert (await ctx.call("anna", "DELETE", path))[0] == 403
    assert (await ctx.call("boss", "DELETE", path))[0] == 204
    assert (await ctx.call("adm", "GET", path))[0] == 404
    assert (await ctx.call("adm", "DELETE", "/contacts/999999"))[0] == 404
    assert (await ctx.call("adm", "GET", "/contacts/abc"))[0] == 404


async def test_managers_read_all_gives_read_not_write(
    make_settings: Callable[..., Any], database_url: str, aiohttp_client_factory: Any
) -> None:
    from contact_center.app import create_app

    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_MANAGERS_READ_ALL="true")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    ctx = await setup_team(client)
    made = await new_contact(ctx, "ivan", name="Сергей")
    path = f"/contacts/{made['id']}"
    assert (await ctx.call("anna", "GET", path))[0] == 200
    status, body = await ctx.call("anna", "PATCH", path, json={"name": "X"})
    assert status == 403 and body["error"] == "permission-denied"
    assert (await ctx.call("anna", "GET", "/contacts"))[1]["total"] == 1


async def test_manager_may_not_assign_another_manager(client: Any) -> None:
    ctx = await setup_team(client)
    status, body = await ctx.call(
        "ivan", "POST", "/contacts", json={"name": "X", "responsible_id": ctx.ids["anna"]}
    )
    assert status == 403 and body["details"]["field"] == "responsible_id"
    made = await new_contact(ctx, "boss", name="X", responsible_id=ctx.ids["anna"])
    assert made["responsible_id"] == ctx.ids["anna"]
    status, _ = await ctx.call(
        "anna", "PATCH", f"/contacts/{made['id']}", json={"responsible_id": ctx.ids["ivan"]}
    )
    assert status == 403
    status, body = await ctx.call(
        "boss", "PATCH", f"/contacts/{made['id']}", json={"responsible_id": ctx.ids["ivan"]}
    )
    assert status == 200 and body["responsible_id"] == ctx.ids["ivan"]


async def test_validation_names_the_fields(client: Any) -> None:
    ctx = await setup_team(client)
    cases = [
        ({"name": ""}, "validation-failed", "name"),
        ({"name": "X", "purchase_mode": "sometimes"}, "validation-failed", "purchase_mode"),
        ({"name": "X", "bogus": 1}, "validation-failed", "bogus"),
        ({"name": "X", "client_type": "pirate"}, "invalid-card-field", "client_type"),
        ({"name": "X", "phones": ["+74951234567", "12"]}, "invalid-phone", "phones.1"),
        ({"name": "X", "emails": ["nope"]}, "invalid-email", "emails.0"),
        ({"name": "X", "custom": {"colour": "red"}}, "unknown-custom-field", "custom.colour"),
        ({"name": "X", "source_id": 12345}, "invalid-reference", "source_id"),
    ]
    for body, error, field in cases:
        status, out = await ctx.call("ivan", "POST", "/contacts", json=body)
        assert status == 422, (body, out)
        assert out["error"] == error, out
        named = out["details"].get("field") or next(iter(out["details"].get("fields", {})), None)
        assert named == field, out


async def test_custom_fields_from_config(
    make_settings: Callable[..., Any], database_url: str, aiohttp_client_factory: Any
) -> None:
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CRM_CUSTOM_FIELDS='[{"name": "segment", "type": "enum", "options": ["A", "B"]},'
        ' {"name": "since", "type": "date"}]',
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    ctx = await setup_team(client)
    made = await new_contact(ctx, "ivan", custom={"segment": "A", "since": "2020-01-31"})
    assert made["custom"] == {"segment": "A", "since": "2020-01-31"}
    status, out = await ctx.call(
        "ivan", "POST", "/contacts", json={"name": "X", "custom": {"segment": "Z"}}
    )
    assert status == 422 and out["details"]["field"] == "custom.segment"


async def test_duplicates_refused_then_merged_on_request(client: Any) -> None:
    ctx = await setup_team(client)
    first = await new_contact(ctx, "ivan", name="Сергей", phones=["+74951234567"])
    status, body = await ctx.call(
        "ivan", "POST", "/contacts", json={"name": "С.", "phones": ["8 495 123-45-67"]}
    )
    assert status == 409 and body["error"] == "duplicate-client"
    assert body["details"] == {
        "duplicates": [
            {"type": "contact", "id": first["id"], "matched_on": "phone", "value": "+74951234567"}
        ]
    }
    status, body = await ctx.call(
        "ivan",
        "POST",
        "/contacts",
        json={
            "name": "С.",
            "phones": ["8 495 123-45-67"],
            "emails": ["s@x.ru"],
            "on_duplicate": "merge",
        },
    )
    assert status == 200 and body["id"] == first["id"] and body["emails"] == ["s@x.ru"]
    # Another manager's duplicate: refused even with merge (he may not change it), naming
    # neither the record nor its name (issue 15).
    status, body = await ctx.call(
        "anna",
        "POST",
        "/contacts",
        json={"name": "С.", "phones": ["+74951234567"], "on_duplicate": "merge"},
    )
    assert status == 403
    assert body["details"]["duplicates"] == [
        {"type": "contact", "id": None, "matched_on": "phone", "value": "+74951234567"}
    ]
    assert str(first["id"]) not in body["message"] and "Сергей" not in str(body)
    company = await new_company(
        ctx, "ivan", name="Сбербанк", legal_entities=[{"name": "ЮЛ", "requisites": [SBER]}]
    )
    sber = {"name": "Сбер", "legal_entities": [{"name": "ЮЛ", "requisites": [SBER]}]}
    for who, shown_id in (("anna", None), ("boss", company["id"]), ("ivan", company["id"])):
        status, body = await ctx.call(who, "POST", "/companies", json=sber)
        assert status == 409 and body["error"] == "duplicate-client", who
        assert body["details"]["duplicates"] == [
            {"type": "company", "id": shown_id, "matched_on": "inn", "value": "7707083893"}
        ], who
        assert (f"company {company['id']}" in body["message"]) == (shown_id is not None)
        assert "Сбербанк" not in str(body)


async def test_a_duplicate_of_a_client_you_may_not_see_is_not_named(client: Any) -> None:
    """Issue 15: a 409 told any manager the id of another manager's client (a contact, a
    company, the INN of requisites, a lead's matches); now only that it exists, and on what."""
    ctx = await setup_team(client)
    contact = await new_contact(ctx, "ivan", name="Тайный", emails=["secret@x.ru"])
    company = await new_company(
        ctx, "ivan", name="Тайная", legal_entities=[{"name": "ЮЛ", "requisites": [SBER]}]
    )
    other = await new_company(ctx, "anna", name="Своя")
    attempts = [
        (
            "/contacts",
            {"name": "Мой", "emails": ["SECRET@x.ru"]},
            "contact",
            "email",
            "secret@x.ru",
        ),
        (
            f"/companies/{other['id']}/legal-entities",
            {"name": "ЮЛ", "requisites": [SBER]},
            "company",
            "inn",
            "7707083893",
        ),
    ]
    for path, body, kind, matched_on, value in attempts:
        status, out = await ctx.call("anna", "POST", path, json=body)
        assert status == 409 and out["error"] == "duplicate-client", path
        assert out["details"] == {
            "duplicates": [{"type": kind, "id": None, "matched_on": matched_on, "value": value}]
        }
        for named in (f"contact {contact['id']}", f"company {company['id']}", "Тайн"):
            assert named not in out["message"], path
    # A lead with the same e-mail lists the match without its id for Anna, with it for Ivan.
    status, lead = await ctx.call(
        "anna", "POST", "/leads", json={"contact_name": "Лид", "emails": ["secret@x.ru"]}
    )
    assert status == 201
    assert lead["duplicates"] == [
        {"type": "contact", "id": None, "matched_on": "email", "value": "secret@x.ru"}
    ]
    status, seen = await ctx.call("boss", "GET", f"/leads/{lead['id']}")
    assert seen["duplicates"][0]["id"] == contact["id"]


async def test_merge_endpoints(client: Any) -> None:
    ctx = await setup_team(client)
    a = await new_contact(ctx, "ivan", name="A", phones=["+74951234567"])
    b = await new_contact(ctx, "ivan", name="B", phones=["+74951234568"], position="директор")
    c = await new_contact(ctx, "anna", name="C")
    assert (
        await ctx.call("ivan", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": c["id"]})
    )[0] == 404
    assert (
        await ctx.call("anna", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": c["id"]})
    )[0] == 404
    status, body = await ctx.call(
        "ivan", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": a["id"]}
    )
    assert status == 422 and body["error"] == "merge-not-allowed"
    status, body = await ctx.call(
        "ivan", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": b["id"]}
    )
    assert status == 200, body
    assert body["phones"] == ["+74951234567", "+74951234568"] and body["position"] == "директор"
    status, body = await ctx.call("ivan", "GET", f"/contacts/{b['id']}")
    assert status == 404 and body["error"] == "client-merged"
    assert body["details"]["merged_into_id"] == a["id"]
    status, _ = await ctx.call(
        "boss", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": c["id"]}
    )
    assert status == 200
    x = await new_company(ctx, "ivan", name="X")
    y = await new_company(ctx, "anna", name="Y", phones=["+78125550011"])
    assert (
        await ctx.call("ivan", "POST", f"/companies/{x['id']}/merge", json={"loser_id": y["id"]})
    )[0] == 404
    status, body = await ctx.call(
        "adm", "POST", f"/companies/{x['id']}/merge", json={"loser_id": y["id"]}
    )
    assert status == 200 and body["phones"] == ["+78125550011"]


async def test_links_and_decision_maker(client: Any) -> None:
    ctx = await setup_team(client)
    company = await new_company(ctx, "ivan", name="Ромашка")
    a = await new_contact(ctx, "ivan", name="A")
    b = await new_contact(ctx, "ivan", name="B")
    foreign = await new_company(ctx, "anna", name="Чужая")
    path = f"/contacts/{a['id']}/companies"
    body = {"company_id": company["id"], "position": "директор", "is_decision_maker": True}
    assert (await ctx.call("anna", "POST", path, json=body))[0] == 404
    status, link = await ctx.call("ivan", "POST", path, json=body)
    assert status == 201 and link["is_decision_maker"]
    assert (await ctx.call("ivan", "POST", path, json=body))[0] == 409
    assert (await ctx.call("ivan", "POST", path, json={"company_id": foreign["id"]}))[0] == 404
    status, _ = await ctx.call(
        "ivan",
        "POST",
        f"/contacts/{b['id']}/companies",
        json={"company_id": company["id"], "is_decision_maker": True},
    )
    assert status == 201
    status, card = await ctx.call("ivan", "GET", f"/companies/{company['id']}")
    assert [(c["contact_id"], c["is_decision_maker"]) for c in card["contacts"]] == [
        (b["id"], True),
        (a["id"], False),
    ]
    link_path = f"/contacts/{a['id']}/companies/{company['id']}"
    assert (await ctx.call("anna", "PATCH", link_path, json={"position": "x"}))[0] == 404
    status, link = await ctx.call("ivan", "PATCH", link_path, json={"position": None})
    assert status == 200 and link["position"] is None
    status, card = await ctx.call("ivan", "GET", f"/contacts/{a['id']}")
    assert card["companies"][0]["company_name"] == "Ромашка"
    assert (await ctx.call("anna", "DELETE", link_path))[0] == 404
    assert (await ctx.call("boss", "DELETE", link_path))[0] == 204
    assert (await ctx.call("ivan", "DELETE", link_path))[0] == 404


async def test_company_permissions_and_group(client: Any) -> None:
    ctx = await setup_team(client)
    head = await new_company(ctx, "ivan", name="Холдинг")
    member = await new_company(ctx, "ivan", name="Филиал", head_id=head["id"])
    path = f"/companies/{head['id']}"
    for who, status in (("ivan", 200), ("boss", 200), ("adm", 200), ("anna", 404), (None, 401)):
        assert (await ctx.call(who, "GET", path))[0] == status, who
        assert (await ctx.call(who, "GET", f"{path}/group"))[0] == status, who
    status, group = await ctx.call("ivan", "GET", f"/companies/{member['id']}/group")
    assert group == {
        "company_id": member["id"],
        "top_head_id": head["id"],
        "company_ids": [member["id"]],
    }
    status, group = await ctx.call("ivan", "GET", f"{path}/group")
    assert group["company_ids"] == sorted([head["id"], member["id"]])
    status, body = await ctx.call("ivan", "PATCH", path, json={"head_id": member["id"]})
    assert status == 422 and body["error"] == "company-group-cycle"
    for who, status in (("anna", 404), ("ivan", 200), ("boss", 200), ("adm", 200)):
        assert (await ctx.call(who, "PATCH", path, json={"website": "x.ru"}))[0] == status, who
    assert (
        await ctx.call("anna", "POST", "/companies", json={"name": "Z", "head_id": head["id"]})
    )[0] == 422
    status, body = await ctx.call("ivan", "GET", "/companies?head_id=" + str(head["id"]))
    assert body["total"] == 2
    status, body = await ctx.call("boss", "DELETE", path)
    assert status == 409 and body["error"] == "client-has-history"  # it heads a group
    assert (await ctx.call("ivan", "DELETE", f"/companies/{member['id']}"))[0] == 403
    assert (await ctx.call("adm", "DELETE", f"/companies/{member['id']}"))[0] == 204


async def test_search(client: Any) -> None:
    ctx = await setup_team(client)
    made = await new_company(
        ctx,
        "ivan",
        name="ООО «Ромашка»",
        phones=["+74951234567"],
        legal_entities=[{"name": "ЮЛ", "requisites": [SBER]}],
    )
    await new_company(ctx, "ivan", name="Другая")
    for q in ("ромашка", "РОМАШКА", "7707083893", "8 (495) 123-45-67", "4567"):
        status, body = await ctx.call("ivan", "GET", "/companies", params={"q": q})
        assert status == 200 and [c["id"] for c in body["items"]] == [made["id"]], q
        status, body = await ctx.call("anna", "GET", "/companies", params={"q": q})
        assert body["total"] == 0, q  # not his
        status, body = await ctx.call("boss", "GET", "/companies", params={"q": q})
        assert body["total"] == 1, q


async def test_list_filters_and_pagination(client: Any) -> None:
    ctx = await setup_team(client)
    for i in range(3):
        await new_contact(ctx, "ivan", name=f"Опт {i}", client_type="wholesaler")
    await new_contact(ctx, "ivan", name="Розница", client_type="retail")
    status, body = await ctx.call(
        "ivan",
        "GET",
        "/contacts",
        params={"client_type": "wholesaler", "limit": "2", "offset": "1"},
    )
    assert status == 200 and body["total"] == 3 and len(body["items"]) == 2
    assert [c["name"] for c in body["items"]] == ["Опт 1", "Опт 2"]
    status, body = await ctx.call(
        "ivan", "GET", "/contacts", params={"created_from": "2000-01-01T00:00:00"}
    )
    assert status == 422 and "created_from" in body["details"]["fields"]  # no zone: refused
    status, body = await ctx.call(
        "ivan", "GET", "/contacts", params={"created_from": "2000-01-01T00:00:00+03:00"}
    )
    assert body["total"] == 4
    status, body = await ctx.call("ivan", "GET", "/contacts", params={"limit": "0"})
    assert status == 422


async def test_lookup_endpoint(client: Any) -> None:
    ctx = await setup_team(client)
    company = await new_company(ctx, "ivan", name="Ромашка")
    contact = await new_contact(
        ctx,
        "ivan",
        name="Сергей",
        phones=["+74951234567"],
        companies=[{"company_id": company["id"], "is_decision_maker": True}],
    )
    for who in ("ivan", "boss", "adm"):
        status, body = await ctx.call(
            who, "GET", "/clients/lookup", params={"phone": "8 (495) 123-45-67"}
        )
        assert status == 200, who
        assert body == {
            "phone": "+74951234567",
            "match": {
                "contact_id": contact["id"],
                "company_id": company["id"],
                "lead_id": None,
                "responsible_id": ctx.ids["ivan"],
                "name": "Сергей",
                "matched_on": "e164",
                "phone": "+74951234567",
            },
        }
    # Issue 15: another manager learnt whose number it is; for him it is unknown.
    status, body = await ctx.call(
        "anna", "GET", "/clients/lookup", params={"phone": "8 (495) 123-45-67"}
    )
    assert status == 200 and body == {"phone": "+74951234567", "match": None}
    status, body = await ctx.call(
        "ivan", "GET", "/clients/lookup", params={"phone": "+7 999 000-00-00"}
    )
    assert status == 200 and body == {"phone": "+79990000000", "match": None}
    assert (await ctx.call(None, "GET", "/clients/lookup", params={"phone": "1"}))[0] == 401
    assert (await ctx.call("ivan", "GET", "/clients/lookup"))[0] == 422


async def test_events_reach_the_responsible_and_the_heads(client: Any) -> None:
    seen: list[Any] = []

    async def on(event: Any) -> None:
        seen.append(event)

    client.app[BUS].subscribe(
        on, name="test", events=["client.created", "client.updated", "client.merged"]
    )
    ctx = await setup_team(client)
    a = await new_contact(ctx, "ivan", name="A", phones=["+74951234567"])
    b = await new_contact(ctx, "ivan", name="B")
    await ctx.call("ivan", "PATCH", f"/contacts/{a['id']}", json={"position": "x"})
    await ctx.call("ivan", "POST", f"/contacts/{a['id']}/merge", json={"loser_id": b["id"]})
    await until(lambda: len(seen) >= 4)
    assert [e.name for e in seen] == [
        "client.created",
        "client.created",
        "client.updated",
        "client.merged",
    ]
    audience = (f"user:{ctx.ids['ivan']}", "role:head")
    assert all(e.audience == audience for e in seen)
    assert seen[0].kind == "contact" and seen[0].client_id == a["id"]
    assert seen[2].fields == ("position",)
    assert (seen[3].survivor_id, seen[3].loser_id) == (a["id"], b["id"])
    # A failed request publishes nothing.
    await ctx.call("ivan", "POST", "/contacts", json={"name": "C", "phones": ["+74951234567"]})
    await ctx.call("ivan", "GET", "/contacts")
    assert len(seen) == 4


@pytest.fixture(params=["memory", "redis"])
async def lookup_client(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Any],
    database_url: str,
    aiohttp_client_factory: Any,
) -> Any:
    from contact_center.app import create_app

    env = {
        "CC_DATABASE_URL": database_url,
        "CC_CRM_LOOKUPS_PER_MINUTE": "3",
        "CC_CRM_MANAGERS_READ_ALL": "true",
    }
    if request.param == "redis":
        env.update(
            CC_REDIS_URL=request.getfixturevalue("redis_url"),
            CC_REDIS_PREFIX=request.getfixturevalue("redis_prefix"),
        )
    settings = make_settings(**env)
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


async def test_lookup_is_rate_limited_per_user(lookup_client: Any) -> None:
    """Issue 15: nothing stopped a user from walking the client base number by number."""
    ctx = await setup_team(lookup_client)
    made = await new_contact(ctx, "ivan", name="Сергей", phones=["+74951234567"])

    async def lookup(who: str, number: str) -> tuple[int, Any]:
        return await ctx.call(who, "GET", "/clients/lookup", params={"phone": number})

    # crm.managers_read_all: Anna may read Ivan's contact, so she finds it...
    assert (await lookup("anna", "+74951234567"))[1]["match"]["contact_id"] == made["id"]
    assert [(await lookup("anna", f"+7495000000{i}"))[0] for i in range(2)] == [200, 200]
    # ... three times a minute, then 429 with the stable error shape.
    status, body = await lookup("anna", "+74951234567")
    assert status == 429
    assert body["error"] == "rate-limited" and set(body) == {"error", "message", "details"}
    assert body["details"]["retry_after_s"] == 60
    # Per user: Ivan still has his own.
    assert (await lookup("ivan", "+74951234567"))[0] == 200
