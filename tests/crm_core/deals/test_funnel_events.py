"""The funnel's events travel as JSON between instances and come back the same."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from crm_core.deals.events import DealCreated, DealDeleted, DealStageChanged, DealUpdated
from crm_core.events import DomainEvent
from crm_core.leads.events import (
    LeadConverted,
    LeadCreated,
    LeadDeleted,
    LeadStageChanged,
    LeadUpdated,
)

AUDIENCE = ("user:3", "role:head")


@pytest.mark.parametrize(
    "event",
    [
        DealCreated(
            deal_id=1, title="Т", pipeline="sales", stage="contact", amount=Decimal("1.50")
        ),
        DealUpdated(deal_id=1, fields=("amount", "meeting_at"), audience=AUDIENCE),
        DealStageChanged(
            deal_id=1,
            pipeline="sales",
            from_stage=None,
            to_stage="lost",
            kind="lost",
            reason="price",
            responsible_id=3,
            audience=AUDIENCE,
        ),
        DealDeleted(deal_id=1, actor_id=2),
        LeadCreated(lead_id=1, origin="call", stage="new"),
        LeadUpdated(lead_id=1, fields=("custom.segment",)),
        LeadStageChanged(lead_id=1, from_stage="new", to_stage="junk", reason="spam"),
        LeadConverted(lead_id=1, contact_id=2, company_id=None, deal_id=4, contact_created=True),
        LeadDeleted(lead_id=1),
    ],
)
def test_round_trip(event: DomainEvent) -> None:
    wire = json.loads(json.dumps(event.to_dict()))
    assert DomainEvent.from_dict(wire) == event
