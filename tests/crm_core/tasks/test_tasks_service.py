"""Tasks: reminders follow the task, call-backs close by origin, permissions, bulk tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.access import SYSTEM
from crm_core.errors import InvalidInput, NotFound, PermissionDenied
from crm_core.jobs import service as jobs
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.events import TaskDue, TasksBulkCreated, TaskStatusChanged, TaskUpdated
from crm_core.tasks.model import Task
from crm_core.tasks.schemas import BulkTaskInput, TaskInput, TaskPatch
from tests.crm_core.tasks.world import T0, World, build_world

RULES = CrmRules()
HOUR = timedelta(hours=1)


async def _reminder(session: AsyncSession, task_id: int) -> tuple[str, object] | None:
    job = await jobs.find(session, tasks.reminder_key(task_id))
    return None if job is None else (job.status, job.due_at)


async def _create(session: AsyncSession, w: World, who: str = "ivan", **kw: object) -> Task:
    data = TaskInput.model_validate({"title": "Call back", "kind": "call_back", **kw})
    task, _ = await tasks.create_task(session, data, actor=w.user(who), rules=RULES, now=T0)
    return task


async def test_create_schedules_the_reminder_at_remind_at_or_due_at(session: AsyncSession) -> None:
    w = await build_world(session)
    task = await _create(session, w, due_at=T0 + 2 * HOUR)
    assert task.responsible_id == w["ivan"] and task.created_by_id == w["ivan"]
    assert await _reminder(session, task.id) == ("pending", T0 + 2 * HOUR)
    early = await _create(session, w, due_at=T0 + 2 * HOUR, remind_at=T0 + HOUR)
    assert await _reminder(session, early.id) == ("pending", T0 + HOUR)
    undated = await _create(session, w)
    assert await _reminder(session, undated.id) is None


async def test_rescheduling_moves_the_reminder_keeping_its_lead_time(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    ivan = w.user("ivan")
    task = await _create(session, w, due_at=T0 + 2 * HOUR, remind_at=T0 + HOUR)
    task, events = await tasks.update_task(
        session, task.id, TaskPatch(due_at=T0 + 26 * HOUR), actor=ivan, rules=RULES, now=T0
    )
    assert task.remind_at == T0 + 25 * HOUR
    assert await _reminder(session, task.id) == ("pending", T0 + 25 * HOUR)
    assert isinstance(events[0], TaskUpdated)
    assert events[0].changes == ("due_at", "remind_at")
    await tasks.update_task(
        session, task.id, TaskPatch(remind_at=None), actor=ivan, rules=RULES, now=T0
    )
    assert await _reminder(session, task.id) == ("pending", T0 + 26 * HOUR)
    await tasks.update_task(
        session, task.id, TaskPatch(due_at=None), actor=ivan, rules=RULES, now=T0
    )
    assert await _reminder(session, task.id) == ("cancelled", T0 + 26 * HOUR)
    _, none = await tasks.update_task(
        session, task.id, TaskPatch(due_at=None), actor=ivan, rules=RULES, now=T0
    )
    assert none == []  # nothing changed, nothing announced


async def test_complete_cancels_the_reminder_and_reopen_restores_it(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    ivan = w.user("ivan")
    task = await _create(session, w, due_at=T0 + HOUR)
    task, [event] = await tasks.change_status(
        session, task.id, "complete", actor=ivan, rules=RULES, now=T0
    )
    assert task.status == "done" and task.completed_at == T0
    assert isinstance(event, TaskStatusChanged)
    assert (event.name, event.status, event.previous) == ("task.status_changed", "done", "open")
    assert await _reminder(session, task.id) == ("cancelled", T0 + HOUR)
    with pytest.raises(tasks.TaskStatusConflict) as err:
        await tasks.change_status(session, task.id, "cancel", actor=ivan, rules=RULES, now=T0)
    assert err.value.details == {"status": "done", "action": "cancel"}
    task, _ = await tasks.change_status(session, task.id, "reopen", actor=ivan, rules=RULES, now=T0)
    assert task.status == "open" and task.completed_at is None
    assert await _reminder(session, task.id) == ("pending", T0 + HOUR)
    with pytest.raises(tasks.TaskStatusConflict):
        await tasks.change_status(session, task.id, "reopen", actor=ivan, rules=RULES, now=T0)
    await tasks.change_status(session, task.id, "cancel", actor=ivan, rules=RULES, now=T0)
    assert await _reminder(session, task.id) == ("cancelled", T0 + HOUR)


async def test_origin_key_dedupes_and_closes_call_backs(session: AsyncSession) -> None:
    w = await build_world(session)
    key = "missed-call:+74951234567"
    data = TaskInput(
        title="Перезвонить +7 495 123-45-67",
        kind="call_back",
        due_at=T0 + HOUR,
        responsible_id=w["ivan"],
        origin_key=key,
    )
    first, events = await tasks.create_task(session, data, actor=SYSTEM, rules=RULES, now=T0)
    assert first.created_by_id is None and len(events) == 1
    second, events = await tasks.create_task(session, data, actor=SYSTEM, rules=RULES, now=T0)
    assert second.id == first.id and events == []
    other = await _create(session, w, due_at=T0 + HOUR, origin_key="missed-call:+74959999999")
    assert await tasks.close_tasks_by_origin(session, key, at=T0 + 10 * HOUR) == 1
    assert await tasks.close_tasks_by_origin(session, key, at=T0 + 11 * HOUR) == 0
    await session.refresh(first)
    assert first.status == "done" and first.completed_at == T0 + 10 * HOUR
    assert await _reminder(session, first.id) == ("cancelled", T0 + HOUR)
    untouched = await session.get(Task, other.id)
    assert untouched is not None and untouched.status == "open"
    # After closing, a new missed call makes a new call-back.
    third, _ = await tasks.create_task(session, data, actor=SYSTEM, rules=RULES, now=T0)
    assert third.id != first.id


async def test_a_manager_creates_tasks_for_himself_about_his_clients(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    with pytest.raises(PermissionDenied) as err:
        await _create(session, w, responsible_id=w["anna"])
    assert err.value.details == {"field": "responsible_id"}
    with pytest.raises(InvalidInput) as bad:
        await _create(session, w, company_id=w["anna_co"])
    assert bad.value.details["field"] == "company_id"
    with pytest.raises(InvalidInput):
        await _create(session, w, "boss", responsible_id=999_999)
    by_head = await _create(session, w, "boss", responsible_id=w["anna"], deal_id=w["deal"])
    assert by_head.responsible_id == w["anna"]
    assert by_head.company_id == w["ivan_co"] and by_head.contact_id == w["contact"]


async def test_who_reads_and_changes_a_task(session: AsyncSession) -> None:
    w = await build_world(session)
    # Head assigns anna a task about ivan's client: both may see and change it.
    task = await _create(session, w, "boss", responsible_id=w["anna"], company_id=w["ivan_co"])
    for login in ("adm", "boss", "anna", "ivan"):
        got = await tasks.get_task(session, task.id, actor=w.user(login), rules=RULES)
        assert got.id == task.id
    private = await _create(session, w, "boss", responsible_id=w["anna"])
    with pytest.raises(NotFound):
        await tasks.get_task(session, private.id, actor=w.user("ivan"), rules=RULES)
    shared = CrmRules(managers_read_all=True)
    await tasks.get_task(session, private.id, actor=w.user("ivan"), rules=shared)
    with pytest.raises(PermissionDenied):
        await tasks.change_status(
            session, private.id, "complete", actor=w.user("ivan"), rules=shared, now=T0
        )
    with pytest.raises(PermissionDenied):
        await tasks.update_task(
            session,
            task.id,
            TaskPatch(responsible_id=w["ivan"]),
            actor=w.user("anna"),
            rules=RULES,
            now=T0,
        )
    rows, total = await tasks.list_tasks(session, actor=w.user("ivan"), rules=RULES)
    assert [t.id for t in rows] == [task.id] and total == 1
    rows, total = await tasks.list_tasks(session, actor=w.user("anna"), rules=RULES)
    assert total == 2
    rows, total = await tasks.list_tasks(session, actor=w.user("boss"), rules=RULES)
    assert total == 2


async def test_list_filters_and_order(session: AsyncSession) -> None:
    w = await build_world(session)
    late = await _create(session, w, due_at=T0 + 5 * HOUR)
    soon = await _create(session, w, due_at=T0 - HOUR, kind="meeting")
    undated = await _create(session, w)
    rows, _ = await tasks.list_tasks(session, actor=w.user("ivan"), rules=RULES)
    assert [t.id for t in rows] == [soon.id, late.id, undated.id]
    rows, _ = await tasks.list_tasks(session, actor=w.user("ivan"), rules=RULES, overdue_at=T0)
    assert [t.id for t in rows] == [soon.id]
    rows, _ = await tasks.list_tasks(session, actor=w.user("ivan"), rules=RULES, kind="meeting")
    assert [t.id for t in rows] == [soon.id]
    rows, _ = await tasks.list_tasks(
        session, actor=w.user("ivan"), rules=RULES, due_from=T0, due_to=T0 + 6 * HOUR
    )
    assert [t.id for t in rows] == [late.id]


async def test_a_list_without_its_total(session: AsyncSession) -> None:
    """``count=False`` (a card's open and done tasks): the same rows in the same order, undated
    last, and the number of rows returned in place of the total."""
    w = await build_world(session)
    undated = await _create(session, w)
    late = await _create(session, w, due_at=T0 + 5 * HOUR)
    soon = await _create(session, w, due_at=T0 - HOUR)
    rows, total = await tasks.list_tasks(session, actor=w.user("ivan"), rules=RULES, limit=2)
    assert [t.id for t in rows] == [soon.id, late.id] and total == 3
    rows, returned = await tasks.list_tasks(
        session, actor=w.user("ivan"), rules=RULES, limit=2, count=False
    )
    assert [t.id for t in rows] == [soon.id, late.id] and returned == 2
    rows, returned = await tasks.list_tasks(
        session, actor=w.user("ivan"), rules=RULES, offset=2, count=False
    )
    assert [t.id for t in rows] == [undated.id] and returned == 1
    _, returned = await tasks.list_tasks(session, actor=w.user("anna"), rules=RULES, count=False)
    assert returned == 0


async def test_the_reminder_handler_reminds_only_of_open_tasks(session: AsyncSession) -> None:
    w = await build_world(session)
    task = await _create(session, w, due_at=T0 + HOUR, company_id=w["ivan_co"])
    await session.commit()
    [job] = await jobs.claim_due(session, T0 + HOUR, limit=5, worker_id="w")
    [event] = await tasks.remind_task(session, job, T0 + HOUR)
    assert isinstance(event, TaskDue)
    assert event.name == "task.due" and event.audience == (f"user:{w['ivan']}",)
    assert event.company_id == w["ivan_co"] and event.title == "Call back"
    await tasks.change_status(session, task.id, "cancel", actor=w.user("ivan"), rules=RULES, now=T0)
    assert await tasks.remind_task(session, job, T0 + HOUR) == []


# ---------------------------------------------------------------- bulk


def bulk(**flt: object) -> BulkTaskInput:
    return BulkTaskInput.model_validate(
        {
            "filter": flt,
            "task": {"kind": "call_back", "title": "Позвонить", "due_at": T0 + HOUR},
            "assign": flt.pop("assign", "responsible"),
        }
    )


async def _bulk_tasks(session: AsyncSession, bulk_id: str) -> list[Task]:
    return list(
        await session.scalars(select(Task).where(Task.bulk_id == bulk_id).order_by(Task.id))
    )


async def test_bulk_every_tender_bidder_in_a_region(session: AsyncSession) -> None:
    w = await build_world(session)
    result, events = await tasks.bulk_create_tasks(
        session,
        bulk(client_type="tender_bidder", region_id=w["moscow"]),
        actor=w.user("boss"),
        rules=RULES,
        now=T0,
    )
    # Ivan Co and the orphan match; the orphan has no responsible, so it is left out.
    assert (result.created, result.skipped_without_responsible) == (1, 1)
    [task] = await _bulk_tasks(session, result.bulk_id)
    assert task.company_id == w["ivan_co"] and task.responsible_id == w["ivan"]
    assert await _reminder(session, task.id) == ("pending", T0 + HOUR)
    [event] = events
    assert isinstance(event, TasksBulkCreated)
    assert event.name == "tasks.bulk_created" and event.count == 1
    assert event.audience == (f"user:{w['ivan']}",)


async def test_bulk_by_source_and_competitor_assigned_to_one_user(session: AsyncSession) -> None:
    w = await build_world(session)
    by_source, _ = await tasks.bulk_create_tasks(
        session, bulk(source_id=w["expo"]), actor=w.user("adm"), rules=RULES, now=T0
    )
    assert by_source.created == 1
    competitor, _ = await tasks.bulk_create_tasks(
        session,
        bulk(supplier_contains="ромашка", assign=w["anna"]),  # Cyrillic, other case
        actor=w.user("boss"),
        rules=RULES,
        now=T0,
    )
    [task] = await _bulk_tasks(session, competitor.bulk_id)
    assert task.company_id == w["ivan_co"] and task.responsible_id == w["anna"]
    none, _ = await tasks.bulk_create_tasks(
        session, bulk(supplier_contains="Лютик"), actor=w.user("boss"), rules=RULES, now=T0
    )
    assert none.created == 0
    contacts, _ = await tasks.bulk_create_tasks(
        session,
        bulk(entity="contact", client_type="tender_bidder"),
        actor=w.user("boss"),
        rules=RULES,
        now=T0,
    )
    [task] = await _bulk_tasks(session, contacts.bulk_id)
    assert task.contact_id == w["anna_contact"] and task.responsible_id == w["anna"]


async def test_a_manager_bulk_creates_only_over_his_own_clients(session: AsyncSession) -> None:
    w = await build_world(session)
    ivan = w.user("ivan")
    result, _ = await tasks.bulk_create_tasks(
        session, bulk(client_type="tender_bidder"), actor=ivan, rules=RULES, now=T0
    )
    [task] = await _bulk_tasks(session, result.bulk_id)
    assert task.company_id == w["ivan_co"]  # neither the orphan nor anyone else's
    with pytest.raises(PermissionDenied):
        await tasks.bulk_create_tasks(
            session, bulk(responsible_id=w["anna"]), actor=ivan, rules=RULES, now=T0
        )
    with pytest.raises(PermissionDenied):
        await tasks.bulk_create_tasks(
            session, bulk(assign=w["anna"]), actor=ivan, rules=RULES, now=T0
        )
    with pytest.raises(InvalidInput) as err:
        await tasks.bulk_create_tasks(
            session, bulk(client_type="pirates"), actor=ivan, rules=RULES, now=T0
        )
    assert err.value.details["field"] == "filter.client_type"


async def test_bulk_refuses_a_filter_matching_too_many(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = await build_world(session)
    monkeypatch.setattr(tasks, "MAX_BULK", 2)
    with pytest.raises(tasks.BulkTooLarge):
        await tasks.bulk_create_tasks(session, bulk(), actor=w.user("boss"), rules=RULES, now=T0)
    assert (await session.scalars(select(Task))).all() == []


async def test_a_reassigned_task_is_announced_to_both_managers(session: AsyncSession) -> None:
    w = await build_world(session)
    task = await _create(session, w, "boss", responsible_id=w["ivan"], due_at=T0 + HOUR)
    _, [event] = await tasks.update_task(
        session,
        task.id,
        TaskPatch(responsible_id=w["anna"]),
        actor=w.user("boss"),
        rules=RULES,
        now=T0,
    )
    assert isinstance(event, TaskUpdated)
    assert event.name == "task.updated" and event.changes == ("responsible_id",)
    assert event.audience == (f"user:{w['anna']}", f"user:{w['ivan']}")
    # The reminder goes to whoever is responsible when it fires.
    await session.commit()
    [job] = await jobs.claim_due(session, T0 + HOUR, limit=5, worker_id="w")
    [due] = await tasks.remind_task(session, job, T0 + HOUR)
    assert due.audience == (f"user:{w['anna']}",)


async def test_the_system_assigns_nobody_rather_than_an_inactive_manager(
    session: AsyncSession,
) -> None:
    w = await build_world(session)
    w.user("anna").is_active = False
    data = TaskInput(title="Перезвонить", kind="call_back", responsible_id=w["anna"])
    task, _ = await tasks.create_task(session, data, actor=SYSTEM, rules=RULES, now=T0)
    assert task.responsible_id is None
    with pytest.raises(InvalidInput):
        await tasks.create_task(session, data, actor=w.user("boss"), rules=RULES, now=T0)
