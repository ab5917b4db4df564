"""``POST /api/v1/leads/web`` end to end: site keys, CORS, honeypot, rate limits, attribution,
distribution, the lead, the task and the manager's notification."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from contact_center.keys import BUS, SESSIONS
from crm_core.clock import ManualClock
from crm_core.distribution.events import WebRequestReceived
from crm_core.distribution.model import WebRequest
from crm_core.events import DomainEvent
from crm_core.leads.model import Lead
from crm_core.reference.model import Source
from crm_core.tasks.model import Task
from crm_core.tracking.model import TrackingSite, TrackingVisitor
from crm_core.tracking.service import hash_form_key
from tests.distribution.world import add_rule, build
from tests.helpers import until

URL = "/api/v1/leads/web"
ORIGIN = "https://shop.example.ru"
KEY = {"X-CC-Site-Key": "form-key-1"}


async def site_world(client: Any) -> dict[str, int]:
    """The distribution world plus site ``main`` (default region Moscow) and visitor ``v-spb``
    who came from Yandex Direct in St Petersburg."""
    async with client.app[SESSIONS]() as session:
        w = await build(session)
        await add_rule(session, w["moscow"], "fixed", w["ivan"])
        await add_rule(session, w["spb"], "fixed", w["anna"])
        yandex = Source(kind="ad_channel", code="yandex_direct", name="Яндекс Директ")
        site = TrackingSite(
            code="main",
            name="Shop",
            origins=[ORIGIN],
            form_key_hash=hash_form_key("form-key-1"),
            default_region_id=w["moscow"],
        )
        session.add_all([yandex, site])
        await session.flush()
        session.add(
            TrackingVisitor(
                site_id=site.id,
                visitor_id="v-spb",
                kind="paid",
                channel="yandex_direct",
                source_id=yandex.id,
                campaign="spring",
                utm={"utm_source": "yandex", "utm_campaign": "spring"},
                landing_page="https://shop.example.ru/?utm_source=yandex",
                region_id=w["spb"],
            )
        )
        await session.commit()
        w.update(yandex=yandex.id, site=site.id)
    return w


def listen(client: Any, name: str) -> list[DomainEvent]:
    seen: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        seen.append(event)

    client.app[BUS].subscribe(handler, name="test", events=[name])
    return seen


async def count(client: Any, model: Any) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)))


async def test_a_visitors_request_reaches_his_regions_manager(client: Any) -> None:
    w = await site_world(client)
    received = listen(client, "web_request.received")
    body = {
        "site": "main",
        "name": "Ольга",
        "phone": "8 812 555-01-01",
        "comment": "Нужен прайс",
        "visitor_id": "v-spb",
    }
    resp = await client.post(URL, json=body, headers={**KEY, "Origin": ORIGIN})
    assert resp.status == 201, await resp.text()
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    request_id = (await resp.json())["id"]
    async with client.app[SESSIONS]() as session:
        row = await session.get(WebRequest, request_id)
        lead = await session.get(Lead, row.lead_id)
        task = await session.get(Task, row.task_id)
    assert (row.status, row.responsible_id, row.region_id) == ("assigned", w["anna"], w["spb"])
    assert row.attribution["campaign"] == "spring" and row.ip == "127.0.0.1"
    assert (lead.origin, lead.source_id, lead.responsible_id) == ("web", w["yandex"], w["anna"])
    assert lead.tracking["source"] == "Яндекс Директ" and lead.tracking["visitor_id"] == "v-spb"
    assert (task.responsible_id, task.lead_id, task.kind) == (w["anna"], lead.id, "call_back")
    await until(lambda: received)
    assert isinstance(received[0], WebRequestReceived)
    assert received[0].audience == (f"user:{w['anna']}",) and received[0].source == "Яндекс Директ"


async def test_form_encoded_requests_and_the_same_visitor_joining(client: Any) -> None:
    w = await site_world(client)
    form = {"site": "main", "site_key": "form-key-1", "phone": "+7 495 111-22-33"}
    resp = await client.post(URL, data={**form, "visitor_id": "v-new"})
    assert resp.status == 201, await resp.text()
    # The form's region wins over the site's default (Moscow); no region: the default.
    resp = await client.post(URL, data={**form, "phone": "+78125550202", "region": "RU-SPE"})
    second = (await resp.json())["id"]
    resp = await client.post(URL, data={**form, "email": "a@b.ru", "visitor_id": "v-new"})
    third = (await resp.json())["id"]
    async with client.app[SESSIONS]() as session:
        rows = (await session.execute(select(WebRequest).order_by(WebRequest.id))).scalars().all()
    first = rows[0]
    assert (first.responsible_id, first.region_id, first.form["phone"]) == (
        w["ivan"],
        w["moscow"],
        "+7 495 111-22-33",
    )
    assert "site_key" not in first.form
    assert next(r for r in rows if r.id == second).responsible_id == w["anna"]
    joined = next(r for r in rows if r.id == third)
    assert (joined.lead_id, joined.reason) == (first.lead_id, "existing_client")
    assert await count(client, Lead) == 2


async def test_site_key_and_cors_are_enforced(client: Any) -> None:
    await site_world(client)
    body = {"site": "main", "phone": "+74951112233"}
    resp = await client.post(URL, json=body, headers={"Origin": ORIGIN})
    assert resp.status == 401 and (await resp.json())["details"]["field"] == "site_key"
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN  # the page can read why
    resp = await client.post(URL, json=body, headers={"X-CC-Site-Key": "wrong"})
    assert resp.status == 401
    resp = await client.post(URL, json={**body, "site": "other"}, headers=KEY)
    assert resp.status == 401 and (await resp.json())["details"]["field"] == "site"
    resp = await client.post(URL, json={"phone": "+74951112233"}, headers=KEY)
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "site"
    resp = await client.post(URL, json=body, headers={**KEY, "Origin": "https://evil.example"})
    assert resp.status == 201 and "Access-Control-Allow-Origin" not in resp.headers
    preflight = await client.options(
        URL, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-CC-Site-Key" in preflight.headers["Access-Control-Allow-Headers"]
    other = await client.options(URL, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert await count(client, WebRequest) == 1


async def test_honeypot_and_bad_fields(client: Any) -> None:
    await site_world(client)
    spam = {"site": "main", "phone": "junk", "website": "http://spam.example"}
    resp = await client.post(URL, json=spam, headers=KEY)
    assert resp.status == 202
    async with client.app[SESSIONS]() as session:
        row = await session.scalar(select(WebRequest))
    assert (row.is_spam, row.status, row.lead_id, row.phone) == (True, "spam", None, "junk")
    assert await count(client, Lead) == 0
    resp = await client.post(URL, json={"site": "main", "phone": "12"}, headers=KEY)
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "phone"
    resp = await client.post(URL, json={"site": "main", "name": "Никак"}, headers=KEY)
    assert resp.status == 422 and "phone" in (await resp.json())["message"]
    resp = await client.post(URL, json={"site": "main", "email": "nope"}, headers=KEY)
    assert resp.status == 422 and "email" in await resp.text()
    resp = await client.post(URL, data="x", headers={**KEY, "Content-Type": "text/plain"})
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "body"
    assert await count(client, Lead) == 0


@pytest.fixture(params=["memory", "redis"])
async def limited_client(
    request: pytest.FixtureRequest,
    make_settings: Any,
    database_url: str,
    aiohttp_client_factory: Any,
) -> Any:
    from contact_center.app import create_app

    env = {
        "CC_DATABASE_URL": database_url,
        "CC_DISTRIBUTION_REQUESTS_PER_IP": "3",
        "CC_DISTRIBUTION_REQUESTS_PER_VISITOR": "2",
    }
    if request.param == "redis":
        env.update(
            CC_REDIS_URL=request.getfixturevalue("redis_url"),
            CC_REDIS_PREFIX=request.getfixturevalue("redis_prefix"),
        )
    settings = make_settings(**env)
    # A clock that stands still: the fixed window cannot roll over between two posts.
    clock = ManualClock(datetime(2026, 3, 2, 9, 0, 30, tzinfo=UTC))
    return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None, clock=clock))


async def test_rate_limits_per_visitor_and_address(limited_client: Any) -> None:
    client = limited_client
    await site_world(client)

    async def post(visitor: str | None, n: int) -> int:
        body = {"site": "main", "phone": f"+7495000000{n}"}
        if visitor:
            body["visitor_id"] = visitor
        return (await client.post(URL, json=body, headers=KEY)).status

    assert [await post("v1", 1), await post("v1", 2), await post("v1", 3)] == [201, 201, 429]
    # The address has used 3 of its 3: the next one is refused whoever it is.
    assert await post("v2", 4) == 429
    resp = await client.post(URL, json={"site": "main", "phone": "+74950000009"}, headers=KEY)
    assert resp.status == 429 and (await resp.json())["error"] == "rate-limited"
    assert await count(client, WebRequest) == 2


async def test_a_request_naming_no_region_is_placed_by_the_ip_table(
    client: Any, make_settings: Any, database_url: str, aiohttp_client_factory: Any, tmp_path: Any
) -> None:
    """tracking.ip_regions_file: loopback is in St Petersburg. A form that names no region
    (from a visitor who never chose one) reaches Anna (St Petersburg), not the site's
    default region (Moscow, Ivan)."""
    from contact_center.app import create_app

    w = await site_world(client)  # the regions exist before the table names them
    table = tmp_path / "ip.csv"
    table.write_text("127.0.0.0/8,RU-SPE\n")
    settings = make_settings(CC_DATABASE_URL=database_url, CC_TRACKING_IP_REGIONS_FILE=str(table))
    placed = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    body = {"site": "main", "phone": "+79160000001"}
    by_ip = await (await placed.post(URL, json=body, headers=KEY)).json()
    named = {**body, "phone": "+79160000002", "region": "RU-MOW"}
    by_form = await (await placed.post(URL, json=named, headers=KEY)).json()
    without = await (
        await client.post(URL, json={**body, "phone": "+79160000004"}, headers=KEY)
    ).json()
    async with client.app[SESSIONS]() as session:
        rows = {r.id: r for r in (await session.scalars(select(WebRequest))).all()}
    assert (rows[by_ip["id"]].region_id, rows[by_ip["id"]].responsible_id) == (w["spb"], w["anna"])
    assert rows[by_form["id"]].region_id == w["moscow"]  # the form's own region wins
    assert rows[without["id"]].region_id == w["moscow"]  # no table: the site's default
