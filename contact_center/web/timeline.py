"""A card's right column: its open tasks (done in one click), a composer (comment, meeting,
e-mail note, task with a due time and a reminder) and the timeline, newest first: calls with
their recording, meetings, e-mails, comments, finished tasks and stage changes.

The actions go through the crm_core services the REST API uses (``add_activity``,
``create_task``), so the same access rules and events apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.api.common import UnitOfWork
from contact_center.keys import RULES, SESSIONS
from contact_center.web import listing
from contact_center.web.card_fields import FieldError, parse_date
from contact_center.web.card_subjects import LINK_FIELD, Subject, load
from contact_center.web.shell import Formatter, language, now, page, render, t_of, zone
from crm_core.activities import service as activities
from crm_core.activities.events import ActivityRecorded
from crm_core.activities.schemas import ActivityInput
from crm_core.calls.model import Call
from crm_core.errors import DomainError
from crm_core.invoices import service as invoices
from crm_core.invoices.model import Invoice, InvoiceStatus
from crm_core.jobs.model import JobStatus, ScheduledJob
from crm_core.leads.model import Lead
from crm_core.recordings import service as call_recordings
from crm_core.recordings.model import RecordingState
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskKind, TaskStatus
from crm_core.tasks.schemas import TaskInput
from crm_core.users.model import User

TIMELINE_LIMIT = 100
ACTIVITY_KINDS = ("note", "meeting", "email")
REMINDERS = ("due", "15", "60", "1440")  # minutes before the due time


@dataclass
class Entry:
    """One line of the timeline."""

    at: datetime
    kind: str  # call, meeting, email, note, message, task, stage
    title: str
    body: str | None = None
    who: str = ""
    badge: str | None = None
    badge_class: str = ""
    recording_url: str | None = None
    recording_note: str | None = None


def link_values(subject: Subject) -> dict[str, Any]:
    return {LINK_FIELD[subject.kind]: subject.id}


async def _lead_ids_of(session: AsyncSession, subject: Subject) -> list[int]:
    """The converted leads of a contact, company or deal: their calls and comments are the
    client's history too."""
    if subject.kind == "contact":
        column = Lead.contact_id
    elif subject.kind == "company":
        column = Lead.company_id
    elif subject.kind == "deal":
        column = Lead.deal_id
    else:
        return []
    return list(await session.scalars(select(Lead.id).where(column == subject.id).limit(5)))


async def open_tasks(
    session: AsyncSession, subject: Subject, user: User, rules: CrmRules
) -> list[Any]:
    if subject.kind == "invoice":
        filters: dict[str, Any] = {"invoice_id": subject.id}
    else:
        filters = link_values(subject)
    rows, _ = await tasks.list_tasks(
        session,
        actor=user,
        rules=rules,
        status=[TaskStatus.OPEN.value],
        limit=50,
        count=False,
        **filters,
    )
    return rows


async def entries(
    session: AsyncSession,
    subject: Subject,
    *,
    user: User,
    rules: CrmRules,
    names: listing.Names,
    t: Any,
    lang: str,
    fmt: Formatter,
) -> list[Entry]:
    """The card's history, newest first."""
    out: list[Entry] = []
    if subject.kind == "invoice":
        acts: list[Any] = []
    else:
        acts, _ = await activities.list_activities(
            session,
            actor=user,
            rules=rules,
            limit=TIMELINE_LIMIT,
            count=False,
            **link_values(subject),
        )
        seen = {a.id for a in acts}
        for lead_id in await _lead_ids_of(session, subject):
            more, _ = await activities.list_activities(
                session, actor=user, rules=rules, lead_id=lead_id, limit=TIMELINE_LIMIT, count=False
            )
            acts.extend(a for a in more if a.id not in seen)
    heard = await call_recordings.for_activities(session, [a.id for a in acts])
    unanswered = await _unanswered_by(session, acts)
    for a in acts:
        head = t("kind." + a.kind)
        if a.direction:
            head += ", " + t("direction." + a.direction)
        # A call the PBX logged is said once: its title and badge say what its generated
        # subject ("Входящий звонок, 65 с") would repeat.
        logged = a.kind == "call" and _call_pk(a) is not None
        entry = Entry(
            at=a.occurred_at,
            kind=a.kind,
            title=head,
            body="\n".join(x for x in (None if logged else a.subject, a.body) if x) or None,
            who=names.user(a.user_id),
        )
        if a.kind == "call":
            if a.outcome and a.outcome != "answered":
                by = unanswered.get(a.id)
                busy = a.outcome == "busy"
                entry.badge = t(
                    "call.unanswered_by." + by if by and not busy else "disposition." + a.outcome
                )
                entry.badge_class = "call-missed"
            if a.talk_s:
                entry.title += " · " + t("card.talk") + " " + fmt.duration(a.talk_s)
            if a.counted:
                entry.title += " · " + t("card.counted")
            rec = heard.get(a.id)
            if rec is not None:
                if rec.state == RecordingState.STORED:
                    entry.recording_url = f"/api/v1/recordings/{rec.id}"
                elif rec.state in ("missing", "failed", "purged"):
                    entry.recording_note = t("card.recording_missing")
                else:
                    entry.recording_note = t("card.recording_pending")
        out.append(entry)
    if subject.kind == "invoice":
        task_filter: dict[str, Any] = {"invoice_id": subject.id}
    else:
        task_filter = link_values(subject)
    done, _ = await tasks.list_tasks(
        session,
        actor=user,
        rules=rules,
        status=[TaskStatus.DONE.value, TaskStatus.CANCELLED.value],
        limit=50,
        count=False,
        **task_filter,
    )
    for task in done:
        out.append(
            Entry(
                at=task.completed_at or task.updated_at,
                kind="task",
                title=t("card.task_" + task.status) + ": " + task.title,
                who=names.user(task.responsible_id),
            )
        )
    view = subject.view
    if subject.kind == "invoice":
        out.extend(await _invoice_entries(session, subject.record, names, t, fmt))
    if subject.kind == "lead":
        from crm_core.leads import service as leads

        stage_names: dict[Any, str] = {
            s.code: (s.name_en or s.name_ru) if lang == "en" else s.name_ru
            for s in rules.lead_stages
        }
        for change in await leads.lead_history(session, subject.id, actor=user, rules=rules):
            out.append(_stage_entry(change, stage_names, names, t))
    if subject.kind == "deal" and view.history:
        from crm_core.deals.pipelines import load_stages

        ids = {h.to_stage_id for h in view.history} | {
            h.from_stage_id for h in view.history if h.from_stage_id
        }
        stages, _ = await load_stages(session, ids)
        deal_stage_names: dict[Any, str] = {
            sid: (s.name_en or s.name_ru) if lang == "en" else s.name_ru
            for sid, s in stages.items()
        }
        for h in view.history:
            out.append(
                _stage_entry(
                    h,
                    deal_stage_names,
                    names,
                    t,
                    from_key=h.from_stage_id,
                    to_key=h.to_stage_id,
                    reason_prefix="lost_reason.",
                )
            )
    out.sort(key=lambda e: e.at, reverse=True)
    return out


async def _invoice_entries(
    session: AsyncSession, invoice: Invoice, names: listing.Names, t: Any, fmt: Formatter
) -> list[Entry]:
    """An invoice's history: issued, the payment reminders sent to its responsible, paid or
    cancelled (as a deal card shows its stage changes)."""
    out = [
        Entry(
            at=invoice.created_at,
            kind="stage",
            title=t(
                "card.invoice_issued", amount=fmt.money(invoice.amount), due=fmt.day(invoice.due_on)
            ),
        )
    ]
    sent = await session.scalars(
        select(ScheduledJob.finished_at).where(
            ScheduledJob.kind == invoices.REMINDER_JOB,
            ScheduledJob.dedupe_key.like(f"invoice:{invoice.id}:remind:%"),
            ScheduledJob.status == JobStatus.DONE.value,
            ScheduledJob.finished_at.is_not(None),
        )
    )
    for finished_at in sent:
        if finished_at is None:  # excluded by the query; for the type checker
            continue
        out.append(
            Entry(
                at=finished_at,
                kind="reminder",
                title=t("card.invoice_reminded"),
                who=names.user(invoice.responsible_id),
            )
        )
    if invoice.status == InvoiceStatus.PAID.value and invoice.paid_at is not None:
        out.append(Entry(at=invoice.paid_at, kind="stage", title=t("card.invoice_paid")))
    elif invoice.status == InvoiceStatus.CANCELLED.value:
        out.append(Entry(at=invoice.updated_at, kind="stage", title=t("card.invoice_cancelled")))
    return out


def _call_pk(activity: Any) -> int | None:
    """The call-log row of a call activity the PBX recorded (none for one typed by hand)."""
    payload = activity.payload if isinstance(activity.payload, dict) else {}
    pk = payload.get("call_pk")
    return pk if isinstance(pk, int) and not isinstance(pk, bool) else None


async def _unanswered_by(session: AsyncSession, acts: list[Any]) -> dict[int, str]:
    """Who did not pick up each unanswered click-to-call among ``acts`` (activity id -> who)."""
    pks = {
        pk: a.id
        for a in acts
        if a.kind == "call" and a.outcome != "answered" and (pk := _call_pk(a)) is not None
    }
    if not pks:
        return {}
    rows = await session.execute(
        select(Call.id, Call.unanswered_by).where(
            Call.id.in_(list(pks)), Call.unanswered_by.is_not(None)
        )
    )
    return {pks[pk]: str(by) for pk, by in rows}


def _stage_entry(
    change: Any,
    stage_names: dict[Any, str],
    names: listing.Names,
    t: Any,
    *,
    from_key: Any = None,
    to_key: Any = None,
    reason_prefix: str = "junk_reason.",
) -> Entry:
    src = from_key if to_key is not None else change.from_stage
    dst = to_key if to_key is not None else change.to_stage
    if src is None:
        title = t("card.stage_created", stage=stage_names.get(dst, str(dst)))
    else:
        title = t(
            "card.stage_moved",
            old=stage_names.get(src, str(src)),
            new=stage_names.get(dst, str(dst)),
        )
    body = t(reason_prefix + change.reason) if change.reason else None
    return Entry(at=change.at, kind="stage", title=title, body=body, who=names.user(change.user_id))


async def side_data(
    request: web.Request, session: AsyncSession, subject: Subject, user: User
) -> dict[str, Any]:
    """What the right column's templates need."""
    t = t_of(request)
    rules = request.app[RULES]
    names = await listing.names(session)
    fmt = Formatter(language(request), zone(request), now(request))
    at = now(request)
    rows = await open_tasks(session, subject, user, rules)
    return {
        "subject": subject,
        "open_tasks": [
            {
                "id": task.id,
                "title": task.title,
                "kind": t("task.kind." + task.kind),
                "due_at": task.due_at,
                "overdue": task.due_at is not None and task.due_at < at,
                "responsible": names.user(task.responsible_id),
            }
            for task in rows
        ],
        "timeline": await entries(
            session,
            subject,
            user=user,
            rules=rules,
            names=names,
            t=t,
            lang=language(request),
            fmt=fmt,
        ),
        "task_kinds": [(k.value, t("task.kind." + k.value)) for k in TaskKind],
        "activity_kinds": () if subject.kind == "invoice" else ACTIVITY_KINDS,
        "reminders": REMINDERS,
        "today_text": fmt.today.strftime("%d.%m.%Y"),
    }


def _subject_ref(request: web.Request) -> tuple[str, int]:
    return request.match_info["kind"], int(request.match_info["id"])


async def _load(request: web.Request, session: AsyncSession, user: User) -> Subject:
    kind, record_id = _subject_ref(request)
    today = now(request).astimezone(zone(request)).date()
    return await load(session, kind, record_id, user=user, rules=request.app[RULES], today=today)


@page("cards/_side.html")
async def side(request: web.Request, user: User) -> dict[str, Any]:
    """The right column again (after an action elsewhere: a task done, a field saved)."""
    async with request.app[SESSIONS]() as session:
        subject = await _load(request, session, user)
        return await side_data(request, session, subject, user)


def parse_clock(text: str) -> time | None:
    raw = text.strip()
    if not raw:
        return None
    try:
        hours, minutes = raw.split(":")
        return time(int(hours), int(minutes))
    except ValueError:
        return None


async def _rerender(
    request: web.Request,
    user: User,
    *,
    error: str | None = None,
    form: dict[str, str] | None = None,
    tab: str = "note",
) -> web.StreamResponse:
    async with request.app[SESSIONS]() as session:
        subject = await _load(request, session, user)
        data = await side_data(request, session, subject, user)
    data.update(composer_error=error, composer_form=form or {}, composer_tab=tab)
    resp = await render("cards/_side.html", request, data, status=422 if error else 200)
    if not error:
        resp.headers["HX-Trigger"] = json.dumps({"cc-toast": {"text": t_of(request)("card.saved")}})
    return resp


@page("cards/_side.html")
async def add_activity(request: web.Request, user: User) -> web.StreamResponse:
    """A comment, a meeting or an e-mail note on the card's timeline."""
    t = t_of(request)
    form = await request.post()
    kind = str(form.get("kind", "note"))
    text = str(form.get("body", "")).strip()
    subject_line = str(form.get("subject", "")).strip()
    typed = {"body": text, "subject": subject_line}
    if kind not in ACTIVITY_KINDS:
        kind = "note"
    if not text and not subject_line:
        return await _rerender(
            request, user, error=t("card.error.empty_comment"), form=typed, tab=kind
        )
    rules = request.app[RULES]
    try:
        async with UnitOfWork(request) as u:
            subject = await _load(request, u.session, user)
            links = link_values(subject)
            if subject.kind == "invoice":
                links = {"deal_id": subject.record.deal_id} if subject.record.deal_id else {}
                if subject.record.company_id:
                    links["company_id"] = subject.record.company_id
            data = ActivityInput(
                kind=kind,
                subject=subject_line[:300],
                body=text or None,
                direction="outbound" if kind == "email" else None,
                **links,
            )
            activity = await activities.add_activity(
                u.session, data, actor=user, rules=rules, now=now(request)
            )
            u.emit(ActivityRecorded.of(activity))
            await u.commit()
    except ValidationError:
        return await _rerender(request, user, error=t("card.error.too_long_text"), form=typed)
    except DomainError as exc:
        from contact_center.i18n import error_text

        return await _rerender(
            request, user, error=error_text(t, exc.error_id, exc.details), form=typed, tab=kind
        )
    return await _rerender(request, user)


@page("cards/_side.html")
async def add_task(request: web.Request, user: User) -> web.StreamResponse:
    """A task about the card with a due day and time and a reminder before it."""
    t = t_of(request)
    form = await request.post()
    typed = {k: str(form.get(k, "")) for k in ("title", "due_day", "due_time", "remind", "kind")}
    title = typed["title"].strip()
    if not title:
        return await _rerender(
            request,
            user,
            error=t("card.error.required", field=t("card.task_title")),
            form=typed,
            tab="task",
        )
    tz = zone(request)
    try:
        day = parse_date(typed["due_day"], t("card.task_due"), t)
    except FieldError as exc:
        return await _rerender(request, user, error=exc.message, form=typed, tab="task")
    clock = parse_clock(typed["due_time"])
    if typed["due_time"].strip() and clock is None:
        return await _rerender(request, user, error=t("card.error.time"), form=typed, tab="task")
    due = datetime.combine(day, clock or time(10, 0), tzinfo=tz) if day else None
    remind_at = None
    remind = typed["remind"] or "due"
    if due is not None and remind.isdigit():
        remind_at = due - timedelta(minutes=int(remind))
    kind = typed["kind"] if typed["kind"] in {k.value for k in TaskKind} else "custom"
    rules = request.app[RULES]
    try:
        async with UnitOfWork(request) as u:
            subject = await _load(request, u.session, user)
            links = link_values(subject)
            body: dict[str, Any] = {
                "kind": kind,
                "title": title[:300],
                "due_at": due,
                **links,
            }
            if remind_at is not None:
                body["remind_at"] = remind_at
            _, events = await tasks.create_task(
                u.session,
                TaskInput.model_validate(body),
                actor=user,
                rules=rules,
                now=now(request),
            )
            u.emit(*events)
            await u.commit()
    except ValidationError:
        return await _rerender(
            request, user, error=t("card.error.too_long_text"), form=typed, tab="task"
        )
    except DomainError as exc:
        from contact_center.i18n import error_text

        return await _rerender(
            request, user, error=error_text(t, exc.error_id, exc.details), form=typed, tab="task"
        )
    return await _rerender(request, user, tab="task")


def routes(app: web.Application) -> None:
    kinds = "{kind:contact|company|lead|deal|invoice}"
    app.router.add_get(rf"/card/{kinds}/{{id:\d{{1,18}}}}/side", side)
    app.router.add_post(rf"/card/{kinds}/{{id:\d{{1,18}}}}/activity", add_activity)
    app.router.add_post(rf"/card/{kinds}/{{id:\d{{1,18}}}}/task", add_task)
