"""My day (a manager's and the head's), its one-click actions, plans, distribution, tracking
and the users page, on a clock the test holds."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from contact_center.app import create_app
from contact_center.keys import SESSIONS
from crm_core.activities.model import Activity
from crm_core.calls.model import Call
from crm_core.clients.model import Contact, Phone
from crm_core.clock import ManualClock
from crm_core.distribution.model import WebRequest
from crm_core.invoices.model import Invoice
from crm_core.leads.model import Lead
from crm_core.tasks.model import DailyPlan, Task
from crm_core.users.model import User
from tests.helpers import found
from tests.web.world import csrf, sign_in, team, visible

# Wednesday 2 December 2026, 12:00 in Moscow.
NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def client(settings: Any, aiohttp_client_factory: Any) -> Any:
    app = create_app(settings, announce=lambda _t: None, clock=ManualClock(NOW))
    return await aiohttp_client_factory(app)


async def _day(client: Any) -> Any:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        contact = Contact(name="Мария Орлова", responsible_id=ids.ivan)
        s.add(contact)
        await s.flush()
        s.add(Phone(contact_id=contact.id, e164="+78125550011"))
        s.add_all(
            [
                Task(
                    kind="custom",
                    title="Отправить договор",
                    responsible_id=ids.ivan,
                    due_at=NOW - timedelta(days=1),
                ),
                Task(
                    kind="meeting",
                    title="Встреча в 15:00",
                    responsible_id=ids.ivan,
                    due_at=NOW + timedelta(hours=3),
                    contact_id=contact.id,
                ),
                Task(
                    kind="call_back",
                    title="Перезвонить +7 (812) 555-00-11",
                    responsible_id=ids.ivan,
                    due_at=NOW + timedelta(minutes=30),
                    contact_id=contact.id,
                    origin_key="missed-call:+78125550011",
                ),
                Task(
                    kind="custom",
                    title="Задача Анны",
                    responsible_id=ids.anna,
                    due_at=NOW - timedelta(hours=1),
                ),
                Invoice(
                    number="A-1",
                    amount=Decimal("90000"),
                    issued_on=date(2026, 11, 20),
                    due_on=date(2026, 12, 3),
                    responsible_id=ids.ivan,
                ),
                Call(
                    pbx="main",
                    call_id="m1",
                    direction="inbound",
                    caller="+78125550011",
                    disposition="missed",
                    started_at=NOW - timedelta(hours=1),
                    ended_at=NOW - timedelta(hours=1),
                    user_id=ids.ivan,
                    contact_id=contact.id,
                ),
                Activity(
                    kind="call",
                    direction="inbound",
                    subject="Входящий звонок",
                    occurred_at=NOW - timedelta(hours=2),
                    talk_s=75,
                    counted=True,
                    user_id=ids.ivan,
                ),
                Call(
                    pbx="main",
                    call_id="a1",
                    direction="inbound",
                    caller="+78125550011",
                    disposition="answered",
                    started_at=NOW - timedelta(hours=2),
                    ended_at=NOW - timedelta(hours=2),
                    user_id=ids.ivan,
                    counted=True,
                    talk_seconds=75.0,
                ),
            ]
        )
        await s.commit()
    return ids


def _counter(html: str, name: str) -> int:
    match = re.search(r'<span class="value">(\d+)</span><span class="name">' + name, html)
    assert match, name
    return int(match.group(1))


async def test_my_day_counts_and_lists_with_one_click_actions(client: Any) -> None:
    await _day(client)
    await sign_in(client, "ivan")
    page = await (await client.get("/")).text()
    assert _counter(page, "просрочено") == 1
    # Each task is counted where it is listed: the meeting under «на сегодня», the call-back
    # under «Перезвонить».
    assert _counter(page, "на сегодня") == 1
    assert _counter(page, "Перезвонить") == 1
    today = found(r'<section class="panel" id="due-today">(.*?)</section>', page, flags=re.S)
    callbacks = found(r'<section class="panel" id="callbacks">(.*?)</section>', page, flags=re.S)
    assert today.count('<li class="task') == 1 and "Встреча в 15:00" in today
    assert callbacks.count('<li class="task') == 1 and "Перезвонить +7" in callbacks
    assert _counter(page, "пропущенные звонки") == 1
    assert _counter(page, "счета истекают") == 1
    assert "Отправить договор" in page and "Задача Анны" not in page
    assert 'data-call-to="+78125550011"' in page  # call back: click-to-call
    assert "№ A-1" in page and "90\u202f000\u00a0₽" in page
    assert "сегодня, 15:00" in page  # the meeting, Moscow time

    async with client.app[SESSIONS]() as s:
        overdue = await s.scalar(select(Task).where(Task.title == "Отправить договор"))
        meeting = await s.scalar(select(Task).where(Task.title == "Встреча в 15:00"))
    token = await csrf(client)
    hx = {"HX-Request": "true", "X-CSRF-Token": token}
    done = await client.post(f"/tasks/{overdue.id}/done", headers=hx)
    assert done.status == 204 and "tasks-changed" in done.headers["HX-Trigger"]
    assert "Задача выполнена" in done.headers["HX-Trigger"].encode().decode("unicode_escape")
    again = await client.post(f"/tasks/{overdue.id}/done", headers=hx)
    assert again.status == 409 and "Задача уже закрыта" in await again.text()
    later = await client.post(f"/tasks/{meeting.id}/postpone", headers=hx)
    assert later.status == 204
    async with client.app[SESSIONS]() as s:
        assert (await s.get(Task, overdue.id)).status == "done"
        moved = await s.get(Task, meeting.id)
        assert moved.due_at == datetime(2026, 12, 3, 9 + 3, 0, tzinfo=UTC)  # 15:00 MSK
    partial = await (await client.get("/today", headers={"HX-Request": "true"})).text()
    assert "<html" not in partial
    assert _counter(partial, "просрочено") == 0 and _counter(partial, "на сегодня") == 0
    assert _counter(partial, "Перезвонить") == 1
    no_token = await client.post(f"/tasks/{meeting.id}/done", headers={"HX-Request": "true"})
    assert no_token.status == 403
    await sign_in(client, "anna")
    token = await csrf(client)
    foreign = await client.post(
        f"/tasks/{meeting.id}/done", headers={"HX-Request": "true", "X-CSRF-Token": token}
    )
    assert foreign.status == 404


async def test_the_heads_day_shows_the_team(client: Any) -> None:
    await _day(client)
    await sign_in(client, "boss")
    page = await (await client.get("/today")).text()
    assert "Отдел сегодня" in page and "Сейчас на линии" in page
    row = found(r"Иван Петров</a></td>(.*?)</tr>", page, flags=re.S)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)
    # overdue, today, call-backs, missed, invoices: a call-back counted where his own day
    # counts it, not also among today's tasks.
    assert [re.sub(r"<[^>]+>", "", c).strip() for c in cells[:5]] == ["1", "1", "1", "1", "1"]
    assert _counter(page, "Перезвонить") == 1
    assert '1 <span class="muted">/ —</span>' in row  # one counted call, no plan
    assert _counter(page, "просрочено") == 2  # Ivan's and Anna's
    assert '"view": "team"' in page and '"101": "Иван Петров"' in page


async def test_plans_are_set_and_compared_with_the_fact(client: Any) -> None:
    ids = await _day(client)
    await sign_in(client, "boss")
    token = await csrf(client, "/plans")
    resp = await client.post(
        "/plans",
        data={
            "csrf_token": token,
            "user_id": str(ids.ivan),
            "day": "2026-12-02",
            "scope": "week",
            "calls": "20",
            "meetings": "2",
            "proposals": "3",
        },
        allow_redirects=False,
    )
    assert resp.status == 303 and resp.headers["Location"].startswith(
        "/plans?week=2026-11-30&saved=1"
    )
    async with client.app[SESSIONS]() as s:
        days = list(await s.scalars(select(DailyPlan.day).where(DailyPlan.user_id == ids.ivan)))
    assert sorted(days) == [date(2026, 11, 30) + timedelta(days=i) for i in range(5)]
    page = await (await client.get("/plans?week=2026-12-02&saved=1")).text()
    assert "План сохранён" in page
    ivan = found(r"Иван Петров</th>(.*?)</tr>", page, flags=re.S)
    assert '<span class="behind">1/20</span>' in ivan  # Wednesday: one counted call of 20
    assert "1/100" in ivan  # the week: five days of 20
    bad = await client.post(
        "/plans", data={"csrf_token": token, "user_id": "all", "day": "yesterday"}
    )
    assert bad.status == 422 and "Проверьте поле «День»" in await bad.text()


async def test_the_plans_form_keeps_what_was_typed_after_a_save_and_a_refusal(
    client: Any,
) -> None:
    ids = await _day(client)
    await sign_in(client, "boss")
    token = await csrf(client, "/plans")
    typed = {
        "user_id": str(ids.ivan),
        "day": "03.12.2026",
        "scope": "week",
        "calls": "25",
        "meetings": "4",
        "proposals": "7",
    }

    def shown(page: str) -> None:
        form = found(
            r'<form method="post" action="/plans[^"]*" class="row-form plan-form">(.*?)</form>',
            page,
            flags=re.S,
        )
        assert f'<option value="{ids.ivan}" selected>' in form
        assert 'value="03.12.2026"' in form and '<option value="week" selected>' in form
        for key in ("calls", "meetings", "proposals"):
            assert re.search(rf'name="{key}"[^>]*value="{typed[key]}"', form), key

    saved = await client.post("/plans", data={"csrf_token": token, **typed})
    assert saved.status == 200 and "План сохранён" in await saved.text()
    shown(await saved.text())
    refused = await client.post("/plans", data={"csrf_token": token, **typed, "meetings": "4000"})
    page = await refused.text()
    assert refused.status == 422 and "Проверьте поле «Встречи»" in page
    typed["meetings"] = "4000"
    shown(page)
    assert (
        'name="meetings" min="0" max="100" value="4000" class="short" aria-invalid="true"' in page
    )
    assert "Задать план" in page  # the whole page, not a bare error
    await sign_in(client, "ivan")
    assert (await client.post("/plans", data={})).status == 403


async def test_the_head_assigns_a_request_from_the_manual_queue(client: Any) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        lead = Lead(title="Заявка с сайта", stage="new", contact_name="Пётр")
        s.add(lead)
        await s.flush()
        req = WebRequest(
            site="demo",
            name="Пётр",
            phone="+79161234567",
            form={},
            status="queued",
            lead_id=lead.id,
        )
        s.add(req)
        await s.commit()
        request_id, lead_id = req.id, lead.id
    await sign_in(client, "boss")
    page = await (await client.get("/distribution")).text()
    assert "Ручная очередь" in page and "+7 (916) 123-45-67" in page
    token = await csrf(client, "/distribution")
    resp = await client.post(
        f"/distribution/queue/{request_id}/assign",
        data={"csrf_token": token, "user_id": str(ids.anna)},
        allow_redirects=False,
    )
    assert resp.status == 303
    after = await (await client.get(resp.headers["Location"])).text()
    assert "» назначена: " in after and "Очередь пуста" in after
    async with client.app[SESSIONS]() as s:
        assert (await s.get(WebRequest, request_id)).status == "assigned"
        assert (await s.get(Lead, lead_id)).responsible_id == ids.anna
    twice = await client.post(
        f"/distribution/queue/{request_id}/assign",
        data={"csrf_token": token, "user_id": str(ids.anna)},
    )
    assert twice.status == 409 and "Заявку уже распределили" in await twice.text()


async def test_the_admin_creates_resets_and_deactivates_users(client: Any) -> None:
    await team(client)
    await sign_in(client, "adm")
    token = await csrf(client, "/users")
    made = await client.post(
        "/users",
        data={
            "csrf_token": token,
            "login": "petr",
            "display_name": "Пётр Иванов",
            "role": "manager",
            "extensions": "105, 106",
        },
    )
    text = await made.text()
    assert made.status == 200 and "Пётр Иванов: временный пароль" in text
    password = found(r'id="issued-password">([^<]+)<', text)
    taken = await client.post(
        "/users", data={"csrf_token": token, "login": "petr", "role": "manager"}
    )
    body = await taken.text()
    assert taken.status == 409 and "Этот логин уже занят" in body and 'value="petr"' in body
    await sign_in(client, "petr", password)
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == (
        "/settings/password"
    )
    await sign_in(client, "adm")
    token = await csrf(client, "/users")  # a new session, a new token
    async with client.app[SESSIONS]() as s:
        petr = await s.scalar(select(User).where(User.login == "petr"))
    reset = await client.post(f"/users/{petr.id}", data={"csrf_token": token, "action": "reset"})
    fresh = found(r'id="issued-password">([^<]+)<', await reset.text())
    assert fresh != password
    changed = await client.post(
        f"/users/{petr.id}",
        data={
            "csrf_token": token,
            "action": "save",
            "display_name": "Пётр И.",
            "role": "head",
            "extensions": "107",
        },
        allow_redirects=False,
    )
    assert changed.headers["Location"] == "/users?saved=save"
    async with client.app[SESSIONS]() as s:
        petr = await s.get(User, petr.id)
        assert (petr.role, [e.extension for e in petr.extensions]) == ("head", ["107"])
    off = await client.post(
        f"/users/{petr.id}",
        data={"csrf_token": token, "action": "deactivate"},
        allow_redirects=False,
    )
    assert off.headers["Location"] == "/users?saved=deactivate"
    refused = await client.post("/login", data={"login": "petr", "password": fresh})
    assert refused.status == 401
    self_demote = await client.post(
        f"/users/{(await _id(client, 'adm'))}", data={"csrf_token": token, "action": "deactivate"}
    )
    assert self_demote.status == 422


async def _id(client: Any, login: str) -> int:
    async with client.app[SESSIONS]() as s:
        return int(await s.scalar(select(User.id).where(User.login == login)))


async def test_tracking_page_shows_pools_with_the_recommended_size(client: Any) -> None:
    from contact_center import demo_tracking
    from contact_center.keys import TRACKER

    await team(client)
    async with client.app[SESSIONS]() as s:
        await demo_tracking.seed(s)
        await s.commit()
    client.app[TRACKER].invalidate()
    await sign_in(client, "boss")
    page = visible(await (await client.get("/tracking")).text())
    assert "Пулы номеров" in page and "Рекомендуемый размер" in page
    assert "Яндекс Директ" in page and "yandex_direct" not in page
    assert "+7 (" in page


async def test_editing_a_rule_keeps_the_weights_and_hours_set_through_the_api(
    client: Any,
) -> None:
    from crm_core.distribution import rules as rule_book
    from crm_core.distribution.schemas import ManagerInput, RuleInput
    from crm_core.reference.model import Region

    ids = await team(client)
    hours = {"mon": ["09:00-18:00"]}
    async with client.app[SESSIONS]() as s:
        region = Region(code="RU-SPE", name="Санкт-Петербург")
        s.add(region)
        await s.flush()
        rule, _ = await rule_book.create_rule(
            s,
            RuleInput(
                region_id=region.id,
                strategy="round_robin",
                managers=[ManagerInput(user_id=ids.ivan, weight=3, hours=hours)],
            ),
            now=NOW,
        )
        await s.commit()
    await sign_in(client, "boss")
    page = await (await client.get("/distribution")).text()
    assert "Санкт-Петербург" in page and "по очереди" in page
    token = await csrf(client, "/distribution")
    resp = await client.post(
        f"/distribution/rules/{rule.id}",
        data=[
            ("csrf_token", token),
            ("region_id", str(region.id)),
            ("strategy", "round_robin"),
            ("managers", str(ids.ivan)),
            ("managers", str(ids.anna)),
            ("is_active", "1"),
            ("is_active", "0"),
        ],
        allow_redirects=False,
    )
    assert resp.status == 303
    async with client.app[SESSIONS]() as s:
        saved = {m.user_id: m for m in (await rule_book.get_rule(s, rule.id)).managers}
    assert (saved[ids.ivan].weight, saved[ids.ivan].hours) == (3, hours)
    assert saved[ids.anna].weight == 1
    fixed = await client.post(
        f"/distribution/rules/{rule.id}",
        data=[
            ("csrf_token", token),
            ("strategy", "fixed"),
            ("managers", str(ids.ivan)),
            ("managers", str(ids.anna)),
        ],
    )
    assert fixed.status == 422 and "Менеджеры" in await fixed.text()


async def test_my_day_counts_every_task_and_lists_the_first_with_a_link_to_the_rest(
    client: Any,
) -> None:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        s.add_all(
            Task(
                kind="custom",
                title=f"Старая задача {i}",
                responsible_id=ids.ivan,
                due_at=NOW - timedelta(days=2, minutes=i),
            )
            for i in range(45)
        )
        s.add(
            Task(
                kind="call_back",
                title="Перезвонить вчерашнему",
                responsible_id=ids.ivan,
                due_at=NOW - timedelta(hours=20),
            )
        )
        await s.commit()
    await sign_in(client, "ivan")
    page = await (await client.get("/today")).text()
    assert _counter(page, "просрочено") == 45  # every one counted
    assert _counter(page, "Перезвонить") == 1  # the call-back, where it is listed
    overdue = found(r'<section class="panel" id="overdue">(.*?)</section>', page, flags=re.S)
    assert overdue.count('<li class="task') == 30
    assert "Ещё 15 — открыть весь список" in overdue and 'href="/tasks?overdue=1"' in overdue
    assert '<span class="muted">45</span>' in overdue
