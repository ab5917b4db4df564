"""An asyncio-friendly pool of conversion worker processes.

Decoding, encoding and hashing run in ``concurrent.futures.ProcessPoolExecutor`` workers, so the
event loop only awaits futures: it stays responsive while the CPU is busy (see
``bench/recordings.py``). Workers are started with ``spawn``, not ``fork`` (a forked copy of a
process with an event loop and threads can inherit locks those threads held), so the program's
``__main__`` must be import-safe; :meth:`ConverterPool.start` warms them up so the first
recording does not pay for the start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from recordings.convert import (
    ConversionResult,
    ConvertOptions,
    Format,
    convert_recording,
    find_ffmpeg,
    inspect_recording,
)
from recordings.errors import ConverterCrashed, ConverterUnavailable

log = logging.getLogger(__name__)


class _Auto:
    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
"""``ffmpeg=AUTO``: look ffmpeg up on PATH when the pool is built."""


def _ready() -> bool:
    return True


def _warm_up(executor: ProcessPoolExecutor, workers: int) -> None:
    # With spawn, the executor starts a process inside submit() when no worker is idle, in the
    # calling thread: submitting from here keeps those milliseconds of fork/exec and pickling
    # off the event loop. Starting a worker takes far longer than these submits, so each starts one.
    for future in [executor.submit(_ready) for _ in range(workers)]:
        future.result()


def _init_worker(niceness: int) -> None:
    # The server stops its workers itself (close()); a stop signal sent to the whole process
    # group (Ctrl-C in a terminal, systemd's stop) must not kill them under a conversion first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Conversion is background work: below the event loop in CPU priority, so a busy pool
    # does not delay the loop's wake-ups. ffmpeg, run by the worker, inherits it. On Linux the
    # workers also take the SCHED_IDLE policy: they run only on CPU time nothing else wants, so
    # the server preempts them at once instead of sharing a time slice by nice weights (with
    # as many workers as cores, nice alone left the loop waking up 3-10 ms late several times
    # a second; SCHED_IDLE: about once in 5 s, at the machine's own jitter).
    if niceness > 0:
        os.nice(niceness)
        if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
            with contextlib.suppress(OSError):
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


class ConverterPool:
    """Converts recordings in ``workers`` processes.

    ``ffmpeg`` is the executable's path, ``None`` to run without one, or :data:`AUTO` (look it up
    on PATH). Without ffmpeg the pool keeps PCM WAV files (``convert`` returns the verified
    source with ``converted=False``); it says so once in the log and in :meth:`provide_status`.

    Workers run ``niceness`` steps below this process (0: same priority), so conversions
    yield the CPU to the event loop.

    Use as ``async with ConverterPool(...) as pool:`` or call :meth:`start` and :meth:`close`
    (one ``cleanup_ctx`` entry in the composition root).
    """

    def __init__(
        self,
        *,
        workers: int = 2,
        format: Format = "mp3",
        bitrate: str = "32k",
        ffmpeg: str | _Auto | None = AUTO,
        tolerance_s: float = 1.0,
        timeout_s: float = 600.0,
        mp_context: str = "spawn",
        niceness: int = 10,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        resolved = find_ffmpeg() if isinstance(ffmpeg, _Auto) else ffmpeg
        self.workers = workers
        self.options = ConvertOptions(
            format=format,
            bitrate=bitrate,
            ffmpeg=resolved,
            tolerance_s=tolerance_s,
            timeout_s=timeout_s,
        )
        self._mp_context = mp_context
        self.niceness = niceness
        self._executor: ProcessPoolExecutor | None = None
        self._warm = False
        self._start_lock = asyncio.Lock()
        # Jobs handed to the executor at once: enough to keep every worker busy; the rest wait
        # here. Submitting is work on the event loop's thread (pickling, queue and pipe
        # writes): a backlog of 50 recordings handed over in one go stalled the loop ~15 ms.
        self._slots = asyncio.Semaphore(2 * workers)
        self._closed = False
        self._in_flight = 0
        self._done = 0
        self._failed = 0
        if resolved is None and format != "wav":
            log.warning(
                "recordings: ffmpeg not found; recordings are kept as WAV instead of %s", format
            )

    @property
    def converter_available(self) -> bool:
        """Whether ffmpeg is there to convert to the configured format."""
        return self.options.ffmpeg is not None or self.options.format == "wav"

    @property
    def effective_format(self) -> Format:
        """The format recordings are stored in: the configured one, or ``wav`` without ffmpeg."""
        return self.options.format if self.converter_available else "wav"

    async def start(self) -> None:
        """Start the worker processes and wait until each has imported the converter.

        All of it runs in a thread: building the executor starts multiprocessing's resource
        tracker process on first use (a fork/exec holding the GIL, ~10 ms measured on the
        loop's thread), and each worker is spawned in ``submit``. Concurrent callers share one
        start."""
        async with self._start_lock:
            if self._executor is not None and self._warm:
                return
            executor = await asyncio.to_thread(self._ensure_executor)
            try:
                await asyncio.to_thread(_warm_up, executor, self.workers)
            except BrokenProcessPool as exc:
                self._discard(executor)
                raise ConverterUnavailable(
                    f"the conversion workers could not start ({self._mp_context}): {exc}"
                ) from exc
            self._warm = True

    async def convert(self, src: Path, out_dir: Path) -> ConversionResult:
        """Convert ``src`` into ``out_dir`` in a worker process and return the verified result.

        Without ffmpeg, a PCM WAV is verified and kept: returned unconverted
        (``converted=False``, ``path == src``), or as a mono copy with a finalised header.

        Raises the errors of :func:`recordings.convert.convert_recording`, and
        :class:`ConverterCrashed` when a worker died (the pool is rebuilt; retry later).
        """
        options = self.options
        if not self.converter_available:
            # Keep the WAV: pydub alone verifies it (and rewrites it only if it is stereo or
            # its header was never finalised).
            options = dataclasses.replace(options, format="wav")
        return await self._submit(convert_recording, Path(src), Path(out_dir), options)

    async def inspect(self, src: Path) -> ConversionResult:
        """Verify a PCM WAV and describe it, without converting it."""
        return await self._submit(inspect_recording, Path(src))

    def provide_status(self, status: dict[str, Any]) -> None:
        """Add this component's health to the ``/healthz`` document."""
        entry: dict[str, Any] = {
            "status": "ok" if self.converter_available else "degraded",
            "format": self.effective_format,
            "workers": self.workers,
            "in_flight": self._in_flight,
            "converted": self._done,
            "failed": self._failed,
        }
        if not self.converter_available:
            entry["detail"] = (
                f"ffmpeg not found: recordings are kept as WAV instead of {self.options.format}"
            )
        status["recordings_converter"] = entry

    async def close(self, *, cancel_pending: bool = True) -> None:
        """Stop the workers. Conversions already running finish (they only ever write their
        own output files); queued ones are cancelled unless ``cancel_pending`` is false."""
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=cancel_pending)

    async def __aenter__(self) -> ConverterPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _ensure_executor(self) -> ProcessPoolExecutor:
        if self._closed:
            raise ConverterUnavailable("the converter pool is closed")
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context(self._mp_context),
                initializer=_init_worker,
                initargs=(self.niceness,),
            )
        return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        # A broken pool refuses every later job; drop it so the next call builds a new one.
        if self._executor is executor:
            self._executor = None
            self._warm = False
        executor.shutdown(wait=False, cancel_futures=True)

    async def _submit(self, fn: Any, *args: Any) -> ConversionResult:
        loop = asyncio.get_running_loop()
        self._in_flight += 1
        try:
            async with self._slots:
                if self._executor is None or not self._warm:
                    # First use, or the pool was dropped after a crash: spawn off the loop.
                    await self.start()
                executor = self._ensure_executor()
                result: ConversionResult = await loop.run_in_executor(executor, fn, *args)
        except BrokenProcessPool as exc:
            self._failed += 1
            self._discard(executor)
            log.error("recordings: a conversion worker died converting %s", args[0])
            raise ConverterCrashed(
                f"a conversion worker died while converting {args[0]}",
                details={"file": str(args[0])},
            ) from exc
        except Exception:
            self._failed += 1
            raise
        finally:
            self._in_flight -= 1
        self._done += 1
        return result
