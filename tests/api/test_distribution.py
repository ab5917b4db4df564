"""The distribution API: rules, the manual queue, the dialplan endpoint, the funnel statistics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from contact_center.keys import SESSIONS
from crm_core.clients.model import Contact, Phone
from crm_core.deals.model import Deal, Pipeline, PipelineStage
from crm_core.distribution import requests as web
from crm_core.distribution.schemas import WebForm
from crm_core.leads.model import Lead
from crm_core.phones import digits_reversed
from crm_core.reference.model import Source
from crm_core.rules import CrmRules
from tests.distribution.world import NOON_MSK, PASSWORD, add_rule, build
from tests.helpers import until


async def world(client: Any) -> tuple[dict[str, int], dict[str, dict[str, str]]]:
    async with client.app[SESSIONS]() as session:
        w = await build(session)
    headers = {}
    for login in ("adm", "boss", "ivan"):
        resp = await client.post("/api/v1/auth/token", json={"login": login, "password": PASSWORD})
        headers[login] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return w, headers


@pytest.fixture
async def dial_client(make_settings: Any, database_url: str, aiohttp_client_factory: Any) -> Any:
    """The app with a dial token for PBX ``main`` and no address allowed without it."""
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_DISTRIBUTION_DIAL_TOKENS='{"main": "s3cret-token"}',
        CC_DISTRIBUTION_DEFAULT_EXTENSION="600",
        CC_DISTRIBUTION_DEFAULT_REGION="RU-MOW",
    )
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))


async def test_rules_crud_and_permissions(client: Any) -> None:
    w, h = await world(client)
    body = {
        "region_id": w["moscow"],
        "managers": [
            {"user_id": w["ivan"], "weight": 2, "hours": {"mon": ["09:00-18:00"]}},
            {"user_id": w["anna"], "timezone": "Europe/Kaliningrad"},
        ],
    }
    resp = await client.post("/api/v1/distribution/rules", json=body, headers=h["ivan"])
    assert resp.status == 403
    resp = await client.post("/api/v1/distribution/rules", json=body, headers=h["boss"])
    assert resp.status == 201, await resp.text()
    rule = await resp.json()
    # No strategy sent: distribution.default_strategy.
    assert (rule["strategy"], rule["region"], len(rule["managers"])) == ("round_robin", "RU-MOW", 2)
    resp = await client.post("/api/v1/distribution/rules", json=body, headers=h["adm"])
    assert resp.status == 409 and (await resp.json())["details"]["field"] == "region_id"
    put = {"region_id": w["moscow"], "strategy": "fixed", "managers": [{"user_id": w["petr"]}]}
    resp = await client.put(f"/api/v1/distribution/rules/{rule['id']}", json=put, headers=h["boss"])
    assert resp.status == 200 and (await resp.json())["managers"][0]["user_id"] == w["petr"]
    listing = await (await client.get("/api/v1/distribution/rules", headers=h["boss"])).json()
    assert [r["strategy"] for r in listing["items"]] == ["fixed"]
    resp = await client.delete(f"/api/v1/distribution/rules/{rule['id']}", headers=h["boss"])
    assert resp.status == 204
    resp = await client.get(f"/api/v1/distribution/rules/{rule['id']}", headers=h["boss"])
    assert resp.status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": "fixed", "managers": []}, "managers"),
        ({"strategy": "sometimes", "managers": []}, "strategy"),
        ({"managers": [{"user_id": 1, "hours": {"mon": ["9-18"]}}]}, "hours"),
        ({"managers": [{"user_id": 1, "hours": {"funday": ["09:00-10:00"]}}]}, "hours"),
        ({"managers": [{"user_id": 1, "timezone": "Mars/Olympus"}]}, "timezone"),
        ({"managers": [{"user_id": 999999}]}, "managers.0.user_id"),
        ({"region_id": 999999, "strategy": "manual"}, "region_id"),
    ],
)
async def test_bad_rules_name_the_field(client: Any, body: dict[str, Any], field: str) -> None:
    _, h = await world(client)
    resp = await client.post("/api/v1/distribution/rules", json=body, headers=h["boss"])
    assert resp.status == 422, await resp.text()
    assert field in await resp.text()


async def test_dial_answers_plain_text_json_and_safe_defaults(dial_client: Any) -> None:
    client = dial_client
    w, h = await world(client)
    token = {"X-PBX-Token": "s3cret-token"}
    url = "/api/v1/routing/dial?caller=84951112233&did=74950000000"
    assert (await client.get(url)).status == 401  # loopback is not enough once tokens exist
    assert (await client.get(url, headers={"X-PBX-Token": "wrong"})).status == 401
    # No rule yet: the default extension.
    resp = await client.get(url, headers=token)
    assert resp.status == 200 and resp.content_type == "text/plain"
    assert await resp.text() == "600"
    # A rule made through the API reaches the (cached) dialplan at once.
    body = {"region_id": w["moscow"], "strategy": "fixed", "managers": [{"user_id": w["anna"]}]}
    assert (
        await client.post("/api/v1/distribution/rules", json=body, headers=h["boss"])
    ).status == 201
    await until(lambda: _dial_text(client, url, token), timeout=5)
    assert await (await client.get(url, headers=token)).text() == "102"
    resp = await client.get(url + "&format=json&token=s3cret-token")
    answer = await resp.json()
    assert answer == {
        "extension": "102",
        "user_id": w["anna"],
        "reason": "fixed",
        "queued": False,
        "region_id": w["moscow"],
    }
    # An existing client goes to his own manager's extension.
    async with client.app[SESSIONS]() as session:
        contact = Contact(name="Клиент", responsible_id=w["petr"])
        session.add(contact)
        await session.flush()
        number = "+74951112233"
        session.add(Phone(contact_id=contact.id, e164=number, digits_rev=digits_reversed(number)))
        await session.commit()
    assert await (await client.get(url, headers=token)).text() == "103"


async def test_through_a_trusted_proxy_an_outside_client_is_not_loopback(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    """With nginx on the same host, every request arrives from loopback: the dialplan's
    loopback allowance must hold for the PBX asking directly, not for whoever nginx serves."""
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_SERVER_TRUSTED_PROXIES='["127.0.0.1", "::1"]',
        CC_DISTRIBUTION_DEFAULT_EXTENSION="600",
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    url = "/api/v1/routing/dial?caller=84951112233&did=74950000000"
    assert await (await client.get(url)).text() == "600"  # the PBX on this host
    proxied = await client.get(url, headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status == 401
    # A client naming loopback through the proxy is still the outside address nginx saw.
    spoofed = await client.get(url, headers={"X-Forwarded-For": "127.0.0.1, 203.0.113.9"})
    assert spoofed.status == 401


async def _dial_text(client: Any, url: str, headers: dict[str, str]) -> bool:
    return await (await client.get(url, headers=headers)).text() == "102"


async def test_dial_falls_back_when_the_database_is_slow(
    make_settings: Any, postgres_url: str, aiohttp_client_factory: Any
) -> None:
    """A round-robin turn blocked by another transaction's row lock: the dialplan still gets
    the default extension within distribution.dial_timeout_ms."""
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=postgres_url,
        CC_DISTRIBUTION_DEFAULT_EXTENSION="600",
        CC_DISTRIBUTION_DIAL_TIMEOUT_MS="200",
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    w, _ = await world(client)
    async with client.app[SESSIONS]() as session:
        rule_id = await add_rule(session, None, "round_robin", w["ivan"], w["anna"])
    url = "/api/v1/routing/dial?caller=%2B79990000000&did=%2B74950000000&format=json"
    # The first dial of a fresh server prepares its statements: on a slow, busy machine that
    # alone can pass 200 ms. Once warm, a dial answers from the rules.
    for _ in range(5):
        if (await (await client.get(url)).json())["reason"] == "round_robin":
            break
    else:
        raise AssertionError("no dial answered from the rules within 200 ms")
    async with client.app[SESSIONS]() as blocker:
        await blocker.execute(
            text("SELECT id FROM distribution_rules WHERE id = :id FOR UPDATE"), {"id": rule_id}
        )
        answer = await (await client.get(url)).json()
        await blocker.rollback()
    assert (answer["extension"], answer["reason"]) == ("600", "timeout")


async def test_region_codes_naming_no_region_are_named_in_the_log_and_healthz(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any, caplog: Any
) -> None:
    """distribution.did_regions / default_region codes that name no region are skipped when a
    call's region is chosen; the operator is told once, which setting and which code."""
    from contact_center.app import create_app
    from contact_center.keys import TRACKER

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_DISTRIBUTION_DID_REGIONS='{"8 499 000-07-77": "RU-NOPE"}',
        CC_DISTRIBUTION_DEFAULT_REGION="RU-MOW",
    )
    caplog.set_level("WARNING", logger="contact_center.tracking_service")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    doc = await (await client.get("/healthz")).json()
    assert doc["tracking"] == {"status": "ok"}  # nothing has read the directory yet
    resp = await client.get(
        "/api/v1/routing/dial", params={"caller": "+79160000001", "did": "+74990000777"}
    )
    assert resp.status == 200
    doc = await (await client.get("/healthz")).json()
    assert doc["tracking"]["status"] == "degraded"
    assert doc["tracking"]["unknown_region_codes"] == {
        "distribution.default_region": "RU-MOW",
        "distribution.did_regions.+74990000777": "RU-NOPE",
    }
    named = [r.getMessage() for r in caplog.records if "names no region" in r.getMessage()]
    assert len(named) == 2 and any("'RU-NOPE'" in m for m in named), named
    # Moscow created: the next reload clears it; RU-NOPE is still named, not logged again.
    await world(client)
    caplog.clear()
    client.app[TRACKER].invalidate()
    await client.app[TRACKER].directory()
    doc = await (await client.get("/healthz")).json()
    assert doc["tracking"]["unknown_region_codes"] == {
        "distribution.did_regions.+74990000777": "RU-NOPE"
    }
    assert not [r for r in caplog.records if "names no region" in r.getMessage()]


async def test_a_region_created_through_the_api_routes_calls_at_once(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    """distribution.default_region names a region nobody has made yet; once an admin creates it
    and gives it a rule, the next call goes there, without waiting for the tracking directory's
    or the rule book's cache period (both 60 s here)."""
    from contact_center.app import create_app

    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_DISTRIBUTION_DEFAULT_REGION="RU-KDA",
        CC_DISTRIBUTION_DEFAULT_EXTENSION="600",
        CC_DISTRIBUTION_RULE_CACHE_S="60",
        CC_TRACKING_DIRECTORY_CACHE_S="60",
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    w, h = await world(client)
    url = "/api/v1/routing/dial?caller=%2B79990000001&did=%2B74950000000&format=json"
    first = await (await client.get(url)).json()
    assert (first["extension"], first["region_id"]) == ("600", None)
    resp = await client.post(
        "/api/v1/regions",
        json={"code": "RU-KDA", "name": "Краснодарский край"},
        headers=h["adm"],
    )
    assert resp.status == 201, await resp.text()
    region_id = (await resp.json())["id"]
    body = {"region_id": region_id, "strategy": "fixed", "managers": [{"user_id": w["anna"]}]}
    resp = await client.post("/api/v1/distribution/rules", json=body, headers=h["boss"])
    assert resp.status == 201, await resp.text()

    async def routed() -> bool:
        answer = await (await client.get(url)).json()
        return (answer["extension"], answer["region_id"]) == ("102", region_id)

    await until(routed, timeout=5)
    doc = await (await client.get("/healthz")).json()
    assert "unknown_region_codes" not in doc["tracking"]


async def test_manual_queue_over_http(client: Any) -> None:
    w, h = await world(client)
    async with client.app[SESSIONS]() as session:
        await add_rule(session, None, "manual")
        row, _ = await web.submit(
            session,
            WebForm(name="Ждёт", phone="+74950001122"),
            web.Intake(site="main"),
            rules=CrmRules(),
            policy=web.Policy(),
            now=NOON_MSK,
        )
        await session.commit()
    assert (await client.get("/api/v1/distribution/queue", headers=h["ivan"])).status == 403
    queue = await (await client.get("/api/v1/distribution/queue", headers=h["boss"])).json()
    assert queue["total"] == 1 and queue["items"][0]["id"] == row.id
    url = f"/api/v1/distribution/queue/{row.id}/assign"
    resp = await client.post(url, json={"user_id": w["anna"]}, headers=h["boss"])
    assert resp.status == 200, await resp.text()
    done = await resp.json()
    assert (done["status"], done["responsible_id"]) == ("assigned", w["anna"])
    assert done["task_id"] is not None
    resp = await client.post(url, json={"user_id": w["ivan"]}, headers=h["boss"])
    assert resp.status == 409 and (await resp.json())["error"] == "web-request-not-queued"
    resp = await client.post(
        "/api/v1/distribution/queue/999999/assign", json={"user_id": 1}, headers=h["boss"]
    )
    assert resp.status == 404


async def test_funnel_statistics_by_region_and_source(client: Any) -> None:
    w, h = await world(client)
    async with client.app[SESSIONS]() as session:
        await add_rule(session, None, "round_robin", w["ivan"], w["anna"])
        yandex = Source(kind="ad_channel", code="yandex", name="Яндекс Директ")
        session.add(yandex)
        await session.flush()
        ids = []
        for phone, region, source in (
            ("+74950000001", "RU-MOW", yandex.id),
            ("+74950000002", "RU-MOW", yandex.id),
            ("+74950000003", "RU-MOW", None),
            ("+78120000004", "RU-SPE", yandex.id),
        ):
            row, _ = await web.submit(
                session,
                WebForm(phone=phone, region=region),
                web.Intake(site="main", attribution={"source_id": source} if source else None),
                rules=CrmRules(),
                policy=web.Policy(),
                now=NOON_MSK,
            )
            ids.append(row.lead_id)
        await web.store_spam(
            session, web.Intake(site="main", fields={"phone": "+74950000009"}), now=NOON_MSK
        )
        pipeline = Pipeline(code="stats", name="Stats")
        session.add(pipeline)
        await session.flush()
        won = PipelineStage(pipeline_id=pipeline.id, code="w", name_ru="W", name_en="W", kind="won")
        session.add(won)
        await session.flush()
        deal = Deal(title="d", pipeline_id=pipeline.id, stage_id=won.id)
        session.add(deal)
        await session.flush()
        (await session.get(Lead, ids[0])).stage = "qualified"
        converted = await session.get(Lead, ids[1])
        converted.stage, converted.converted_at, converted.deal_id = "converted", NOON_MSK, deal.id
        await session.commit()
    day = timedelta(days=1)
    span = f"from={(NOON_MSK - day).isoformat()}&to={(NOON_MSK + day).isoformat()}"
    span = span.replace("+", "%2B")
    resp = await client.get(f"/api/v1/stats/web-requests?{span}", headers=h["boss"])
    assert resp.status == 200, await resp.text()
    rows = {r["key"]: r for r in (await resp.json())["items"]}
    moscow = rows["RU-MOW"]
    assert (moscow["requests"], moscow["leads"], moscow["qualified"]) == (3, 3, 2)
    assert (moscow["deals"], moscow["won"]) == (1, 1)
    assert moscow["lead_rate"] == 1.0 and moscow["qualified_rate"] == 0.6667
    assert moscow["won_rate"] == 1.0 and moscow["overall_rate"] == 0.3333
    assert (rows["RU-SPE"]["requests"], rows["RU-SPE"]["won"]) == (1, 0)
    resp = await client.get(f"/api/v1/stats/web-requests?{span}&group_by=source", headers=h["adm"])
    by_source = {r["key"]: r["requests"] for r in (await resp.json())["items"]}
    assert by_source == {"Яндекс Директ": 3, None: 1}
    bad = await client.get(
        "/api/v1/stats/web-requests?from=2026-03-02T00:00:00&to=2026-03-01T00:00:00%2B03:00",
        headers=h["boss"],
    )
    assert bad.status == 422 and "from" in await bad.text()
    assert (await client.get(f"/api/v1/stats/web-requests?{span}", headers=h["ivan"])).status == 403
