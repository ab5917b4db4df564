"""The leads API on both databases: the gate's 422 on every path, junk, conversion (with
de-duplication, atomic), events after commit, and who may call what."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from contact_center.app import create_app
from contact_center.keys import BUS, SESSIONS
from crm_core.clients.model import Company, Contact
from crm_core.deals.model import Deal
from crm_core.events import DomainEvent
from crm_core.leads.events import LeadStageChanged
from crm_core.leads.model import Lead
from tests.crm_core.deals.world import INN, api_team, full_card
from tests.helpers import until

IN_WORK = ["name", "contact", "source", "client_type", "potential"]


def listen(client: Any, *names: str) -> list[DomainEvent]:
    seen: list[DomainEvent] = []

    async def handler(event: DomainEvent) -> None:
        seen.append(event)

    client.app[BUS].subscribe(handler, name="test", events=names)
    return seen


async def create(client: Any, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/leads", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def count(client: Any, model: Any) -> int:
    async with client.app[SESSIONS]() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_the_gate_refuses_on_every_path_with_the_exact_missing_fields(client: Any) -> None:
    team, h = await api_team(client)
    events = listen(client, "lead.stage_changed")
    lead = await create(client, h["ivan"], contact_name="Пётр", phones=["8 495 123 45 67"])
    assert lead["stage"] == "new" and lead["phones"] == ["+74951234567"]
    assert lead["gate"]["in_work"] == ["source", "client_type", "potential"]
    lid = lead["id"]
    refusal = {
        "stage": "in_work",
        "missing": ["source", "client_type", "potential"],
    }
    resp = await client.post(
        f"/api/v1/leads/{lid}/move", json={"stage": "in_work"}, headers=h["ivan"]
    )
    assert resp.status == 422
    body = await resp.json()
    assert body["error"] == "lead-gate-missing-fields" and body["details"] == refusal
    resp = await client.patch(
        f"/api/v1/leads/{lid}",
        json={"stage": "in_work", "source_id": team.expo},
        headers=h["ivan"],
    )
    body = await resp.json()
    assert resp.status == 422
    assert body["details"] == {"stage": "in_work", "missing": ["client_type", "potential"]}
    # The refused patch changed nothing, not even the fields that came with it.
    assert (await (await client.get(f"/api/v1/leads/{lid}", headers=h["ivan"])).json())[
        "source_id"
    ] is None
    resp = await client.post(
        "/api/v1/leads", json={"contact_name": "x", "stage": "qualified"}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["details"]["missing"] == [
        "contact",
        "source",
        "client_type",
        "potential",
        "region",
        "decision_maker",
    ]
    resp = await client.post(f"/api/v1/leads/{lid}/convert", json={}, headers=h["ivan"])
    assert resp.status == 422 and (await resp.json())["details"]["stage"] == "converted"
    patch = {
        "stage": "in_work",
        "source_id": team.expo,
        "client_type": "retail",
        "potential_amount": "12000.50",
        "purchase_mode": "regular",
    }
    resp = await client.patch(f"/api/v1/leads/{lid}", json=patch, headers=h["ivan"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["stage"] == "in_work" and body["potential_amount"] == "12000.50"
    await until(lambda: events)
    [event] = events
    assert isinstance(event, LeadStageChanged)
    assert (event.from_stage, event.to_stage) == ("new", "in_work")
    assert event.audience == (f"user:{team.ivan.id}", "role:head")


async def test_moving_back_junk_and_history(client: Any) -> None:
    team, h = await api_team(client)
    lid = (await create(client, h["ivan"], **full_card(team), stage="qualified"))["id"]

    async def move(stage: str, **extra: Any) -> Any:
        return await client.post(
            f"/api/v1/leads/{lid}/move", json={"stage": stage, **extra}, headers=h["ivan"]
        )

    resp = await client.patch(f"/api/v1/leads/{lid}", json={"region_id": None}, headers=h["ivan"])
    assert resp.status == 200
    assert (await move("new")).status == 200  # back: no gate
    resp = await move("qualified")
    assert (await resp.json())["details"]["missing"] == ["region"]
    resp = await move("junk")
    assert resp.status == 422 and (await resp.json())["error"] == "lead-junk-reason-required"
    resp = await move("junk", reason="not_a_reason")
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "reason"
    resp = await move("junk", reason="duplicate")
    assert resp.status == 200 and (await resp.json())["junk_reason"] == "duplicate"
    resp = await move("nowhere")
    assert resp.status == 422 and (await resp.json())["error"] == "lead-unknown-stage"
    resp = await client.get(f"/api/v1/leads/{lid}/history", headers=h["ivan"])
    rows = await resp.json()
    assert [(r["from_stage"], r["to_stage"], r["reason"]) for r in rows] == [
        (None, "qualified", None),
        ("qualified", "new", None),
        ("new", "junk", "duplicate"),
    ]
    assert all(r["user_id"] == team.ivan.id for r in rows)


GATE_ENV = '{"in_work": ["name", "custom.segment"], "qualified": ["inn"]}'
FIELDS_ENV = '[{"name": "segment", "type": "enum", "options": ["A", "B"]}]'


async def test_a_custom_field_gate_from_the_configuration(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_CRM_LEAD_GATE=GATE_ENV, CC_CRM_CUSTOM_FIELDS=FIELDS_ENV
    )
    assert settings.crm.rules().gate_for("qualified") == ["name", "custom.segment", "inn"]
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    _, h = await api_team(client)
    stages = await (await client.get("/api/v1/lead-stages", headers=h["ivan"])).json()
    assert {s["code"]: s["requires"] for s in stages["stages"]}["qualified"] == [
        "name",
        "custom.segment",
        "inn",
    ]
    lid = (await create(client, h["ivan"], company_name="Ромашка"))["id"]
    resp = await client.post(
        f"/api/v1/leads/{lid}/move", json={"stage": "qualified"}, headers=h["ivan"]
    )
    assert (await resp.json())["details"] == {
        "stage": "qualified",
        "missing": ["custom.segment", "inn"],
    }
    resp = await client.patch(
        f"/api/v1/leads/{lid}", json={"custom": {"segment": "C"}}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["error"] == "invalid-custom-field"
    resp = await client.patch(
        f"/api/v1/leads/{lid}",
        json={"custom": {"segment": "B"}, "stage": "in_work"},
        headers=h["ivan"],
    )
    assert resp.status == 200 and (await resp.json())["gate"] == {
        "qualified": ["inn"],
        "converted": ["inn"],
    }


async def test_conversion_de_duplicates_and_opens_a_deal(client: Any) -> None:
    team, h = await api_team(client)
    resp = await client.post(
        "/api/v1/contacts",
        json={"name": "Пётр (уже есть)", "phones": ["+7 (495) 123-45-67"]},
        headers=h["ivan"],
    )
    assert resp.status == 201, await resp.text()
    contact_id = (await resp.json())["id"]
    lead = await create(client, h["ivan"], **full_card(team, phones=["74951234567"], inn=INN))
    assert [(d["type"], d["matched_on"]) for d in lead["duplicates"]] == [("contact", "phone")]
    events = listen(client, "lead.converted", "deal.created", "client.created")
    resp = await client.post(
        f"/api/v1/leads/{lead['id']}/convert",
        json={"create_deal": True, "pipeline": "sales", "deal_title": "Первая поставка"},
        headers=h["ivan"],
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["contact_id"] == contact_id and not body["contact_created"]
    assert body["company_created"] and body["deal_id"] is not None
    assert body["lead"]["stage"] == "converted" and body["lead"]["deal_id"] == body["deal_id"]
    deal = await (await client.get(f"/api/v1/deals/{body['deal_id']}", headers=h["ivan"])).json()
    assert deal["title"] == "Первая поставка" and deal["source_id"] == team.expo
    assert deal["contact_id"] == contact_id and deal["company_id"] == body["company_id"]
    await until(lambda: len(events) == 3)
    assert sorted(e.name for e in events) == ["client.created", "deal.created", "lead.converted"]
    assert await count(client, Contact) == 1


async def test_a_failed_conversion_leaves_nothing_and_publishes_nothing(client: Any) -> None:
    team, h = await api_team(client)
    lid = (await create(client, h["ivan"], **full_card(team), stage="qualified"))["id"]
    async with client.app[SESSIONS]() as session:
        # An unchecked INN from an old import: the company step fails after the contact step.
        await session.execute(update(Lead).where(Lead.id == lid).values(inn="7707083894"))
        await session.commit()
    events = listen(client, "lead.converted", "client.created", "lead.stage_changed")
    resp = await client.post(
        f"/api/v1/leads/{lid}/convert", json={"create_deal": True}, headers=h["ivan"]
    )
    assert resp.status == 422 and (await resp.json())["error"] == "invalid-inn"
    for model in (Contact, Company, Deal):
        assert await count(client, model) == 0
    lead = await (await client.get(f"/api/v1/leads/{lid}", headers=h["ivan"])).json()
    assert lead["stage"] == "qualified" and lead["contact_id"] is None
    # A later successful request publishes its own events only.
    resp = await client.post(
        f"/api/v1/leads/{lid}/move", json={"stage": "in_work"}, headers=h["ivan"]
    )
    assert resp.status == 200
    await until(lambda: events)
    assert [e.name for e in events] == ["lead.stage_changed"]


async def test_lead_permissions(client: Any) -> None:
    team, h = await api_team(client)
    for who, read, write in (
        ("adm", 200, 200),
        ("boss", 200, 200),
        ("ivan", 200, 200),
        ("anna", 404, 404),
    ):
        lid = (
            await create(client, h["ivan"], **full_card(team, phones=[], emails=[f"{who}@x.ru"]))
        )["id"]
        url = f"/api/v1/leads/{lid}"
        assert (await client.get(url, headers=h[who])).status == read, who
        assert (await client.get(f"{url}/history", headers=h[who])).status == read, who
        resp = await client.patch(url, json={"comment": who}, headers=h[who])
        assert resp.status == write, who
        resp = await client.post(f"{url}/move", json={"stage": "in_work"}, headers=h[who])
        assert resp.status == write, who
        resp = await client.patch(url, json={"stage": "qualified"}, headers=h[who])
        assert resp.status == write, who
        resp = await client.post(f"{url}/convert", json={}, headers=h[who])
        assert resp.status == write, (who, await resp.text())
        resp = await client.delete(url, headers=h[who])
        assert resp.status == (404 if who == "anna" else 409), who  # converted: kept
        assert (await client.get(url)).status == 401
    other = (await create(client, h["ivan"]))["id"]
    assert (await client.delete(f"/api/v1/leads/{other}", headers=h["anna"])).status == 404
    assert (await client.delete(f"/api/v1/leads/{other}", headers=h["ivan"])).status == 204
    anna_lead = (await create(client, h["anna"]))["id"]
    totals = {}
    for who in ("adm", "boss", "ivan", "anna"):
        listing = await (await client.get("/api/v1/leads", headers=h[who])).json()
        totals[who] = listing["total"]
        if who == "anna":
            assert [x["id"] for x in listing["items"]] == [anna_lead]
    assert totals == {"adm": 5, "boss": 5, "ivan": 4, "anna": 1}
    # A manager creates leads only for himself.
    resp = await client.post(
        "/api/v1/leads", json={"responsible_id": team.anna.id}, headers=h["ivan"]
    )
    assert resp.status == 403
    resp = await client.post(
        "/api/v1/leads", json={"responsible_id": team.anna.id}, headers=h["boss"]
    )
    assert resp.status == 201


async def test_read_only_sharing_and_validation(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_MANAGERS_READ_ALL="true")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    _, h = await api_team(client)
    lid = (await create(client, h["ivan"], contact_name="x"))["id"]
    assert (await client.get(f"/api/v1/leads/{lid}", headers=h["anna"])).status == 200
    resp = await client.patch(f"/api/v1/leads/{lid}", json={"comment": "x"}, headers=h["anna"])
    assert resp.status == 403
    resp = await client.post("/api/v1/leads", json={"origin": "fax", "x": 1}, headers=h["ivan"])
    assert resp.status == 422
    assert set((await resp.json())["details"]["fields"]) == {"origin", "x"}
    resp = await client.post("/api/v1/leads", json={"inn": "123"}, headers=h["ivan"])
    assert resp.status == 422 and (await resp.json())["details"]["field"] == "inn"
    assert (await client.get("/api/v1/leads/abc", headers=h["ivan"])).status == 404
    assert (await client.get("/api/v1/leads/99999", headers=h["adm"])).status == 404
    listing = await (await client.get("/api/v1/leads?q=X&limit=1", headers=h["anna"])).json()
    assert listing["total"] == 1 and listing["limit"] == 1
