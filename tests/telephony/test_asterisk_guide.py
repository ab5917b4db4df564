"""The Asterisk guide (docs/asterisk.md) and the README's Asterisk section agree, and hold what
issue 14 found wrong when they were pasted into a real Asterisk 22."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = (ROOT / "docs" / "asterisk.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _classes(text: str, key: str) -> list[set[str]]:
    found = re.findall(rf"^{key} = ([a-z,]+)", text, re.M)
    return [set(v.split(",")) for v in found]


def test_readme_and_guide_ask_the_same_ami_classes_and_no_more() -> None:
    assert (
        _classes(DOCS, "read")
        == _classes(README, "read")
        == [{"call", "agent", "dialplan", "reporting"}]
    )
    assert (
        _classes(DOCS, "write") == _classes(README, "write") == [{"originate", "call", "reporting"}]
    )


def test_the_inbound_context_takes_dids_with_a_plus_and_only_an_extension_reaches_dial() -> None:
    contexts = re.findall(r"^\[from-provider\]\n((?:.+\n)+)", DOCS, re.M)
    assert contexts, "the guide shows the inbound context"
    for body in contexts:
        assert "exten => _X." not in body  # Asterisk answers 404 to a DID with a leading +
        assert "exten => _[+0-9]." in body
        assert '$["${TARGET}"' not in body  # a body with quotes broke the expression
        assert 'REGEX("^[0-9]+$" ${TARGET})' in body
        # Recording and routing together: the first recording stops before the queue's.
        lines = body.splitlines()
        assert [i for i, line in enumerate(lines) if "StopMixMonitor()" in line] == [
            next(i for i, line in enumerate(lines) if "Queue(" in line) - 1
        ]


def test_the_click_to_call_context_matches_e164_and_sets_the_companys_caller_id() -> None:
    body = re.search(r"^\[internal\]\n((?:.+\n)+)", DOCS, re.M)
    assert body is not None
    assert "exten => _+X.," in body.group(1)
    assert "Set(CALLERID(all)=" in body.group(1)


def test_the_cdr_settings_the_server_needs_are_named() -> None:
    for setting in ("unanswered = yes", "endbeforehexten = yes", "loguniqueid = yes"):
        assert setting in DOCS
