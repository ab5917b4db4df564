"""Pure call fold: AMI frames in, live call events and finished call records out.

A *call* is every channel sharing one ``Linkedid`` (wazo's "conversation"); a *channel* is
identified by its ``Uniqueid``. The *first channel* is the one whose Uniqueid equals the
Linkedid: it decides the direction and is "the caller". The fold never does I/O and never
reads the wall clock except through the injected ``now`` callable, used only for frames that
carry no ``Timestamp`` header (resync list events). The same code serves ``serve`` and the
``contact-center replay`` CLI.

How each record field is read from the events is specified in
``tests/fixtures/ami/README.md``; the comments below only say why where it is not obvious.
"""

import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ami.frames import EventFilter, Frame
from crm_core.calls.record import CallRecord
from crm_core.phones import normalize_call_number

__all__ = [
    "CallAnswered",
    "CallEnded",
    "CallEvent",
    "CallFolder",
    "CallRinging",
    "LiveCall",
    "parse_channel_name",
]

log = logging.getLogger(__name__)

# Asterisk channel states (ChannelState header).
_STATE_DOWN = 0
_STATE_RINGING = 5
_STATE_UP = 6

# QUEUESTATUS values that mean the queue gave up on the caller (nobody answered). A caller who
# hangs up while waiting gets no QUEUESTATUS at all.
_QUEUE_GAVE_UP = frozenset(
    {"TIMEOUT", "FULL", "JOINEMPTY", "LEAVEEMPTY", "JOINUNAVAIL", "LEAVEUNAVAIL"}
)

_DIALSTATUS_DISPOSITION = {
    "BUSY": "busy",
    "CONGESTION": "failed",
    "CHANUNAVAIL": "failed",
    "NOANSWER": "missed",
    "CANCEL": "missed",
}

# Caller ID names that name nobody.
_NO_NAME = frozenset({"", "<unknown>", "unknown", "anonymous", "<anonymous>"})

_FINISHED_MEMORY = 20_000

# Epoch seconds outside this range are garbage (and would break datetime arithmetic).
_MIN_TS = 0.0
_MAX_TS = 32_503_680_000.0  # year 3000

# A resync listing can only back-date a channel this far.
_MAX_LISTED_AGE_S = 7 * 24 * 3600.0


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call came in on a trunk: who calls and which number he dialed are known before any
    phone rings (an IVR or a queue usually comes first), so the caller can be looked up early.
    """

    call_id: str
    caller: str | None
    did: str | None
    ts: float


@dataclass(frozen=True, slots=True)
class CallRinging:
    """An extension's phone started ringing (or was connected without ringing)."""

    call_id: str
    caller: str | None
    did: str | None
    extension: str
    ts: float
    caller_name: str | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """The call was answered: by ``extension`` (inbound/internal) or by the far end of an
    outbound call placed by ``extension``. ``client`` is the outside party (the caller of an
    inbound call, the callee of an outbound one): an outbound call has no ringing naming him."""

    call_id: str
    extension: str | None
    ts: float
    direction: str = ""
    client: str | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The last channel of the call hung up (or the call expired / vanished on resync)."""

    record: CallRecord

    @property
    def call_id(self) -> str:
        """The finished call's Linkedid."""
        return self.record.call_id


CallEvent = CallStarted | CallRinging | CallAnswered | CallEnded


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A snapshot of a call still in progress."""

    call_id: str
    direction: str
    caller: str | None
    callee: str | None
    did: str | None
    queue: str | None
    extension: str | None
    rang: tuple[str, ...]
    started_ts: float
    answered_ts: float | None
    channels: tuple[str, ...]
    """Uniqueids of the channels not hung up yet."""


# --------------------------------------------------------------------------- helpers


def _to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def _number_from_dialstring(dialstring: str | None) -> str | None:
    """``+78125550011@provider`` / ``PJSIP/+7812…@provider`` / ``provider/7812…`` → number."""
    if not dialstring:
        return None
    text = dialstring.strip()
    # Dial(PJSIP/a&PJSIP/b) towards a trunk: the first target is the number.
    text = text.split("&", 1)[0]
    if text.lower().startswith(("pjsip/", "sip/", "iax2/", "dahdi/")):
        text = text.split("/", 1)[1]
    if text.lower().startswith(("sip:", "sips:", "tel:")):
        text = text.split(":", 1)[1]
    text = text.split("@", 1)[0]
    if "/" in text:
        text = text.rsplit("/", 1)[1]
        if text.lower().startswith(("sip:", "sips:", "tel:")):
            text = text.split(":", 1)[1]
    return text or None


def parse_channel_name(name: str) -> tuple[str, str, str | None, int]:
    """Split a channel name into (technology, endpoint, local_key, local_half).

    ``PJSIP/provider-00000002`` → ``("PJSIP", "provider", None, 0)``;
    ``Local/201@agents-0000001a;2`` → ``("Local", "201", "Local/201@agents-0000001a", 2)``,
    where the endpoint of a Local channel is the extension part of ``exten@context``.
    """
    tech, sep, rest = name.partition("/")
    if not sep:
        return "", name, None, 0
    if tech.lower() == "local":
        base, semi, half_text = rest.rpartition(";")
        if not semi:
            base, half_text = rest, ""
        core = base.rsplit("-", 1)[0] if "-" in base else base
        exten = core.partition("@")[0]
        half = 1 if half_text == "1" else 2 if half_text == "2" else 0
        return "Local", exten, f"Local/{base}", half
    # Rename can leave suffixes such as "<ZOMBIE>" or ",1" after the counter.
    endpoint = rest.rsplit("-", 1)[0] if "-" in rest else rest
    return tech, endpoint, None, 0


def _to_timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        ts = float(value)
    except ValueError:
        return None
    if not math.isfinite(ts) or not _MIN_TS < ts < _MAX_TS:
        return None
    return ts


def _to_int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _duration_seconds(value: str | None) -> float | None:
    """``00:01:05`` (CoreShowChannel Duration) or ``65`` (Status Seconds) → seconds."""
    if not value:
        return None
    try:
        if ":" in value:
            total = 0
            for part in value.split(":"):
                total = total * 60 + int(part)
            age = float(total)
        else:
            age = float(value)
    except ValueError:
        return None
    if not math.isfinite(age) or not 0 <= age <= _MAX_LISTED_AGE_S:
        return None
    return age


# --------------------------------------------------------------------------- state


@dataclass(slots=True, eq=False)
class _Channel:
    uniqueid: str
    linkedid: str
    name: str
    tech: str
    endpoint: str
    local_key: str | None
    local_half: int
    seq: int
    created_ts: float
    outgoing: bool
    is_trunk: bool
    phone_ext: str | None
    """Extension of a real phone channel (never set on Local halves or trunks)."""
    caller_num: str | None
    caller_name: str | None
    exten: str | None
    state: int
    rang_ext: str | None = None
    """The phone's extension when this outgoing leg rang (kept across a Rename)."""
    hungup: bool = False
    hangup_ts: float | None = None
    cause: int | None = None
    bridge: str | None = None
    observed: bool = True
    """Created by its own Newchannel/DialBegin, not first met mid-call or in a listing."""


@dataclass(slots=True, eq=False)
class _LocalPair:
    name_ext: str | None
    answered_ext: str | None = None
    dialed_ext: str | None = None


@dataclass(slots=True, eq=False)
class _Call:
    linkedid: str
    first_ts: float
    last_ts: float
    channels: dict[str, _Channel] = field(default_factory=dict)
    live: int = 0
    has_trunk: bool = False
    queue: str | None = None
    queue_uid: str | None = None
    queue_state: str = ""  # "" | waiting | left | abandoned | gave_up
    trunk_dialstring: str | None = None
    dialed_ext: str | None = None
    bridge_answer_ts: float | None = None
    bridge_answer_ext: str | None = None
    agent_connect_ts: float | None = None
    agent_connect_ext: str | None = None
    trunk_up_ts: float | None = None
    dialstatus_var: str | None = None
    dialstatus_end: str | None = None
    transfers: list[str] = field(default_factory=list)
    transfer_keys: set[tuple[str, str]] = field(default_factory=set)
    recording: str | None = None
    answered_emitted: bool = False
    last_hangup_ts: float | None = None
    local_pairs: dict[str, _LocalPair] = field(default_factory=dict)
    # Click-to-call (the Originate's CLICK2CALL variable on the first channel): the client's
    # number (E.164, or "" until known), and whether the manager's own phone picked up.
    click_to_call: str | None = None
    manager_up: bool = False
    # Record times the fold did not observe (taken at a resync or an expiry, not from events).
    estimated: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- the fold


_HANDLERS: dict[str, str] = {
    "Newchannel": "_on_newchannel",
    "Newstate": "_on_newstate",
    "Rename": "_on_rename",
    "DialBegin": "_on_dial_begin",
    "DialEnd": "_on_dial_end",
    "BridgeEnter": "_on_bridge_enter",
    "BridgeLeave": "_on_bridge_leave",
    "BridgeDestroy": "_on_bridge_destroy",
    "BridgeMerge": "_on_bridge_merge",
    "QueueCallerJoin": "_on_queue_join",
    "QueueCallerLeave": "_on_queue_leave",
    "QueueCallerAbandon": "_on_queue_abandon",
    "AgentConnect": "_on_agent_connect",
    "BlindTransfer": "_on_blind_transfer",
    "AttendedTransfer": "_on_attended_transfer",
    "VarSet": "_on_varset",
    "HangupRequest": "_on_hangup_request",
    "Hangup": "_on_hangup",
    "CoreShowChannel": "_on_channel_listing",
    "Status": "_on_channel_listing",
    "QueueEntry": "_on_queue_entry",
    # Media reports every few seconds: a cheap heartbeat for expire().
    "RTCPSent": "_on_activity",
    "RTCPReceived": "_on_activity",
}
"""The events the fold applies, with the method of :class:`CallFolder` applying each."""
_VARIABLES = frozenset({"MIXMONITOR_FILENAME", "DIALSTATUS", "QUEUESTATUS", "CLICK2CALL"})
"""The channel variables whose ``VarSet`` the fold reads."""
# Of a media report the fold reads its channel and time (the journal its call): the other
# forty-odd headers of the most frequent events of a live call need not be split.
_ACTIVITY_HEADERS = ("Uniqueid", "Linkedid", "Timestamp")
NEEDED = EventFilter(
    frozenset(_HANDLERS) - {"VarSet"},  # VarSet: of _VARIABLES only
    _VARIABLES,
    {"RTCPSent": _ACTIVITY_HEADERS, "RTCPReceived": _ACTIVITY_HEADERS},
)
"""What a live AMI link must deliver to the fold (see :class:`ami.frames.EventFilter`): the
rest of a PBX's stream is dropped unparsed, and of a media report only what the fold reads is
taken."""


class CallFolder:
    """Folds AMI frames into calls.

    ``feed(frame)`` returns the live events the frame caused (:class:`CallRinging`,
    :class:`CallAnswered`, :class:`CallEnded`); a :class:`CallEnded` carries the finished
    :class:`~crm_core.calls.record.CallRecord`. It never raises: malformed or unexpected
    events are logged and skipped. Duplicated events (a reconnect replaying what was already
    seen) are ignored where they could double-count: a second ``Hangup``, ``Newchannel`` or
    transfer.

    ``trunks`` are the endpoint names of trunk channels (``provider`` for
    ``PJSIP/provider-00000002``); ``extension_pattern`` is a regular expression that an
    extension number matches in full.
    """

    def __init__(
        self,
        trunks: Sequence[str],
        extension_pattern: str,
        count_threshold_s: float = 60,
        *,
        now: Callable[[], float] | None = None,
        region: str = "RU",
    ) -> None:
        self._trunks = frozenset(trunks)
        self._ext_re = re.compile(extension_pattern)
        self._count_threshold_s = count_threshold_s
        self._now = now if now is not None else time.time
        self._region = region
        self._calls: dict[str, _Call] = {}
        self._channels: dict[str, _Channel] = {}
        self._bridges: dict[str, set[str]] = {}
        self._finished_calls: dict[str, None] = {}
        self._finished_channels: dict[str, None] = {}
        self._ext_cache: dict[str, bool] = {}
        self._seq = 0
        self._listing = False  # applying a resync list item: its times are estimates
        self.last_timestamp: float = 0.0
        """The newest ``Timestamp`` header seen (0.0 before the first one)."""
        self.skipped_frames = 0
        """Frames that could not be applied (logged)."""
        self._handlers: dict[str, Callable[[Frame, float], list[CallEvent]]] = {
            name: getattr(self, method) for name, method in _HANDLERS.items()
        }

    # ----------------------------------------------------------------- public API

    def feed(self, frame: Frame) -> list[CallEvent]:
        """Apply one frame; return the call events it caused (often none)."""
        name = frame.headers.get("Event")
        if name is None:
            return []
        handler = self._handlers.get(name)
        if handler is None:
            return []
        raw_ts = frame.headers.get("Timestamp")
        ts: float | None = None
        if raw_ts is not None:
            ts = _to_timestamp(raw_ts)
        if ts is None:
            ts = self._now()
        elif ts > self.last_timestamp:
            self.last_timestamp = ts
        try:
            return handler(frame, ts)
        except Exception:
            self.skipped_frames += 1
            log.exception(
                "skipping %s event that could not be applied (linkedid=%s uniqueid=%s)",
                name,
                frame.headers.get("Linkedid"),
                frame.headers.get("Uniqueid"),
            )
            return []

    def feed_many(self, frames: Iterable[Frame]) -> list[CallEvent]:
        """Apply frames in order; return all the events they caused."""
        events: list[CallEvent] = []
        for frame in frames:
            produced = self.feed(frame)
            if produced:
                events.extend(produced)
        return events

    def live_calls(self) -> list[LiveCall]:
        """Snapshots of the calls in progress, oldest first."""
        result = []
        for call in self._calls.values():
            first = self._first_channel(call)
            direction = self._direction(call, first)
            result.append(
                LiveCall(
                    call_id=call.linkedid,
                    direction=direction,
                    caller=self._caller(call, first, direction),
                    callee=self._callee(call, first, direction),
                    did=self._did(first) if direction == "inbound" else None,
                    queue=call.queue,
                    extension=self._extension(call, first, direction),
                    rang=self._rang(call),
                    started_ts=self._started_ts(call, first),
                    answered_ts=self._answered_ts(call, direction),
                    channels=tuple(u for u, ch in call.channels.items() if not ch.hungup),
                )
            )
        return result

    def click_to_call(self, call_id: str) -> str | None:
        """The client's number (E.164; "" while unknown) when call ``call_id`` in progress is a
        click-to-call (its Originate set ``CLICK2CALL``), else None."""
        call = self._calls.get(call_id)
        return call.click_to_call if call is not None else None

    def resync_marker(self) -> int:
        """A marker to take just before asking the PBX for its channel list.

        Pass it to :meth:`reconcile` so channels created while the list was being produced
        (seen live, after the marker) are not mistaken for vanished ones.
        """
        return self._seq

    def reconcile(
        self, active_channel_uniqueids: set[str], now: float, since: int | None = None
    ) -> list[CallEvent]:
        """Treat known channels the PBX no longer reports as hung up at ``now``.

        ``active_channel_uniqueids`` is the Uniqueid set of a ``CoreShowChannels`` (or
        ``Status``) listing taken after a reconnect. Channels first seen after ``since`` (a
        :meth:`resync_marker`) are kept. Returns the :class:`CallEnded` events of the calls
        that thereby finished.
        """
        events: list[CallEvent] = []
        for call in list(self._calls.values()):
            vanished = [
                ch
                for ch in call.channels.values()
                if not ch.hungup
                and ch.uniqueid not in active_channel_uniqueids
                and (since is None or ch.seq <= since)
            ]
            if not vanished:
                continue
            log.info(
                "resync: %d channel(s) of call linkedid=%s no longer on the PBX",
                len(vanished),
                call.linkedid,
            )
            for ch in vanished:
                self._mark_hungup(call, ch, now, None)
            call.estimated.add("ended_at")
            if call.live == 0:
                events.append(self._finish(call))
        return events

    def expire(self, now: float, max_age_s: float) -> list[CallEvent]:
        """Finish calls with no event for more than ``max_age_s`` (their Hangup was lost).

        The record ends at the call's last event; channels without a Hangup get no cause.
        RTCP reports count as events, so with ``read = all`` a live call is never silent for
        more than a few seconds; without them pick hours, as a talk can be that long.
        """
        events: list[CallEvent] = []
        for call in list(self._calls.values()):
            if now - call.last_ts <= max_age_s:
                continue
            log.warning(
                "expiring call linkedid=%s: no event for %.0f s, %d channel(s) without Hangup",
                call.linkedid,
                now - call.last_ts,
                call.live,
            )
            end_ts = call.last_ts
            call.estimated.add("ended_at")
            for ch in call.channels.values():
                if not ch.hungup:
                    self._mark_hungup(call, ch, end_ts, None)
            events.append(self._finish(call))
        return events

    # ----------------------------------------------------------------- classification

    def _is_ext(self, text: str | None) -> bool:
        if not text:
            return False
        known = self._ext_cache.get(text)
        if known is None:
            known = self._ext_re.fullmatch(text) is not None
            if len(self._ext_cache) < 65536:
                self._ext_cache[text] = known
        return known

    def _party(self, text: str | None) -> str | None:
        """An extension stays as is; anything else is an outside number (E.164)."""
        if not text:
            return None
        if self._is_ext(text):
            return text
        return normalize_call_number(text, self._region)

    def _ext_of(self, ch: _Channel | None) -> str | None:
        """The extension a channel stands for: the phone itself, or the one behind a Local."""
        if ch is None:
            return None
        if ch.phone_ext is not None:
            return ch.phone_ext
        if ch.local_key is None:
            return None
        call = self._calls.get(ch.linkedid)
        pair = call.local_pairs.get(ch.local_key) if call is not None else None
        if pair is None:
            return None
        return pair.answered_ext or pair.name_ext or pair.dialed_ext

    def _name_ext(self, exten: str) -> str | None:
        if self._is_ext(exten):
            return exten
        # FreePBX follow-me / ring-group members look like Local/FMPR-201@from-internal.
        suffix = exten.rsplit("-", 1)[-1]
        if suffix != exten and self._is_ext(suffix):
            return suffix
        return None

    # ----------------------------------------------------------------- channel registry

    def _new_channel(
        self, frame: Frame, ts: float, prefix: str = "", outgoing: bool | None = None
    ) -> _Channel | None:
        h = frame.headers
        uid = h.get(prefix + "Uniqueid")
        lid = h.get(prefix + "Linkedid")
        name = h.get(prefix + "Channel")
        if not uid or not lid or not name:
            return None
        if uid in self._finished_channels or lid in self._finished_calls:
            return None
        call = self._calls.get(lid)
        if call is None:
            call = _Call(linkedid=lid, first_ts=ts, last_ts=ts)
            self._calls[lid] = call
        tech, endpoint, local_key, half = parse_channel_name(name)
        state = _to_int(h.get(prefix + "ChannelState"))
        if state is None:
            state = -1
        is_trunk = local_key is None and endpoint in self._trunks
        phone_ext = (
            endpoint if local_key is None and not is_trunk and self._is_ext(endpoint) else None
        )
        self._seq += 1
        ch = _Channel(
            uniqueid=uid,
            linkedid=lid,
            name=name,
            tech=tech,
            endpoint=endpoint,
            local_key=local_key,
            local_half=half,
            seq=self._seq,
            created_ts=ts,
            outgoing=(state == _STATE_DOWN) if outgoing is None else outgoing,
            is_trunk=is_trunk,
            phone_ext=phone_ext,
            caller_num=h.get(prefix + "CallerIDNum"),
            caller_name=h.get(prefix + "CallerIDName"),
            exten=h.get(prefix + "Exten"),
            state=state,
        )
        call.channels[uid] = ch
        call.live += 1
        if ts < call.first_ts:
            call.first_ts = ts
        if is_trunk:
            call.has_trunk = True
        if local_key is not None and local_key not in call.local_pairs:
            call.local_pairs[local_key] = _LocalPair(name_ext=self._name_ext(endpoint))
        self._channels[uid] = ch
        return ch

    def _channel(self, frame: Frame, ts: float, create: bool = True) -> _Channel | None:
        uid = frame.headers.get("Uniqueid")
        if uid is None:
            return None
        ch = self._channels.get(uid)
        if ch is None and create:
            # Joined mid-call (restart, missed Newchannel): start from what this event shows.
            ch = self._new_channel(frame, ts)
            if ch is not None:
                ch.observed = False
                log.debug(
                    "channel %s of linkedid=%s first seen in a %s event",
                    ch.name,
                    ch.linkedid,
                    frame.headers.get("Event"),
                )
        return ch

    def _call_of(self, ch: _Channel, ts: float) -> _Call | None:
        call = self._calls.get(ch.linkedid)
        if call is not None and ts > call.last_ts:
            call.last_ts = ts
        return call

    @staticmethod
    def _first_channel(call: _Call) -> _Channel | None:
        first = call.channels.get(call.linkedid)
        if first is not None:
            return first
        # The first channel was never seen (joined mid-call): the oldest one stands in.
        return min(call.channels.values(), key=lambda c: c.seq, default=None)

    # ----------------------------------------------------------------- handlers

    def _on_newchannel(self, frame: Frame, ts: float) -> list[CallEvent]:
        uid = frame.headers.get("Uniqueid")
        if uid is None or uid in self._channels:
            return []  # a duplicate after a reconnect
        ch = self._new_channel(frame, ts)
        if ch is None or not ch.is_trunk or ch.outgoing or uid != ch.linkedid:
            return []
        return [
            CallStarted(
                call_id=ch.linkedid,
                caller=normalize_call_number(ch.caller_num, self._region),
                did=normalize_call_number(ch.exten, self._region),
                ts=ts,
            )
        ]

    def _on_activity(self, frame: Frame, ts: float) -> list[CallEvent]:
        uid = frame.headers.get("Uniqueid")
        ch = self._channels.get(uid) if uid is not None else None
        if ch is not None:
            self._call_of(ch, ts)
        return []

    def _on_rename(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts, create=False)
        new_name = frame.headers.get("Newname")
        if ch is None or not new_name:
            return []
        call = self._call_of(ch, ts)
        tech, endpoint, local_key, half = parse_channel_name(new_name)
        ch.name, ch.tech, ch.endpoint, ch.local_key, ch.local_half = (
            new_name,
            tech,
            endpoint,
            local_key,
            half,
        )
        # A pickup or masquerade can put another phone behind the same Uniqueid.
        ch.is_trunk = local_key is None and endpoint in self._trunks
        ch.phone_ext = (
            endpoint if local_key is None and not ch.is_trunk and self._is_ext(endpoint) else None
        )
        if call is not None:
            if ch.is_trunk:
                call.has_trunk = True
            if local_key is not None and local_key not in call.local_pairs:
                call.local_pairs[local_key] = _LocalPair(name_ext=self._name_ext(endpoint))
        return []

    def _on_newstate(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        state = _to_int(frame.headers.get("ChannelState"))
        if call is None or state is None or ch.hungup:
            return []
        ch.state = state
        events: list[CallEvent] = []
        if call.click_to_call is not None and ch.uniqueid == call.linkedid:
            if state == _STATE_UP:
                call.manager_up = True
            if not call.click_to_call:
                # The manager's phone shows the Originate's caller ID: the client's number.
                shown = normalize_call_number(frame.headers.get("CallerIDNum"), self._region)
                call.click_to_call = shown if shown and shown.startswith("+") else ""
        if state in (_STATE_RINGING, _STATE_UP):
            if ch.outgoing and ch.phone_ext is not None and ch.rang_ext is None:
                ch.rang_ext = ch.phone_ext
                events.append(self._ringing_event(call, ch, ts, frame.headers.get("CallerIDNum")))
            if state == _STATE_UP and ch.is_trunk and ch.outgoing and call.trunk_up_ts is None:
                # The far end of an outbound call answered.
                call.trunk_up_ts = ts
                first = self._first_channel(call)
                if self._direction(call, first) == "outbound" and not call.answered_emitted:
                    call.answered_emitted = True
                    events.append(
                        CallAnswered(
                            call.linkedid,
                            self._extension(call, first, "outbound"),
                            ts,
                            direction="outbound",
                            client=self._callee(call, first, "outbound"),
                        )
                    )
        return events

    def _on_dial_begin(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        dest_uid = h.get("DestUniqueid")
        dest = self._channels.get(dest_uid) if dest_uid else None
        if dest is None and dest_uid:
            dest = self._new_channel(frame, ts, prefix="Dest", outgoing=True)
        src = self._channel(frame, ts) if h.get("Uniqueid") else None
        anchor = src or dest
        if anchor is None:
            return []
        call = self._call_of(anchor, ts)
        if call is None or dest is None:
            return []
        if dest.is_trunk:
            if call.trunk_dialstring is None:
                call.trunk_dialstring = h.get("DialString")
        else:
            ext = self._ext_of(dest)
            if ext is not None and call.dialed_ext is None and dest.uniqueid != call.linkedid:
                call.dialed_ext = ext
        if src is not None and src.local_half == 2 and src.local_key is not None:
            pair = call.local_pairs.get(src.local_key)
            if pair is not None and pair.dialed_ext is None:
                pair.dialed_ext = self._ext_of(dest)
        return []

    def _on_dial_end(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        status = h.get("DialStatus") or ""
        dest_uid = h.get("DestUniqueid")
        dest = self._channels.get(dest_uid) if dest_uid else None
        src_uid = h.get("Uniqueid")
        src = self._channels.get(src_uid) if src_uid else None
        anchor = src or dest
        if anchor is None:
            return []
        call = self._call_of(anchor, ts)
        if call is None:
            return []
        if (src is not None and src.uniqueid == call.linkedid) or (
            src is None and dest is not None and dest.uniqueid == call.linkedid
        ):
            call.dialstatus_end = status
        if (
            status == "ANSWER"
            and src is not None
            and src.local_half == 2
            and src.local_key is not None
            and dest is not None
        ):
            pair = call.local_pairs.get(src.local_key)
            ext = self._ext_of(dest)
            if pair is not None and ext is not None:
                pair.answered_ext = ext
        return []

    def _on_bridge_enter(self, frame: Frame, ts: float) -> list[CallEvent]:
        bridge_id = frame.headers.get("BridgeUniqueid")
        ch = self._channel(frame, ts)
        if ch is None or not bridge_id or ch.hungup:
            return []
        call = self._call_of(ch, ts)
        if call is None:
            return []
        return self._enter_bridge(call, ch, bridge_id, ts)

    def _enter_bridge(
        self, call: _Call, ch: _Channel, bridge_id: str, ts: float
    ) -> list[CallEvent]:
        if ch.bridge is not None and ch.bridge != bridge_id:
            self._leave_bridge(ch.uniqueid, ch.bridge)
        members = self._bridges.setdefault(bridge_id, set())
        members.add(ch.uniqueid)
        ch.bridge = bridge_id
        others = [self._channels[u] for u in members if u != ch.uniqueid and u in self._channels]
        if ch.local_half == 2 and ch.local_key is not None:
            self._note_local_answer(call, ch, others)
        for other in others:
            if other.local_half == 2 and other.local_key is not None:
                other_call = self._calls.get(other.linkedid)
                if other_call is not None:
                    self._note_local_answer(other_call, other, [ch])
        return self._check_bridge_answer(call, members, ch, ts)

    def _note_local_answer(self, call: _Call, half2: _Channel, others: list[_Channel]) -> None:
        pair = call.local_pairs.get(half2.local_key or "")
        if pair is None or pair.answered_ext is not None:
            return
        for other in others:
            if other.phone_ext is not None:
                pair.answered_ext = other.phone_ext
                return

    def _check_bridge_answer(
        self, call: _Call, members: set[str], entering: _Channel, ts: float
    ) -> list[CallEvent]:
        if call.bridge_answer_ts is not None:
            return []
        first = self._first_channel(call)
        if first is None or first.uniqueid not in members:
            return []
        caller_ext = self._ext_of(first)
        # Prefer the channel whose entry completed the pair, then any other member.
        candidates = [entering] + [
            self._channels[u] for u in members if u != entering.uniqueid and u in self._channels
        ]
        for other in candidates:
            if other is first or other.hungup:
                continue
            ext = self._ext_of(other)
            if ext is None or ext == caller_ext:
                continue
            call.bridge_answer_ts = ts
            call.bridge_answer_ext = ext
            if self._listing:
                call.estimated.add("answered_at")  # answered while we were not listening
            log.debug("call linkedid=%s answered by %s (bridge)", call.linkedid, ext)
            direction = self._direction(call, first)
            if direction != "outbound" and not call.answered_emitted:
                call.answered_emitted = True
                client = self._caller(call, first, direction) if direction == "inbound" else None
                return [CallAnswered(call.linkedid, ext, ts, direction=direction, client=client)]
            return []
        return []

    def _on_bridge_leave(self, frame: Frame, ts: float) -> list[CallEvent]:
        bridge_id = frame.headers.get("BridgeUniqueid")
        ch = self._channel(frame, ts, create=False)
        if ch is None:
            return []
        self._call_of(ch, ts)
        if bridge_id:
            self._leave_bridge(ch.uniqueid, bridge_id)
        if ch.bridge == bridge_id:
            ch.bridge = None
        return []

    def _leave_bridge(self, uid: str, bridge_id: str) -> None:
        members = self._bridges.get(bridge_id)
        if members is not None:
            members.discard(uid)
            if not members:
                # Also covers a BridgeDestroy that never reached us.
                del self._bridges[bridge_id]

    def _on_bridge_destroy(self, frame: Frame, ts: float) -> list[CallEvent]:
        bridge_id = frame.headers.get("BridgeUniqueid")
        if bridge_id:
            for uid in self._bridges.pop(bridge_id, ()):
                ch = self._channels.get(uid)
                if ch is not None and ch.bridge == bridge_id:
                    ch.bridge = None
        return []

    def _on_bridge_merge(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        to_id = h.get("ToBridgeUniqueid")
        from_id = h.get("FromBridgeUniqueid")
        if not to_id or not from_id:
            return []
        moved = self._bridges.pop(from_id, set())
        events: list[CallEvent] = []
        for uid in moved:
            ch = self._channels.get(uid)
            if ch is None:
                continue
            ch.bridge = None
            call = self._call_of(ch, ts)
            if call is not None:
                events.extend(self._enter_bridge(call, ch, to_id, ts))
        return events

    def _on_queue_join(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        if call is None:
            return []
        # Only the caller's own join counts: not a consult leg an agent sends into a queue.
        if ch.uniqueid != call.linkedid and ch.outgoing:
            return []
        if call.queue is None:
            call.queue = frame.headers.get("Queue") or None
        call.queue_uid = ch.uniqueid
        call.queue_state = "waiting"
        return []

    def _on_queue_leave(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts, create=False)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        if call is not None and call.queue_uid == ch.uniqueid and call.queue_state == "waiting":
            call.queue_state = "left"
        return []

    def _on_queue_abandon(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts, create=False)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        # A queue timeout also emits QueueCallerAbandon; the QUEUESTATUS that follows
        # (see _on_varset) overrides this.
        if call is not None and call.queue_uid == ch.uniqueid and call.queue_state == "waiting":
            call.queue_state = "abandoned"
        return []

    def _on_queue_entry(self, frame: Frame, ts: float) -> list[CallEvent]:
        uid = frame.headers.get("Uniqueid")
        ch = self._channels.get(uid) if uid else None
        if ch is None:
            return []
        call = self._calls.get(ch.linkedid)
        if call is not None and call.queue_state in ("", "waiting"):
            if call.queue is None:
                call.queue = frame.headers.get("Queue") or None
            call.queue_uid = ch.uniqueid
            call.queue_state = "waiting"
        return []

    def _on_agent_connect(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts, create=False)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        if call is None or call.agent_connect_ts is not None:
            return []
        dest_uid = frame.headers.get("DestUniqueid")
        dest = self._channels.get(dest_uid) if dest_uid else None
        ext = self._ext_of(dest)
        if ext is not None:
            # Only a fallback: the BridgeEnter that follows is the answer time.
            call.agent_connect_ts = ts
            call.agent_connect_ext = ext
        return []

    def _on_blind_transfer(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        if h.get("Result") != "Success":
            return []
        call = self._transfer_call(
            frame, ("TransfereeUniqueid", "TransfererUniqueid"), ("TransfereeLinkedid",)
        )
        target = self._party(h.get("Extension"))
        if call is None or target is None:
            return []
        self._add_transfer(call, target, ts)
        return []

    def _on_attended_transfer(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        if h.get("Result") != "Success":
            return []
        call = self._transfer_call(
            frame,
            ("TransfereeUniqueid", "OrigTransfererUniqueid", "SecondTransfererUniqueid"),
            ("TransfereeLinkedid", "OrigTransfererLinkedid"),
        )
        if call is None:
            return []
        target: str | None = None
        target_uid = h.get("TransferTargetUniqueid")
        target_ch = self._channels.get(target_uid) if target_uid else None
        if target_ch is not None:
            target = self._ext_of(target_ch)
            if target is None and target_ch.is_trunk:
                target = normalize_call_number(target_ch.caller_num, self._region)
        if target is None:
            target_name = h.get("TransferTargetChannel")
            if target_name:
                _tech, endpoint, _key, _half = parse_channel_name(target_name)
                target = self._name_ext(endpoint)
        if target is None:
            log.info(
                "attended transfer on linkedid=%s without a resolvable target (DestType=%s)",
                call.linkedid,
                h.get("DestType"),
            )
            return []
        self._add_transfer(call, target, ts)
        return []

    def _transfer_call(
        self, frame: Frame, uid_keys: tuple[str, ...], lid_keys: tuple[str, ...]
    ) -> _Call | None:
        h = frame.headers
        for key in uid_keys:
            uid = h.get(key)
            ch = self._channels.get(uid) if uid else None
            if ch is not None:
                call = self._calls.get(ch.linkedid)
                if call is not None:
                    return call
        for key in lid_keys:
            lid = h.get(key)
            call = self._calls.get(lid) if lid else None
            if call is not None:
                return call
        return None

    @staticmethod
    def _add_transfer(call: _Call, target: str, ts: float) -> None:
        key = (f"{ts:.6f}", target)
        if key in call.transfer_keys:
            return  # the same event delivered twice
        call.transfer_keys.add(key)
        call.transfers.append(target)
        if ts > call.last_ts:
            call.last_ts = ts

    def _on_varset(self, frame: Frame, ts: float) -> list[CallEvent]:
        h = frame.headers
        variable = h.get("Variable")
        if variable not in _VARIABLES:
            uid = h.get("Uniqueid")
            ch = self._channels.get(uid) if uid is not None else None
            if ch is not None:
                self._call_of(ch, ts)
            return []
        ch = self._channel(frame, ts)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        value = h.get("Value") or ""
        if call is None or not value:
            return []
        if variable == "MIXMONITOR_FILENAME":
            if call.recording is None:
                call.recording = value.replace("\\", "/").rsplit("/", 1)[-1] or None
        elif variable == "DIALSTATUS":
            if ch.uniqueid == call.linkedid:
                call.dialstatus_var = value
        elif variable == "CLICK2CALL":
            if ch.uniqueid == call.linkedid and call.click_to_call is None:
                # The server passes the client's number (older servers passed "1").
                number = normalize_call_number(value, self._region) if value != "1" else None
                call.click_to_call = number or ""
        elif ch.uniqueid == call.queue_uid and value in _QUEUE_GAVE_UP:
            call.queue_state = "gave_up"
        return []

    def _on_hangup_request(self, frame: Frame, ts: float) -> list[CallEvent]:
        ch = self._channel(frame, ts, create=False)
        if ch is None:
            return []
        call = self._call_of(ch, ts)
        # The caller hanging up while still waiting in the queue is what "abandoned" means.
        if call is not None and call.queue_uid == ch.uniqueid and call.queue_state == "waiting":
            call.queue_state = "abandoned"
        return []

    def _on_hangup(self, frame: Frame, ts: float) -> list[CallEvent]:
        # Never create a channel from its Hangup: a call we know nothing about has no record.
        ch = self._channel(frame, ts, create=False)
        if ch is None or ch.hungup:
            return []
        call = self._call_of(ch, ts)
        if call is None:
            return []
        if call.queue_uid == ch.uniqueid and call.queue_state == "waiting":
            call.queue_state = "abandoned"
        self._mark_hungup(call, ch, ts, _to_int(frame.headers.get("Cause")))
        if call.live == 0:
            return [self._finish(call)]
        return []

    def _on_channel_listing(self, frame: Frame, ts: float) -> list[CallEvent]:
        """CoreShowChannel / Status list items (resync): no Timestamp, ``ts`` is ``now``."""
        h = frame.headers
        uid = h.get("Uniqueid")
        if not uid:
            return []
        ch = self._channels.get(uid)
        if ch is None:
            outgoing = (h.get("ApplicationData") or h.get("Data")) == "(Outgoing Line)"
            age = _duration_seconds(h.get("Duration") or h.get("Seconds"))
            created = ts - age if age is not None else ts
            ch = self._new_channel(frame, created, outgoing=outgoing)
            if ch is None:
                return []
            ch.observed = False
        call = self._calls.get(ch.linkedid)
        if call is None or ch.hungup:
            return []
        events: list[CallEvent] = []
        state = _to_int(h.get("ChannelState"))
        if state is not None:
            ch.state = state
            if (
                state in (_STATE_RINGING, _STATE_UP)
                and ch.outgoing
                and ch.phone_ext is not None
                and ch.rang_ext is None
            ):
                ch.rang_ext = ch.phone_ext
                if state == _STATE_RINGING:
                    # A phone ringing as the link (re)connects: it began while nobody
                    # listened, and its manager is to see who calls before he answers.
                    events.append(self._ringing_event(call, ch, ts, h.get("CallerIDNum")))
        bridge_id = h.get("BridgeId") or h.get("BridgeID")
        if bridge_id:
            self._listing = True
            try:
                events.extend(self._enter_bridge(call, ch, bridge_id, ts))
            finally:
                self._listing = False
        return events

    # ----------------------------------------------------------------- finishing

    def _mark_hungup(self, call: _Call, ch: _Channel, ts: float, cause: int | None) -> None:
        ch.hungup = True
        ch.hangup_ts = ts
        ch.cause = cause
        call.live -= 1
        if call.last_hangup_ts is None or ts > call.last_hangup_ts:
            call.last_hangup_ts = ts
        if ts > call.last_ts:
            call.last_ts = ts
        if ch.bridge is not None:
            self._leave_bridge(ch.uniqueid, ch.bridge)
            ch.bridge = None

    def _finish(self, call: _Call) -> CallEnded:
        record = self._build_record(call)
        self._calls.pop(call.linkedid, None)
        self._remember(self._finished_calls, call.linkedid)
        for uid, ch in call.channels.items():
            self._channels.pop(uid, None)
            self._remember(self._finished_channels, uid)
            if ch.bridge is not None:
                self._leave_bridge(uid, ch.bridge)
        log.info(
            "call linkedid=%s ended: %s %s, %s",
            call.linkedid,
            record.direction,
            record.disposition,
            record.extension,
        )
        return CallEnded(record)

    @staticmethod
    def _remember(memory: dict[str, None], key: str) -> None:
        memory[key] = None
        if len(memory) > _FINISHED_MEMORY:
            # dicts keep insertion order: drop the oldest entry.
            del memory[next(iter(memory))]

    def _build_record(self, call: _Call) -> CallRecord:
        first = self._first_channel(call)
        direction = self._direction(call, first)
        started_ts = self._started_ts(call, first)
        ended_ts = call.last_hangup_ts if call.last_hangup_ts is not None else call.last_ts
        if ended_ts < started_ts:
            ended_ts = started_ts
        answered_ts = self._answered_ts(call, direction)
        if answered_ts is not None:
            answered_ts = min(max(answered_ts, started_ts), ended_ts)
            ring = answered_ts - started_ts
            talk = ended_ts - answered_ts
        else:
            ring = ended_ts - started_ts
            talk = 0.0
        ring_seconds = round(ring, 1)
        talk_seconds = round(talk, 1)
        did = self._did(first) if direction == "inbound" else None
        return CallRecord(
            call_id=call.linkedid,
            direction=direction,
            caller=self._caller(call, first, direction),
            callee=self._callee(call, first, direction),
            did=did,
            queue=call.queue,
            extension=self._extension(call, first, direction),
            rang=self._rang(call),
            disposition=self._disposition(call, answered_ts is not None),
            started_at=_to_datetime(started_ts),
            answered_at=_to_datetime(answered_ts) if answered_ts is not None else None,
            ended_at=_to_datetime(ended_ts),
            ring_seconds=ring_seconds,
            talk_seconds=talk_seconds,
            counted=talk_seconds >= self._count_threshold_s,
            transfers=tuple(call.transfers),
            recording=call.recording if answered_ts is not None else None,
            hangup_cause=first.cause if first is not None else None,
            unanswered_by=self._unanswered_by(call, answered_ts is not None),
            estimated=self._estimated(call, first),
        )

    @staticmethod
    def _unanswered_by(call: _Call, answered: bool) -> str | None:
        """Which leg of an unanswered click-to-call failed: ``manager`` (his own phone did not
        pick up) or ``client`` (no answer, busy, unreachable)."""
        if call.click_to_call is None or answered:
            return None
        return "client" if call.manager_up else "manager"

    @staticmethod
    def _estimated(call: _Call, first: _Channel | None) -> tuple[str, ...]:
        """The record's times the fold did not see happen, in field order."""
        marks = set(call.estimated)
        if first is None or first.uniqueid != call.linkedid or not first.observed:
            marks.add("started_at")
        return tuple(f for f in ("started_at", "answered_at", "ended_at") if f in marks)

    # ----------------------------------------------------------------- record fields

    def _direction(self, call: _Call, first: _Channel | None) -> str:
        if first is None:
            return "internal"
        if call.click_to_call is not None and self._ext_of(first) is not None:
            # Click-to-call rings the manager first: an outbound call to the client already.
            return "outbound"
        if first.is_trunk:
            # An Originate that dials the customer first creates the trunk channel itself
            # (Down at creation): that is our call going out, not a call coming in.
            return "outbound" if first.outgoing else "inbound"
        if call.has_trunk and self._ext_of(first) is not None:
            return "outbound"
        return "internal"

    @staticmethod
    def _started_ts(call: _Call, first: _Channel | None) -> float:
        if first is not None and first.uniqueid == call.linkedid:
            return first.created_ts
        return call.first_ts

    @staticmethod
    def _answered_ts(call: _Call, direction: str) -> float | None:
        if direction == "outbound":
            return call.trunk_up_ts
        if call.bridge_answer_ts is not None:
            return call.bridge_answer_ts
        return call.agent_connect_ts

    def _did(self, first: _Channel | None) -> str | None:
        if first is None:
            return None
        return normalize_call_number(first.exten, self._region)

    def _caller(self, call: _Call, first: _Channel | None, direction: str) -> str | None:
        if first is None:
            return None
        if direction == "inbound":
            return normalize_call_number(first.caller_num, self._region)
        ext = self._ext_of(first)
        if ext is not None:
            return ext
        if first.is_trunk:
            # Originated to the customer first: the caller is the extension it reached.
            return call.bridge_answer_ext or call.dialed_ext
        return self._party(first.caller_num)

    def _callee(self, call: _Call, first: _Channel | None, direction: str) -> str | None:
        if first is None:
            return None
        if direction == "inbound":
            return self._did(first)
        if direction == "outbound":
            number = _number_from_dialstring(call.trunk_dialstring)
            if number is None and call.click_to_call:
                number = call.click_to_call
            if number is None and not first.is_trunk:
                number = first.exten
            return normalize_call_number(number, self._region)
        if self._is_ext(first.exten):
            return first.exten
        if call.dialed_ext is not None:
            return call.dialed_ext
        if first.exten and first.exten != "s":
            return self._party(first.exten)
        return None

    def _extension(self, call: _Call, first: _Channel | None, direction: str) -> str | None:
        if direction == "inbound":
            return call.bridge_answer_ext or call.agent_connect_ext
        ext = self._ext_of(first)
        if ext is not None:
            return ext
        return call.bridge_answer_ext

    @staticmethod
    def _rang(call: _Call) -> tuple[str, ...]:
        seen: list[str] = []
        for ch in sorted(call.channels.values(), key=lambda c: c.seq):
            if ch.rang_ext is not None and ch.rang_ext not in seen:
                seen.append(ch.rang_ext)
        return tuple(seen)

    @staticmethod
    def _disposition(call: _Call, answered: bool) -> str:
        if answered:
            return "answered"
        if call.click_to_call is not None and not call.manager_up:
            first = call.channels.get(call.linkedid)
            return "busy" if first is not None and first.cause == 17 else "missed"
        if call.queue_state:
            return "abandoned" if call.queue_state == "abandoned" else "missed"
        status = call.dialstatus_var or call.dialstatus_end
        if status:
            return _DIALSTATUS_DISPOSITION.get(status, "missed")
        return "missed"

    def _ringing_event(
        self, call: _Call, ch: _Channel, ts: float, shown_num: str | None
    ) -> CallRinging:
        first = self._first_channel(call)
        direction = self._direction(call, first)
        if ch is first:
            # The leg an Originate rings first: the phone shows the Originate's caller ID
            # (set by NewCallerid), which is the party the call is for.
            caller = self._party(shown_num or ch.caller_num)
            name = ch.caller_name
        else:
            caller = self._caller(call, first, direction)
            name = first.caller_name if first is not None else None
        if name is not None and name.strip().lower() in _NO_NAME:
            name = None
        ext = ch.phone_ext or ""
        log.debug("call linkedid=%s ringing on %s", call.linkedid, ext)
        return CallRinging(
            call_id=call.linkedid,
            caller=caller,
            did=self._did(first) if direction == "inbound" else None,
            extension=ext,
            ts=ts,
            caller_name=name,
            queue=call.queue,
        )
