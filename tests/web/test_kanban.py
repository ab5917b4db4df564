"""The kanban boards: columns with counts and sums, cards a column at a time, moves through the
same rules as the API (the lead gate, the lost reason, access), CSRF on the moves."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from contact_center.keys import SESSIONS
from crm_core.clients.model import Phone
from crm_core.deals.model import Deal, DealStageChange, PipelineStage
from crm_core.deals.pipelines import get_pipeline, stages_of, sync_pipelines
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from tests.web.world import csrf, sign_in, team, visible

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _plain(text: str) -> str:
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def _column(html: str, key: str) -> str:
    match = re.search(
        rf'<section class="kcol[^"]*" data-stage="{re.escape(key)}".*?</section>', html, re.S
    )
    assert match, f"no column {key}"
    return _plain(match.group(0))


async def _world(client: Any) -> Any:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        await sync_pipelines(s, CrmRules())
        expo = Source(kind="exhibition", code="expo", name="Выставка")
        s.add(expo)
        await s.flush()
        for i in range(55):
            s.add(
                Lead(
                    title=f"Лид {i:02d}",
                    stage="new",
                    contact_name=f"Клиент {i:02d}",
                    responsible_id=ids.ivan if i < 53 else ids.anna,
                    potential_amount=Decimal("1000.50") if i < 2 else None,
                    stage_changed_at=T0 + timedelta(minutes=i),
                )
            )
        gated = Lead(title="Кафе «Пышечная»", stage="new", responsible_id=ids.ivan)
        s.add(gated)
        pipeline = await get_pipeline(s, None)
        stages = await stages_of(s, pipeline.id)
        for i, amount in enumerate((Decimal("1250000"), Decimal("250000.50"))):
            s.add(
                Deal(
                    title=f"Поставка бумаги {i}",
                    pipeline_id=pipeline.id,
                    stage_id=stages[0].id,
                    amount=amount,
                    responsible_id=ids.ivan,
                    stage_changed_at=T0,
                )
            )
        s.add(
            Deal(
                title="Чужая сделка",
                pipeline_id=pipeline.id,
                stage_id=stages[0].id,
                amount=Decimal("7"),
                responsible_id=ids.anna,
            )
        )
        await s.flush()
        s.add(
            Task(
                kind="call_back",
                title="Перезвонить закупщику",
                responsible_id=ids.ivan,
                lead_id=gated.id,
                due_at=T0,
            )
        )
        await s.commit()
    return ids, gated.id, expo.id, {s.code: s.id for s in stages}


async def test_the_lead_board_shows_stages_counts_sums_and_a_column_at_a_time(
    client: Any,
) -> None:
    ids, _, _, _ = await _world(client)
    await sign_in(client, "ivan")
    html = await (await client.get("/leads?view=kanban")).text()
    new = _column(html, "new")
    assert "Новый" in new and ">54<" in new  # his 54, not Анна's
    assert "2 001 ₽" in new  # two potentials of 1 000,50
    assert new.count('<article class="kcard') == 20
    assert "Ещё 34" in new
    assert "Перезвонить закупщику" in new and "overdue" in new  # the next task, overdue
    assert "ИП" in new  # the responsible's initials
    for name in ("В работе", "Квалифицирован", "Сконвертирован", "Некачественный"):
        assert name in html
    assert "Причина" in visible(html) and "Спам" in html  # the junk reason dialog
    more = re.search(r'hx-get="(/leads/kanban/column\?[^"]+)"', html)
    assert more
    # A card shown is moved away meanwhile: the next page still starts after the last card
    # shown (by its place, not by a count), so none is skipped.
    first = re.search(r'<article class="kcard" data-id="(\d+)"', new)
    assert first
    async with client.app[SESSIONS]() as s:
        moved = await s.get(Lead, int(first.group(1)))
        assert moved is not None
        moved.stage = "junk"
        await s.commit()
    rest = await (await client.get(more.group(1).replace("&amp;", "&"))).text()
    assert rest.count('<article class="kcard') == 34 and "Ещё" not in rest
    assert f'data-id="{first.group(1)}"' not in rest
    listing = await (await client.get("/leads")).text()
    assert 'href="/leads?view=kanban"' in listing  # the view switch

    await sign_in(client, "boss")
    html = await (await client.get("/leads?view=kanban")).text()
    assert ">55<" in _column(html, "new")  # 56, one moved to junk above
    only = await (await client.get(f"/leads?view=kanban&responsible={ids.anna}")).text()
    assert ">2<" in _column(only, "new")


async def test_a_lead_move_goes_through_the_gate_and_names_what_is_missing(client: Any) -> None:
    ids, gated, expo, _ = await _world(client)
    await sign_in(client, "ivan")
    token = await csrf(client, "/leads?view=kanban")
    resp = await client.post(f"/leads/kanban/{gated}/move", json={"stage": "in_work"})
    assert resp.status == 403  # no CSRF token
    hdr = {"X-CSRF-Token": token}
    resp = await client.post(f"/leads/kanban/{gated}/move", json={"stage": "in_work"}, headers=hdr)
    assert resp.status == 422
    body = await resp.json()
    assert body["ok"] is False and body["error"] == "lead-gate-missing-fields"
    assert body["message"].startswith("Лид не перенесён")
    assert "источник" in body["missing"] and "тип клиента" in body["missing"]
    assert body["link"] == f"/clients/lead/{gated}"
    async with client.app[SESSIONS]() as s:
        lead = await s.get(Lead, gated)
        assert lead is not None and lead.stage == "new"
        lead.contact_name = "Пётр"
        lead.source_id = expo
        lead.client_type = "retail"
        lead.potential_amount = Decimal("300000")
        lead.purchase_mode = "regular"
        s.add(Phone(lead_id=gated, e164="+79161234567"))
        await s.commit()
    resp = await client.post(f"/leads/kanban/{gated}/move", json={"stage": "in_work"}, headers=hdr)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["columns"]["in_work"]["count"] == 1
    assert _plain(body["columns"]["in_work"]["total"]) == "300 000 ₽"

    resp = await client.post(f"/leads/kanban/{gated}/move", json={"stage": "junk"}, headers=hdr)
    assert resp.status == 422 and "причину" in (await resp.json())["message"]
    resp = await client.post(
        f"/leads/kanban/{gated}/move", json={"stage": "junk", "reason": "spam"}, headers=hdr
    )
    assert resp.status == 200
    async with client.app[SESSIONS]() as s:
        lead = await s.get(Lead, gated)
        assert lead is not None and lead.junk_reason == "spam"
        region = Region(code="RU-MOW", name="Москва")
        s.add(region)
        await s.flush()
        lead.region_id = region.id
        lead.decision_maker_reached = True
        await s.commit()
    resp = await client.post(
        f"/leads/kanban/{gated}/move", json={"stage": "converted"}, headers=hdr
    )
    body = await resp.json()
    assert resp.status == 422 and "конвертацией" in body["message"]

    async with client.app[SESSIONS]() as s:
        foreign = await s.scalar(select(Lead.id).where(Lead.responsible_id == ids.anna))
    resp = await client.post(f"/leads/kanban/{foreign}/move", json={"stage": "new"}, headers=hdr)
    assert resp.status == 404  # another manager's lead is not even there for him


async def test_the_deal_board_moves_a_deal_and_asks_a_reason_for_lost(client: Any) -> None:
    _, _, _, stages = await _world(client)
    await sign_in(client, "ivan")
    html = await (await client.get("/deals?view=kanban")).text()
    contact = _column(html, str(stages["contact"]))
    assert "Контакт установлен" in contact and ">2<" in contact
    assert "1 500 000,50 ₽" in contact and "Чужая сделка" not in contact
    assert "Сделка провалена" in html and "Выбрали конкурента" in html
    token = await csrf(client, "/deals?view=kanban")
    hdr = {"X-CSRF-Token": token}
    async with client.app[SESSIONS]() as s:
        deal = await s.scalar(select(Deal).where(Deal.title == "Поставка бумаги 0"))
        assert deal is not None
    url = f"/deals/kanban/{deal.id}/move"
    resp = await client.post(url, json={"stage": str(stages["needs"])}, headers=hdr)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["columns"][str(stages["needs"])]["count"] == 1
    assert _plain(body["columns"][str(stages["needs"])]["total"]) == "1 250 000 ₽"

    resp = await client.post(url, json={"stage": str(stages["lost"])}, headers=hdr)
    assert resp.status == 422
    assert (await resp.json())["message"] == "Укажите причину проигрыша сделки"
    resp = await client.post(
        url, json={"stage": str(stages["lost"]), "reason": "competitor"}, headers=hdr
    )
    assert resp.status == 200
    async with client.app[SESSIONS]() as s:
        moved = await s.get(Deal, deal.id)
        assert moved is not None and moved.lost_reason == "competitor"
        assert moved.closed_at is not None
        history = (
            await s.scalars(select(DealStageChange).where(DealStageChange.deal_id == deal.id))
        ).all()
        assert [h.reason for h in history][-1] == "competitor"
        lost = await s.get(PipelineStage, stages["lost"])
        assert lost is not None and moved.stage_id == lost.id

    resp = await client.post(url, json={"stage": "nonsense"}, headers=hdr)
    assert resp.status == 422
    assert (await resp.json())["message"].startswith("В воронке этой сделки нет такой стадии")
    resp = await client.post(url, data=b"{", headers={**hdr, "Content-Type": "application/json"})
    assert resp.status == 422
    assert (await client.get("/deals?view=kanban&pipeline=999")).status == 404

    english = await (await client.get("/deals?view=kanban&lang=en")).text()
    assert "Contact established" in english and ">Kanban<" in english
    assert "Chose a competitor" in english and "Контакт установлен" not in visible(english)

    # The head moves anyone's deal; a manager with read access to all may not.
    await sign_in(client, "boss")
    html = await (await client.get("/deals?view=kanban")).text()
    assert "Чужая сделка" in html and 'class="kcard locked"' not in html


async def test_with_read_all_another_managers_cards_are_shown_locked_and_refused(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    from contact_center.app import create_app

    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_MANAGERS_READ_ALL="true")
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    _, _, _, stages = await _world(client)
    async with client.app[SESSIONS]() as s:
        foreign = await s.scalar(select(Deal).where(Deal.title == "Чужая сделка"))
        assert foreign is not None
        foreign.title = "<script>alert(1)</script>"
        await s.commit()
    await sign_in(client, "ivan")
    html = await (await client.get("/deals?view=kanban")).text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    card = re.search(rf'<article class="kcard locked" data-id="{foreign.id}"', html)
    assert card, "another manager's card is shown, locked"
    assert html.count('class="kcard locked"') == 1
    token = await csrf(client, "/deals?view=kanban")
    resp = await client.post(
        f"/deals/kanban/{foreign.id}/move",
        json={"stage": str(stages["needs"])},
        headers={"X-CSRF-Token": token},
    )
    assert resp.status == 403
    assert (await resp.json())["message"].startswith("Это сделка другого менеджера")
    async with client.app[SESSIONS]() as s:
        still = await s.get(Deal, foreign.id)
        assert still is not None and still.stage_id == stages["contact"]
    # By code as well as by id; an unknown one is a translated 422 page, not a 500.
    assert (await client.get("/deals?view=kanban&pipeline=sales")).status == 200
    unknown = await client.get("/deals?view=kanban&pipeline=nope")
    assert unknown.status == 422 and "Такой воронки нет" in await unknown.text()


async def test_hostile_ids_and_cursors_are_4xx_never_500(client: Any) -> None:
    _, _, _, stages = await _world(client)
    await sign_in(client, "boss")
    token = await csrf(client, "/deals?view=kanban")
    hdr = {"X-CSRF-Token": token}
    for path in ("/leads/kanban/9999999999/move", "/deals/kanban/99999999999999999999/move"):
        resp = await client.post(path, json={"stage": "new"}, headers=hdr)
        assert resp.status == 404, path
    async with client.app[SESSIONS]() as s:
        deal = await s.scalar(select(Deal.id))
    for stage in ("9999999999", "x" * 65, ""):
        resp = await client.post(f"/deals/kanban/{deal}/move", json={"stage": stage}, headers=hdr)
        assert resp.status == 422, stage
    for query in (
        "stage=new&after=garbage&shown=-1&count=abc",
        "stage=new&after=2026-01-01T00:00:00_1&shown=99999999999",
        "stage=new&after=2026-01-01T00:00:00%2B00:00_99999999999999999999",
        "stage=new&after=2026-01-01T00:00:00%2B00:00_999999999999",
        "stage=new&after=9999-12-31T23:59:59%2B00:00_1",
        "stage=nope",
        "stage=new&after=2026-01-01T00:00:00%2B00:00_%C2%B2&shown=%C2%B2&count=%C2%B2"
        "&responsible=%C2%B2",
    ):
        resp = await client.get(f"/leads/kanban/column?{query}")
        assert resp.status in (200, 404), query
    for query in (
        "stage=9999999999",
        f"stage={stages['won']}&responsible=99999999999",
        "stage=%C2%B2",
    ):
        assert (await client.get(f"/deals/kanban/column?{query}")).status in (200, 404), query
    assert (await client.get("/notifications/99999999999.json")).status == 404
    assert (await client.get("/notifications?before=99999999999999")).status == 200
    assert (await client.get("/notifications?before=%C2%B2")).status == 200
    assert (await client.get("/deals?view=kanban&pipeline=%C2%B2")).status == 422
    resp = await client.post("/notifications/read", data={"id": "²"}, headers=hdr)
    assert resp.status == 422
