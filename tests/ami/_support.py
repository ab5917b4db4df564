"""Shared helpers for the AMI tests: fixture paths, replay config, record comparison."""

import json
from pathlib import Path
from typing import Any

from ami.fold import CallEnded, CallFolder
from ami.frames import Frame, FrameParser
from crm_core.calls.record import CallRecord

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ami"

TRUNKS = ("provider",)
EXTENSION_PATTERN = r"^\d{3}$"
COUNT_THRESHOLD_S = 60.0

RECORD_KEYS = [
    "call_id",
    "direction",
    "caller",
    "callee",
    "did",
    "queue",
    "extension",
    "rang",
    "disposition",
    "started_at",
    "answered_at",
    "ended_at",
    "ring_seconds",
    "talk_seconds",
    "counted",
    "transfers",
    "recording",
    "hangup_cause",
]

_SECONDS_KEYS = ("ring_seconds", "talk_seconds")


def capture_names() -> list[str]:
    """Every capture in the fixture folder, by stem (``a_inbound_queue_answered`` …)."""
    return sorted(p.stem for p in FIXTURES.glob("*.ami"))


def capture_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.ami").read_bytes()


def expected_records(name: str) -> list[dict[str, Any]]:
    text = (FIXTURES / f"{name}.expected.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def meta(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.meta.json").read_text("utf-8"))
    return data


def recv_chunks(name: str) -> list[bytes]:
    """The capture cut exactly where the recording client's recv() calls returned."""
    data = capture_bytes(name)
    return [data[c["offset"] : c["offset"] + c["len"]] for c in meta(name)["chunks"]]


def record_mismatches(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[str]:
    """Human-readable differences; ring/talk seconds may differ by up to 1 s."""
    problems: list[str] = []
    if len(expected) != len(got):
        problems.append(f"expected {len(expected)} records, got {len(got)}")
    for index, (want, have) in enumerate(zip(expected, got, strict=False)):
        if list(have) != RECORD_KEYS:
            problems.append(f"#{index}: keys {list(have)}")
        for key in RECORD_KEYS:
            if key in _SECONDS_KEYS:
                if not isinstance(have.get(key), int | float) or abs(have[key] - want[key]) > 1:
                    problems.append(f"#{index} {key}: want {want[key]!r}, got {have.get(key)!r}")
            elif have.get(key) != want.get(key):
                problems.append(f"#{index} {key}: want {want.get(key)!r}, got {have.get(key)!r}")
    return problems


def frame(event: str, **headers: str) -> Frame:
    """A hand-made event frame, headers in the given order after ``Event``."""
    return Frame({"Event": event, **headers})


def folded_calls(name: str) -> list[CallRecord]:
    """The finished calls of capture ``name`` as the server's fold records them."""
    parser = FrameParser()
    folder = CallFolder(TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: 0.0)
    events = folder.feed_many(parser.feed(capture_bytes(name)) + parser.flush())
    return [e.record for e in events if isinstance(e, CallEnded)]


def folded_call(name: str) -> CallRecord:
    """The first finished call of capture ``name``."""
    return folded_calls(name)[0]
