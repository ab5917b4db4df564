"""Every capture replays to exactly the bytes the code printed before the call path was
restructured (``tests/fixtures/replay_golden/``, generated once from the earlier code): the
``contact-center replay`` interface is stable, so a refactoring must not move a single byte.

``NAME.jsonl`` is what ``contact-center replay NAME.ami`` printed; ``NAME.events.jsonl`` is
every event the fold emitted for the capture fed frame by frame (live events too), then the
calls still in progress at the end expired: the fold's output beyond what ``replay`` prints
(the resync captures end with calls in progress, which ``replay`` does not print).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ami.fold import CallEnded, CallEvent, CallFolder
from ami.frames import FrameParser
from ami.replay import record_json
from tests.ami._support import COUNT_THRESHOLD_S, EXTENSION_PATTERN, FIXTURES, TRUNKS

GOLDEN = FIXTURES.parent / "replay_golden"
ROOT = Path(__file__).resolve().parents[2]
CAPTURES = sorted(p.stem for p in FIXTURES.glob("*.ami"))

# Runs the real entry point once per capture in one interpreter (a process per capture costs
# two seconds each), each capture's stdout written to its own file.
_RUN_ALL = """
import sys
from contact_center.cli import main
config, pairs = sys.argv[1], sys.argv[2:]
real = sys.stdout
for trace, dest in zip(pairs[::2], pairs[1::2]):
    with open(dest, "w", encoding="utf-8", newline="") as out:
        sys.stdout = out
        code = main(["replay", trace, "--config", config])
    sys.stdout = real
    if code != 0:
        sys.exit(code)
"""


def test_every_capture_has_its_golden_files() -> None:
    assert len(CAPTURES) == 16
    for name in CAPTURES:
        assert (GOLDEN / f"{name}.jsonl").is_file()
        assert (GOLDEN / f"{name}.events.jsonl").is_file()


def test_replay_prints_the_golden_bytes_for_every_capture(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "pbx:\n  - name: t\n    username: u\n    secret: s\n    trunks: [provider]\n"
        "    extension_pattern: '^\\d{3}$'\n",
        encoding="utf-8",
    )
    pairs: list[str] = []
    for name in CAPTURES:
        pairs += [str(FIXTURES / f"{name}.ami"), str(tmp_path / f"{name}.out")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CC_")}
    env["CC_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/cc.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_ALL, str(config), *pairs],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stderr == b""
    differ = [
        name
        for name in CAPTURES
        if (tmp_path / f"{name}.out").read_bytes() != (GOLDEN / f"{name}.jsonl").read_bytes()
    ]
    assert differ == []


def _event_line(event: CallEvent) -> str:
    if isinstance(event, CallEnded):
        doc = {"event": "CallEnded", **record_json(event.record)}
    else:
        doc = {"event": type(event).__name__, **dataclasses.asdict(event)}
    return json.dumps(doc, ensure_ascii=False) + "\n"


@pytest.mark.parametrize("name", CAPTURES)
def test_fold_emits_the_golden_events(name: str) -> None:
    parser = FrameParser()
    folder = CallFolder(
        TRUNKS, EXTENSION_PATTERN, COUNT_THRESHOLD_S, now=lambda: folder.last_timestamp
    )
    data = (FIXTURES / f"{name}.ami").read_bytes()
    lines = [
        _event_line(event)
        for frame in parser.feed(data) + parser.flush()
        for event in folder.feed(frame)
    ]
    lines += [_event_line(e) for e in folder.expire(folder.last_timestamp + 1e6, 0.0)]
    assert "".join(lines) == (GOLDEN / f"{name}.events.jsonl").read_text(encoding="utf-8")
