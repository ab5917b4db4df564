"""Call events as the managers' screens receive them (the /ws screen-pop contract)."""

from __future__ import annotations

import dataclasses
from typing import Any

from crm_core.events import DomainEvent


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallRinging(DomainEvent):
    """An extension starts ringing; ``client`` is the card summary or None for a new caller."""

    name = "call.ringing"
    call_id: str
    pbx: str = ""
    caller: str | None = None
    caller_name: str | None = None
    did: str | None = None
    extension: str | None = None
    queue: str | None = None
    direction: str = "inbound"
    client: dict[str, Any] | None = None
    tracking: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallAnswered(DomainEvent):
    name = "call.answered"
    call_id: str
    pbx: str = ""
    extension: str | None = None
    # The client's number (the caller of an inbound call, the callee of an outbound one), so a
    # screen that missed the ringing (the head's, a page opened mid-call) still names him.
    caller: str | None = None
    direction: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallEnded(DomainEvent):
    name = "call.ended"
    call_id: str
    pbx: str = ""
    extension: str | None = None
    caller: str | None = None  # the client's number, as in call.answered
    direction: str = ""
    disposition: str = ""
    talk_seconds: float = 0.0
    counted: bool = False
    recording: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CallCorrected(DomainEvent):
    """A stored call given the PBX's own times after the link only estimated them (an
    outage, a restart): what ``call.ended`` said of it is replaced by these figures."""

    name = "call.corrected"
    call_id: str
    pbx: str = ""
    extension: str | None = None
    disposition: str = ""
    talk_seconds: float = 0.0
    counted: bool = False
