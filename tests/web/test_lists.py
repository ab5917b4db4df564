"""The list pages: search, filters, sorting and pagination change the rows; the state is in
the URL; chips remove one filter each; names, never codes; phones as click-to-call links."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import delete

from contact_center.keys import SESSIONS
from crm_core.calls.model import Call
from crm_core.clients.model import Company, Contact, Phone
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.recordings.model import Recording
from crm_core.reference.model import Region, Source
from crm_core.tasks.model import Task
from tests.helpers import found
from tests.web.world import rows, sign_in, team

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


async def _leads(client: Any) -> Any:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        spb = Region(code="RU-SPE", name="Санкт-Петербург")
        expo = Source(kind="exhibition", code="expo", name="Выставка «ПродЭкспо»")
        s.add_all([spb, expo])
        await s.flush()
        for i in range(60):
            lead = Lead(
                title=f"Заявка {i:02d}",
                stage="in_work" if i % 3 == 0 else "new",
                contact_name=f"Клиент {i:02d}",
                responsible_id=ids.ivan if i < 40 else ids.anna,
                region_id=spb.id if i % 2 == 0 else None,
                source_id=expo.id if i % 5 == 0 else None,
                created_at=T0 + timedelta(hours=i),
            )
            s.add(lead)
            await s.flush()
            s.add(Phone(lead_id=lead.id, e164=f"+7495123{i:04d}"))
        await s.commit()
    return ids, spb.id, expo.id


async def test_leads_pagination_filters_sort_and_chips(client: Any) -> None:
    ids, spb, expo = await _leads(client)
    await sign_in(client, "boss")
    first = await (await client.get("/leads")).text()
    assert len(rows(first)) == 50 and "1–50 из 60" in first
    assert rows(first)[0].count("Заявка 59")  # newest first
    second = await (await client.get("/leads?page=2")).text()
    assert len(rows(second)) == 10 and "51–60 из 60" in second

    staged = await (await client.get("/leads?stage=in_work")).text()
    assert len(rows(staged)) == 20 and "1–20 из 20" in staged
    assert "Стадия: <strong>В работе</strong>" in staged  # the chip, by name
    assert 'href="/leads"' in staged  # removing the only chip

    both = await (await client.get(f"/leads?stage=in_work&region={spb}&sort=title")).text()
    titles = re.findall(r'class="row-link">([^<]+)<', both)
    assert titles == sorted(titles) and len(titles) == 10
    assert "Санкт-Петербург" in both and "RU-SPE" not in both
    # Each chip's link keeps the other filter and the sort.
    assert f'href="/leads?region={spb}&amp;sort=title"' in both
    assert 'href="/leads?stage=in_work&amp;sort=title"' in both

    desc = await (await client.get("/leads?sort=-title")).text()
    assert re.findall(r'class="row-link">([^<]+)<', desc)[0] == "Заявка 59"

    mine = await (await client.get(f"/leads?responsible={ids.anna}")).text()
    assert len(rows(mine)) == 20 and "Анна Смирнова" in mine

    source = await (await client.get(f"/leads?source={expo}")).text()
    assert len(rows(source)) == 12 and "Выставка «ПродЭкспо»" in source

    by_phone = await (await client.get("/leads?q=1230007")).text()
    assert len(rows(by_phone)) == 1 and "Заявка 07" in by_phone
    assert 'href="tel:+74951230007"' in by_phone and "+7 (495) 123-00-07" in by_phone

    nothing = await (await client.get("/leads?q=nobody-like-this")).text()
    assert "ничего не найдено" in nothing and "Сбросить фильтры" in nothing

    partial = await client.get("/leads?stage=new", headers={"HX-Request": "true"})
    text = await partial.text()
    assert partial.status == 200 and "<html" not in text and 'class="filters"' in text
    assert partial.headers["Vary"] == "HX-Request"
    restore = await client.get(
        "/leads", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in await restore.text()

    # A hand-edited URL never fails.
    odd = await client.get("/leads?page=abc&sort=password&region=x&from=2026-13-45")
    assert odd.status == 200 and "1–50 из 60" in await odd.text()


async def test_a_manager_sees_only_his_leads_and_an_empty_list_says_what_to_do(
    client: Any,
) -> None:
    await _leads(client)
    await sign_in(client, "anna")
    text = await (await client.get("/leads")).text()
    assert "1–20 из 20" in text
    await sign_in(client, "adm")
    async with client.app[SESSIONS]() as s:
        await s.execute(delete(Lead))
        await s.commit()
    empty = await (await client.get("/leads")).text()
    assert "Лидов нет — создайте первый или подключите сайт" in empty


async def test_clients_switch_between_contacts_and_companies(client: Any) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        s.add_all(
            [
                Company(
                    name="ООО «Ромашка»",
                    client_type="wholesaler",
                    potential_amount=Decimal("1250000"),
                    purchase_mode="regular",
                    responsible_id=ids.ivan,
                ),
                Company(name="Отель «Балтика»", client_type="end_customer_hotel"),
                Contact(name="Сергей Ковалёв", responsible_id=ids.ivan),
            ]
        )
        await s.commit()
    await sign_in(client, "boss")
    contacts = await (await client.get("/clients")).text()
    assert "Сергей Ковалёв" in contacts and "Ромашка" not in contacts
    companies = await (await client.get("/clients?kind=company&sort=name")).text()
    assert len(rows(companies)) == 2
    assert "1\u202f250\u202f000\u00a0₽" in companies and "регулярно" in companies
    table = "".join(rows(companies))
    assert "Оптовик" in table and "wholesaler" not in table
    hotels = await (await client.get("/clients?kind=company&client_type=end_customer_hotel")).text()
    assert len(rows(hotels)) == 1 and "Отель «Балтика»" in hotels
    assert 'name="kind" value="company"' in hotels  # the filter form keeps the switch
    assert "Задача всем клиентам по фильтру" in hotels  # the head's bulk action


async def test_bulk_tasks_for_the_clients_of_a_filter(client: Any) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        for i in range(3):
            s.add(Company(name=f"Опт {i}", client_type="wholesaler", responsible_id=ids.ivan))
        s.add(Company(name="Розница", client_type="retail", responsible_id=ids.anna))
        await s.commit()
    await sign_in(client, "boss")
    page = await (await client.get("/clients?kind=company&client_type=wholesaler")).text()
    token = found(r'name="csrf-token" content="([0-9a-f]+)"', page)
    resp = await client.post(
        "/clients/bulk-task",
        data={
            "csrf_token": token,
            "kind": "company",
            "client_type": "wholesaler",
            "title": "Предложить новинки",
            "task_kind": "send_proposal",
            "due": "2026-12-10",
            "back": "/clients?kind=company&client_type=wholesaler",
        },
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"].endswith("bulk_created=3")
    async with client.app[SESSIONS]() as s:
        from sqlalchemy import select

        made = list(await s.scalars(select(Task).where(Task.title == "Предложить новинки")))
    assert len(made) == 3 and {t.responsible_id for t in made} == {ids.ivan}
    await sign_in(client, "ivan")
    refused = await client.post("/clients/bulk-task", data={"title": "x"})
    assert refused.status == 403


async def test_calls_show_the_clients_number_disposition_and_recording(client: Any) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        contact = Contact(name="Мария Орлова", responsible_id=ids.ivan)
        s.add(contact)
        await s.flush()

        def call(n: int, **kw: Any) -> Call:
            base = {
                "pbx": "main",
                "call_id": f"c{n}",
                "direction": "inbound",
                "caller": "+78125550011",
                "callee": "101",
                "extension": "101",
                "disposition": "answered",
                "started_at": T0 + timedelta(minutes=n),
                "ended_at": T0 + timedelta(minutes=n, seconds=90),
                "ring_seconds": 5.0,
                "talk_seconds": 65.0,
                "counted": True,
                "user_id": ids.ivan,
                "contact_id": contact.id,
            }
            return Call(**{**base, **kw})

        answered = call(1)
        missed = call(
            2,
            extension=None,
            disposition="missed",
            talk_seconds=0.0,
            counted=False,
            ring_seconds=20,
        )
        outbound = call(
            3, direction="outbound", caller="101", callee="+74991234567", contact_id=None
        )
        others = call(4, user_id=ids.anna, caller="+79160000000", extension="102")
        s.add_all([answered, missed, outbound, others])
        await s.flush()
        s.add(
            Recording(
                pbx="main",
                call_ref="c1",
                call_pk=answered.id,
                filename="c1.wav",
                state="stored",
                storage_key="k1",
                ended_at=T0,
            )
        )
        await s.commit()
        answered_id = answered.id
    await sign_in(client, "ivan")
    mine = await (await client.get("/calls")).text()
    assert len(rows(mine)) == 3  # not Anna's
    assert "+7 (812) 555-00-11" in mine and "+7 (499) 123-45-67" in mine
    number_cells = re.findall(r"<td>(?:<a class=\"phone\"[^>]*>([^<]*)</a>)", mine)
    assert "101" not in number_cells
    assert "Мария Орлова" in mine
    assert "пропущенный" in mine and "исходящий" in mine and "входящий" in mine
    assert "1\u00a0мин 05\u00a0с" in mine and "засчитан" in mine
    assert f'src="/api/v1/recordings/{await _rec_id(client, answered_id)}"' in mine
    missed_only = await (await client.get("/calls?result=missed")).text()
    assert len(rows(missed_only)) == 1 and "пропущенный" in missed_only
    counted = await (await client.get("/calls?counted=1")).text()
    assert len(rows(counted)) == 2
    by_number = await (await client.get("/calls?q=8 (812) 555-00-11")).text()
    assert len(rows(by_number)) == 2
    await sign_in(client, "boss")
    everyone = await (await client.get("/calls")).text()
    assert len(rows(everyone)) == 4
    anna = await (await client.get(f"/calls?manager={ids.anna}")).text()
    assert len(rows(anna)) == 1 and "Менеджер: <strong>Анна Смирнова</strong>" in anna


async def _rec_id(client: Any, call_pk: int) -> int:
    from sqlalchemy import select

    async with client.app[SESSIONS]() as s:
        return int(await s.scalar(select(Recording.id).where(Recording.call_pk == call_pk)))


async def test_tasks_deals_and_invoices_lists(client: Any) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        company = Company(name="ООО «Ромашка»", responsible_id=ids.ivan)
        s.add(company)
        await s.flush()
        s.add_all(
            [
                Task(
                    kind="call_back",
                    title="Перезвонить по счёту",
                    company_id=company.id,
                    responsible_id=ids.ivan,
                    due_at=T0,
                ),
                Task(
                    kind="meeting",
                    title="Встреча на складе",
                    responsible_id=ids.ivan,
                    due_at=datetime(2099, 1, 1, tzinfo=UTC),
                ),
                Task(kind="custom", title="Закрытая", responsible_id=ids.ivan, status="done"),
                Invoice(
                    number="A-17",
                    company_id=company.id,
                    amount=Decimal("1250000.50"),
                    issued_on=T0.date(),
                    due_on=T0.date(),
                    responsible_id=ids.ivan,
                ),
            ]
        )
        await s.commit()
    await sign_in(client, "ivan")
    tasks = await (await client.get("/tasks?status=open")).text()
    assert len(rows(tasks)) == 2 and "Закрытая" not in tasks
    assert "просрочена" in tasks and "ООО «Ромашка»" in tasks
    overdue = await (await client.get("/tasks?overdue=1")).text()
    assert len(rows(overdue)) == 1 and "Перезвонить по счёту" in overdue
    invoices = await (await client.get("/invoices")).text()
    assert "№ A-17" in invoices and "1\u202f250\u202f000,50\u00a0₽" in invoices
    assert "просрочен" in invoices
    deals = await (await client.get("/deals")).text()
    assert "Сделок нет" in deals
