"""A new inbound caller's lead goes to the manager his call's region distributes to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from contact_center import db, tracking_service
from contact_center.call_outcomes import CallOutcomes
from crm_core.calls.record import CallRecord
from crm_core.clock import SystemClock
from crm_core.distribution import service as distribution
from crm_core.leads.model import Lead
from crm_core.rules import CrmRules
from tests.distribution.world import NOON_MSK, add_rule, build


@pytest.fixture
async def outcomes(make_settings: Any, engine: Any) -> CallOutcomes:
    tracker, _ = await tracking_service.open_service(
        make_settings(), sessions=db.sessionmaker(engine), redis=None, clock=SystemClock()
    )
    return CallOutcomes(tracker=tracker, rules=CrmRules(), callback_due_minutes=30)


def facts(
    call_id: str, caller: str, extension: str | None, rang: tuple[str, ...] | None = None
) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        direction="inbound",
        caller=caller,
        callee="+74950000000",
        did="+74950000000",
        queue=None,
        extension=extension,
        rang=rang if rang is not None else (extension,) if extension else (),
        disposition="answered" if extension else "missed",
        started_at=NOON_MSK - timedelta(minutes=2),
        answered_at=NOON_MSK - timedelta(minutes=1) if extension else None,
        ended_at=NOON_MSK,
        ring_seconds=5.0,
        talk_seconds=60.0 if extension else 0.0,
        counted=bool(extension),
        transfers=(),
        recording=None,
        hangup_cause=16,
    )


async def finish(
    outcomes: CallOutcomes, session: Any, f: CallRecord, tracking: dict[str, Any] | None
) -> Lead:
    outcome = await outcomes.record(session, "main", f, now=NOON_MSK, tracking=tracking)
    await session.commit()
    assert outcome.lead_id is not None
    return await session.get(Lead, outcome.lead_id)


async def test_call_lead_goes_to_the_regions_manager(session: Any, outcomes: CallOutcomes) -> None:
    w = await build(session)
    await add_rule(session, w["spb"], "fixed", w["anna"])
    # Ivan (101) answered, but the caller came from a St Petersburg visitor session.
    lead = await finish(
        outcomes,
        session,
        facts("c1", "+78125550101", "101"),
        {"region": "RU-SPE", "source": "Yandex"},
    )
    assert (lead.responsible_id, lead.region_id) == (w["anna"], w["spb"])
    # A region without a rule (and no default rule): the manager who answered.
    lead = await finish(
        outcomes, session, facts("c2", "+78435550102", "101"), {"region_id": w["kazan"]}
    )
    assert (lead.responsible_id, lead.region_id) == (w["ivan"], w["kazan"])
    # No tracking at all: the same.
    lead = await finish(outcomes, session, facts("c3", "+74955550103", "103"), None)
    assert (lead.responsible_id, lead.region_id) == (w["petr"], None)


async def test_the_manager_the_dialplan_chose_keeps_the_lead(
    session: Any, outcomes: CallOutcomes
) -> None:
    """Round robin: the dialplan's lookup took Anna's turn and her phone rang; the lead of the
    call stays with her instead of taking the next turn (Petr)."""
    w = await build(session)
    await add_rule(session, w["spb"], "round_robin", w["anna"], w["petr"])
    dialed = await distribution.distribute(
        session, w["spb"], "+78125550201", NOON_MSK, "call", rules=CrmRules()
    )
    await session.commit()
    assert dialed.user_id == w["anna"]
    spb = {"region": "RU-SPE"}
    lead = await finish(outcomes, session, facts("c1", "+78125550201", "102"), spb)
    assert (lead.responsible_id, lead.region_id) == (w["anna"], w["spb"])
    # Missed: the phone that rang decides the same way.
    lead = await finish(outcomes, session, facts("c2", "+78125550202", None, rang=("103",)), spb)
    assert lead.responsible_id == w["petr"]
    # Ivan is not on the rule: the region's next turn decides, not who answered.
    lead = await finish(outcomes, session, facts("c3", "+78125550203", "101"), spb)
    assert lead.responsible_id == w["petr"]
