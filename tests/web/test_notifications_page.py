"""The bell: the unread count on every page, the list (dropdown and page) with a link to each
notification's object, one notification as a toast, read marks (one, all) with CSRF."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from contact_center.keys import SESSIONS
from crm_core.leads.events import LeadCreated
from crm_core.leads.model import Lead
from crm_core.notifications import service as notifications
from crm_core.notifications.model import Notification
from crm_core.tasks.events import TaskCreated
from crm_core.tasks.model import Task
from tests.web.world import csrf, sign_in, team

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def _bell(html: str) -> str:
    match = re.search(r'id="bell-count" data-count="(\d+)"', html)
    assert match, "no bell"
    return match.group(1)


async def _notes(client: Any) -> Any:
    ids = await team(client)
    async with client.app[SESSIONS]() as s:
        lead = Lead(title="Кафе <b>«Пышечная»</b>", stage="new", responsible_id=ids.ivan)
        s.add(lead)
        await s.flush()
        task = Task(kind="call_back", title="Перезвонить", responsible_id=ids.ivan, lead_id=lead.id)
        s.add(task)
        await s.flush()
        events = [
            TaskCreated(
                task_id=task.id,
                kind="call_back",
                title="Перезвонить <script>x</script>",
                due_at=NOW,
                responsible_id=ids.ivan,
                created_by_id=ids.boss,
            ),
            LeadCreated(
                lead_id=lead.id,
                origin="call",
                stage="new",
                title=lead.title,
                responsible_id=ids.ivan,
                actor_id=None,
            ),
        ]
        await notifications.record(s, events, now=NOW)
        await s.commit()
    return ids, lead.id


async def test_the_bell_counts_lists_links_and_marks_read(client: Any) -> None:
    ids, lead = await _notes(client)
    await sign_in(client, "ivan")
    today = await (await client.get("/today")).text()
    assert _bell(today) == "2"

    page = await (await client.get("/notifications")).text()
    assert "Новая задача" in page and "Новый лид" in page
    assert "Перезвонить &lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    # The task opens the lead it is about; the lead opens itself.
    assert page.count(f'href="/clients/lead/{lead}"') == 2
    assert "непрочитанных: 2" in page

    box = await (await client.get("/notifications?box=1", headers={"HX-Request": "true"})).text()
    assert "<html" not in box and "Все уведомления" in box and "Прочитать все" in box

    async with client.app[SESSIONS]() as s:
        rows = await notifications.list_for(s, ids.ivan)
    newest, older = rows[0].id, rows[1].id
    one = await (await client.get(f"/notifications/{older}.json")).json()
    assert one["title"] == "Новая задача" and one["url"] == f"/clients/lead/{lead}"
    assert one["text"].startswith("Перезвонить <script>x</script> · ")  # text, escaped by JS

    token = await csrf(client, "/notifications")
    resp = await client.post("/notifications/read", data={"id": str(newest)})
    assert resp.status == 403  # no CSRF token
    hx = {"HX-Request": "true", "X-CSRF-Token": token}
    resp = await client.post("/notifications/read?box=1", data={"id": str(newest)}, headers=hx)
    assert resp.status == 200
    assert resp.headers["HX-Trigger"] == '{"cc-unread": {"count": 1}}'
    assert _bell(await (await client.get("/today")).text()) == "1"
    resp = await client.post("/notifications/read", data={"all": "1"}, headers=hx)
    assert resp.headers["HX-Trigger"] == '{"cc-unread": {"count": 0}}'
    async with client.app[SESSIONS]() as s:
        assert await notifications.unread_count(s, ids.ivan) == 0
    unread = await (await client.get("/notifications?unread=1")).text()
    assert "Новых уведомлений нет" in unread

    resp = await client.post("/notifications/read", data={"id": "x"}, headers=hx)
    assert resp.status == 422

    # Another user's notification is not there for anna.
    await sign_in(client, "anna")
    assert (await client.get(f"/notifications/{newest}.json")).status == 404
    assert _bell(await (await client.get("/today")).text()) == "0"
    async with client.app[SESSIONS]() as s:
        assert await s.get(Notification, newest) is not None
