"""A finished call as the PBX adapter folds it from the PBX's events: the one record the fold
produces, ``contact-center replay`` prints and the call log stores."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

# The dispositions of a call nobody answered: the caller is to be called back.
MISSED = frozenset({"missed", "abandoned"})


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A finished call (DESIGN.md, ``replay``; ``tests/fixtures/ami/README.md`` says how each
    field is read from the events). ``call_id`` is the Linkedid; which PBX the call went
    through is not part of the record (the fold of one PBX does not know its name)."""

    call_id: str
    direction: str  # inbound | outbound | internal
    caller: str | None  # E.164 for an outside number, the extension for an internal party
    callee: str | None
    did: str | None  # the dialed outside number of an inbound call
    queue: str | None
    extension: str | None  # answered an inbound call or placed an outbound one
    rang: tuple[str, ...]  # extensions that rang, in order
    disposition: str  # answered | missed | abandoned | busy | failed
    started_at: datetime
    answered_at: datetime | None
    ended_at: datetime
    ring_seconds: float
    talk_seconds: float
    counted: bool  # talk_seconds reached telephony.count_threshold_s
    transfers: tuple[str, ...]  # extensions the call was transferred to, in order
    recording: str | None  # the MixMonitor file name
    hangup_cause: int | None  # Q.850 cause of the first channel's Hangup
    # An unanswered click-to-call: "manager" (his own phone did not pick up) or "client".
    unanswered_by: str | None = None
    # The times not observed as they happened (taken at a resync or an expiry), by field name:
    # "started_at", "answered_at", "ended_at". Empty: every time is the PBX's own.
    estimated: tuple[str, ...] = ()
    # A call read from the PBX's CDR: the whole seconds of talk the PBX billed (its billsec),
    # exact where the CDR's times are truncated to the second; the talk lies in
    # [billsec, billsec + 1). None for a call the AMI link followed (its times are exact).
    billsec: int | None = None

    @property
    def outside_number(self) -> str | None:
        """The client's number: the caller of an inbound call, the callee of an outbound one."""
        if self.direction == "inbound":
            return self.caller
        if self.direction == "outbound":
            return self.callee
        return None


def billed_talk(at_least_s: float, billsec: int) -> float:
    """The talk of a call the CDR measured, given what the times say it talked at least:
    the PBX billed ``billsec`` whole seconds, so the talk lies in [billsec, billsec + 1), and
    the CDR's times are truncated to the second, so the times alone can be a second off
    either way. The least talk both allow, to a tenth. Only then does ``counted`` agree with
    the PBX: a call answered at 10.9 s and ended at 70.1 s talked 59.2 s, which the CDR
    writes as 10 and 70 (60 s apart) but bills as 59; one answered at 39.94 s (seen live)
    and ended at 49.94 s (the CDR's 49) talked 10 s, not 9.06."""
    return min(max(at_least_s, float(billsec)), billsec + 0.9)
