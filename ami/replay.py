"""Replay a raw AMI capture through the same parser and fold the server uses.

``contact-center replay TRACE`` prints ``json.dumps(d, ensure_ascii=False)`` for each dict
:func:`replay_file` returns: one per finished call, in order of call end. Calls still in
progress when the capture ends are not printed. :func:`record_json` is that dict's shape.
"""

from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from os import PathLike
from typing import Any

from ami.fold import CallEnded, CallFolder
from ami.frames import FrameParser
from crm_core.calls.record import CallRecord

__all__ = [
    "MAX_FRAME_BYTES",
    "ReplayError",
    "format_timestamp",
    "iter_replay",
    "read_chunks",
    "record_json",
    "replay_bytes",
    "replay_chunks",
    "replay_file",
]

MAX_FRAME_BYTES = 1 << 20
"""No AMI frame is this long (a large one, a ``CoreShowChannel`` list entry, is a few KB): past
it the input is not an AMI capture, and reading on would only fill memory."""
READ_SIZE = 64 * 1024


class ReplayError(Exception):
    """The input is not an AMI capture (no frames, or a "frame" past the size cap)."""


def iter_replay(
    chunks: Iterable[bytes],
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
    max_frame_bytes: int = MAX_FRAME_BYTES,
) -> Iterator[dict[str, Any]]:
    """Parse and fold a capture delivered as successive reads; yield each finished call as it
    ends. Memory stays bounded by the calls in progress and one frame. Raises
    :class:`ReplayError` at the first frame longer than ``max_frame_bytes`` and, at the end,
    when the input held no AMI frame at all."""
    parser = FrameParser(max_frame_bytes=max_frame_bytes)
    folder: CallFolder
    # Frames without a Timestamp (resync lists) take the capture's own clock, so a replay
    # never depends on when it runs.
    folder = CallFolder(
        trunks,
        extension_pattern,
        count_threshold_s,
        now=lambda: folder.last_timestamp,
    )
    seen_ami = False
    offset = 0
    for chunk in chunks:
        offset += len(chunk)
        frames = parser.feed(chunk)
        if parser.dropped_bytes:
            raise ReplayError(
                f"no AMI frame ends within {max_frame_bytes} bytes (before byte {offset}):"
                " not an AMI capture"
            )
        for frame in frames:
            seen_ami = seen_ami or frame.event is not None or frame.response is not None
            for event in folder.feed(frame):
                if isinstance(event, CallEnded):
                    yield record_json(event.record)
    for frame in parser.flush():
        seen_ami = seen_ami or frame.event is not None or frame.response is not None
        for event in folder.feed(frame):
            if isinstance(event, CallEnded):
                yield record_json(event.record)
    if not seen_ami and parser.banner is None:
        raise ReplayError(
            f"no AMI frames in {offset} bytes (expected 'Event: …' blocks ended by empty lines)"
        )


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
    return list(
        iter_replay(
            chunks,
            trunks=trunks,
            extension_pattern=extension_pattern,
            count_threshold_s=count_threshold_s,
        )
    )


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


def read_chunks(path: str | PathLike[str], size: int = READ_SIZE) -> Iterator[bytes]:
    """The file at ``path`` in reads of ``size`` bytes (a pipe or a device works too)."""
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk


def replay_file(
    path: str | PathLike[str],
    *,
    trunks: Sequence[str],
    extension_pattern: str,
    count_threshold_s: float = 60,
    chunk_size: int | None = None,
) -> list[dict[str, Any]]:
    """Replay the capture file at ``path`` (the raw bytes Asterisk sent), read in chunks."""
    return replay_chunks(
        read_chunks(path, chunk_size or READ_SIZE),
        trunks=trunks,
        extension_pattern=extension_pattern,
        count_threshold_s=count_threshold_s,
    )
