"""Replay a raw AMI capture through the same parser and fold the server uses.

``contact-center replay TRACE`` prints ``json.dumps(d, ensure_ascii=False)`` for each dict
:func:`replay_file` returns: one per finished call, in order of call end. Calls still in
progress when the capture ends are not printed. :func:`record_json` is that dict's shape.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

from ami.fold import CallEnded, CallFolder
from ami.frames import FrameParser
from crm_core.calls.record import CallRecord

__all__ = ["format_timestamp", "record_json", "replay_bytes", "replay_chunks", "replay_file"]


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC with milliseconds (microseconds truncated): ``2026-11-26T19:53:08.254Z``."""
    value = value.astimezone(UTC)
    return f"{value:%Y-%m-%dT%H:%M:%S}.{value.microsecond // 1000:03d}Z"


def record_json(record: CallRecord) -> dict[str, Any]:
    """The stable replay shape of a finished call: exactly the DESIGN.md keys, in order."""
    return {
        "call_id": record.call_id,
        "direction": record.direction,
        "caller": record.caller,
        "callee": record.callee,
        "did": record.did,
        "queue": record.queue,
        "extension": record.extension,
        "rang": list(record.rang),
        "disposition": record.disposition,
        "started_at": format_timestamp(record.started_at),
        "answered_at": (
            format_timestamp(record.answered_at) if record.answered_at is not None else None
        ),
        "ended_at": format_timestamp(record.ended_at),
        "ring_seconds": record.ring_seconds,
        "talk_seconds": record.talk_seconds,
        "counted": record.counted,
        "transfers": list(record.transfers),
        "recording": record.recording,
        "hangup_cause": record.hangup_cause,
    }


def replay_chunks(
    chunks: Iterable[bytes],
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
) -> list[dict[str, Any]]:
    """Parse and fold a capture delivered as successive reads; return finished calls."""
    parser = FrameParser()
    folder: CallFolder
    # Frames without a Timestamp (resync lists) take the capture's own clock, so a replay
    # never depends on when it runs.
    folder = CallFolder(
        trunks,
        extension_pattern,
        count_threshold_s,
        now=lambda: folder.last_timestamp,
    )
    records: list[dict[str, Any]] = []
    for chunk in chunks:
        for frame in parser.feed(chunk):
            for event in folder.feed(frame):
                if isinstance(event, CallEnded):
                    records.append(record_json(event.record))
    for frame in parser.flush():
        for event in folder.feed(frame):
            if isinstance(event, CallEnded):
                records.append(record_json(event.record))
    return records


def replay_bytes(
    data: bytes,
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
    chunk_size: int | None = None,
) -> list[dict[str, Any]]:
    """Replay a whole capture held in memory, optionally cut into ``chunk_size`` reads."""
    if chunk_size is None or chunk_size <= 0:
        chunks: Iterable[bytes] = (data,)
    else:
        chunks = (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))
    return replay_chunks(
        chunks,
        trunks=trunks,
        extension_pattern=extension_pattern,
        count_threshold_s=count_threshold_s,
    )


def replay_file(
    path: str | PathLike[str],
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
    chunk_size: int | None = None,
) -> list[dict[str, Any]]:
    """Replay the capture file at ``path`` (the raw bytes Asterisk sent)."""
    return replay_bytes(
        Path(path).read_bytes(),
        trunks=trunks,
        extension_pattern=extension_pattern,
        count_threshold_s=count_threshold_s,
        chunk_size=chunk_size,
    )
