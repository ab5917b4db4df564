"""Website requests: receive one (spam kept apart, the same visitor or client joined rather
than duplicated), distribute it, and work the manual queue.

A request that reaches a manager leaves a lead (origin ``web``) and a call-back task for him; a
queued one leaves an unassigned lead that the head of sales hands to a manager from the queue.
Like every service here the functions flush and return events; the caller commits, then
publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core import access
from crm_core.access import Actor
from crm_core.clients import service as clients
from crm_core.deals import service as deals
from crm_core.distribution import service as distribution
from crm_core.distribution.errors import InvalidWebRequest, NotQueued, WebRequestNotFound
from crm_core.distribution.events import WebRequestAssigned, WebRequestReceived
from crm_core.distribution.model import RequestStatus, WebRequest
from crm_core.distribution.schemas import WebForm
from crm_core.events import DomainEvent
from crm_core.leads import service as leads
from crm_core.leads.model import Lead
from crm_core.leads.schemas import LeadInput, LeadPatch
from crm_core.phones import InvalidPhone, normalize_phone
from crm_core.reference.model import Region
from crm_core.rules import CrmRules
from crm_core.tasks import service as tasks
from crm_core.tasks.model import TaskKind
from crm_core.tasks.schemas import TaskInput
from crm_core.users.model import User
from crm_core.validation import normalize_email


@dataclass(frozen=True)
class Intake:
    """Where a request came from and how it is to be handled (decided at the HTTP edge)."""

    site: str
    site_region_id: int | None = None  # the site's default region
    ip_region_id: int | None = None  # where the sender's address is (local IP table), if known
    attribution: dict[str, Any] | None = None  # crm_core.tracking's visitor_attribution
    ip: str | None = None
    fields: dict[str, Any] | None = None  # the form as posted (without its key)


@dataclass(frozen=True)
class Policy:
    """Settings of the distribution section the services need."""

    callback_minutes: int = 15
    default_timezone: str = "Europe/Moscow"
    queue_audience: tuple[str, ...] = ("role:head", "role:admin")


@dataclass
class _Client:
    """The lead or client an earlier contact already left, if any."""

    lead_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    responsible_id: int | None = None


def clean_contacts(form: WebForm, rules: CrmRules) -> tuple[str | None, str | None]:
    """The phone in E.164 and the e-mail lower-cased; a bad one is a 422 naming the field."""
    if not form.phone and not form.email:
        raise InvalidWebRequest(
            "phone: a phone or an e-mail is required", details={"field": "phone"}
        )
    phone = email = None
    if form.phone:
        try:
            phone = normalize_phone(form.phone, rules.default_region)
        except InvalidPhone as exc:
            raise InvalidWebRequest(
                f"phone: {form.phone!r} is not a phone number",
                details={"field": "phone", "value": form.phone},
            ) from exc
    if form.email:
        email = normalize_email(form.email, field="email")
    return phone, email


async def store_spam(
    session: AsyncSession, intake: Intake, *, now: datetime
) -> tuple[WebRequest, list[DomainEvent]]:
    """Keep a request whose honeypot was filled, as posted: no checks, no lead, no events."""
    fields = intake.fields or {}

    def text(name: str, limit: int) -> str | None:
        value = str(fields.get(name) or "").strip()
        return value[:limit] or None

    request = WebRequest(
        site=intake.site,
        visitor_id=text("visitor_id", 64),
        name=text("name", 300),
        phone=text("phone", 32),
        email=text("email", 320),
        comment=text("comment", 5000),
        form=fields,
        ip=intake.ip,
        status=RequestStatus.SPAM.value,
        is_spam=True,
        reason="honeypot",
        created_at=now,
    )
    session.add(request)
    await session.flush()
    return request, []


async def submit(
    session: AsyncSession,
    form: WebForm,
    intake: Intake,
    *,
    rules: CrmRules,
    policy: Policy,
    now: datetime,
) -> tuple[WebRequest, list[DomainEvent]]:
    """Store a website request and act on it; returns the row and the events to publish."""
    phone, email = clean_contacts(form, rules)
    attribution = intake.attribution or {}
    request = WebRequest(
        site=intake.site,
        visitor_id=form.visitor_id,
        name=form.name,
        phone=phone,
        email=email,
        comment=form.comment,
        form=intake.fields or form.model_dump(exclude_none=True),
        attribution=intake.attribution,
        ip=intake.ip,
        status=RequestStatus.QUEUED.value,
        source_id=attribution.get("source_id"),
        created_at=now,
    )
    session.add(request)
    request.region_id = await _region_of(session, form.region, attribution, intake)
    earlier = await _earlier_client(session, intake.site, form.visitor_id, phone, rules)
    events: list[DomainEvent] = []
    if earlier is not None and (earlier.lead_id or earlier.contact_id or earlier.company_id):
        request.lead_id, request.contact_id = earlier.lead_id, earlier.contact_id
        request.company_id = earlier.company_id
        responsible = await _active(session, earlier.responsible_id)
        request.reason = "existing_client" if responsible else "manual"
    else:
        assignment = await distribution.distribute(
            session,
            request.region_id,
            phone,
            now,
            "web",
            rules=rules,
            default_timezone=policy.default_timezone,
        )
        responsible, request.reason = assignment.user_id, assignment.reason
        lead, lead_events = await _new_lead(session, request, responsible, rules, now)
        request.lead_id = lead.id
        events.extend(lead_events)
    await session.flush()
    if responsible is not None:
        events.extend(await _hand_over(session, request, responsible, rules, policy, now))
    events.append(await _received(session, request, policy))
    return request, events


async def _region_of(
    session: AsyncSession, code: str | None, attribution: dict[str, Any], intake: Intake
) -> int | None:
    """The form's region, else the visitor's, else the sender's address's, else the site's
    default. An unknown code in the form falls through: a city the site offers but nobody
    configured must not lose a request."""
    if code:
        region_id = await session.scalar(
            select(Region.id).where(Region.code == code, Region.is_active)
        )
        if region_id is not None:
            return int(region_id)
    visitor_region = attribution.get("region_id")
    if visitor_region:
        return int(visitor_region)
    return intake.ip_region_id or intake.site_region_id


async def _earlier_client(
    session: AsyncSession, site: str, visitor_id: str | None, phone: str | None, rules: CrmRules
) -> _Client | None:
    """The lead of this visitor's earlier request on the site, else the client or open lead
    with this phone."""
    if visitor_id:
        row = (
            await session.execute(
                select(Lead.id, Lead.contact_id, Lead.company_id, Lead.responsible_id)
                .join(WebRequest, WebRequest.lead_id == Lead.id)
                .where(WebRequest.site == site, WebRequest.visitor_id == visitor_id)
                .order_by(WebRequest.id.desc())
                .limit(1)
            )
        ).first()
        if row is not None:
            return _Client(*row)
    if phone:
        match = await clients.find_client_by_phone(session, phone, actor=access.SYSTEM, rules=rules)
        if match is not None:
            return _Client(match.lead_id, match.contact_id, match.company_id, match.responsible_id)
    return None


async def _active(session: AsyncSession, user_id: int | None) -> int | None:
    if user_id is None:
        return None
    return (
        user_id if await session.scalar(select(User.is_active).where(User.id == user_id)) else None
    )


def _title(request: WebRequest) -> str:
    who = request.name or request.phone or request.email or ""
    return f"Заявка с сайта {request.site}: {who}"[:300]


async def _new_lead(
    session: AsyncSession,
    request: WebRequest,
    responsible: int | None,
    rules: CrmRules,
    now: datetime,
) -> tuple[Lead, list[DomainEvent]]:
    tracking = dict(request.attribution or {})
    tracking.update(site=request.site, web_request_id=request.id)
    if request.form.get("page"):
        tracking["page"] = request.form["page"]
    return await leads.create_lead(
        session,
        LeadInput(
            title=_title(request),
            origin="web",
            contact_name=request.name,
            phones=[request.phone] if request.phone else [],
            emails=[request.email] if request.email else [],
            comment=request.comment,
            source_id=request.source_id,
            region_id=request.region_id,
            responsible_id=responsible,
            tracking=tracking,
        ),
        actor=access.SYSTEM,
        rules=rules,
        now=now,
    )


async def _hand_over(
    session: AsyncSession,
    request: WebRequest,
    user_id: int,
    rules: CrmRules,
    policy: Policy,
    now: datetime,
) -> list[DomainEvent]:
    """Make ``user_id`` responsible for the request and give him a call-back task."""
    request.responsible_id = user_id
    request.status = RequestStatus.ASSIGNED.value
    request.assigned_at = now
    task, events = await tasks.create_task(
        session,
        TaskInput(
            kind=TaskKind.CALL_BACK,
            title=f"Связаться по заявке с сайта: {request.name or request.phone or request.email}",
            description=request.comment,
            due_at=now + timedelta(minutes=policy.callback_minutes),
            responsible_id=user_id,
            lead_id=request.lead_id if request.contact_id is None else None,
            contact_id=request.contact_id,
            company_id=request.company_id if request.contact_id is None else None,
            origin_key=f"web-request:{request.id}",
        ),
        actor=access.SYSTEM,
        rules=rules,
        now=now,
    )
    request.task_id = task.id
    return events


async def _received(session: AsyncSession, request: WebRequest, policy: Policy) -> DomainEvent:
    region = await session.scalar(select(Region.code).where(Region.id == request.region_id))
    queued = request.status == RequestStatus.QUEUED.value
    return WebRequestReceived(
        request_id=request.id,
        site=request.site,
        client_name=request.name,
        phone=request.phone,
        lead_id=request.lead_id,
        responsible_id=request.responsible_id,
        queued=queued,
        source=(request.attribution or {}).get("source"),
        region=region,
        audience=policy.queue_audience if queued else (f"user:{request.responsible_id}",),
        occurred_at=request.created_at,
    )


# ---------------------------------------------------------------- the manual queue


async def list_queue(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[WebRequest], int]:
    """Requests waiting for the head of sales, oldest first."""
    waiting = WebRequest.status == RequestStatus.QUEUED.value
    total = await session.scalar(select(func.count()).select_from(WebRequest).where(waiting))
    rows = await session.execute(
        select(WebRequest).where(waiting).order_by(WebRequest.id).limit(limit).offset(offset)
    )
    return list(rows.scalars()), int(total or 0)


async def assign(
    session: AsyncSession,
    request_id: int,
    user_id: int,
    *,
    actor: Actor,
    rules: CrmRules,
    policy: Policy,
    now: datetime,
) -> tuple[WebRequest, list[DomainEvent]]:
    """Hand a queued request to ``user_id``: he becomes responsible for its lead and gets the
    call-back task. Taken with a row lock, so two heads assigning at once cannot both win."""
    request = await session.scalar(
        select(WebRequest).where(WebRequest.id == request_id).with_for_update()
    )
    if request is None:
        raise WebRequestNotFound(
            f"no website request {request_id}", details={"request_id": request_id}
        )
    if request.status != RequestStatus.QUEUED.value:
        raise NotQueued(
            f"website request {request_id} is {request.status}, not queued",
            details={"request_id": request_id, "status": request.status},
        )
    events: list[DomainEvent] = []
    if request.lead_id is not None:
        lead = await session.get(Lead, request.lead_id)
        if lead is not None and lead.responsible_id != user_id:
            _, lead_events = await leads.update_lead(
                session,
                lead.id,
                LeadPatch(responsible_id=user_id),
                actor=actor,
                rules=rules,
                now=now,
            )
            events.extend(lead_events)
    else:
        await deals.check_references(session, responsible_id=user_id)
    events.extend(await _hand_over(session, request, user_id, rules, policy, now))
    request.assigned_by_id = actor.id
    request.reason = "manual"
    await session.flush()
    events.append(
        WebRequestAssigned(
            request_id=request.id,
            lead_id=request.lead_id,
            responsible_id=user_id,
            task_id=request.task_id,
            by_id=actor.id,
            audience=(f"user:{user_id}",),
            occurred_at=now,
        )
    )
    return request, events
