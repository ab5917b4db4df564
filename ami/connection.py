"""The AMI link to one Asterisk PBX: connect, log in, keep alive, reconnect, resync, actions.

One :class:`AmiLink` per PBX. It owns one TCP connection at a time, reads it with our own
:class:`~ami.frames.FrameParser`, hands every event frame to ``on_frame`` (synchronously, in
arrival order) and runs ``on_connected`` after each successful login so the caller can
resynchronise (``CoreShowChannels``, ``QueueStatus``) while events keep flowing.

Why not panoramisk's ``Manager``: every layer of panoramisk 1.4 carries one of the defects
this link must not have. Its protocol decodes each socket read on its own with
``errors='ignore'`` (a UTF-8 character split across two reads disappears) and is 2-3 times
slower than our parser; a raising subscriber or a ``KeyError`` in its action bookkeeping
(``self['async']``) escapes ``data_received`` and asyncio closes the transport; it sends Ping
but never checks the answer; reconnects are ``call_later`` handles nobody keeps, so
``close()`` cannot cancel them; a refused login only sets ``authenticated = False``; actions
sent while down are parked until a ``FullyBooted`` event; delays are ``int()``-ed; its
``Action`` serialiser lets a line break in a value inject headers. Keeping it would mean
overriding nearly all of ``Manager`` and ``AMIProtocol``, so the link is written on asyncio
streams instead, and panoramisk serves only as the baseline of ``bench/ami_ingest.py``.
"""

import asyncio
import contextlib
import itertools
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ami.frames import EventFilter, Frame, FrameParser
from crm_core.errors import DomainError, InvalidInput, Unavailable

__all__ = [
    "AmiActionFailed",
    "AmiAuthFailed",
    "AmiLink",
    "AmiTimeout",
    "AmiUnavailable",
    "OriginateResult",
    "backoff_delay",
    "encode_action",
]

log = logging.getLogger(__name__)

LinkState = Literal["idle", "connecting", "connected", "auth_failed", "disconnected", "closed"]
ActionValue = str | int | float | bool | Sequence[str]

# Response values that mean the action did not do what was asked.
_FAILED_RESPONSES = frozenset({"Error", "Fail", "Failure"})

# OriginateResponse "Reason": the AST_CONTROL_* value the first leg ended on.
_ORIGINATE_REASONS = {
    0: "failed",
    1: "hangup",
    3: "no answer",
    4: "answered",
    5: "busy",
    8: "congestion",
}

# Garbage and subscriber errors: logged in full this many times per connection, then once in
# _QUIET_EVERY.
_LOUD_REPORTS = 10
_QUIET_EVERY = 1000

# Asterisk writes these where a channel id does not exist (a failed Originate).
_NO_ID = frozenset({"", "<null>", "<unknown>", "(null)"})


# --------------------------------------------------------------------------- errors


class AmiUnavailable(Unavailable):
    """The PBX cannot take the action now: the link is down, closing or was lost."""

    error_id = "pbx-unavailable"


class AmiTimeout(AmiUnavailable):
    """The PBX did not answer within the caller's deadline."""

    error_id = "pbx-timeout"


class AmiAuthFailed(AmiUnavailable):
    """The PBX refused our username/secret."""

    error_id = "pbx-auth-failed"


class AmiActionFailed(DomainError):
    """The PBX answered ``Response: Error`` (or ``Fail``) to an action."""

    error_id = "pbx-action-failed"

    def __init__(self, message: str, *, response: Frame, details: dict[str, Any]) -> None:
        super().__init__(message, details=details)
        self.response = response


# --------------------------------------------------------------------------- pure helpers


def backoff_delay(
    attempt: int, initial_s: float, max_s: float, jitter: float, rnd: random.Random
) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): capped exponential, jittered.

    The base doubles from ``initial_s`` up to ``max_s``; the jitter removes up to
    ``jitter`` (0..1) of it at random, so many instances restarted together do not reconnect
    in lockstep, and the result never exceeds ``max_s``.
    """
    base = min(max_s, initial_s * 2.0 ** min(attempt, 62))
    return base * (1.0 - jitter * rnd.random())


def encode_action(action: Mapping[str, ActionValue]) -> bytes:
    """The wire form of an action: ``Key: value`` lines, a sequence repeats its header.

    Raises :class:`~crm_core.errors.InvalidInput` for a line break in a key or value: it
    would end the header early and let the rest be read as headers of their own.
    """
    lines: list[str] = []
    for key, value in action.items():
        if not key or any(c in key for c in "\r\n: "):
            raise InvalidInput(f"AMI header name {key!r} is not a token", details={"key": key})
        values: Sequence[object] = (
            (value,) if isinstance(value, str | int | float | bool) else value
        )
        for item in values:
            text = str(item).lower() if isinstance(item, bool) else str(item)
            if "\r" in text or "\n" in text:
                raise InvalidInput(f"AMI header {key} contains a line break", details={"key": key})
            lines.append(f"{key}: {text}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """What an ``Originate`` got: the PBX queued it and, when awaited, how the first leg ended.

    Asterisk reports a failed first leg (busy, no answer) with ``Uniqueid: <null>``; such ids
    become ``None`` here instead of keys that fail a lookup.
    """

    action_id: str
    response: Frame
    """The ``Response: Success`` frame (``Originate successfully queued``)."""
    outcome: Frame | None
    """The ``OriginateResponse`` event, or None when not awaited."""

    @property
    def success(self) -> bool | None:
        """True when the first leg answered; None when the outcome was not awaited."""
        if self.outcome is None:
            return None
        return self.outcome.get("Response") == "Success"

    @property
    def reason(self) -> int | None:
        """The numeric ``Reason`` (4 answered, 5 busy, 3 no answer, 8 congestion, 0 failed)."""
        if self.outcome is None:
            return None
        try:
            return int(self.outcome.get("Reason") or "")
        except ValueError:
            return None

    @property
    def reason_text(self) -> str | None:
        """``answered``, ``busy``, ``no answer``, ``congestion``, ``hangup`` or ``failed``."""
        reason = self.reason
        if reason is None:
            return None
        return _ORIGINATE_REASONS.get(reason, f"reason {reason}")

    @property
    def uniqueid(self) -> str | None:
        """The first leg's Uniqueid, or None when Asterisk created no channel."""
        if self.outcome is None:
            return None
        value = (self.outcome.get("Uniqueid") or "").strip()
        return None if value in _NO_ID else value

    @property
    def channel(self) -> str | None:
        """The first leg's channel name, or None."""
        if self.outcome is None:
            return None
        value = (self.outcome.get("Channel") or "").strip()
        return None if value in _NO_ID else value


# --------------------------------------------------------------------------- the link


class _Pending:
    """An action waiting for its answer."""

    __slots__ = ("action", "action_id", "future", "items", "kind", "outcome", "response")

    def __init__(self, action: str, action_id: str, kind: str, loop: asyncio.AbstractEventLoop):
        self.action = action
        self.action_id = action_id
        self.kind = kind  # "single" | "list" | "originate"
        self.future: asyncio.Future[Any] = loop.create_future()
        # Only an awaited Originate gets the second future, for its OriginateResponse.
        self.outcome: asyncio.Future[Frame] | None = (
            loop.create_future() if kind == "originate" else None
        )
        self.items: list[Frame] = []
        self.response: Frame | None = None

    def fail(self, exc: BaseException) -> None:
        for fut in (self.future, self.outcome):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                # Nobody may be waiting any more (a caller that timed out): mark it seen.
                fut.exception()


class _AuthRefused(Exception):
    pass


OnFrame = Callable[[Frame], object]
OnConnected = Callable[["AmiLink"], Awaitable[object]]


class AmiLink:
    """The supervised AMI connection to one PBX.

    ``await start()`` returns at once; the link then connects, logs in and reconnects in the
    background for as long as it is not closed. ``on_frame(frame)`` receives every event
    frame (not responses, not the items of a list this link asked for); an exception it raises
    is logged and the link goes on. ``on_connected(link)`` runs after every successful login,
    while events keep arriving; if it fails with :class:`AmiUnavailable` (the resync could
    not finish) the connection is dropped and retried.

    Times are in seconds and may be fractions. ``ping_interval_s``/``ping_timeout_s``: a
    Ping is sent every interval and must be answered within the timeout, else the PBX is
    considered gone and the link reconnects (unless events arrived meanwhile: then the PBX
    is there and this side reads behind it; the link stays). Reconnects wait :func:`backoff_delay`
    (``backoff_initial_s`` doubling to ``backoff_max_s``, minus up to ``jitter`` of it); the
    doubling restarts only after a connection stayed up ``stable_after_s``, so a PBX that
    accepts and drops at once is not hammered. A refused login waits ``auth_retry_s``
    doubling to ``auth_retry_max_s``, since retrying a wrong secret quickly only fills the
    PBX's security log. Actions carry the link's own ``ActionID`` (one in ``action`` is
    replaced); nothing is ever queued while the link is down.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        secret: str,
        name: str,
        on_frame: OnFrame | None = None,
        on_connected: OnConnected | None = None,
        events: str = "on",
        keep: EventFilter | None = None,
        connect_timeout_s: float = 5.0,
        login_timeout_s: float = 5.0,
        ping_interval_s: float = 10.0,
        ping_timeout_s: float = 10.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        jitter: float = 0.5,
        auth_retry_s: float = 60.0,
        auth_retry_max_s: float = 900.0,
        rate_window_s: float = 10.0,
        read_size: int = 1 << 18,
        rnd: random.Random | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self._username = username
        self._secret = secret
        self._on_frame = on_frame
        self._on_connected = on_connected
        self._events = events
        self._keep = keep
        self._connect_timeout_s = connect_timeout_s
        self._login_timeout_s = login_timeout_s
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = ping_timeout_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stable_after_s = stable_after_s
        self._jitter = jitter
        self._auth_retry_s = auth_retry_s
        self._auth_retry_max_s = auth_retry_max_s
        self._rate_window_s = max(1.0, rate_window_s)
        self._read_size = read_size
        self._rnd = rnd if rnd is not None else random.Random()

        self._state: LinkState = "idle"
        self._since = time.time()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._writer: asyncio.StreamWriter | None = None
        self._parser: FrameParser | None = None
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"cc-{name}-{secrets.token_hex(3)}"
        self._session_end: asyncio.Event | None = None
        self._end_reason: str | None = None
        self._connected_event: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()

        self.last_error: str | None = None
        """Why the link is down or failed to come up (None while connected or never failed)."""
        self.next_retry_s: float | None = None
        """The wait before the next connection attempt (None while connected)."""
        self.last_disconnect: str | None = None
        """Why the last logged-in session ended (kept while connected again)."""
        self.version: str | None = None
        """The ``Asterisk Call Manager/x.y.z`` banner of the current/last connection."""
        self.reconnects = 0
        """Successful logins after the first one."""
        self.logins = 0
        self.disconnects = 0
        self.connect_failures = 0
        self.auth_failures = 0
        self.ping_timeouts = 0
        self.pings_late = 0
        """Pings answered late while events kept coming (the link stayed)."""
        self.action_timeouts = 0
        self.events_total = 0
        self.events_skipped = 0  # of those, dropped unparsed (``keep`` does not name them)
        self.on_frame_errors = 0
        self.unmatched_responses = 0
        self.skipped_frames = 0
        """Frames with neither ``Event`` nor ``Response`` (garbage that looked like headers)."""
        self.resyncs = 0
        self.resync_failures = 0
        self.last_resync_at: float | None = None
        self._malformed_before = 0
        self._seen_malformed = 0
        self._seen_dropped = 0
        self._reports: dict[str, int] = {}
        self._last_event_mono: float | None = None
        self._rate: deque[list[int]] = deque()

    # ----------------------------------------------------------------- lifecycle

    @property
    def state(self) -> LinkState:
        """``idle`` (not started), ``connecting``, ``connected``, ``auth_failed``,
        ``disconnected`` (waiting to reconnect) or ``closed``."""
        return self._state

    @property
    def connected(self) -> bool:
        """True while logged in."""
        return self._state == "connected"

    async def start(self) -> None:
        """Start connecting in the background; returns at once (the PBX may be down)."""
        if self._task is not None or self._closing:
            return
        self._connected_event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"ami-link-{self.name}"
        )

    async def close(self) -> None:
        """Log off, stop reading and cancel everything, including a scheduled reconnect."""
        if self._closing:
            return
        self._closing = True
        if self._state == "connected" and self._writer is not None:
            with contextlib.suppress(AmiUnavailable, AmiActionFailed):
                await self._request({"Action": "Logoff"}, 1.0, kind="single", internal=True)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cancel_background()
        self._fail_pending(AmiUnavailable(f"AMI link to PBX {self.name} closed"))
        self._set_state("closed")
        log.info("pbx=%s AMI link closed", self.name)

    async def wait_connected(self, timeout: float) -> None:
        """Wait until logged in; :class:`AmiUnavailable` (naming the last error) on timeout."""
        if self._connected_event is None:
            raise AmiUnavailable(f"AMI link to PBX {self.name} is not started")
        try:
            async with asyncio.timeout(timeout):
                await self._connected_event.wait()
        except TimeoutError:
            raise self._unavailable(f"not connected within {timeout:g} s") from None

    # ----------------------------------------------------------------- actions

    async def send_action(self, action: Mapping[str, ActionValue], timeout: float) -> Frame:
        """Send one action and return its response frame.

        Raises :class:`AmiUnavailable` at once when the link is not logged in (nothing is
        queued for later), :class:`AmiTimeout` after ``timeout`` seconds without an answer,
        :class:`AmiActionFailed` on ``Response: Error``.
        """
        result: Frame = await self._request(action, timeout, kind="single")
        return result

    async def send_action_list(
        self, action: Mapping[str, ActionValue], timeout: float
    ) -> list[Frame]:
        """Send an action answered by an event list (``EventList: start`` … ``…Complete``).

        Returns the list's events in order, without the closing ``…Complete`` event. The
        events are not passed to ``on_frame``. ``timeout`` covers the whole list.
        """
        result: list[Frame] = await self._request(action, timeout, kind="list")
        return result

    async def originate(
        self,
        channel: str,
        *,
        exten: str | None = None,
        context: str | None = None,
        priority: int = 1,
        application: str | None = None,
        data: str | None = None,
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        ring_timeout_s: float = 30.0,
        timeout: float = 5.0,
        wait_outcome: bool = False,
        outcome_timeout_s: float | None = None,
    ) -> OriginateResult:
        """Originate a call (always ``Async: true``) from ``channel`` to ``exten@context`` or
        to ``application(data)``.

        Returns once the PBX queued it; with ``wait_outcome`` also waits for the
        ``OriginateResponse`` (first leg answered, busy, no answer …, reported in the result,
        not raised). ``AmiActionFailed`` when the PBX refuses the Originate itself.
        """
        action: dict[str, ActionValue] = {
            "Action": "Originate",
            "Channel": channel,
            "Async": "true",
            "Timeout": str(max(1, round(ring_timeout_s * 1000))),
        }
        if application is not None:
            action["Application"] = application
            if data is not None:
                action["Data"] = data
        else:
            if exten is None or context is None:
                raise InvalidInput(
                    "originate needs exten and context, or an application",
                    details={"channel": channel},
                )
            action.update({"Exten": exten, "Context": context, "Priority": str(priority)})
        if caller_id is not None:
            action["CallerID"] = caller_id
        if variables:
            action["Variable"] = [f"{k}={v}" for k, v in variables.items()]
        if not wait_outcome:
            response: Frame = await self._request(action, timeout, kind="single")
            return OriginateResult(response.get("ActionID") or "", response, None)
        pending = self._register(action, "originate")
        # The first leg rings for ring_timeout_s before Asterisk reports "no answer".
        outcome_wait = ring_timeout_s + 5.0 if outcome_timeout_s is None else outcome_timeout_s
        deadline = timeout + outcome_wait
        try:
            async with asyncio.timeout(deadline):
                await self._write(pending, action)
                response = await pending.future
                assert pending.outcome is not None
                outcome = await pending.outcome
        except TimeoutError:
            self.action_timeouts += 1
            raise self._timeout(pending, deadline) from None
        finally:
            self._pending.pop(pending.action_id, None)
        return OriginateResult(pending.action_id, response, outcome)

    # ----------------------------------------------------------------- status

    def provide_status(self) -> dict[str, Any]:
        """The link's health for ``/healthz`` (plain JSON values)."""
        age = self.last_event_age_s()
        return {
            "pbx": self.name,
            "host": self.host,
            "port": self.port,
            "state": self._state,
            "since": _iso(self._since),
            "last_error": self.last_error,
            "next_retry_s": round(self.next_retry_s, 2) if self.next_retry_s is not None else None,
            "last_disconnect": self.last_disconnect,
            "version": self.version,
            "reconnects": self.reconnects,
            "events_total": self.events_total,
            "events_skipped": self.events_skipped,
            "events_per_s": round(self.events_per_s(), 1),
            "last_event_age_s": round(age, 3) if age is not None else None,
            "resyncs": self.resyncs,
            "last_resync_at": _iso(self.last_resync_at),
            "pending_actions": len(self._pending),
        }

    def metrics(self) -> dict[str, float]:
        """Plain numbers for Prometheus: ``*_total`` are counters, the rest gauges.

        ``last_event_age_seconds`` is NaN before the first event.
        """
        age = self.last_event_age_s()
        return {
            "connected": 1.0 if self._state == "connected" else 0.0,
            "auth_failed": 1.0 if self._state == "auth_failed" else 0.0,
            "reconnects_total": float(self.reconnects),
            "disconnects_total": float(self.disconnects),
            "connect_failures_total": float(self.connect_failures),
            "auth_failures_total": float(self.auth_failures),
            "ping_timeouts_total": float(self.ping_timeouts),
            "pings_late_total": float(self.pings_late),
            "action_timeouts_total": float(self.action_timeouts),
            "events_total": float(self.events_total),
            "events_per_s": self.events_per_s(),
            "last_event_age_seconds": age if age is not None else float("nan"),
            "on_frame_errors_total": float(self.on_frame_errors),
            "malformed_lines_total": float(self.malformed_lines),
            "skipped_frames_total": float(self.skipped_frames),
            "unmatched_responses_total": float(self.unmatched_responses),
            "resyncs_total": float(self.resyncs),
            "resync_failures_total": float(self.resync_failures),
        }

    @property
    def malformed_lines(self) -> int:
        """Lines skipped by the parser because they were not ``Key: Value`` headers."""
        current = self._parser.malformed_lines if self._parser is not None else 0
        return self._malformed_before + current

    def last_event_age_s(self) -> float | None:
        """Seconds since the last event frame arrived, or None before the first one."""
        if self._last_event_mono is None:
            return None
        return time.monotonic() - self._last_event_mono

    def events_per_s(self) -> float:
        """Mean event rate over the last ``rate_window_s`` seconds."""
        horizon = int(time.monotonic()) - int(self._rate_window_s)
        total = sum(count for second, count in self._rate if second > horizon)
        return total / self._rate_window_s

    # ----------------------------------------------------------------- supervision

    def _set_state(self, state: LinkState) -> None:
        if state != self._state:
            self._state = state
            self._since = time.time()

    async def _supervise(self) -> None:
        # Failed attempts in a row since the last login; short sessions in a row (a PBX that
        # takes the login and drops at once must not be hammered). A login forgets earlier
        # connection failures: a PBX that was down for long and restarts once is retried at
        # once, not after the back-off its outage had grown to.
        failures = 0
        short_sessions = 0
        auth_failures_in_row = 0
        while not self._closing:
            self._set_state("connecting")
            self.next_retry_s = None
            started = time.monotonic()
            try:
                await self._session()
            except _AuthRefused as exc:
                auth_failures_in_row += 1
                self.auth_failures += 1
                self.last_error = f"authentication failed for user {self._username!r}: {exc}"
                delay = backoff_delay(
                    auth_failures_in_row - 1,
                    self._auth_retry_s,
                    self._auth_retry_max_s,
                    self._jitter,
                    self._rnd,
                )
                self._set_state("auth_failed")
                log.error(
                    "pbx=%s AMI login to %s:%s refused for user %r (%s): check pbx.username/"
                    "secret and manager.conf; retrying in %.1f s",
                    self.name,
                    self.host,
                    self.port,
                    self._username,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except (OSError, TimeoutError, AmiUnavailable) as exc:
                self.connect_failures += 1
                self.last_error = _describe(exc)
                failures += 1
                delay = self.next_retry_s = self._backoff(failures - 1)
                self._set_state("disconnected")
                # A PBX down for hours: one warning, then the attempts at INFO.
                log.log(
                    logging.WARNING if failures == 1 else logging.INFO,
                    "pbx=%s AMI %s:%s unreachable (%s); attempt %d, retrying in %.2f s",
                    self.name,
                    self.host,
                    self.port,
                    self.last_error,
                    failures,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            except Exception:
                # A bug of ours: say so loudly, then retry as for any other failure.
                log.exception("pbx=%s AMI session failed unexpectedly", self.name)
                self.last_error = "internal error (see the log)"
                failures += 1
                self._set_state("disconnected")
                await asyncio.sleep(self._backoff(failures - 1))
                continue
            # The session was logged in and has ended.
            auth_failures_in_row = 0
            if self._closing:
                return
            if time.monotonic() - started >= self._stable_after_s:
                short_sessions = 0
            delay = self.next_retry_s = self._backoff(short_sessions)
            short_sessions += 1
            failures = short_sessions
            log.warning(
                "pbx=%s AMI connection lost (%s); reconnecting in %.2f s",
                self.name,
                self.last_error,
                delay,
            )
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(
            attempt, self._backoff_initial_s, self._backoff_max_s, self._jitter, self._rnd
        )

    async def _session(self) -> None:
        """One connection: returns after a logged-in session ended; raises if login failed."""
        async with asyncio.timeout(self._connect_timeout_s):
            reader, writer = await asyncio.open_connection(self.host, self.port)
        parser = FrameParser(keep=self._keep)
        self._writer = writer
        self._parser = parser
        self._seen_malformed = 0
        self._seen_dropped = 0
        self._reports = {}
        session_end = self._session_end = asyncio.Event()
        self._end_reason = None
        self._spawn(self._read_loop(reader, parser), "read")
        logged_in = False
        try:
            await self._login()
            logged_in = True
            self.logins += 1
            if self.logins > 1:
                self.reconnects += 1
            self.version = parser.banner
            log.info(
                "pbx=%s AMI logged in to %s:%s as %s (%s)",
                self.name,
                self.host,
                self.port,
                self._username,
                parser.banner or "no banner",
            )
            # The reader may already have seen the PBX hang up right after the answer.
            if not session_end.is_set():
                self.last_error = None
                self._set_state("connected")
                assert self._connected_event is not None
                self._connected_event.set()
                self._spawn(self._ping_loop(), "ping")
                if self._on_connected is not None:
                    self._spawn(self._run_on_connected(), "resync")
            await session_end.wait()
        finally:
            # Everything that must happen even if we are cancelled right here is synchronous.
            if self._connected_event is not None:
                self._connected_event.clear()
            reason = self._end_reason or "closed"
            self._writer = None
            self._parser = None
            self._malformed_before += parser.malformed_lines
            for task in self._background:
                task.cancel()
            writer.close()
            self._fail_pending(AmiUnavailable(f"AMI connection to PBX {self.name} lost: {reason}"))
            if logged_in:
                self.disconnects += 1
                self.last_error = self.last_disconnect = reason
                self._set_state("disconnected")
            await self._cancel_background()
            with contextlib.suppress(OSError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _login(self) -> None:
        action = {
            "Action": "Login",
            "Username": self._username,
            "Secret": self._secret,
            "Events": self._events,
        }
        try:
            await self._request(action, self._login_timeout_s, kind="single", internal=True)
        except AmiActionFailed as exc:
            raise _AuthRefused(exc.response.get("Message") or "Response: Error") from None

    def _end_session(self, reason: str) -> None:
        if self._session_end is not None and not self._session_end.is_set():
            self._end_reason = reason
            self._session_end.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"ami-{what}-{self.name}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _cancel_background(self) -> None:
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        # asyncio.wait, unlike awaiting each task, lets our own cancellation through.
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "pbx=%s AMI task %s failed",
                    self.name,
                    task.get_name(),
                    exc_info=task.exception(),
                )

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_s)
            sent = time.monotonic()
            try:
                await self._request({"Action": "Ping"}, self._ping_timeout_s, kind="single")
            except AmiTimeout:
                last_event = self._last_event_mono
                if last_event is not None and last_event > sent:
                    # Events kept coming while we waited: the PBX is there, its Pong is
                    # queued behind frames we have not read yet (this process is behind, on
                    # a busy machine). Dropping the link would lose the calls in progress and
                    # make the next connection start just as far behind.
                    self.pings_late += 1
                    if self.pings_late == 1 or self.pings_late % 100 == 0:
                        log.warning(
                            "pbx=%s AMI Ping not answered within %.3g s while events kept "
                            "coming: reading behind the PBX, the link stays (%d time(s))",
                            self.name,
                            self._ping_timeout_s,
                            self.pings_late,
                        )
                    continue
                self.ping_timeouts += 1
                log.warning(
                    "pbx=%s AMI Ping not answered within %.3g s: the PBX stopped answering, "
                    "dropping the connection",
                    self.name,
                    self._ping_timeout_s,
                )
                self._end_session(f"no answer to Ping within {self._ping_timeout_s:g} s")
                return
            except AmiActionFailed:
                continue  # an answer, even an error, proves the PBX is there
            except AmiUnavailable:
                return

    async def _run_on_connected(self) -> None:
        assert self._on_connected is not None
        try:
            await self._on_connected(self)
        except AmiUnavailable as exc:
            self.resync_failures += 1
            log.warning(
                "pbx=%s resync after login failed (%s): reconnecting to try again",
                self.name,
                _describe(exc),
            )
            self._end_session(f"resync failed: {_describe(exc)}")
            return
        except Exception:
            # Reconnecting cannot fix a refused action or a bug in the hook: keep the events.
            self.resync_failures += 1
            log.exception("pbx=%s on_connected hook failed; the link stays up", self.name)
            return
        self.resyncs += 1
        self.last_resync_at = time.time()

    # ----------------------------------------------------------------- reading

    async def _read_loop(self, reader: asyncio.StreamReader, parser: FrameParser) -> None:
        read = reader.read
        feed = parser.feed
        dispatch = self._dispatch
        size = self._read_size
        reason = "connection closed by the PBX"
        skipped = 0
        try:
            while True:
                data = await read(size)
                if not data:
                    break
                frames = feed(data)
                if frames:
                    dispatch(frames)
                if parser.skipped_events != skipped:  # received, not needed: still events
                    self.events_skipped += parser.skipped_events - skipped
                    self._count_events(parser.skipped_events - skipped)
                    skipped = parser.skipped_events
                if parser.malformed_lines or parser.dropped_bytes:
                    self._note_garbage(parser)
        except OSError as exc:
            reason = f"read failed: {_describe(exc)}"
        except Exception:
            # A bug in our own reading path: say so loudly, then start over on a new socket.
            log.exception("pbx=%s AMI reader failed", self.name)
            reason = "internal error in the AMI reader"
        self._fail_pending(AmiUnavailable(f"AMI connection to PBX {self.name} lost: {reason}"))
        self._end_session(reason)

    def _loud(self, kind: str) -> bool:
        """Whether to log this report: the first few per connection, then one in 1000, so a
        peer spewing garbage or a subscriber failing on every event cannot flood the log."""
        count = self._reports[kind] = self._reports.get(kind, 0) + 1
        if count <= _LOUD_REPORTS:
            return True
        if count == _LOUD_REPORTS + 1:
            log.warning(
                "pbx=%s more than %d %s reports on this connection: logging 1 in %d from now on",
                self.name,
                _LOUD_REPORTS,
                kind,
                _QUIET_EVERY,
            )
        return count % _QUIET_EVERY == 0

    def _note_garbage(self, parser: FrameParser) -> None:
        if parser.malformed_lines != self._seen_malformed:
            new = parser.malformed_lines - self._seen_malformed
            self._seen_malformed = parser.malformed_lines
            if self._loud("malformed line"):
                log.warning(
                    "pbx=%s AMI skipped %d malformed line(s) (%d so far on this connection)",
                    self.name,
                    new,
                    parser.malformed_lines,
                )
        if parser.dropped_bytes != self._seen_dropped:
            new = parser.dropped_bytes - self._seen_dropped
            self._seen_dropped = parser.dropped_bytes
            if self._loud("dropped bytes"):
                log.warning(
                    "pbx=%s AMI dropped %d byte(s) that never formed a frame", self.name, new
                )

    def _dispatch(self, frames: list[Frame]) -> None:
        on_frame = self._on_frame
        pending = self._pending
        events = 0
        for frame in frames:
            headers = frame.headers
            event = headers.get("Event")
            if pending:
                action_id = headers.get("ActionID")
                if action_id is not None:
                    waiting = pending.get(action_id)
                    if waiting is not None and self._answer(waiting, frame, event):
                        continue
            if event is None:
                if "Response" in headers:
                    self.unmatched_responses += 1
                    log.debug(
                        "pbx=%s AMI response to no pending action (ActionID=%s)",
                        self.name,
                        headers.get("ActionID"),
                    )
                else:
                    self.skipped_frames += 1
                    if self._loud("skipped frame"):
                        log.warning(
                            "pbx=%s AMI frame with neither Event nor Response skipped: %.200r",
                            self.name,
                            headers,
                        )
                continue
            events += 1
            if on_frame is not None:
                try:
                    on_frame(frame)
                except Exception:
                    self.on_frame_errors += 1
                    if self._loud("on_frame error"):
                        log.exception(
                            "pbx=%s on_frame failed on %s (Linkedid=%s Uniqueid=%s); event skipped",
                            self.name,
                            event,
                            headers.get("Linkedid"),
                            headers.get("Uniqueid"),
                        )
        if events:
            self._count_events(events)

    def _count_events(self, events: int) -> None:
        self.events_total += events
        now = time.monotonic()
        self._last_event_mono = now
        second = int(now)
        rate = self._rate
        if rate and rate[-1][0] == second:
            rate[-1][1] += events
        else:
            rate.append([second, events])
            horizon = second - int(self._rate_window_s)
            while rate and rate[0][0] <= horizon:
                rate.popleft()

    def _answer(self, waiting: _Pending, frame: Frame, event: str | None) -> bool:
        """Give ``frame`` to the action it answers; True when it is consumed."""
        if event is None:
            response = frame.headers.get("Response")
            if response in _FAILED_RESPONSES:
                self._pending.pop(waiting.action_id, None)
                message = frame.headers.get("Message") or response or "error"
                waiting.fail(
                    AmiActionFailed(
                        f"PBX {self.name} refused {waiting.action}: {message}",
                        response=frame,
                        details={"pbx": self.name, "action": waiting.action, "message": message},
                    )
                )
                return True
            if waiting.kind == "list":
                waiting.response = frame
                return True
            if not waiting.future.done():
                waiting.future.set_result(frame)
            if waiting.kind == "single" or (waiting.outcome is not None and waiting.outcome.done()):
                self._pending.pop(waiting.action_id, None)
            return True
        if waiting.kind == "list":
            if frame.headers.get("EventList") == "Complete" or event.endswith("Complete"):
                self._pending.pop(waiting.action_id, None)
                if not waiting.future.done():
                    waiting.future.set_result(waiting.items)
            else:
                waiting.items.append(frame)
            return True
        if waiting.kind == "originate" and event == "OriginateResponse":
            if waiting.outcome is not None and not waiting.outcome.done():
                waiting.outcome.set_result(frame)
            # A leg that fails at once can be reported before the action's own answer.
            if waiting.future.done():
                self._pending.pop(waiting.action_id, None)
        # Other events that carry our ActionID (OriginateResponse) are events as well.
        return False

    # ----------------------------------------------------------------- writing

    def _register(self, action: Mapping[str, ActionValue], kind: str) -> _Pending:
        if self._state != "connected" or self._writer is None or self._closing:
            raise self._unavailable("not connected")
        return self._new_pending(action, kind)

    def _new_pending(self, action: Mapping[str, ActionValue], kind: str) -> _Pending:
        name = str(action.get("Action") or "")
        if not name:
            raise InvalidInput("an AMI action needs an 'Action' header", details={})
        action_id = f"{self._id_prefix}-{next(self._ids)}"
        pending = _Pending(name, action_id, kind, asyncio.get_running_loop())
        self._pending[action_id] = pending
        return pending

    async def _write(self, pending: _Pending, action: Mapping[str, ActionValue]) -> None:
        writer = self._writer
        if writer is None:
            raise self._unavailable("not connected")
        payload: dict[str, ActionValue] = {
            "Action": pending.action,
            "ActionID": pending.action_id,
        }
        payload.update({k: v for k, v in action.items() if k not in ("Action", "ActionID")})
        data = encode_action(payload)
        try:
            writer.write(data)
            await writer.drain()
        except (OSError, RuntimeError) as exc:
            raise self._unavailable(f"write failed: {_describe(exc)}") from exc

    async def _request(
        self,
        action: Mapping[str, ActionValue],
        timeout: float,
        *,
        kind: str,
        internal: bool = False,
    ) -> Any:
        if internal:
            if self._writer is None:
                raise self._unavailable("not connected")
            pending = self._new_pending(action, kind)
        else:
            pending = self._register(action, kind)
        try:
            async with asyncio.timeout(timeout):
                await self._write(pending, action)
                return await pending.future
        except TimeoutError:
            self.action_timeouts += 1
            raise self._timeout(pending, timeout) from None
        finally:
            self._pending.pop(pending.action_id, None)

    def _timeout(self, pending: _Pending, timeout: float) -> AmiTimeout:
        return AmiTimeout(
            f"PBX {self.name} did not answer {pending.action} within {timeout:g} s",
            details={"pbx": self.name, "action": pending.action, "timeout_s": timeout},
        )

    def _unavailable(self, what: str) -> AmiUnavailable:
        error = f"; last error: {self.last_error}" if self.last_error else ""
        cls = AmiAuthFailed if self._state == "auth_failed" else AmiUnavailable
        return cls(
            f"AMI link to PBX {self.name} is {self._state} ({what}){error}",
            details={"pbx": self.name, "state": self._state, "last_error": self.last_error},
        )

    def _fail_pending(self, exc: AmiUnavailable) -> None:
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.fail(exc)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
