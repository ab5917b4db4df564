"""The cards edited in place: fields saved through the clients, leads, deals and invoices
services (their validation, duplicates, access), refusals in Russian next to the field, the
timeline's actions, the lead's gate and conversion, the deal and invoice cards, requisites."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import RULES, SESSIONS
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact, LegalEntity, Phone, Requisites
from crm_core.clock import ManualClock
from crm_core.deals.model import Deal
from crm_core.deals.pipelines import sync_pipelines
from crm_core.invoices.model import Invoice
from crm_core.jobs.model import ScheduledJob
from crm_core.leads.model import Lead
from crm_core.reference.model import Region, Source
from crm_core.rules import CrmRules
from crm_core.tasks.model import Task
from tests.helpers import found
from tests.web.world import csrf, sign_in, team, visible

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client(settings: Any, aiohttp_client_factory: Any) -> Any:
    app = create_app(settings, announce=lambda _t: None, clock=ManualClock(NOW))
    return await aiohttp_client_factory(app)


async def _world(client: Any) -> dict[str, Any]:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        await sync_pipelines(s, CrmRules())
        moscow = Region(code="RU-MOW", name="Москва")
        yandex = Source(kind="ad_channel", code="yandex", name="Яндекс Директ")
        s.add_all([moscow, yandex])
        await s.flush()
        maria = Contact(name="Мария Орлова", responsible_id=ids.ivan)
        annas = Contact(name="Контакт Анны", responsible_id=ids.anna)
        sergey = Contact(name="Сергей Ковалёв", responsible_id=ids.ivan)
        romashka = Company(name="ООО «Ромашка»", responsible_id=ids.ivan)
        s.add_all([maria, annas, sergey, romashka])
        await s.flush()
        s.add(Phone(contact_id=maria.id, e164="+78125550011"))
        s.add(Phone(contact_id=annas.id, e164="+74957770000"))
        s.add(Phone(contact_id=sergey.id, e164="+74951234567"))
        lead = Lead(
            title="Заявка с сайта",
            stage="new",
            contact_name="Мария О.",
            company_name="Отель «Невский»",
            responsible_id=ids.ivan,
        )
        s.add(lead)
        await s.flush()
        s.add(Phone(lead_id=lead.id, e164="+78125550011"))
        await s.commit()
        return {
            "ids": ids,
            "maria": maria.id,
            "annas": annas.id,
            "sergey": sergey.id,
            "company": romashka.id,
            "lead": lead.id,
            "region": moscow.id,
            "source": yandex.id,
        }


async def _post(client: Any, path: str, data: Any, token: str) -> Any:
    return await client.post(path, data=data, headers={"HX-Request": "true", "X-CSRF-Token": token})


async def test_a_contact_card_shows_the_fields_by_name_and_edits_them(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    resp = await client.get(f"/clients/contact/{w['sergey']}")
    assert resp.status == 200
    html = visible(await resp.text())
    assert "Сергей Ковалёв" in html and "Иван Петров" in html
    assert 'data-call-to="+74951234567"' in html
    assert "Контакт #" not in html
    token = await csrf(client, f"/clients/contact/{w['sergey']}")

    form = await (await client.get(f"/card/contact/{w['sergey']}/field/phones/edit")).text()
    assert 'name="phones"' in form

    bad = await _post(
        client, f"/card/contact/{w['sergey']}/field/phones", {"phones": "12345"}, token
    )
    assert bad.status == 422
    text = await bad.text()
    assert "«12345» — это не номер телефона" in text and 'value="12345"' in text
    assert text.count('aria-invalid="true"') == 1  # the wrong number, not the empty box

    good = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/phones",
        [("phones", "8 (495) 123-45-67"), ("phones", "+7 916 000-11-22")],
        token,
    )
    assert good.status == 200, await good.text()
    assert "+7 (916) 000-11-22" in await good.text()
    assert "card-changed" in good.headers["HX-Trigger"]
    async with client.app[SESSIONS]() as s:
        phones = set(await s.scalars(select(Phone.e164).where(Phone.contact_id == w["sergey"])))
    assert phones == {"+74951234567", "+79160001122"}

    for key, value, shown in (
        ("region_id", str(w["region"]), "Москва"),
        ("source_id", str(w["source"]), "Яндекс Директ"),
        ("client_type", "wholesaler", "Оптовик"),
        ("needs_products", "бумага А4", "бумага А4"),
    ):
        r = await _post(client, f"/card/contact/{w['sergey']}/field/{key}", {key: value}, token)
        assert r.status == 200 and shown in await r.text()
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/potential",
        {"potential_amount": "1 200 000", "purchase_mode": "regular"},
        token,
    )
    assert r.status == 200
    assert "1\u202f200\u202f000" in await r.text() and "регулярно" in await r.text()
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/potential",
        {"potential_amount": "много", "purchase_mode": "regular"},
        token,
    )
    assert r.status == 422 and "введите сумму в рублях" in await r.text()
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/decision_maker",
        {"decision_maker_reached": "yes", "decision_maker_name": "Пётр, директор"},
        token,
    )
    assert r.status == 200 and "вышли на ЛПР — Пётр, директор" in await r.text()
    r = await _post(client, f"/card/contact/{w['sergey']}/field/name", {"name": " "}, token)
    assert r.status == 422 and "Заполните поле «Имя»" in await r.text()
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/messengers",
        [("channel", "telegram"), ("external_id", "kovalev")],
        token,
    )
    assert r.status == 200 and "kovalev" in await r.text()
    async with client.app[SESSIONS]() as s:
        c = await s.get(Contact, w["sergey"])
        assert c is not None
        assert (c.region_id, c.client_type, c.potential_amount) == (
            w["region"],
            "wholesaler",
            Decimal("1200000"),
        )
        assert c.decision_maker_reached is True


async def test_a_duplicate_phone_links_to_the_record_only_when_its_reader_may_see_it(
    client: Any,
) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(
        client, f"/card/contact/{w['sergey']}/field/phones", {"phones": "+7 812 555-00-11"}, token
    )
    assert r.status == 422
    text = await r.text()
    assert "уже есть у контакта" in text
    assert f'href="/clients/contact/{w["maria"]}">Мария Орлова</a>' in text
    r = await _post(
        client, f"/card/contact/{w['sergey']}/field/phones", {"phones": "+7 495 777-00-00"}, token
    )
    assert r.status == 422
    text = await r.text()
    assert "клиента другого менеджера" in text
    assert "Контакт Анны" not in text and f"/clients/contact/{w['annas']}" not in text


async def test_another_managers_card_is_not_found_and_not_writable(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    resp = await client.get(f"/clients/contact/{w['annas']}")
    assert resp.status == 404 and "Карточка не найдена" in await resp.text()
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(client, f"/card/contact/{w['annas']}/field/name", {"name": "x"}, token)
    assert r.status == 404
    no_csrf = await client.post(
        f"/card/contact/{w['sergey']}/field/name",
        data={"name": "x"},
        headers={"HX-Request": "true"},
    )
    assert no_csrf.status == 403
    # The manager does not hand his client to another manager; the head does.
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/responsible_id",
        {"responsible_id": str(w["ids"].anna)},
        token,
    )
    assert r.status == 422 and "Ответственного меняет руководитель" in await r.text()
    await sign_in(client, "boss")
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/responsible_id",
        {"responsible_id": str(w["ids"].anna)},
        token,
    )
    assert r.status == 200 and "Анна Смирнова" in await r.text()


async def test_timeline_comment_meeting_task_and_done(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    base = f"/card/contact/{w['sergey']}"
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(
        client, f"{base}/activity", {"kind": "note", "body": "Просил перезвонить"}, token
    )
    assert r.status == 200 and "Просил перезвонить" in await r.text()
    r = await _post(
        client, f"{base}/activity", {"kind": "meeting", "subject": "Встреча в офисе"}, token
    )
    assert r.status == 200 and "Встреча в офисе" in await r.text()
    r = await _post(client, f"{base}/activity", {"kind": "note", "body": ""}, token)
    assert r.status == 422 and "Напишите текст" in await r.text()
    r = await _post(
        client,
        f"{base}/task",
        {"title": "Отправить КП", "due_day": "03.12.2026", "due_time": "14:30", "remind": "60"},
        token,
    )
    assert r.status == 200 and "Отправить КП" in await r.text()
    r = await _post(client, f"{base}/task", {"title": "x", "due_day": "32.13.2026"}, token)
    assert r.status == 422 and "дата записана с ошибкой" in await r.text()
    async with client.app[SESSIONS]() as s:
        task = await s.scalar(select(Task).where(Task.title == "Отправить КП"))
        assert task is not None and task.contact_id == w["sergey"]
        assert task.due_at is not None and task.remind_at is not None
        assert (task.due_at - task.remind_at).total_seconds() == 3600
        kinds = set(
            await s.scalars(select(Activity.kind).where(Activity.contact_id == w["sergey"]))
        )
        assert kinds == {"note", "meeting"}
    done = await _post(client, f"/tasks/{task.id}/done", {}, token)
    assert done.status == 204
    side = await (await client.get(f"{base}/side", headers={"HX-Request": "true"})).text()
    assert "Задача выполнена: Отправить КП" in side


async def test_a_logged_call_is_one_entry_said_once(client: Any) -> None:
    w = await _world(client)
    async with client.app[SESSIONS]() as s:
        for n, (disposition, talk, by) in enumerate(
            (("answered", 65.0, None), ("missed", 0.0, None), ("missed", 0.0, "manager"))
        ):
            call = Call(
                pbx="main",
                call_id=f"c{n}",
                direction="outbound" if by else "inbound",
                caller="+78125550011",
                disposition=disposition,
                unanswered_by=by,
                started_at=datetime(2026, 12, 1, 10 + n, 0, tzinfo=UTC),
                ended_at=datetime(2026, 12, 1, 10 + n, 2, tzinfo=UTC),
                talk_seconds=talk,
                user_id=w["ids"].ivan,
                contact_id=w["maria"],
            )
            s.add(call)
            await s.flush()
            s.add(
                Activity(
                    kind="call",
                    direction=call.direction,
                    subject=f"Входящий звонок, {disposition} #{n}",
                    occurred_at=call.started_at,
                    talk_s=talk,
                    outcome=disposition,
                    user_id=w["ids"].ivan,
                    contact_id=w["maria"],
                    external_id=f"call:main:c{n}",
                    payload={"call_pk": call.id, "number": "+78125550011"},
                )
            )
        await s.commit()
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/clients/contact/{w['maria']}")).text())
    items = re.findall(r'<li class="timeline-item kind-call">(.*?)</li>', page, flags=re.S)
    assert len(items) == 3
    assert not any("Входящий звонок," in item for item in items)  # no second telling
    assert "разговор 1\xa0мин 05\xa0с" in items[2]
    assert "пропущен" in items[1] and "менеджер не взял трубку" in items[0]


async def test_the_lead_gate_refuses_naming_fields_then_moves_and_converts(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    lead = w["lead"]
    page = visible(await (await client.get(f"/clients/lead/{lead}")).text())
    assert "Чтобы перейти на стадию «В работе», заполните:" in page
    assert "Телефон +7 (812) 555-00-11 принадлежит" in page  # the duplicate, before converting
    assert "источник" in page and "тип клиента" in page
    token = await csrf(client, f"/clients/lead/{lead}")
    refused = await _post(client, f"/card/lead/{lead}/stage", {"stage": "in_work"}, token)
    assert refused.status == 422
    text = visible(await refused.text())
    # The refusal says it once: the gate line, as an alert, each field a link to fill it.
    assert text.count("заполните") == 1, text
    gate = found(r'<p class="gate refused" id="gate" role="alert">(.*?)</p>', text, flags=re.S)
    assert "Чтобы перейти на стадию «В работе», заполните:" in gate
    assert "источник" in gate and "тип клиента" in gate and 'class="gate-field"' in gate
    for key, value in (("source_id", str(w["source"])), ("client_type", "end_customer_hotel")):
        r = await _post(client, f"/card/lead/{lead}/field/{key}", {key: value}, token)
        assert r.status == 200
    r = await _post(
        client,
        f"/card/lead/{lead}/field/potential",
        {"potential_amount": "300000", "purchase_mode": "one_off"},
        token,
    )
    assert r.status == 200
    moved = await _post(client, f"/card/lead/{lead}/stage", {"stage": "in_work"}, token)
    assert moved.status == 200, await moved.text()
    dialog = await (await client.get(f"/card/lead/{lead}/convert")).text()
    assert "Для конвертации ещё нужно заполнить:" in dialog and "регион" in dialog
    for key, values in (
        ("region_id", {"region_id": str(w["region"])}),
        ("decision_maker", {"decision_maker_reached": "no"}),
    ):
        r = await _post(client, f"/card/lead/{lead}/field/{key}", values, token)
        assert r.status == 200
    dialog = await (await client.get(f"/card/lead/{lead}/convert")).text()
    assert "Для конвертации" not in dialog
    note = await _post(
        client, f"/card/lead/{lead}/activity", {"kind": "note", "body": "Звонила с сайта"}, token
    )
    assert note.status == 200
    assert "Телефон +7 (812) 555-00-11 принадлежит" in dialog and "Мария Орлова" in dialog
    converted = await _post(
        client,
        f"/card/lead/{lead}/convert",
        {
            "contact_id": str(w["maria"]),
            "create_deal": "1",
            "deal_title": "Текстиль для отеля",
            "deal_amount": "300 000",
        },
        token,
    )
    assert converted.status == 204, await converted.text()
    async with client.app[SESSIONS]() as s:
        row = await s.get(Lead, lead)
        assert row is not None and row.contact_id == w["maria"] and row.deal_id is not None
        deal = await s.get(Deal, row.deal_id)
        assert deal is not None and deal.amount == Decimal("300000")
    assert converted.headers["HX-Redirect"] == f"/deals/{row.deal_id}"
    card = visible(await (await client.get(f"/deals/{row.deal_id}")).text())
    assert "Текстиль для отеля" in card and "Мария Орлова" in card
    assert "Контакт установлен" in card and "Звонила с сайта" in card
    # The lead's history is the new client's history too.
    contact_page = visible(await (await client.get(f"/clients/contact/{w['maria']}")).text())
    assert "Звонила с сайта" in contact_page and "Текстиль для отеля" in contact_page
    lead_page = visible(await (await client.get(f"/clients/lead/{lead}")).text())
    assert "Лид сконвертирован" in lead_page and "Мария Орлова" in lead_page


async def test_a_lead_moved_to_junk_needs_a_reason(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    lead = w["lead"]
    token = await csrf(client, f"/clients/lead/{lead}")
    r = await _post(client, f"/card/lead/{lead}/stage", {"stage": "junk", "reason": ""}, token)
    assert r.status == 422 and "Укажите причину" in await r.text()
    r = await _post(client, f"/card/lead/{lead}/stage", {"stage": "junk", "reason": "spam"}, token)
    assert r.status == 200 and "Спам" in await r.text()


async def test_deal_card_moves_needs_a_lost_reason_and_issues_invoices(client: Any) -> None:
    w = await _world(client)
    ids = w["ids"]
    async with client.app[SESSIONS]() as s:
        from crm_core.deals import service as deals
        from crm_core.deals.schemas import DealInput
        from crm_core.users.model import User

        ivan = await s.get(User, ids.ivan)
        assert ivan is not None
        deal, _ = await deals.create_deal(
            s,
            DealInput(title="Поставка бумаги", company_id=w["company"], amount=Decimal("250000")),
            actor=ivan,
            rules=CrmRules(),
            now=NOW,
        )
        await s.commit()
        deal_id = deal.id
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/deals/{deal_id}")).text())
    assert "Поставка бумаги" in page and "ООО «Ромашка»" in page and "250\u202f000" in page
    token = await csrf(client, f"/deals/{deal_id}")
    r = await _post(client, f"/card/deal/{deal_id}/stage", {"stage": "needs"}, token)
    assert r.status == 200 and 'aria-current="step">Разговор с ЛПР' in await r.text()
    r = await _post(client, f"/card/deal/{deal_id}/stage", {"stage": "lost"}, token)
    assert r.status == 422 and "Выберите причину проигрыша" in await r.text()
    r = await _post(
        client,
        f"/card/deal/{deal_id}/field/samples_sent_at",
        {"samples_sent_at": "05.12.2026"},
        token,
    )
    assert r.status == 200 and "5 дек." in await r.text()
    r = await _post(client, f"/card/deal/{deal_id}/field/amount", {"amount": "-5"}, token)
    assert r.status == 422
    r = await _post(client, f"/card/deal/{deal_id}/field/amount", {"amount": "260 000,50"}, token)
    assert r.status == 200 and "260\u202f000,50" in await r.text()
    r = await _post(
        client,
        f"/card/deal/{deal_id}/invoice",
        {"number": "A-17", "amount": "260000", "due_on": "10.12.2026"},
        token,
    )
    assert r.status == 200 and "№ A-17" in await r.text()
    async with client.app[SESSIONS]() as s:
        inv = await s.scalar(select(Invoice).where(Invoice.number == "A-17"))
        assert (
            inv is not None and inv.company_id == w["company"] and inv.due_on == date(2026, 12, 10)
        )
    invoice_page = visible(await (await client.get(f"/invoices/{inv.id}")).text())
    assert "Счёт № A-17" in invoice_page and "Поставка бумаги" in invoice_page
    async with client.app[SESSIONS]() as s:  # the first payment reminder went out
        job = await s.scalar(
            select(ScheduledJob)
            .where(ScheduledJob.dedupe_key.like(f"invoice:{inv.id}:remind:%"))
            .order_by(ScheduledJob.due_at)
        )
        assert job is not None
        job.status, job.finished_at = "done", datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
        issued = await s.get(Invoice, inv.id)
        assert issued is not None
        issued.created_at = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
        await s.commit()
    paid = await client.post(
        f"/card/invoice/{inv.id}/pay", data={"csrf_token": token}, allow_redirects=False
    )
    assert paid.status == 303
    # The invoice card's history: issued, the reminder sent, paid (newest first).
    invoice_page = visible(await (await client.get(f"/invoices/{inv.id}")).text())
    history = found(
        r'<section class="panel" id="timeline"(.*?)</section>', invoice_page, flags=re.S
    )
    assert "История пока пуста" not in history
    titles = re.findall(r"<strong>(.*?)</strong>", history)
    assert titles == [
        "Счёт оплачен",
        "Напоминание об оплате отправлено ответственному",
        "Счёт выставлен: 260\u202f000\u00a0₽, оплатить до 10 дек.",
    ], titles
    async with client.app[SESSIONS]() as s:
        inv2 = await s.get(Invoice, inv.id)
        assert inv2 is not None and inv2.status == "paid"
    r = await _post(
        client, f"/card/deal/{deal_id}/stage", {"stage": "lost", "reason": "price"}, token
    )
    assert r.status == 200 and "цена" in await r.text()


async def test_company_requisites_are_checked_and_kept_as_history(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    company = w["company"]
    token = await csrf(client, f"/clients/company/{company}")
    base = f"/card/company/{company}/requisites"
    bad = await _post(
        client,
        base,
        {
            "target": "new",
            "entity_name": "ООО «Ромашка»",
            "full_name": "ООО «Ромашка»",
            "inn": "7707083894",
        },
        token,
    )
    assert bad.status == 422 and "ИНН: контрольная сумма не сходится" in await bad.text()
    good = await _post(
        client,
        base,
        {
            "target": "new",
            "entity_name": "ООО «Ромашка»",
            "full_name": "ООО «Ромашка»",
            "inn": "7707083893",
        },
        token,
    )
    assert good.status == 200, await good.text()
    async with client.app[SESSIONS]() as s:
        req = await s.scalar(
            select(Requisites)
            .join(LegalEntity, LegalEntity.id == Requisites.legal_entity_id)
            .where(LegalEntity.company_id == company)
        )
        assert req is not None
    changed = await _post(
        client,
        base,
        {
            "target": f"replace:{req.id}",
            "full_name": "ООО «Ромашка-М»",
            "inn": "7707083893",
            "kpp": "773601001",
        },
        token,
    )
    assert changed.status == 200, await changed.text()
    text = await changed.text()
    assert "ООО «Ромашка-М»" in text and "История реквизитов (1)" in text
    async with client.app[SESSIONS]() as s:
        holding = Company(name="Холдинг «Цветы»", responsible_id=w["ids"].ivan)
        s.add(holding)
        await s.commit()
        holding_id = holding.id
    r = await _post(client, f"/card/company/{company}/head", {"head": "Нет такой"}, token)
    assert r.status == 422 and "Компания «Нет такой» не найдена" in await r.text()
    r = await _post(client, f"/card/company/{company}/head", {"head": "Холдинг «Цветы»"}, token)
    assert r.status == 200 and f'href="/clients/company/{holding_id}"' in await r.text()
    head_page = visible(await (await client.get(f"/clients/company/{holding_id}")).text())
    assert "Входят в группу" in head_page and "ООО «Ромашка»" in head_page


async def test_names_typed_as_markup_render_as_text(client: Any) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(
        client,
        f"/card/contact/{w['sergey']}/field/name",
        {"name": "<script>alert(1)</script>"},
        token,
    )
    assert r.status == 200
    page = await (await client.get(f"/clients/contact/{w['sergey']}")).text()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"<script(?![^>]*(src=|type=\"application/json\"))", page)


async def test_a_contact_is_linked_to_a_company_marked_its_decision_maker_and_unlinked(
    client: Any,
) -> None:
    w = await _world(client)
    await sign_in(client, "ivan")
    base = f"/card/contact/{w['sergey']}/companies"
    token = await csrf(client, f"/clients/contact/{w['sergey']}")
    r = await _post(client, base, {"action": "link", "company": "Нет такой"}, token)
    assert r.status == 422 and "не найдена" in await r.text()
    r = await _post(
        client, base, {"action": "link", "company": "ООО «Ромашка»", "position": "закупщик"}, token
    )
    assert r.status == 200 and "ООО «Ромашка»</a> · закупщик" in await r.text()
    r = await _post(client, base, {"action": "link", "company": "ООО «Ромашка»"}, token)
    assert r.status == 422 and "уже привязан" in await r.text()
    r = await _post(client, base, {"action": "dm", "company_id": str(w["company"])}, token)
    assert r.status == 200 and '<span class="badge">ЛПР</span>' in await r.text()
    company_page = visible(await (await client.get(f"/clients/company/{w['company']}")).text())
    assert "Сергей Ковалёв" in company_page
    r = await _post(client, base, {"action": "unlink", "company_id": str(w["company"])}, token)
    assert r.status == 200 and "Не привязан к компаниям" in await r.text()


@pytest.mark.parametrize("lang", ["ru", "en"])
async def test_every_card_is_translated(client: Any, lang: str) -> None:
    w = await _world(client)
    async with client.app[SESSIONS]() as s:
        s.add(
            Invoice(
                number="B-1",
                company_id=w["company"],
                amount=Decimal("1000"),
                issued_on=date(2026, 12, 1),
                due_on=date(2026, 12, 10),
                responsible_id=w["ids"].ivan,
            )
        )
        await s.commit()
        invoice_id = await s.scalar(select(Invoice.id).where(Invoice.number == "B-1"))
    await sign_in(client, "boss")
    pages = [
        f"/clients/contact/{w['sergey']}",
        f"/clients/company/{w['company']}",
        f"/clients/lead/{w['lead']}",
        f"/invoices/{invoice_id}",
        f"/card/lead/{w['lead']}/convert",
        f"/card/contact/{w['sergey']}/field/potential/edit",
        f"/card/contact/{w['sergey']}/field/messengers/edit",
    ]
    for path in pages:
        resp = await client.get(path, params={"lang": lang})
        assert resp.status == 200, path
        html = visible(await resp.text())
        raw = re.findall(
            r"\b(?:card|error|requirement|interest|messenger|junk_reason|lost_reason)\.[a-z_]+",
            re.sub(r'(?:hx-[a-z]+|href|action|id|class|name|for)="[^"]*"', "", html),
        )
        assert raw == [], (path, raw)


CUSTOM_FIELDS = (
    '[{"name": "fleet", "type": "number", "label_ru": "Автопарк", "label_en": "Fleet"},'
    ' {"name": "segment", "type": "enum", "label_ru": "Сегмент", "options": ['
    '  {"value": "A", "label_ru": "Крупный", "label_en": "Large"},'
    '  {"value": "B", "label_ru": "Средний", "label_en": "Medium"}, "C"]},'
    ' {"name": "since", "type": "date", "label_ru": "Клиент с"},'
    ' {"name": "partner", "type": "bool", "label_ru": "Партнёр"}]'
)


@pytest.fixture
async def custom_client(make_settings: Any, database_url: str, aiohttp_client_factory: Any) -> Any:
    settings = make_settings(
        CC_DATABASE_URL=database_url,
        CC_CRM_CUSTOM_FIELDS=CUSTOM_FIELDS,
        CC_CRM_LEAD_GATE='{"in_work": ["source", "custom.fleet"]}',
    )
    app = create_app(settings, announce=lambda _t: None, clock=ManualClock(NOW))
    return await aiohttp_client_factory(app)


async def test_configured_fields_are_on_the_card_by_their_labels_and_edited_in_place(
    custom_client: Any,
) -> None:
    client = custom_client
    w = await _world(client)
    await sign_in(client, "ivan")
    card = f"/clients/contact/{w['sergey']}"
    page = visible(await (await client.get(card)).text())
    assert "Дополнительно" in page
    for label in ("Автопарк", "Сегмент", "Клиент с", "Партнёр"):
        assert label in page
    assert "field.custom" not in page
    token = await csrf(client, card)
    base = f"/card/contact/{w['sergey']}/field"

    bad = await _post(client, f"{base}/custom-fleet", {"custom-fleet": "много"}, token)
    assert bad.status == 422
    assert "«Автопарк»: введите число" in await bad.text()
    wrong = await _post(client, f"{base}/custom-segment", {"custom-segment": "Z"}, token)
    assert wrong.status == 422  # the service's own check: one of the options
    for key, value, shown in (
        ("custom-fleet", "12", "12"),
        ("custom-segment", "B", "Средний"),
        ("custom-since", "31.01.2020", "2020"),
        ("custom-partner", "yes", "да"),
    ):
        r = await _post(client, f"{base}/{key}", {key: value}, token)
        assert r.status == 200, await r.text()
        assert shown in visible(await r.text())
    form = await (await client.get(f"{base}/custom-segment/edit")).text()
    # The options by their configured labels (a plain option as it is), the value stored.
    assert '<option value="B" selected>Средний</option>' in form
    assert '<option value="A">Крупный</option>' in form and '<option value="C">C</option>' in form
    english = visible(await (await client.get(card + "?lang=en")).text())
    assert "Medium" in english and "Средний" not in english
    await client.get(card + "?lang=ru")
    async with client.app[SESSIONS]() as s:
        contact = await s.get(Contact, w["sergey"])
        assert contact is not None
        assert contact.custom == {
            "fleet": 12,
            "segment": "B",
            "since": "2020-01-31",
            "partner": True,
        }
    cleared = await _post(client, f"{base}/custom-fleet", {"custom-fleet": ""}, token)
    assert cleared.status == 200
    async with client.app[SESSIONS]() as s:
        contact = await s.get(Contact, w["sergey"])
        assert contact is not None and (contact.custom or {}).get("fleet") is None


async def test_a_gate_on_a_configured_field_names_it_and_links_to_it(custom_client: Any) -> None:
    client = custom_client
    w = await _world(client)
    await sign_in(client, "ivan")
    lead = w["lead"]
    page = visible(await (await client.get(f"/clients/lead/{lead}")).text())
    assert "requirement.custom" not in page
    assert "Автопарк" in page and "f-custom-fleet" in page
    token = await csrf(client, f"/clients/lead/{lead}")
    refused = await _post(client, f"/card/lead/{lead}/stage", {"stage": "in_work"}, token)
    assert refused.status == 422
    assert "Автопарк" in await refused.text()
    await _post(
        client, f"/card/lead/{lead}/field/source_id", {"source_id": str(w["source"])}, token
    )
    await _post(client, f"/card/lead/{lead}/field/custom-fleet", {"custom-fleet": "3"}, token)
    moved = await _post(client, f"/card/lead/{lead}/stage", {"stage": "in_work"}, token)
    assert moved.status == 200, await moved.text()


def test_a_refusal_names_the_entry_of_a_list_field() -> None:
    from contact_center.i18n import field_label, translator

    t = translator("ru")
    assert field_label(t, "phones.1") == "Телефон 2"
    assert field_label(t, "inn") == t("field.inn")
    assert field_label(t, "nonsense.x") == "nonsense.x"


async def test_the_deals_contact_and_company_are_chosen_by_name_among_the_readers_clients(
    client: Any,
) -> None:
    w = await _world(client)
    async with client.app[SESSIONS]() as s:
        from crm_core.deals import service as deals
        from crm_core.deals.schemas import DealInput
        from crm_core.users.model import User

        ivan = await s.get(User, w["ids"].ivan)
        assert ivan is not None
        deal, _ = await deals.create_deal(
            s, DealInput(title="Поставка бумаги"), actor=ivan, rules=CrmRules(), now=NOW
        )
        await s.commit()
        deal_id = deal.id
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/deals/{deal_id}")).text())
    assert 'id="f-contact_id"' in page and 'id="f-company_id"' in page
    token = await csrf(client, f"/deals/{deal_id}")
    base = f"/card/deal/{deal_id}/field"

    form = await (await client.get(f"{base}/contact_id/edit")).text()
    assert 'list="dl-contact_id"' in form and 'hx-get="/card/suggest/contact"' in form
    offered = await (
        await client.get("/card/suggest/contact", params={"contact_id": "Конт"})
    ).text()
    assert "Контакт Анны" not in offered  # another manager's client is not suggested
    offered = await (
        await client.get("/card/suggest/contact", params={"contact_id": "Мари"})
    ).text()
    assert 'value="Мария Орлова"' in offered

    hidden = await _post(client, f"{base}/contact_id", {"contact_id": "Контакт Анны"}, token)
    assert hidden.status == 422
    assert "Контакт «Контакт Анны» не найден" in await hidden.text()
    chosen = await _post(client, f"{base}/contact_id", {"contact_id": "мария орлова"}, token)
    assert chosen.status == 200, await chosen.text()
    assert f'href="/clients/contact/{w["maria"]}"' in await chosen.text()
    company = await _post(client, f"{base}/company_id", {"company_id": "Ромашка"}, token)
    assert company.status == 200, await company.text()
    async with client.app[SESSIONS]() as s:
        stored = await s.get(Deal, deal_id)
        assert stored is not None
        assert (stored.contact_id, stored.company_id) == (w["maria"], w["company"])
    unlinked = await _post(client, f"{base}/contact_id", {"contact_id": ""}, token)
    assert unlinked.status == 200
    async with client.app[SESSIONS]() as s:
        stored = await s.get(Deal, deal_id)
        assert stored is not None and stored.contact_id is None


async def test_a_deal_is_moved_into_another_pipeline_from_its_card(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    pipelines = (
        '[{"code": "sales", "name_ru": "Продажи", "is_default": true, "stages": ['
        '{"code": "contact", "name_ru": "Контакт"}, {"code": "won", "name_ru": "Успех",'
        ' "kind": "won"}, {"code": "lost", "name_ru": "Провал", "kind": "lost"}]},'
        ' {"code": "tenders", "name_ru": "Тендеры", "stages": ['
        '{"code": "found", "name_ru": "Тендер найден"}, {"code": "won", "name_ru": "Выигран",'
        ' "kind": "won"}, {"code": "lost", "name_ru": "Проигран", "kind": "lost"}]}]'
    )
    settings = make_settings(CC_DATABASE_URL=database_url, CC_CRM_PIPELINES=pipelines)
    app = create_app(settings, announce=lambda _t: None, clock=ManualClock(NOW))
    client = await aiohttp_client_factory(app)
    w = await _world(client)
    rules = client.app[RULES]
    async with client.app[SESSIONS]() as s:
        from crm_core.deals import service as deals
        from crm_core.deals.schemas import DealInput
        from crm_core.users.model import User

        await sync_pipelines(s, rules)
        ivan = await s.get(User, w["ids"].ivan)
        assert ivan is not None
        deal, _ = await deals.create_deal(
            s, DealInput(title="Тендер на салфетки"), actor=ivan, rules=rules, now=NOW
        )
        await s.commit()
        deal_id = deal.id
    await sign_in(client, "ivan")
    page = visible(await (await client.get(f"/deals/{deal_id}")).text())
    assert 'id="f-pipeline"' in page and "Продажи" in page
    token = await csrf(client, f"/deals/{deal_id}")
    form = await (await client.get(f"/card/deal/{deal_id}/field/pipeline/edit")).text()
    assert '<option value="tenders">Тендеры</option>' in form
    moved = await _post(
        client, f"/card/deal/{deal_id}/field/pipeline", {"pipeline": "tenders"}, token
    )
    assert moved.status == 200, await moved.text()
    assert moved.headers.get("HX-Refresh") == "true"
    page = visible(await (await client.get(f"/deals/{deal_id}")).text())
    assert "Тендер найден" in page
    async with client.app[SESSIONS]() as s:
        from crm_core.deals.model import Pipeline

        stored = await s.get(Deal, deal_id)
        assert stored is not None
        pipeline = await s.get(Pipeline, stored.pipeline_id)
        assert pipeline is not None and pipeline.code == "tenders"
