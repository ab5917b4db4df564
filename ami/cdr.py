"""The PBX's own record of finished calls: Asterisk's CDR, read back to fill what the AMI link
did not see (an outage, a server restart).

AMI events are fire-and-forget: a call that begins and ends while the link is down leaves no
event the server ever receives, and a call answered or ended then gets the reconnect time. The
CDR has them, with the PBX's times. Two sources are read:

* ``Master.csv`` of ``cdr_csv`` (on a path the server can read, e.g. an NFS share): the
  columns of ``cdr_csv`` with ``loguniqueid = yes`` and ``loguserfield = yes``, or any order
  given as ``columns`` (``cdr_custom`` with a ``linkedid`` column);
* a database table written by ``cdr_pgsql`` or ``cdr_adaptive_odbc`` (``start``/``calldate``,
  ``answer``, ``end``, ``linkedid``, …).

Rows are grouped by ``linkedid`` (the call id of the live fold; ``cdr_csv`` has no such
column, its ``uniqueid`` is the first channel's, which is the Linkedid of every leg the caller
dialed) and folded into :class:`~crm_core.calls.record.CallRecord` with the live fold's
disposition rules (:func:`records_from_cdr`).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

from ami.fold import parse_channel_name
from crm_core.calls.record import CallRecord, billed_talk
from crm_core.phones import normalize_call_number

__all__ = [
    "MASTER_CSV_COLUMNS",
    "CdrRow",
    "read_cdr_table",
    "read_master_csv",
    "records_from_cdr",
]

MASTER_CSV_COLUMNS: tuple[str, ...] = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)
"""``cdr_csv``'s columns with ``loguniqueid = yes`` and ``loguserfield = yes`` (cdr.conf)."""

_BUSY = frozenset({"BUSY"})
_FAILED = frozenset({"FAILED", "CONGESTION"})


@dataclass(frozen=True, slots=True)
class CdrRow:
    """One CDR row (one leg of a call as Asterisk bills it); times in UTC."""

    linkedid: str
    src: str
    dst: str
    dcontext: str
    channel: str
    dstchannel: str
    lastapp: str
    lastdata: str
    start: datetime
    answer: datetime | None
    end: datetime
    disposition: str  # ANSWERED | NO ANSWER | BUSY | FAILED | CONGESTION
    # Whole seconds from answer to end as Asterisk measured them (to the microsecond, then
    # truncated): the talk lies in [billsec, billsec + 1). None when the source has no column.
    billsec: int | None = None


def _created(channel: str) -> int:
    """The creation number Asterisk gives a channel (``PJSIP/101-0000001a`` → 26; a Local
    channel's ``Local/101@ctx-0000001a;1`` likewise); unknown ones sort last."""
    suffix = channel.rsplit("-", 1)[-1].split(";", 1)[0]
    try:
        return int(suffix, 16)
    except ValueError:
        return 1 << 62


def _when(value: object, zone: tzinfo) -> datetime | None:
    """A CDR time (``2026-12-02 04:08:17``, a datetime, empty) → aware UTC datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip())
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def _seconds(value: object) -> int | None:
    try:
        return int(float(str(value))) if value is not None and value != "" else None
    except ValueError:
        return None


def _row(fields: dict[str, object], zone: tzinfo) -> CdrRow | None:
    start = _when(fields.get("start") or fields.get("calldate"), zone)
    end = _when(fields.get("end"), zone)
    linkedid = str(fields.get("linkedid") or fields.get("uniqueid") or "")
    if start is None or not linkedid:
        return None
    if end is None:  # cdr_pgsql tables without "end": start + duration
        try:
            end = start + timedelta(seconds=float(str(fields.get("duration") or 0)))
        except ValueError:
            end = start
    return CdrRow(
        linkedid=linkedid,
        src=str(fields.get("src") or ""),
        dst=str(fields.get("dst") or ""),
        dcontext=str(fields.get("dcontext") or ""),
        channel=str(fields.get("channel") or ""),
        dstchannel=str(fields.get("dstchannel") or ""),
        lastapp=str(fields.get("lastapp") or ""),
        lastdata=str(fields.get("lastdata") or ""),
        start=start,
        answer=_when(fields.get("answer"), zone),
        end=max(end, start),
        disposition=str(fields.get("disposition") or "").upper(),
        billsec=_seconds(fields.get("billsec")),
    )


def _zone(name: str) -> tzinfo:
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


def parse_master_csv(
    text: str, *, timezone: str = "UTC", columns: Sequence[str] = MASTER_CSV_COLUMNS
) -> list[CdrRow]:
    """Every row of a ``Master.csv`` text (rows that cannot be read are skipped)."""
    zone = _zone(timezone)
    rows = []
    for values in csv.reader(io.StringIO(text)):
        if not values:
            continue
        row = _row(dict(zip(columns, values, strict=False)), zone)
        if row is not None:
            rows.append(row)
    return rows


_TAIL_BLOCK = 1 << 20
# Rows are appended when a call ends: a row ending this long before ``since`` means every row
# before it ended earlier still (the margin covers rows written out of order, batch mode).
_TAIL_MARGIN = timedelta(hours=6)


def read_master_csv(
    path: str | Path,
    *,
    timezone: str = "UTC",
    columns: Sequence[str] = MASTER_CSV_COLUMNS,
    since: datetime | None = None,
) -> list[CdrRow]:
    """``parse_master_csv`` of the file at ``path``; with ``since`` only its tail back to the
    rows that ended well before ``since`` (a CDR of years is not read at every reconnect).
    No file in an existing folder is an empty CDR: ``cdr_csv`` creates ``Master.csv`` with
    the first call that ends (a fresh PBX); a missing folder (a share not mounted) raises.
    Blocking: run it in a thread."""
    path = Path(path)
    if not path.exists() and path.parent.is_dir():
        return []
    with path.open("rb") as f:
        pos = f.seek(0, 2)
        start = 0
        while since is not None and pos > 0:
            pos = max(0, pos - _TAIL_BLOCK)
            if pos == 0:
                break
            f.seek(pos)
            chunk = f.read(_TAIL_BLOCK)
            newline = chunk.find(b"\n")
            if newline < 0:
                continue
            line = chunk[newline + 1 :].split(b"\n", 1)[0].decode("utf-8", "replace")
            rows = parse_master_csv(line, timezone=timezone, columns=columns)
            if rows and rows[0].end < since - _TAIL_MARGIN:
                start = pos + newline + 1
                break
        f.seek(start)
        text = f.read().decode("utf-8", "replace")
    return parse_master_csv(text, timezone=timezone, columns=columns)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


async def read_cdr_table(
    url: str, table: str, since: datetime, *, timezone: str = "UTC"
) -> list[CdrRow]:
    """The rows of every call with a leg ending at or after ``since`` in the CDR ``table``
    of the database at ``url`` (an SQLAlchemy async URL)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"not a table name: {table!r}")
    zone = _zone(timezone)
    # The CDR's times are naive local times of the PBX (a timestamp without time zone).
    naive_since = since.astimezone(zone).replace(tzinfo=None)
    engine = create_async_engine(url, pool_pre_ping=False)
    try:
        async with engine.connect() as conn:
            probe = await conn.execute(text(f"SELECT * FROM {table} WHERE 1 = 0"))
            names = list(probe.keys())
            start_col = "start" if "start" in names else "calldate"
            end_expr = '"end"' if "end" in names else start_col
            result = await conn.execute(
                text(
                    f"SELECT * FROM {table} WHERE linkedid IN "
                    f"(SELECT linkedid FROM {table} WHERE {end_expr} >= :since)"
                    f" ORDER BY {start_col}"
                ),
                {"since": naive_since},
            )
            rows = [_row(dict(r._mapping), zone) for r in result]
    finally:
        await engine.dispose()
    return [r for r in rows if r is not None]


def records_from_cdr(
    rows: Iterable[CdrRow],
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
    region: str = "RU",
    ended_since: datetime | None = None,
) -> list[CallRecord]:
    """The finished calls of ``rows`` (grouped by linkedid), in order of call end; with
    ``ended_since`` only the calls that ended then or later."""
    by_call: dict[str, list[CdrRow]] = {}
    for row in rows:
        by_call.setdefault(row.linkedid, []).append(row)
    folder = _CdrFold(frozenset(trunks), re.compile(extension_pattern), count_threshold_s, region)
    records = [folder.record(linkedid, legs) for linkedid, legs in by_call.items()]
    if ended_since is not None:
        records = [r for r in records if r.ended_at >= ended_since]
    return sorted(records, key=lambda r: (r.ended_at, r.call_id))


class _CdrFold:
    """The live fold's rules (``tests/fixtures/ami/README.md``) applied to CDR legs."""

    def __init__(
        self, trunks: frozenset[str], ext_re: re.Pattern[str], threshold: float, region: str
    ) -> None:
        self.trunks, self.ext_re, self.threshold, self.region = trunks, ext_re, threshold, region

    def _endpoint(self, channel: str) -> tuple[str | None, bool]:
        """(the extension of a phone channel, whether it is a trunk channel)."""
        if not channel:
            return None, False
        _tech, endpoint, local_key, _half = parse_channel_name(channel)
        if local_key is None and endpoint in self.trunks:
            return None, True
        return (endpoint if self.ext_re.fullmatch(endpoint) else None), False

    def _party(self, text: str) -> str | None:
        if not text:
            return None
        if self.ext_re.fullmatch(text):
            return text
        return normalize_call_number(text, self.region)

    def record(self, linkedid: str, legs: list[CdrRow]) -> CallRecord:
        legs = sorted(legs, key=lambda r: (r.start, r.end))
        first = legs[0]
        first_ext, first_trunk = self._endpoint(first.channel)
        to_trunk = any(self._endpoint(leg.dstchannel)[1] for leg in legs)
        dialed = self._party(first.dst)
        # A click-to-call whose manager never picked up: the Originate's own line (AppDial2)
        # never reached the dialplan, so dst is "s" and the client's number is only the
        # caller ID the server gave the manager's leg (src).
        client = self._party(first.src) if first.lastapp == "AppDial2" else None
        unanswered_manager = (
            first_ext is not None and len(legs) == 1 and client is not None and client[0] == "+"
        )
        if unanswered_manager:
            dialed = client
        if first_trunk:
            direction = "inbound"
        elif first_ext is not None and (
            to_trunk or (dialed is not None and dialed.startswith("+"))
        ):
            direction = "outbound"  # to a trunk, or a click-to-call the manager never took
        else:
            direction = "internal"
        rang: list[str] = []
        # The phones in the order the PBX rang them: legs of one second (a queue or a group
        # ringing all) by their channels' creation numbers, not by when each stopped ringing.
        for leg in sorted(legs, key=lambda r: (r.start, _created(r.dstchannel))):
            ext = self._endpoint(leg.dstchannel)[0]
            if ext is not None and ext not in rang:
                rang.append(ext)
        answered: CdrRow | None = None
        answered_ext: str | None = None
        for leg in legs:
            ext, trunk = self._endpoint(leg.dstchannel)
            if leg.disposition != "ANSWERED" or leg.answer is None:
                continue
            ours = (direction == "outbound" and trunk) or (direction != "outbound" and ext)
            if ours and (answered is None or leg.answer < (answered.answer or leg.answer)):
                answered, answered_ext = leg, ext
        queue = next((leg.lastdata.split(",")[0] for leg in legs if leg.lastapp == "Queue"), None)
        started = first.start
        ended = max(leg.end for leg in legs)
        answered_at = answered.answer if answered is not None else None
        billsec: int | None = None
        if answered_at is not None:
            answered_at = min(max(answered_at, started), ended)
            ring = (answered_at - started).total_seconds()
            talk = (ended - answered_at).total_seconds()
            if answered is not None and answered.end == ended and answered.billsec is not None:
                # The times are whole seconds (truncated), so their difference may be a second
                # off either way; billsec is not: the talk lies in [billsec, billsec + 1).
                billsec = answered.billsec
                talk = billed_talk(talk - 1.0, billsec)
        else:
            ring, talk = (ended - started).total_seconds(), 0.0
        if direction == "inbound":
            caller = normalize_call_number(first.src, self.region)
            callee = did = normalize_call_number(first.dst, self.region)
            extension = answered_ext
        else:
            did = None
            caller = first_ext or self._party(first.src)
            callee = dialed
            extension = first_ext or answered_ext
        talk_seconds = round(talk, 1)
        return CallRecord(
            call_id=linkedid,
            direction=direction,
            caller=caller,
            callee=callee,
            did=did,
            queue=queue or None,
            extension=extension,
            rang=tuple(rang),
            disposition=self._disposition(legs, answered is not None),
            unanswered_by=self._unanswered_by(legs, direction, unanswered_manager, answered),
            started_at=started,
            answered_at=answered_at,
            ended_at=ended,
            ring_seconds=round(ring, 1),
            talk_seconds=talk_seconds,
            counted=talk_seconds >= self.threshold,
            transfers=(),
            recording=None,
            hangup_cause=None,
            billsec=billsec,
        )

    def _unanswered_by(
        self, legs: list[CdrRow], direction: str, manager_missed: bool, answered: CdrRow | None
    ) -> str | None:
        """Which leg of an unanswered click-to-call failed, as the live fold says it. The
        manager's: the Originate's line alone. The client's: the leg to the trunk has an
        ``answer`` time but did not answer — the manager's leg was up before the client was
        dialed, which only an Originate does (a phone dialing out is answered with the
        client)."""
        if answered is not None or direction != "outbound":
            return None
        if manager_missed:
            return "manager"
        for leg in legs:
            if leg.answer is not None and leg.disposition != "ANSWERED" and self._trunk(leg):
                return "client"
        return None

    def _trunk(self, leg: CdrRow) -> bool:
        return self._endpoint(leg.dstchannel)[1]

    @staticmethod
    def _disposition(legs: list[CdrRow], answered: bool) -> str:
        if answered:
            return "answered"
        if any(leg.lastapp == "Queue" for leg in legs):
            # Whether the caller hung up or the queue gave up is in queue_log, not the CDR.
            return "missed"
        states = {leg.disposition for leg in legs}
        if states and not states - _BUSY:
            return "busy"
        if states and not states - _FAILED:
            return "failed"
        return "missed"
