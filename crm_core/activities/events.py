"""Events of the activities slice."""

from __future__ import annotations

import dataclasses

from crm_core.activities.model import Activity
from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivityRecorded(DomainEvent):
    """An entry was added to (or, for an idempotent re-write, updated on) a client's timeline.
    The audience is the user the activity belongs to."""

    name = "activity.recorded"
    activity_id: int
    kind: str
    direction: str | None = None
    subject: str = ""
    counted: bool = False
    user_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    external_id: str | None = None

    @classmethod
    def of(cls, activity: Activity) -> ActivityRecorded:
        """The event for a stored activity (what ``record_activity`` returned)."""
        return cls(
            activity_id=activity.id,
            kind=activity.kind,
            direction=activity.direction,
            subject=activity.subject,
            occurred_at=activity.occurred_at,
            counted=activity.counted,
            user_id=activity.user_id,
            contact_id=activity.contact_id,
            company_id=activity.company_id,
            deal_id=activity.deal_id,
            lead_id=activity.lead_id,
            external_id=activity.external_id,
            audience=(f"user:{activity.user_id}",) if activity.user_id is not None else (),
        )
