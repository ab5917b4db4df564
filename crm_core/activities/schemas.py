"""Input and output shapes of the activities slice (the REST API validates with the same)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from crm_core.activities.model import Activity, ActivityKind

Direction = Literal["inbound", "outbound", "internal"]

# Kinds a user records by hand; calls and messages come from the telephony and channel
# adapters (a hand-written "counted call" would skew the plan-vs-fact figures).
MANUAL_KINDS = (ActivityKind.MEETING, ActivityKind.NOTE, ActivityKind.EMAIL)

KIND_LABELS: dict[str, tuple[str, str]] = {
    ActivityKind.CALL: ("Звонок", "Call"),
    ActivityKind.MEETING: ("Встреча", "Meeting"),
    ActivityKind.EMAIL: ("Письмо", "E-mail"),
    ActivityKind.MESSAGE: ("Сообщение", "Message"),
    ActivityKind.NOTE: ("Заметка", "Note"),
}


class ActivityInput(BaseModel):
    """One timeline entry as a writer (an adapter or a user) reports it.

    ``external_id`` ("call:<pbx>:<linkedid>") makes the write idempotent: a second write with
    the same id updates the stored entry with the fields it sets.
    """

    model_config = ConfigDict(extra="forbid")

    kind: ActivityKind
    direction: Direction | None = None
    subject: str = Field("", max_length=300)
    body: str | None = Field(None, max_length=100_000)
    occurred_at: AwareDatetime | None = Field(None, description="default: now")
    duration_s: float | None = Field(None, ge=0)
    talk_s: float | None = Field(None, ge=0)
    counted: bool = Field(False, description="a call with enough talk time (calls only)")
    outcome: str | None = Field(None, max_length=32)
    user_id: int | None = Field(None, description="who: the manager the activity belongs to")
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None
    external_id: str | None = Field(None, min_length=1, max_length=200)
    payload: dict[str, Any] | None = None
    private_to_id: int | None = Field(
        None, description="a personal mailbox's letter: only this user, user_id and the head"
    )

    @model_validator(mode="after")
    def _counted_calls_only(self) -> ActivityInput:
        if self.counted and self.kind != ActivityKind.CALL:
            raise ValueError("counted applies to calls only")
        return self


class ManualActivityInput(BaseModel):
    """A meeting, note or e-mail a user records by hand (``user_id`` defaults to himself)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["meeting", "note", "email"]
    direction: Direction | None = None
    subject: str = Field("", max_length=300)
    body: str | None = Field(None, max_length=100_000)
    occurred_at: AwareDatetime | None = Field(None, description="default: now")
    duration_s: float | None = Field(None, ge=0)
    outcome: str | None = Field(None, max_length=32)
    user_id: int | None = None
    contact_id: int | None = None
    company_id: int | None = None
    deal_id: int | None = None
    lead_id: int | None = None

    def to_input(self) -> ActivityInput:
        return ActivityInput.model_validate(self.model_dump(exclude_unset=True))


class ActivityPatch(BaseModel):
    """Changes to a hand-recorded activity; only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    subject: str | None = Field(None, max_length=300)
    body: str | None = Field(None, max_length=100_000)
    occurred_at: AwareDatetime | None = None
    duration_s: float | None = Field(None, ge=0)
    outcome: str | None = Field(None, max_length=32)
    direction: Direction | None = None


class ActivityOut(BaseModel):
    id: int
    kind: str
    direction: str | None
    subject: str
    body: str | None
    occurred_at: datetime
    duration_s: float | None
    talk_s: float | None
    counted: bool
    outcome: str | None
    user_id: int | None
    contact_id: int | None
    company_id: int | None
    deal_id: int | None
    lead_id: int | None
    external_id: str | None
    payload: dict[str, Any] | None
    created_at: datetime
    created_by_id: int | None

    @classmethod
    def of(cls, activity: Activity) -> ActivityOut:
        return cls.model_validate(activity, from_attributes=True)


class KindLabel(BaseModel):
    code: str
    name_ru: str
    name_en: str


def kind_labels() -> list[KindLabel]:
    """Activity kinds with their Russian and English names."""
    return [KindLabel(code=k, name_ru=ru, name_en=en) for k, (ru, en) in KIND_LABELS.items()]
