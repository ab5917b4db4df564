"""The pipelines and deals API on both databases: the start-up sync, moves with history and
the lost reason, the pipeline boundary, events after commit, and who may call what."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from contact_center.app import create_app
from contact_center.keys import BUS, SESSIONS
from crm_core.deals.events import DealStageChanged
from crm_core.deals.model import Pipeline, PipelineStage
from crm_core.events import DomainEvent
from crm_core.rules import DEFAULT_PIPELINE
from tests.crm_core.deals.world import api_team
from tests.helpers import until

TENDERS = (
    '[{"code": "sales", "name_ru": "Продажи", "name_en": "Sales", "is_default": true,'
    ' "stages": [{"code": "contact", "name_ru": "Контакт", "name_en": "Contact"},'
    ' {"code": "won", "name_ru": "Успех", "name_en": "Won", "kind": "won"},'
    ' {"code": "lost", "name_ru": "Провал", "name_en": "Lost", "kind": "lost"}]},'
    ' {"code": "tenders", "name_ru": "Тендеры", "name_en": "Tenders",'
    ' "stages": [{"code": "found", "name_ru": "Найден", "name_en": "Found"},'
    ' {"code": "won", "name_ru": "Выигран", "name_en": "Won", "kind": "won"}]}]'
)


def listen(client: Any, *names: str) -> list[DomainEvent]:
    seen: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        seen.append(event)

    client.app[BUS].subscribe(handler, name="test", events=names)
    return seen


async def create(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/deals", json={"title": "Поставка", **body}, headers=headers)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def stage_rows(client: Any) -> list[tuple[int, str]]:
    async with client.app[SESSIONS]() as session:
        rows = await session.execute(
            select(PipelineStage.id, PipelineStage.code).order_by(PipelineStage.id)
        )
        return [(r[0], r[1]) for r in rows]


async def test_pipelines_are_synchronised_at_start_idempotently(
    settings: Any, aiohttp_client_factory: Any
) -> None:
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    first = await stage_rows(client)
    assert [code for _, code in first] == [s.code for s in DEFAULT_PIPELINE.stages]
    # A second instance (or a restart) on the same database changes nothing.
    again = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    assert await stage_rows(again) == first
    async with again.app[SESSIONS]() as session:
        assert await session.scalar(select(func.count()).select_from(Pipeline)) == 1
    _, h = await api_team(client)
    for who in ("adm", "boss", "ivan", "anna"):
        resp = await client.get("/api/v1/pipelines", headers=h[who])
        assert resp.status == 200, who
    body = await resp.json()
    [sales] = body["items"]
    assert (sales["code"], sales["name_ru"], sales["name_en"], sales["is_default"]) == (
        "sales",
        "Продажи",
        "Sales",
        True,
    )
    assert sales["stages"][1]["name_ru"] == "Разговор с ЛПР / выявление потребностей"
    assert sales["stages"][1]["name_en"] == "Decision maker / needs"
    assert body["lost_reasons"][0] == "price"
    assert (await client.get("/api/v1/pipelines")).status == 401


async def test_deal_lifecycle_history_and_events(client: Any) -> None:
    team, h = await api_team(client)
    events = listen(client, "deal.created", "deal.stage_changed", "deal.updated")
    deal = await create(client, h["ivan"], amount="250000.00", source_id=team.expo)
    assert deal["pipeline"] == "sales" and deal["stage"]["code"] == "contact"
    assert deal["amount"] == "250000.00" and deal["status"] == "open"
    did = deal["id"]
    url = f"/api/v1/deals/{did}"
    resp = await client.post(f"{url}/move", json={"stage": "lost"}, headers=h["ivan"])
    body = await resp.json()
    assert resp.status == 422 and body["error"] == "deal-lost-reason-required"
    assert body["details"]["field"] == "reason"
    resp = await client.post(
        f"{url}/move", json={"stage": "lost", "reason": "dunno"}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["error"] == "deal-lost-reason-required"
    resp = await client.post(
        f"{url}/move", json={"stage": "lost", "reason": "competitor"}, headers=h["ivan"]
    )
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "lost" and body["closed_at"] is not None
    assert body["lost_reason"] == "competitor"
    # Reopen by stage id, then set milestones and win through a patch.
    needs_id = next(s["id"] for s in await _stages(client, h) if s["code"] == "needs")
    resp = await client.post(f"{url}/move", json={"stage": needs_id}, headers=h["ivan"])
    body = await resp.json()
    assert body["stage"]["code"] == "needs" and body["closed_at"] is None
    resp = await client.patch(
        url,
        json={"meeting_at": "2026-03-03T09:00:00+03:00", "margin": "12.5", "stage": "won"},
        headers=h["ivan"],
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["meeting_at"] in ("2026-03-03T06:00:00Z", "2026-03-03T06:00:00+00:00")
    assert body["margin"] == "12.50" and body["status"] == "won"
    assert [(x["from_stage"], x["to_stage"], x["reason"]) for x in body["history"]] == [
        (None, "contact", None),
        ("contact", "lost", "competitor"),
        ("lost", "needs", None),
        ("needs", "won", None),
    ]
    history = await (await client.get(f"{url}/history", headers=h["ivan"])).json()
    assert [x["to_stage"] for x in history] == ["contact", "lost", "needs", "won"]
    assert all(x["user_id"] == team.ivan.id for x in history)
    resp = await client.patch(url, json={"meeting_at": "2026-03-03T09:00:00"}, headers=h["ivan"])
    assert resp.status == 422 and "meeting_at" in (await resp.json())["details"]["fields"]
    await until(lambda: len(events) == 5)
    assert [e.name for e in events] == [
        "deal.created",
        "deal.stage_changed",
        "deal.stage_changed",
        "deal.updated",
        "deal.stage_changed",
    ]
    changed = [e for e in events if isinstance(e, DealStageChanged)]
    assert [(e.from_stage, e.to_stage) for e in changed] == [
        ("contact", "lost"),
        ("lost", "needs"),
        ("needs", "won"),
    ]
    assert changed[0].audience == (f"user:{team.ivan.id}", "role:head")


async def _stages(client: Any, h: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    body = await (await client.get("/api/v1/pipelines", headers=h["ivan"])).json()
    return list(body["items"][0]["stages"])


async def test_a_deal_stays_in_its_pipeline(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_PIPELINES=TENDERS)
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    _, h = await api_team(client)
    pipelines = {
        p["code"]: p
        for p in (await (await client.get("/api/v1/pipelines", headers=h["ivan"])).json())["items"]
    }
    assert list(pipelines) == ["sales", "tenders"]
    found_id = pipelines["tenders"]["stages"][0]["id"]
    sales = await create(client, h["ivan"])
    tender = await create(client, h["ivan"], pipeline="tenders")
    assert tender["stage"]["code"] == "found"
    resp = await client.post(
        f"/api/v1/deals/{sales['id']}/move", json={"stage": found_id}, headers=h["ivan"]
    )
    body = await resp.json()
    assert resp.status == 422 and body["error"] == "deal-stage-not-in-pipeline"
    assert body["details"]["pipeline"] == "sales"
    resp = await client.post(
        f"/api/v1/deals/{tender['id']}/move", json={"stage": "lost"}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["error"] == "deal-stage-not-in-pipeline"
    resp = await client.post(
        "/api/v1/deals", json={"title": "x", "pipeline": "x"}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["error"] == "deal-unknown-pipeline"
    listing = await (await client.get("/api/v1/deals?pipeline=tenders", headers=h["ivan"])).json()
    assert [d["id"] for d in listing["items"]] == [tender["id"]]


async def test_deal_permissions(client: Any) -> None:
    team, h = await api_team(client)
    for who, read, write, delete in (
        ("adm", 200, 200, 204),
        ("boss", 200, 200, 204),
        ("ivan", 200, 200, 403),
        ("anna", 404, 404, 403),
    ):
        did = (await create(client, h["ivan"], title=who))["id"]
        url = f"/api/v1/deals/{did}"
        assert (await client.get(url, headers=h[who])).status == read, who
        assert (await client.get(f"{url}/history", headers=h[who])).status == read, who
        resp = await client.patch(url, json={"products": who}, headers=h[who])
        assert resp.status == write, who
        resp = await client.post(f"{url}/move", json={"stage": "needs"}, headers=h[who])
        assert resp.status == write, who
        assert (await client.delete(url, headers=h[who])).status == delete, who
        assert (await client.get(url)).status == 401
    await create(client, h["anna"], title="hers")
    totals = {}
    for who in ("adm", "boss", "ivan", "anna"):
        totals[who] = (await (await client.get("/api/v1/deals", headers=h[who])).json())["total"]
    assert totals == {"adm": 3, "boss": 3, "ivan": 2, "anna": 1}
    resp = await client.post(
        "/api/v1/deals", json={"title": "x", "responsible_id": team.anna.id}, headers=h["ivan"]
    )
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/deals", json={"title": "x", "responsible_id": team.anna.id}, headers=h["boss"]
    )
    assert resp.status == 201
    resp = await client.patch(
        f"/api/v1/deals/{(await resp.json())['id']}",
        json={"responsible_id": team.ivan.id},
        headers=h["anna"],
    )
    assert resp.status == 403  # hers, but a handover is the head's
    assert (await client.get("/api/v1/deals/abc", headers=h["adm"])).status == 404
    resp = await client.post(
        "/api/v1/deals", json={"title": "", "amount": "1.001"}, headers=h["ivan"]
    )
    assert resp.status == 422
    assert set((await resp.json())["details"]["fields"]) == {"title", "amount"}
