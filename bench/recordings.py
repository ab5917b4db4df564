"""Recordings conversion benchmark.

Generates 100 one-minute 8 kHz mono WAV files (a tone with noise, made with pydub's
generators) and converts them with the configured format, bitrate and pool size
(``recordings.*`` in config.yaml): through ``recordings.pool.ConverterPool``, and one by one in
this process. The two runs are interleaved (serial, pool, pool, serial over two halves of the
files) so that other load on the machine weighs on both alike. While the pool runs, a ticker
task sleeping 1 ms measures how late the event loop wakes it (the loop's worst stall).

Goals on a 2-core machine: pool throughput at least 1.6x the serial one, worst stall under 10 ms.
The last line is one JSON object: {"files_per_s", "serial_files_per_s", "max_loop_stall_ms"}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and this file would shadow the
# recordings package (in this process and in the spawned workers, which copy sys.path).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from contact_center.config import RecordingsSettings, load_settings  # noqa: E402
from recordings.convert import ConvertOptions, convert_recording, find_ffmpeg  # noqa: E402
from recordings.pool import ConverterPool  # noqa: E402

with warnings.catch_warnings():
    # The warnings pydub gives at import (see recordings/convert.py).
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", DeprecationWarning)
    warnings.filterwarnings("ignore", "invalid escape sequence", SyntaxWarning)
    from pydub.generators import Sine, WhiteNoise

FILES = 100
SECONDS = 60
RATE = 8000
VARIANTS = 4


def generate(directory: Path) -> list[Path]:
    """FILES one-minute WAVs; VARIANTS distinct signals, copied under distinct call names."""
    bases: list[Path] = []
    for i in range(VARIANTS):
        noise = WhiteNoise(sample_rate=RATE).to_audio_segment(duration=SECONDS * 1000, volume=-30)
        tone = Sine(300 + 110 * i, sample_rate=RATE).to_audio_segment(
            duration=SECONDS * 1000, volume=-12
        )
        path = directory / f"base-{i}.wav"
        with path.open("wb") as f:
            tone.overlay(noise).set_channels(1).export(f, format="wav")
        bases.append(path)
    files = []
    for n in range(FILES):
        path = directory / f"20261126-120000-in-74950000000-74950000001-17957{n:05d}.1.wav"
        shutil.copyfile(bases[n % VARIANTS], path)
        files.append(path)
    for base in bases:
        base.unlink()
    return files


def cpu_seconds() -> float:
    """CPU time of this process and of its waited-for children (ffmpeg, joined workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def ticker(stop: asyncio.Event, worst: list[float]) -> None:
    """Sleep 1 ms at a time and record the largest lateness."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], loop.time() - before - 0.001)


@contextlib.asynccontextmanager
async def ticking(worst: list[float]) -> AsyncIterator[None]:
    """Run the ticker for the duration of the block."""
    stop = asyncio.Event()
    task = asyncio.create_task(ticker(stop, worst))
    await asyncio.sleep(0.005)
    try:
        yield
    finally:
        stop.set()
        await task


async def run(
    files: list[Path], root: Path, cfg: RecordingsSettings, ffmpeg: str
) -> dict[str, float]:
    """Serial and pool conversions of the same files, interleaved serial/pool/pool/serial (two
    halves) so that load from other processes on the machine weighs on both alike."""
    idle = [0.0]
    async with ticking(idle):
        await asyncio.sleep(2)
    print(
        f"event-loop stall with the loop idle (this machine's own jitter): {1000 * idle[0]:.2f} ms"
    )

    options = ConvertOptions(format=cfg.format, bitrate=cfg.bitrate, ffmpeg=ffmpeg)
    (root / "serial").mkdir()
    (root / "pool").mkdir()
    worst = [0.0]
    cpu_start = cpu_seconds()
    pool = ConverterPool(workers=cfg.workers, format=cfg.format, bitrate=cfg.bitrate, ffmpeg=ffmpeg)
    async with ticking(worst):
        t = time.perf_counter()
        await pool.start()
        print(
            f"pool start-up ({cfg.workers} spawned workers): {time.perf_counter() - t:.2f} s,"
            f" worst stall meanwhile {1000 * worst[0]:.2f} ms"
        )

    half = len(files) // 2
    phases = [("serial", files[:half]), ("pool", files[:half])]
    phases += [("pool", files[half:]), ("serial", files[half:])]
    spent = {"serial": 0.0, "pool": 0.0}
    serial_cpu = 0.0
    durations: list[float] = []
    try:
        for kind, batch in phases:
            t = time.perf_counter()
            if kind == "serial":
                cpu = cpu_seconds()
                for path in batch:
                    durations.append(convert_recording(path, root / "serial", options).duration_s)
                serial_cpu += cpu_seconds() - cpu
            else:
                phase_worst = [0.0]
                async with ticking(phase_worst):
                    results = await asyncio.gather(
                        *(pool.convert(path, root / "pool") for path in batch)
                    )
                worst[0] = max(worst[0], phase_worst[0])
                durations += [r.duration_s for r in results]
            elapsed = time.perf_counter() - t
            spent[kind] += elapsed
            rate = len(batch) / elapsed
            stall = f", worst stall {1000 * phase_worst[0]:.2f} ms" if kind == "pool" else ""
            print(f"  {kind:6} {len(batch)} files: {elapsed:6.2f} s, {rate:.2f} files/s{stall}")
    finally:
        # Joining the workers adds their CPU time (and their ffmpeg runs') to ours.
        await pool.close()
    pool_cpu = cpu_seconds() - cpu_start - serial_cpu
    assert all(abs(d - SECONDS) < 1.0 for d in durations), "a conversion lost audio"
    n = len(files)
    print(
        f"CPU time per file: serial {1000 * serial_cpu / n:.0f} ms,"
        f" pool {1000 * pool_cpu / n:.0f} ms (workers at niceness {pool.niceness});"
        f" CPUs kept busy on average: serial {serial_cpu / spent['serial']:.2f},"
        f" pool {pool_cpu / spent['pool']:.2f} of {os.cpu_count()}"
    )
    return {"serial_s": spent["serial"], "pool_s": spent["pool"], "stall_s": worst[0]}


def main() -> None:
    settings = load_settings(ROOT / "config.yaml" if (ROOT / "config.yaml").exists() else None)
    cfg = settings.recordings
    ffmpeg = find_ffmpeg()
    if ffmpeg is None:
        sys.exit("bench/recordings.py needs ffmpeg (apt-get install ffmpeg)")
    print(f"cpus: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}, ffmpeg: {ffmpeg}")
    print(f"config: format={cfg.format} bitrate={cfg.bitrate} workers={cfg.workers}")
    with tempfile.TemporaryDirectory(prefix="cc-bench-rec-") as tmp:
        root = Path(tmp)
        (root / "spool").mkdir()
        t = time.perf_counter()
        files = generate(root / "spool")
        print(
            f"generated {len(files)} x {SECONDS} s {RATE} Hz mono WAV"
            f" ({files[0].stat().st_size // 1024} KiB each) in {time.perf_counter() - t:.1f} s"
        )
        figures = asyncio.run(run(files, root, cfg, ffmpeg))
        outputs = sorted((root / "pool").iterdir())
        print(
            f"outputs: {len(outputs)} {cfg.format} files,"
            f" {sum(p.stat().st_size for p in outputs) // len(outputs) // 1024} KiB each"
        )
    serial_fps = len(files) / figures["serial_s"]
    pool_fps = len(files) / figures["pool_s"]
    print(
        f"serial (one by one, in this process): {serial_fps:.2f} files/s,"
        f" {1000 * figures['serial_s'] / len(files):.0f} ms per file"
        " (what each conversion would block an event loop for)"
    )
    print(f"pool ({cfg.workers} worker processes): {pool_fps:.2f} files/s")
    print(f"speed-up over serial: {pool_fps / serial_fps:.2f}x (goal >= 1.6x)")
    print(
        f"worst event-loop stall while the pool ran: {1000 * figures['stall_s']:.2f} ms"
        " (goal < 10 ms)"
    )
    print(
        json.dumps(
            {
                "files_per_s": round(pool_fps, 2),
                "serial_files_per_s": round(serial_fps, 2),
                "max_loop_stall_ms": round(1000 * figures["stall_s"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
