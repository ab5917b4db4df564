"""The demo's calls: audio for their recordings and a week of call history.

A real PBX writes a MixMonitor file into its spool directory while a call is recorded, and the
recordings service picks it up when the call has ended. The demo does the same: every recording
the simulated PBX names, and every call of the seeded history, gets a real WAV file in the
demo's spool directory (a few seconds of two "voices" taking turns over line noise), so the
recordings service converts and stores it like any other and the player on /calls plays it.
"""

from __future__ import annotations

import io
import math
import random
import re
import wave
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from contact_center.call_outcomes import CallOutcomes
from crm_core.calls.record import CallRecord

SAMPLE_RATE = 8000  # what Asterisk records telephone calls at (slin)
PBX = "demo"
# A MixMonitor file named in the AMI stream: ".../monitor/NAME.wav" or "MixMonitor(NAME.wav,b)".
_RECORDING_NAME = re.compile(rb"(?:monitor/|MixMonitor\()([\w.+-]+\.wav)")


def conversation_wav(seconds: float, seed: int) -> bytes:
    """A mono 16-bit WAV of ``seconds``: two voices (different pitch) taking turns, each a
    few harmonics with a syllable-like envelope, over quiet line noise."""
    rnd = random.Random(seed)
    total = max(1, int(seconds * SAMPLE_RATE))
    samples = array("h", bytes(2 * total))
    voices = (rnd.uniform(105, 140), rnd.uniform(190, 240))
    pos, speaker = 0, rnd.randrange(2)
    while pos < total:
        turn = int(rnd.uniform(0.6, 1.8) * SAMPLE_RATE)
        pitch = voices[speaker] * rnd.uniform(0.95, 1.05)
        syllable = rnd.uniform(3.0, 5.0)
        for i in range(pos, min(total, pos + turn)):
            t = (i - pos) / SAMPLE_RATE
            envelope = 0.5 - 0.5 * math.cos(2 * math.pi * syllable * t)
            tone = (
                math.sin(2 * math.pi * pitch * t)
                + 0.5 * math.sin(4 * math.pi * pitch * t)
                + 0.25 * math.sin(6 * math.pi * pitch * t)
            )
            samples[i] = int(6000 * envelope * tone + rnd.gauss(0, 120))
        pos += turn + int(rnd.uniform(0.1, 0.4) * SAMPLE_RATE)  # a pause between turns
        speaker = 1 - speaker
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(samples.tobytes())
    return buffer.getvalue()


class Recorder:
    """Writes the WAV file of each recording into the spool directory, as MixMonitor would.
    A handful of clips is made once and reused: writing a file is then only a copy."""

    def __init__(self, spool_dir: Path, *, clips: int = 4, seconds: float = 8.0) -> None:
        self.spool_dir = spool_dir
        self._clips = [conversation_wav(seconds + 2 * n, seed=n) for n in range(clips)]
        self._next = 0
        self.written = 0

    def write(self, name: str) -> Path:
        """The file ``name`` in the spool directory (written once)."""
        path = self.spool_dir / Path(name).name
        if not path.exists():
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            clip = self._clips[self._next % len(self._clips)]
            self._next += 1
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(clip)
            partial.replace(path)  # never seen half-written
            self.written += 1
        return path

    def write_named_in(self, data: bytes) -> None:
        """Write the file of every recording the AMI bytes ``data`` name."""
        for match in _RECORDING_NAME.finditer(data):
            self.write(match.group(1).decode())


# ---------------------------------------------------------------- the history


@dataclass(frozen=True)
class HistoryCaller:
    """Who a history call is with: the client's number and his manager's extension."""

    number: str  # E.164
    extension: str


def _record(
    index: int,
    caller: HistoryCaller,
    started: datetime,
    *,
    direction: str,
    disposition: str,
    talk_s: float,
    did: str,
    threshold_s: float,
) -> CallRecord:
    ring = 4.0 + index % 9
    answered = disposition == "answered"
    answered_at = started + timedelta(seconds=ring) if answered else None
    ended = started + timedelta(seconds=ring + (talk_s if answered else 0.0))
    call_id = f"{int(started.timestamp())}.{900 + index}"
    digits = caller.number.lstrip("+")
    recording = None
    if answered:
        if direction == "inbound":
            recording = f"{started:%Y%m%d-%H%M%S}-in-{digits}-{did.lstrip('+')}-{call_id}.wav"
        else:
            recording = f"{started:%Y%m%d-%H%M%S}-out-{caller.extension}-{digits}-{call_id}.wav"
    inbound = direction == "inbound"
    return CallRecord(
        call_id=call_id,
        direction=direction,
        caller=caller.number if inbound else caller.extension,
        callee=did if inbound else caller.number,
        did=did if inbound else None,
        queue="sales" if inbound else None,
        extension=caller.extension if answered or not inbound else None,
        rang=(caller.extension,),
        disposition=disposition,
        started_at=started,
        answered_at=answered_at,
        ended_at=ended,
        ring_seconds=ring,
        talk_seconds=talk_s if answered else 0.0,
        counted=answered and talk_s >= threshold_s,
        transfers=(),
        recording=f"/var/spool/asterisk/monitor/{recording}" if recording else None,
        hangup_cause=16,
    )


def history(
    callers: Sequence[HistoryCaller],
    dids: Sequence[str],
    *,
    now: datetime,
    days: int = 7,
    per_day: int = 5,
    threshold_s: float = 60.0,
    seed: int = 2026,
    tz: tzinfo | None = None,
) -> list[CallRecord]:
    """A week of calls ending before ``now``: mostly answered (some long enough to count),
    some missed and abandoned, inbound and outbound; today's (in ``tz``, UTC by default) within
    the last few hours, and today's still, however early in the day the demo starts; the
    earlier days' from 09:00 to 18:00."""
    rnd = random.Random(seed)
    local = now.astimezone(tz) if tz is not None else now
    midnight = datetime.combine(local.date(), time(), local.tzinfo)
    today_min = min(240.0, (local - midnight).total_seconds() / 60)
    earliest = min(10.0, today_min)
    records: list[CallRecord] = []
    for day in range(days):
        for _ in range(per_day):
            if day == 0:
                started = now - timedelta(minutes=rnd.uniform(earliest, today_min))
            else:
                base = midnight - timedelta(days=day) + timedelta(hours=9)
                started = (base + timedelta(minutes=rnd.uniform(0, 9 * 60))).astimezone(now.tzinfo)
            disposition = rnd.choices(["answered", "missed", "abandoned"], [7, 2, 1])[0]
            direction = (
                "outbound" if disposition == "answered" and rnd.random() < 0.4 else "inbound"
            )
            talk = rnd.choice([rnd.uniform(15, 55), rnd.uniform(61, 420)])
            records.append(
                _record(
                    len(records),
                    rnd.choice(callers),
                    started.replace(microsecond=0),
                    direction=direction,
                    disposition=disposition,
                    talk_s=round(talk, 1),
                    did=rnd.choice(dids),
                    threshold_s=threshold_s,
                )
            )
    return sorted(records, key=lambda r: r.started_at)


async def seed_history(
    session: AsyncSession,
    outcomes: CallOutcomes,
    recorder: Recorder,
    records: Sequence[CallRecord],
) -> int:
    """Store ``records`` through the same path as calls from the PBX (call log, timeline,
    leads of new callers, call-back tasks, recording jobs), each recording's file first
    written into the spool. Returns the number of recordings."""
    recorded = 0
    for record in records:
        if record.recording:
            recorder.write(record.recording)
            recorded += 1
        await outcomes.record(session, PBX, record, now=record.ended_at)
    return recorded
