"""The invoices API: who may issue, read, change, pay and cancel; reminders delivered by the
app's scheduler at the configured days before the due date, with a controllable clock."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from contact_center.keys import BUS, SCHEDULER
from crm_core.events import DomainEvent
from crm_core.invoices.events import InvoiceReminder
from tests.crm_core.tasks.world import T0, World, api_world, manual_clock_client
from tests.helpers import until

MSK = ZoneInfo("Europe/Moscow")
MONDAY = date(2026, 3, 2)


@pytest.fixture
async def app(settings: Any, aiohttp_client_factory: Any) -> tuple[Any, Any]:
    return await manual_clock_client(settings, aiohttp_client_factory)


def invoice_body(w: World, **kw: Any) -> dict[str, Any]:
    return {
        "number": "СЧ-1",
        "legal_entity_id": w["entity"],
        "amount": "99000.10",
        "issued_on": MONDAY.isoformat(),
        "due_on": (MONDAY + timedelta(days=5)).isoformat(),
        **kw,
    }


async def _issue(client: Any, w: World, h: dict[str, Any], who: str = "ivan", **kw: Any) -> Any:
    return await client.post("/api/v1/invoices", json=invoice_body(w, **kw), headers=h[who])


async def test_reminders_fire_three_days_before_and_on_the_due_date(app: tuple[Any, Any]) -> None:
    client, clock = app
    w, h = await api_world(client)
    reminders: list[DomainEvent] = []

    async def collect(event: DomainEvent) -> None:
        reminders.append(event)

    client.app[BUS].subscribe(collect, name="test", events=["invoice.reminder"])
    resp = await _issue(client, w, h, "boss")
    assert resp.status == 201, await resp.text()
    invoice = await resp.json()
    assert invoice["amount"] == "99000.10" and invoice["responsible_id"] == w["ivan"]
    assert invoice["days_left"] == 5 and invoice["overdue"] is False
    scheduler = client.app[SCHEDULER]

    async def at(moment: datetime) -> int:
        clock.set(moment)
        return await scheduler.run_once()

    three_before = datetime(2026, 3, 4, 9, 0, tzinfo=MSK)  # due 7 March
    assert await at(three_before - timedelta(seconds=1)) == 0
    assert reminders == []
    assert await at(three_before) == 1
    await until(lambda: len(reminders) == 1)
    assert isinstance(reminders[0], InvoiceReminder)
    assert reminders[0].days_left == 3 and reminders[0].audience == (f"user:{w['ivan']}",)
    assert reminders[0].number == "СЧ-1"
    assert await at(datetime(2026, 3, 7, 8, 59, tzinfo=MSK)) == 0
    assert await at(datetime(2026, 3, 7, 9, 0, tzinfo=MSK)) == 1
    await until(lambda: len(reminders) == 2)
    assert isinstance(reminders[1], InvoiceReminder)
    assert reminders[1].days_left == 0
    assert await at(datetime(2026, 3, 20, tzinfo=UTC)) == 0


async def test_paid_invoices_are_not_reminded_of(app: tuple[Any, Any]) -> None:
    client, clock = app
    w, h = await api_world(client)
    iid = (await (await _issue(client, w, h)).json())["id"]
    paid_at = (T0 + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    resp = await client.post(f"/api/v1/invoices/{iid}/pay?paid_at={paid_at}", headers=h["ivan"])
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "paid" and body["paid_at"].startswith("2026-03-02T08:00")
    assert body["days_left"] is None
    clock.advance(timedelta(days=30))
    assert await client.app[SCHEDULER].run_once() == 0


async def test_invoice_permissions(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    for n, (who, read, write) in enumerate(
        (("adm", 200, 200), ("boss", 200, 200), ("ivan", 200, 200), ("anna", 404, 404))
    ):
        iid = (await (await _issue(client, w, h, number=str(n))).json())["id"]
        assert (await client.get(f"/api/v1/invoices/{iid}", headers=h[who])).status == read
        resp = await client.patch(f"/api/v1/invoices/{iid}", json={"comment": "x"}, headers=h[who])
        assert resp.status == write, who
        listing = await (await client.get("/api/v1/invoices", headers=h[who])).json()
        assert listing["total"] == (n + 1 if read == 200 else 0), who
        resp = await client.post(f"/api/v1/invoices/{iid}/cancel", headers=h[who])
        assert resp.status == write, who
        if write == 200:
            assert (await resp.json())["status"] == "cancelled"
            resp = await client.post(f"/api/v1/invoices/{iid}/pay", headers=h[who])
            assert resp.status == 409 and (await resp.json())["error"] == "invoice-not-issued"
        else:
            resp = await client.post(f"/api/v1/invoices/{iid}/pay", headers=h[who])
            assert resp.status == 404
        assert (await client.get(f"/api/v1/invoices/{iid}")).status == 401


async def test_who_may_issue(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    for who, status in (("adm", 201), ("boss", 201), ("ivan", 201), ("anna", 422)):
        resp = await _issue(client, w, h, who, number=who)
        assert resp.status == status, await resp.text()
        if status == 422:
            assert (await resp.json())["details"]["field"] == "company_id"
    # Anna may issue for her own client, and then pay it.
    resp = await _issue(client, w, h, "anna", number="a2", legal_entity_id=w["anna_entity"])
    assert resp.status == 201
    iid = (await resp.json())["id"]
    assert (await client.post(f"/api/v1/invoices/{iid}/pay", headers=h["anna"])).status == 200
    assert (await client.post(f"/api/v1/invoices/{iid}/pay", headers=h["ivan"])).status == 404


async def test_issue_refusals(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    assert (await _issue(client, w, h)).status == 201
    dup = await _issue(client, w, h)
    assert dup.status == 409 and (await dup.json())["error"] == "invoice-number-taken"
    bad = await _issue(client, w, h, number="2", amount="1.005", due_on="2026-01-01")
    assert bad.status == 422
    fields = (await bad.json())["details"]["fields"]
    assert "amount" in fields
    other = await _issue(client, w, h, number="3", responsible_id=w["anna"])
    assert other.status == 403


async def test_list_overdue_and_status_labels(app: tuple[Any, Any]) -> None:
    client, _ = app
    w, h = await api_world(client)
    await _issue(client, w, h, number="1")
    late = await (
        await _issue(client, w, h, number="2", issued_on="2026-02-01", due_on="2026-02-20")
    ).json()
    assert late["overdue"] is True and late["days_left"] == -10
    body = await (await client.get("/api/v1/invoices?status=overdue", headers=h["ivan"])).json()
    assert [i["id"] for i in body["items"]] == [late["id"]]
    assert (await client.get("/api/v1/invoices?status=lost", headers=h["ivan"])).status == 422
    labels = await (await client.get("/api/v1/invoice-statuses", headers=h["ivan"])).json()
    assert {"code": "overdue", "name_ru": "Просрочен", "name_en": "Overdue"} in labels
    assert (await client.get("/api/v1/invoice-statuses")).status == 401
