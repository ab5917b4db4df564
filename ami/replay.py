"""Replay a raw AMI capture through the same parser and fold the server uses.

``contact-center replay TRACE`` prints ``json.dumps(d, ensure_ascii=False)`` for each dict
:func:`replay_file` returns: one per finished call, in order of call end. Calls still in
progress when the capture ends are not printed.
"""

from collections.abc import Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ami.fold import CallEnded, CallFolder
from ami.frames import FrameParser

__all__ = ["replay_bytes", "replay_chunks", "replay_file"]


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
                    records.append(event.record.to_json_dict())
    for frame in parser.flush():
        for event in folder.feed(frame):
            if isinstance(event, CallEnded):
                records.append(event.record.to_json_dict())
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
