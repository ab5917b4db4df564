"""ConverterPool: real worker processes, real ffmpeg, the event loop kept free."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from recordings.convert import find_ffmpeg
from recordings.errors import (
    ConverterCrashed,
    ConverterUnavailable,
    CorruptAudio,
    RecordingError,
)
from recordings.pool import ConverterPool
from tests.helpers import until
from tests.recordings import FIXTURE_WAV, script, write_wav

FFMPEG = find_ffmpeg()
needs_ffmpeg = pytest.mark.usefixtures("require_ffmpeg")


async def tick_while(awaitable: asyncio.Future[Any]) -> tuple[int, float]:
    """Run a 1 ms ticker until ``awaitable`` is done; return (ticks, worst lateness in s)."""
    loop = asyncio.get_running_loop()
    ticks, worst = 0, 0.0
    while not awaitable.done():
        before = loop.time()
        await asyncio.sleep(0.001)
        ticks += 1
        worst = max(worst, loop.time() - before - 0.001)
    return ticks, worst


@needs_ffmpeg
async def test_converts_in_parallel_without_stalling_the_loop(tmp_path: Path) -> None:
    sources = [write_wav(tmp_path / f"call-{i}.wav", 20.0, freq=300 + 50 * i) for i in range(4)]
    out = tmp_path / "out"
    out.mkdir()
    loop = asyncio.get_running_loop()
    async with ConverterPool(workers=2, format="mp3", ffmpeg=FFMPEG) as pool:
        started = loop.time()
        batch = asyncio.gather(*(pool.convert(src, out) for src in sources))
        ticks, stall = await tick_while(batch)
        elapsed = loop.time() - started
        results = await batch
        status: dict[str, object] = {}
        pool.provide_status(status)

    assert [abs(r.duration_s - 20.0) < 0.05 for r in results] == [True] * 4
    assert len({r.path for r in results}) == 4
    # Conversions on the loop would leave it a handful of ticks (between files); a free loop
    # ticks every ~1 ms, and even on a busy machine far more often than every 20 ms.
    assert ticks >= elapsed * 1000 / 20, (ticks, elapsed)
    assert stall < 0.5
    assert status["recordings_converter"] == {
        "status": "ok",
        "format": "mp3",
        "workers": 2,
        "in_flight": 0,
        "converted": 4,
        "failed": 0,
    }


@needs_ffmpeg
async def test_typed_errors_come_back_from_the_workers(tmp_path: Path) -> None:
    bad = tmp_path / "call-1.wav"
    bad.write_bytes(FIXTURE_WAV.read_bytes()[:20_000])
    async with ConverterPool(workers=1, format="ogg", ffmpeg=FFMPEG) as pool:
        with pytest.raises(CorruptAudio) as err:
            await pool.convert(bad, tmp_path)
        good = await pool.convert(FIXTURE_WAV, tmp_path)
    assert err.value.details["file"] == "call-1.wav"
    assert err.value.details["declared_bytes"] == 323200
    assert good.format == "ogg" and abs(good.duration_s - 20.2) < 0.05


async def test_without_ffmpeg_the_wav_is_kept_and_health_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = write_wav(tmp_path / "call-2.wav", 2.0)
    with caplog.at_level(logging.WARNING, logger="recordings.pool"):
        pool = ConverterPool(workers=1, format="mp3", ffmpeg=None)
    async with pool:
        first = await pool.convert(src, tmp_path)
        second = await pool.convert(src, tmp_path)
        status: dict[str, dict[str, object]] = {}
        pool.provide_status(status)

    assert (first.path, first.format, first.converted, first.duration_s) == (src, "wav", False, 2.0)
    assert second == first
    assert pool.effective_format == "wav"
    assert status["recordings_converter"]["status"] == "degraded"
    assert "ffmpeg not found" in str(status["recordings_converter"]["detail"])
    assert [r.getMessage() for r in caplog.records] == [
        "recordings: ffmpeg not found; recordings are kept as WAV instead of mp3"
    ]


async def test_a_dead_worker_is_reported_and_the_pool_recovers(tmp_path: Path) -> None:
    # An "ffmpeg" that kills the worker process that runs it, as the OOM killer would.
    killer = script(tmp_path / "ffmpeg", "kill -9 $PPID\n")
    src = write_wav(tmp_path / "call-3.wav", 1.0)
    async with ConverterPool(workers=1, format="mp3", ffmpeg=killer) as pool:
        with pytest.raises(ConverterCrashed) as err:
            await pool.convert(src, tmp_path)
        assert err.value.transient
        kept = await pool.inspect(src)
    assert kept.duration_s == 1.0 and src.exists()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies only")
async def test_workers_and_their_ffmpeg_run_below_the_loop(tmp_path: Path) -> None:
    # An "ffmpeg" that writes down its niceness and scheduling policy (/proc stat fields 19
    # and 41), inherited from the worker that runs it, and then fails.
    seen = tmp_path / "seen"
    spy = script(tmp_path / "ffmpeg", f"cut -d' ' -f19,41 /proc/$$/stat > {seen}\nexit 1\n")
    src = write_wav(tmp_path / "call-4.wav", 0.5)
    async with ConverterPool(workers=1, format="mp3", ffmpeg=spy, niceness=10) as pool:
        with pytest.raises(RecordingError):
            await pool.convert(src, tmp_path)
    nice, policy = (int(v) for v in seen.read_text().split())
    assert nice >= 10 + os.nice(0) and policy == os.SCHED_IDLE


async def test_a_stop_signal_to_the_whole_process_group_leaves_the_workers_to_the_server(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Ctrl-C in a terminal or systemd's stop signals every process of the group: the workers
    ignore it and the server stops them itself (they died, and each stop logged "a conversion
    worker died" as an ERROR)."""
    src = write_wav(tmp_path / "call-5.wav", 0.5)
    caplog.set_level(logging.WARNING, logger="recordings")
    async with ConverterPool(workers=2, ffmpeg=None) as pool:
        await pool.inspect(src)
        executor = pool._executor
        assert executor is not None
        workers = list(executor._processes)
        assert len(workers) == 2

        def ready(pid: int) -> bool:  # its initializer ran: SIGTERM in its ignored set
            ignored = Path(f"/proc/{pid}/status").read_text().split("SigIgn:")[1].split()[0]
            return bool(int(ignored, 16) & (1 << (signal.SIGTERM - 1)))

        await until(lambda: all(ready(pid) for pid in workers), timeout=10)
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGINT)
        await asyncio.sleep(0.3)
        for _ in range(4):
            assert (await pool.inspect(src)).duration_s == 0.5
        assert list(executor._processes) == workers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_closed_pool_refuses_work(tmp_path: Path) -> None:
    pool = ConverterPool(workers=1, ffmpeg=None)
    await pool.start()
    await pool.close()
    with pytest.raises(ConverterUnavailable, match="closed"):
        await pool.convert(write_wav(tmp_path / "x.wav", 0.5), tmp_path)
    await pool.close()  # twice is fine


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        ConverterPool(workers=0)
