"""The call-tracking API: website sessions (numbers by source and region, heartbeats,
release, exhaustion, CORS, rate limits), track.js, and the management API."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from contact_center import demo_tracking, tracking_config
from contact_center.call_attribution import call_tracking
from contact_center.config import ConfigError, load_settings
from contact_center.keys import CLOCK, ENGINE, SESSIONS, TRACKER
from crm_core.reference.model import Region, Source
from crm_core.tracking import service as tracking
from crm_core.users import service as users
from routing import ip_regions

ROOT = Path(__file__).resolve().parent.parent.parent

SESSION = "/api/v1/tracking/session"
ORIGIN = demo_tracking.ORIGINS[0]
POOLS = {code: set(spec[-1]) for code, spec in demo_tracking.POOLS.items()}


async def seeded(client: Any) -> dict[str, dict[str, str]]:
    """The demo site; bearer headers of a head of sales and a manager."""
    async with client.app[SESSIONS]() as session:
        await demo_tracking.seed(session)
        for login, role in (("boss", "head"), ("ivan", "manager")):
            await users.create_user(
                session, login=login, role=role, password="password1", scrypt_n=1024
            )
        await session.commit()
    client.app[TRACKER].invalidate()
    headers = {}
    for login in ("boss", "ivan"):
        resp = await client.post(
            "/api/v1/auth/token", json={"login": login, "password": "password1"}
        )
        headers[login] = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    return headers


async def start(client: Any, status: int = 200, **body: Any) -> dict[str, Any]:
    resp = await client.post(SESSION, json={"site": "demo", **body})
    assert resp.status == status, await resp.text()
    return await resp.json()


async def test_numbers_by_source_and_region(client: Any) -> None:
    await seeded(client)
    spb_yandex = await start(
        client,
        page="https://shop.example/?utm_source=yandex&utm_campaign=x",
        utm={"utm_source": "yandex", "utm_campaign": "x"},
        region="RU-SPE",
    )
    assert spb_yandex["number"] in POOLS["yandex-spb"]
    assert spb_yandex["leased"] and not spb_yandex["low_confidence"]
    assert spb_yandex["source"] == "yandex_direct"
    assert spb_yandex["display"].startswith("+7 (812) ")
    msk_yclid = await start(client, page="https://shop.example/?yclid=77", utm={"yclid": "77"})
    assert msk_yclid["number"] in POOLS["yandex-msk"]  # the site's default region: Moscow
    google = await start(client, utm_source="google", utm_medium="cpc", region="RU-SPE")
    assert google["number"] in POOLS["google-spb"]  # flat tags work too
    organic = await start(client, referrer="https://www.google.ru/", region="RU-SPE")
    assert organic["number"] in POOLS["organic-any"]
    direct = await start(client, page="https://shop.example/")
    assert (direct["number"], direct["leased"]) == (demo_tracking.DEFAULTS["RU-MOW"], False)
    direct_spb = await start(client, region="RU-SPE")
    assert direct_spb["number"] == demo_tracking.DEFAULTS["RU-SPE"]
    elsewhere = await start(client, region="RU-KAZ-UNKNOWN")  # unknown: the site's default
    assert elsewhere["number"] == demo_tracking.DEFAULTS["RU-MOW"]
    assert len({msk_yclid["visitor_id"], direct["visitor_id"]}) == 2


async def test_exhaustion_reuses_with_low_confidence_and_is_counted(client: Any) -> None:
    h = await seeded(client)
    tags = {"utm_source": "yandex", "utm_campaign": "x"}
    got = [await start(client, utm=tags, region="RU-SPE") for _ in range(3)]
    assert {g["number"] for g in got[:2]} == POOLS["yandex-spb"]
    assert got[2]["low_confidence"] and got[2]["number"] in POOLS["yandex-spb"]
    # The session that lost its number learns it at its next heartbeat.
    beats = [
        await (await client.post(f"{SESSION}/{g['session_id']}/heartbeat")).json() for g in got
    ]
    assert sorted(b["active"] for b in beats) == [False, True, True]
    resp = await client.get("/api/v1/tracking/pools", headers=h["boss"])
    pool = next(p for p in (await resp.json())["items"] if p["code"] == "yandex-spb")
    resp = await client.get(f"/api/v1/tracking/pools/{pool['id']}/stats", headers=h["boss"])
    stats = await resp.json()
    assert stats["size"] == 2
    assert stats["exhausted"] == 1
    assert stats["peak_sessions"] == 3
    assert stats["size_to_cover_peak"] == 3
    resp = await client.get(f"/api/v1/tracking/pools/{pool['id']}/stats", headers=h["ivan"])
    assert resp.status == 403


async def test_static_fallback_policy(factory: Any) -> None:
    client = await factory(CC_TRACKING_EXHAUSTION="static")
    await seeded(client)
    tags = {"utm_source": "google", "utm_medium": "cpc"}
    got = [await start(client, utm=tags, region="RU-SPE") for _ in range(4)]
    assert {g["number"] for g in got[:3]} == POOLS["google-spb"]
    assert (got[3]["number"], got[3]["leased"]) == ("+78125550000", False)


async def test_heartbeat_and_release(client: Any) -> None:
    await seeded(client)
    got = await start(client, utm={"gclid": "1"}, region="RU-SPE")
    beat = await client.post(f"{SESSION}/{got['session_id']}/heartbeat?site=demo")
    assert (await beat.json()) == {"active": True}
    # sendBeacon posts text/plain with an empty body
    resp = await client.post(
        f"{SESSION}/{got['session_id']}/release?site=demo",
        data=b"",
        headers={"Content-Type": "text/plain"},
    )
    assert (await resp.json()) == {"released": True}
    beat = await client.post(f"{SESSION}/{got['session_id']}/heartbeat")
    assert (await beat.json()) == {"active": False}
    resp = await client.post(f"{SESSION}/not-a-session!/heartbeat")
    assert resp.status == 422


async def test_visitor_keeps_first_touch_unless_a_new_campaign_click(client: Any) -> None:
    await seeded(client)
    first = await start(
        client,
        referrer="https://yandex.ru/search/?text=x",
        landing_page="https://shop.example/catalog",
        region="RU-SPE",
    )
    vid = first["visitor_id"]
    await start(client, visitor_id=vid)  # a returning visitor, direct: the first touch stays
    app = client.app
    await app[TRACKER].writer.flush()
    async with app[SESSIONS]() as session:
        site = await tracking.get_site(session, "demo")
        assert site is not None
        attr = await tracking.visitor_attribution(session, site.id, vid)
    assert attr is not None
    assert (attr["channel"], attr["kind"], attr["source"]) == (
        "yandex",
        "organic",
        "Поисковые системы",
    )
    assert attr["landing_page"] == "https://shop.example/catalog"
    assert (attr["region"], attr["site"], attr["low_confidence"]) == ("RU-SPE", "demo", False)
    await start(client, visitor_id=vid, utm={"utm_source": "google", "utm_campaign": "sale"})
    await app[TRACKER].writer.flush()
    async with app[SESSIONS]() as session:
        attr = await tracking.visitor_attribution(session, site.id, vid)
        assert await tracking.visitor_attribution(session, site.id, "nobody-here") is None
    assert attr is not None
    assert (attr["channel"], attr["campaign"], attr["source"]) == (
        "google_ads",
        "sale",
        "Google Ads",
    )
    assert attr["utm"] == {"utm_source": "google", "utm_campaign": "sale"}
    assert attr["region"] == "RU-SPE"  # a visit without a region keeps the known one


async def test_bad_input_names_the_field(client: Any) -> None:
    await seeded(client)
    resp = await client.post(SESSION, json={"site": "nope"})
    assert resp.status == 404
    assert (await resp.json())["details"]["field"] == "site"
    resp = await client.post(SESSION, json={"site": "demo", "visitor_id": "<script>"})
    assert resp.status == 422
    assert "visitor_id" in (await resp.json())["details"]["fields"]
    resp = await client.post(SESSION, data=b"{", headers={"Content-Type": "text/plain"})
    assert resp.status == 422


async def test_text_plain_body_and_cors_for_the_sites_origins_only(client: Any) -> None:
    await seeded(client)
    resp = await client.post(
        SESSION,
        data=b'{"site": "demo", "region": "RU-SPE"}',
        headers={"Content-Type": "text/plain", "Origin": ORIGIN},
    )
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    resp = await client.post(
        SESSION, json={"site": "demo"}, headers={"Origin": "https://evil.example"}
    )
    assert "Access-Control-Allow-Origin" not in resp.headers
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    resp = await client.options(SESSION, headers=preflight)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    resp = await client.options(f"{SESSION}/abc123456/heartbeat", headers=preflight)
    assert resp.status == 204
    resp = await client.options(SESSION, headers={**preflight, "Origin": "https://evil.example"})
    assert resp.status == 403
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_rate_limit_per_visitor(factory: Any) -> None:
    client = await factory(CC_TRACKING_SESSIONS_PER_VISITOR="2")
    await seeded(client)
    vid = "visitor-0001"
    for _ in range(2):
        await start(client, visitor_id=vid, utm={"gclid": "1"}, region="RU-SPE")
    resp = await client.post(SESSION, json={"site": "demo", "visitor_id": vid})
    assert resp.status == 429
    assert (await resp.json())["details"]["limit"] == "v"
    await start(client, visitor_id="visitor-0002")


async def test_track_js_is_small_cacheable_and_gzipped(client: Any) -> None:
    resp = await client.get("/track.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert resp.status == 200
    body = await resp.read()
    assert resp.headers["Content-Encoding"] == "gzip"
    assert len(body) < 5 * 1024
    assert b"data-cc-phone" in gzip.decompress(body)
    assert "max-age" in resp.headers["Cache-Control"]
    etag = resp.headers["ETag"]
    again = await client.get("/track.js", headers={"If-None-Match": etag})
    assert again.status == 304
    plain = await client.get("/track.js", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert (await plain.text()).startswith("/* contact-center call tracking")
    landing = await client.get("/demo/landing")
    text = await landing.text()
    assert 'src="/track.js" data-site="demo"' in text
    assert "data-cc-phone" in text and 'href="tel:' in text


async def test_management_api(client: Any) -> None:
    h = await seeded(client)
    boss = h["boss"]
    resp = await client.post(
        "/api/v1/tracking/sites",
        json={
            "code": "main",
            "name": "Shop",
            "origins": ["https://Shop.example/"],
            "form_key": "k" * 20,
        },
        headers=boss,
    )
    assert resp.status == 201, await resp.text()
    site = await resp.json()
    assert site["origins"] == ["https://shop.example"] and site["has_form_key"]
    resp = await client.post(
        "/api/v1/tracking/sites", json={"code": "main", "name": "again"}, headers=boss
    )
    assert resp.status == 409
    resp = await client.post(
        "/api/v1/tracking/sites", json={"code": "Bad Code", "name": "x"}, headers=boss
    )
    assert resp.status == 422 and "code" in (await resp.json())["details"]["fields"]
    resp = await client.post(
        "/api/v1/tracking/sites",
        json={"code": "x", "name": "x", "origins": ["shop.example/path"]},
        headers=boss,
    )
    assert resp.status == 422 and "origins" in (await resp.json())["details"]["fields"]
    resp = await client.post(
        "/api/v1/tracking/pools",
        json={"site_id": site["id"], "code": "vk", "name": "VK", "channel": "vk_ads"},
        headers=boss,
    )
    assert resp.status == 201
    pool = await resp.json()
    resp = await client.post(
        "/api/v1/tracking/numbers",
        json={"did": "8 (495) 100-00-01", "kind": "pool", "pool_id": pool["id"]},
        headers=boss,
    )
    assert resp.status == 201, await resp.text()
    number = await resp.json()
    assert (number["did"], number["site_id"]) == ("+74951000001", site["id"])
    for bad, field in (
        ({"did": "12", "kind": "static", "source_id": 1}, "did"),
        ({"did": "+74951000002", "kind": "pool"}, "body"),
        ({"did": "+74951000002", "kind": "default", "site_id": 999}, "site_id"),
    ):
        resp = await client.post("/api/v1/tracking/numbers", json=bad, headers=boss)
        assert resp.status == 422, bad
        doc = await resp.json()
        assert field in str(doc["details"]), doc
    resp = await client.post(
        "/api/v1/tracking/numbers",
        json={"did": "+74951000001", "kind": "default", "site_id": site["id"]},
        headers=boss,
    )
    assert resp.status == 409
    resp = await client.get("/api/v1/tracking/pools", headers=boss)
    listed = next(p for p in (await resp.json())["items"] if p["id"] == pool["id"])
    assert listed["dids"] == ["+74951000001"]
    # The new pool serves at once (the change event reloads the directory).
    got = await start(client, utm={"utm_source": "vk", "utm_medium": "cpc"})
    assert got["number"] in POOLS["yandex-msk"] | {demo_tracking.DEFAULTS["RU-MOW"]}
    resp = await client.post(
        SESSION, json={"site": "main", "utm": {"utm_source": "vk", "utm_medium": "cpc"}}
    )
    assert (await resp.json())["number"] == "+74951000001"
    resp = await client.delete(f"/api/v1/tracking/pools/{pool['id']}", headers=boss)
    assert resp.status == 204
    resp = await client.get("/api/v1/tracking/numbers", headers=boss)
    assert "+74951000001" not in {n["did"] for n in (await resp.json())["items"]}
    resp = await client.delete(f"/api/v1/tracking/sites/{site['id']}", headers=h["ivan"])
    assert resp.status == 403
    resp = await client.delete("/api/v1/tracking/sites/99999", headers=boss)
    assert resp.status == 404


@pytest.fixture
def factory(make_settings: Any, database_url: str, aiohttp_client_factory: Any) -> Any:
    """An app with extra settings (``CC_*`` overrides)."""
    from contact_center.app import create_app

    async def build(**env: str) -> Any:
        settings = make_settings(CC_DATABASE_URL=database_url, **env)
        return await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))

    return build


async def test_sessions_with_redis(factory: Any, redis_url: str, redis_prefix: str) -> None:
    client = await factory(CC_REDIS_URL=redis_url, CC_REDIS_PREFIX=redis_prefix)
    await seeded(client)
    tags = {"utm_source": "yandex", "utm_campaign": "x"}
    got = [await start(client, utm=tags, region="RU-SPE") for _ in range(2)]
    assert {g["number"] for g in got} == POOLS["yandex-spb"]
    third = await start(client, utm=tags, region="RU-SPE")
    assert third["low_confidence"]
    resp = await client.post(f"{SESSION}/{third['session_id']}/release")
    assert (await resp.json()) == {"released": True}


async def test_history_survives_a_refused_batch(factory: Any) -> None:
    """A session of a site deleted before its batch was written cannot be stored: the batch
    is retried, then dropped, and later history is written again. The background flush is
    set far off so that only the test's own flushes write (else it may store the batch
    before the site is gone)."""
    client = await factory(CC_TRACKING_FLUSH_INTERVAL_S="60")
    h = await seeded(client)
    writer = client.app[TRACKER].writer
    resp = await client.post(
        "/api/v1/tracking/sites", json={"code": "gone", "name": "Gone"}, headers=h["boss"]
    )
    gone = await resp.json()
    await start(client, site="gone")
    resp = await client.delete(f"/api/v1/tracking/sites/{gone['id']}", headers=h["boss"])
    assert resp.status == 204
    for _ in range(5):
        await writer.flush()
    assert writer.failures == 5
    kept = await start(client, region="RU-SPE")
    await writer.flush()
    async with client.app[SESSIONS]() as session:
        site = await tracking.get_site(session, "demo")
        assert site is not None
        attr = await tracking.visitor_attribution(session, site.id, kept["visitor_id"])
    assert attr is not None and attr["region"] == "RU-SPE"


# ---------------------------------------------------------------- config.yaml and IP regions


async def reference(client: Any) -> None:
    """Regions and sources config.yaml may name (they live in the database)."""
    async with client.app[SESSIONS]() as session:
        session.add_all(
            [
                Region(code="RU-MOW", name="Москва"),
                Region(code="RU-SPE", name="Санкт-Петербург"),
                Source(kind="ad_channel", code="yandex_direct", name="Яндекс Директ"),
                Source(kind="exhibition", code="expo_2026", name="ПродЭкспо"),
                Source(kind="website", code="organic", name="Поиск"),
            ]
        )
        await users.create_user(
            session, login="boss", role="head", password="password1", scrypt_n=1024
        )
        await session.commit()


def config_site(pool_name: str = "Яндекс × СПб") -> str:
    return json.dumps(
        [
            {
                "code": "shop",
                "name": "Shop",
                "origins": ["https://shop.example"],
                "numbers": [
                    {"did": "8 (495) 000-11-22", "source": "ПродЭкспо", "campaign": "stand"}
                ],
                "defaults": {"RU-SPE": "+78120001111", "*": "+74950001111"},
                "pools": [
                    {
                        "source": "yandex_direct",
                        "region": "RU-SPE",
                        "name": pool_name,
                        "numbers": ["+78120002201", "8 812 000-22-02"],
                    },
                    {"source": "Поиск", "numbers": ["+74950003301"]},  # any region
                ],
            }
        ]
    )


async def test_sites_pools_and_numbers_from_config(factory: Any) -> None:
    await reference(await factory())  # regions and sources exist before config names them
    client = await factory(CC_TRACKING_SITES=config_site())
    resp = await client.post("/api/v1/auth/token", json={"login": "boss", "password": "password1"})
    boss = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    sites = (await (await client.get("/api/v1/tracking/sites", headers=boss)).json())["items"]
    assert [(s["code"], s["origins"]) for s in sites] == [("shop", ["https://shop.example"])]
    pools = (await (await client.get("/api/v1/tracking/pools", headers=boss)).json())["items"]
    assert [(p["code"], p["name"], p["channel"], p["kind"], p["dids"]) for p in pools] == [
        (
            "yandex_direct-ru-spe",
            "Яндекс × СПб",
            "yandex_direct",
            None,
            ["+78120002201", "+78120002202"],
        ),
        ("organic-any", "Поиск", None, "organic", ["+74950003301"]),
    ]
    numbers = (await (await client.get("/api/v1/tracking/numbers", headers=boss)).json())["items"]
    kinds = {n["did"]: (n["kind"], n["campaign"]) for n in numbers}
    assert kinds == {
        "+74950001122": ("static", "stand"),
        "+78120001111": ("default", None),
        "+74950001111": ("default", None),
        "+78120002201": ("pool", None),
        "+78120002202": ("pool", None),
        "+74950003301": ("pool", None),
    }
    got = await start(client, site="shop", utm={"utm_source": "yandex"}, region="RU-SPE")
    assert (got["number"], got["leased"]) in {("+78120002201", True), ("+78120002202", True)}
    assert (await start(client, site="shop", region="RU-SPE"))["number"] == "+78120001111"
    searched = await start(client, site="shop", referrer="https://ya.ru/", region="RU-SPE")
    assert searched["number"] == "+74950003301"
    assert (await start(client, site="shop"))["number"] == "+74950001111"

    # A number added through the API stays; a changed entry is updated at the next start.
    pool_id = pools[0]["id"]
    resp = await client.post(
        "/api/v1/tracking/numbers",
        json={"did": "+78120002203", "kind": "pool", "pool_id": pool_id},
        headers=boss,
    )
    assert resp.status == 201
    again = await factory(CC_TRACKING_SITES=config_site(pool_name="Директ × Петербург"))
    pools = (await (await again.get("/api/v1/tracking/pools", headers=boss)).json())["items"]
    assert [(p["id"], p["name"], len(p["dids"])) for p in pools] == [
        (pool_id, "Директ × Петербург", 3),
        (pools[1]["id"], "Поиск", 1),
    ]


async def test_config_naming_an_unknown_source_or_region_stops_the_start(
    session: Any, make_settings: Any
) -> None:
    session.add(Source(kind="ad_channel", code="yandex_direct", name="Яндекс Директ"))
    await session.commit()
    sites = json.loads(config_site())
    sites[0]["pools"][0]["region"] = "RU-XX"
    settings = make_settings(CC_TRACKING_SITES=json.dumps(sites))
    with pytest.raises(ConfigError) as info:
        await tracking_config.sync_config_sites(session, settings)
    text = str(info.value)
    assert "tracking.sites[0].numbers[0].source = 'ПродЭкспо': no source" in text
    assert "tracking.sites[0].defaults.RU-SPE = 'RU-SPE': no such region" in text
    assert "tracking.sites[0].pools[0].region = 'RU-XX': no such region" in text


async def demo_and_ip_table(factory: Any, tmp_path: Path, lines: str) -> Path:
    """The demo site seeded; an IP table of ``lines`` written (its path)."""
    first = await factory()
    async with first.app[SESSIONS]() as session:
        await demo_tracking.seed(session)
        await session.commit()
    table = tmp_path / "ip-regions.csv"
    table.write_text(lines)
    return table


async def with_ip_table(factory: Any, tmp_path: Path) -> Any:
    """The demo site, then a server whose IP table puts loopback in St Petersburg."""
    lines = "# network,region\n127.0.0.0/8,RU-SPE\n::1/128,RU-SPE  # IPv6 loopback\n"
    table = await demo_and_ip_table(factory, tmp_path, lines)
    return await factory(CC_TRACKING_IP_REGIONS_FILE=str(table))


async def test_the_ip_table_places_a_session_that_names_no_region(
    factory: Any, tmp_path: Path
) -> None:
    client = await with_ip_table(factory, tmp_path)
    tags = {"utm_source": "yandex", "utm_campaign": "x"}
    by_ip = await start(client, utm=tags)  # from 127.0.0.1
    assert by_ip["number"] in POOLS["yandex-spb"] and by_ip["region"] == "RU-SPE"
    named = await start(client, utm=tags, region="RU-MOW")  # the page's own choice wins
    assert named["number"] in POOLS["yandex-msk"] and named["region"] == "RU-MOW"
    # Without the table, the site's default region (Moscow).
    plain = await factory()
    assert (await start(plain, utm=tags))["number"] in POOLS["yandex-msk"]


async def test_behind_a_trusted_proxy_the_visitors_address_places_the_session(
    factory: Any, tmp_path: Path
) -> None:
    """server.trusted_proxies: the address nginx puts in X-Forwarded-For is the visitor's;
    from any other peer the header is ignored (the visitor cannot pick his region by it)."""
    table = await demo_and_ip_table(factory, tmp_path, "203.0.113.0/24,RU-SPE\n")
    tags = {"utm_source": "yandex", "utm_campaign": "x"}
    visitor = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}

    async def number(client: Any, headers: dict[str, str]) -> str:
        body = {"site": "demo", "utm": tags}
        resp = await client.post(SESSION, json=body, headers=headers)
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["number"])

    proxied = await factory(
        CC_TRACKING_IP_REGIONS_FILE=str(table), CC_SERVER_TRUSTED_PROXIES='["127.0.0.1"]'
    )
    assert await number(proxied, visitor) in POOLS["yandex-spb"]
    assert await number(proxied, {}) in POOLS["yandex-msk"]  # the proxy's own address
    resp = await proxied.post(
        SESSION, json={"site": "demo"}, headers={"X-Forwarded-For": "203.0.113.9, nonsense"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"] == "bad-forwarded-for"
    # Loopback is no trusted proxy here: the header is the client's own claim, ignored.
    direct = await factory(
        CC_TRACKING_IP_REGIONS_FILE=str(table), CC_SERVER_TRUSTED_PROXIES='["10.0.0.0/8"]'
    )
    assert await number(direct, visitor) in POOLS["yandex-msk"]


async def test_a_bad_ip_table_names_the_file_and_line(session: Any, tmp_path: Path) -> None:
    table = tmp_path / "ip.csv"
    table.write_text("5.8.0.0/16,RU-MOW\n\n5.8.300.0/24,RU-SPE\n")
    with pytest.raises(
        ip_regions.IpRegionsError, match=re.escape(f"{table}:3: '5.8.300.0/24' is not")
    ):
        ip_regions.load(table)
    session.add(Region(code="RU-MOW", name="Москва"))
    await session.commit()
    table.write_text("5.8.0.0/16,RU-MOW\n# St Petersburg\n5.8.1.0/24,RU-SPE\n")
    settings = load_settings(ROOT / "config.yaml", env={"CC_TRACKING_IP_REGIONS_FILE": str(table)})
    with pytest.raises(ConfigError) as info:
        await tracking_config.load_ip_regions(session, settings)
    assert info.value.lines == [
        f"config: tracking.ip_regions_file: {table}:3: no region with the code 'RU-SPE'"
    ]


async def test_calls_to_unknown_and_legacy_dids_cost_no_query(client: Any) -> None:
    """The directory knows static numbers configured as sources of kind tracking_number, so
    neither they nor DIDs nobody configured send a query per ring."""
    async with client.app[SESSIONS]() as session:
        expo = Source(kind="exhibition", code="expo", name="Выставка")
        session.add(expo)
        await session.flush()
        session.add(
            Source(
                kind="tracking_number",
                code="+74957770000",
                name="Стенд",
                parent_id=expo.id,
                utm={"utm_campaign": "stand"},
            )
        )
        await session.commit()
    tracker = client.app[TRACKER]
    await tracker.directory()
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    engine = client.app[ENGINE].sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        async with client.app[SESSIONS]() as session:
            now = client.app[CLOCK].now()
            legacy = await call_tracking(tracker, session, "+74957770000", now)
            unknown = await call_tracking(tracker, session, "+74950000999", now)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert statements == []
    assert unknown is None
    assert legacy is not None
    assert (legacy["source"], legacy["campaign"], legacy["number_kind"]) == (
        "Выставка",
        "stand",
        "static",
    )
