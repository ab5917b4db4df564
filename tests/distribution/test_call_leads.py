"""A new inbound caller's lead goes to the manager his call's region distributes to."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contact_center import crm_hooks
from crm_core.calls.service import CallFacts
from crm_core.leads.model import Lead
from crm_core.rules import CrmRules
from tests.distribution.world import NOON_MSK, add_rule, build


def facts(call_id: str, caller: str, extension: str | None) -> CallFacts:
    return CallFacts(
        pbx="main",
        call_id=call_id,
        direction="inbound",
        caller=caller,
        callee="+74950000000",
        did="+74950000000",
        queue=None,
        extension=extension,
        rang=(extension,) if extension else (),
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


async def finish(session: Any, f: CallFacts, tracking: dict[str, Any] | None) -> Lead:
    outcome = await crm_hooks.record_finished_call(
        session, f, rules=CrmRules(), now=NOON_MSK, callback_due_minutes=30, tracking=tracking
    )
    await session.commit()
    assert outcome.lead_id is not None
    return await session.get(Lead, outcome.lead_id)


async def test_call_lead_goes_to_the_regions_manager(session: Any) -> None:
    w = await build(session)
    await add_rule(session, w["spb"], "fixed", w["anna"])
    # Ivan (101) answered, but the caller came from a St Petersburg visitor session.
    lead = await finish(
        session, facts("c1", "+78125550101", "101"), {"region": "RU-SPE", "source": "Yandex"}
    )
    assert (lead.responsible_id, lead.region_id) == (w["anna"], w["spb"])
    # A region without a rule (and no default rule): the manager who answered.
    lead = await finish(session, facts("c2", "+78435550102", "101"), {"region_id": w["kazan"]})
    assert (lead.responsible_id, lead.region_id) == (w["ivan"], w["kazan"])
    # No tracking at all: the same.
    lead = await finish(session, facts("c3", "+74955550103", "103"), None)
    assert (lead.responsible_id, lead.region_id) == (w["petr"], None)
