"""Intake: finding MixMonitor files, waiting for them, the job state machine and its schedule,
the processor end to end (real files, real ffmpeg, real filesystem), and pushed uploads."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypedDict, Unpack

import pytest

from recordings.convert import find_ffmpeg
from recordings.errors import (
    CorruptAudio,
    InvalidRecordingName,
    InvalidTransition,
    RecordingIncomplete,
    RecordingMissing,
    StorageUnavailable,
    UploadTooLarge,
)
from recordings.intake import (
    JobState,
    RecordingJob,
    RecordingProcessor,
    RetryPolicy,
    backoff_delay,
    find_recording,
    next_look_at,
    receive_upload,
    recording_basename,
    spool_candidates,
    wait_until_complete,
)
from recordings.pool import ConverterPool
from recordings.storage import LocalStorage
from tests.recordings import FIXTURE_CALL_ID, FIXTURE_WAV, listing, wav_bytes, write_wav

FFMPEG = find_ffmpeg()
needs_ffmpeg = pytest.mark.usefixtures("require_ffmpeg")
AMI_PATH = f"/var/spool/asterisk/monitor/{FIXTURE_WAV.name}"
ENDED = datetime(2026, 11, 26, 19, 55, 42, tzinfo=UTC)


class Clock:
    """Simulated time for the schedule."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


# ------------------------------------------------------------------ finding the file


def test_the_ami_path_is_mapped_into_the_spool_by_basename(tmp_path: Path) -> None:
    assert recording_basename(AMI_PATH) == FIXTURE_WAV.name
    assert recording_basename(r"C:\monitor\x-1.5.wav") == "x-1.5.wav"
    assert spool_candidates(tmp_path, AMI_PATH) == [
        tmp_path / FIXTURE_WAV.name,
        tmp_path / FIXTURE_WAV.name.replace(".wav", ".WAV"),
        tmp_path / FIXTURE_WAV.name.replace(".wav", ".wav49"),
        tmp_path / FIXTURE_WAV.name.replace(".wav", ".gsm"),
    ]
    # The queue's MONITOR_FILENAME has no extension.
    assert [p.name for p in spool_candidates(tmp_path, "/var/spool/q-1.5")] == [
        "q-1.5",
        "q-1.5.wav",
        "q-1.5.WAV",
        "q-1.5.wav49",
        "q-1.5.gsm",
    ]


@pytest.mark.parametrize("name", ["", "/var/spool/", "..", ".hidden.wav", "a b.wav", "x;rm.wav"])
def test_odd_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidRecordingName):
        recording_basename(name)


def test_find_recording_tries_the_variants(tmp_path: Path) -> None:
    assert find_recording(tmp_path, AMI_PATH) is None
    wav49 = tmp_path / FIXTURE_WAV.name.replace(".wav", ".WAV")
    wav49.write_bytes(b"RIFF")
    (tmp_path / FIXTURE_WAV.name).mkdir()  # a directory is not a recording
    assert find_recording(tmp_path, AMI_PATH) == wav49


async def test_waits_until_the_file_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "growing.wav"
    path.write_bytes(wav_bytes(0.0))

    async def asterisk_writes() -> int:
        for _ in range(15):
            await asyncio.sleep(0.02)
            with path.open("ab") as f:
                f.write(b"\x00" * 320)
        return path.stat().st_size

    writer = asyncio.create_task(asterisk_writes())
    size = await wait_until_complete(path, poll_interval_s=0.05, stable_polls=3, timeout_s=5)
    assert writer.done()
    assert size == await writer == 44 + 15 * 320


async def test_a_file_that_keeps_growing_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "endless.wav"
    path.write_bytes(b"")
    stop = asyncio.Event()

    async def grow() -> None:
        while not stop.is_set():
            with path.open("ab") as f:
                f.write(b"\x00" * 10)
            await asyncio.sleep(0.01)

    writer = asyncio.create_task(grow())
    try:
        with pytest.raises(RecordingIncomplete, match=r"endless\.wav was still being written"):
            await wait_until_complete(path, poll_interval_s=0.03, stable_polls=3, timeout_s=0.3)
    finally:
        stop.set()
        await writer


async def test_a_file_that_disappears_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "gone.wav"
    path.write_bytes(b"x")

    async def remove() -> None:
        await asyncio.sleep(0.05)
        path.unlink()

    remover = asyncio.create_task(remove())
    with pytest.raises(RecordingMissing):
        await wait_until_complete(path, poll_interval_s=0.03, stable_polls=10, timeout_s=5)
    await remover


# ------------------------------------------------------------------ the schedule (pure)


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, first_s=5, factor=2, max_s=60) for n in range(1, 7)]
    assert delays == [5, 10, 20, 40, 60, 60]
    with pytest.raises(ValueError):
        backoff_delay(0, first_s=5, factor=2, max_s=60)


def test_the_last_look_is_at_the_deadline() -> None:
    policy = RetryPolicy(wait_minutes=1, first_delay_s=5, factor=2, max_delay_s=20)
    assert next_look_at(1, ENDED, ENDED, policy) == ENDED + timedelta(seconds=5)
    assert next_look_at(4, ENDED + timedelta(seconds=55), ENDED, policy) == ENDED + timedelta(
        seconds=60
    )
    assert next_look_at(5, ENDED + timedelta(seconds=60), ENDED, policy) is None


def test_job_transitions_and_persistence() -> None:
    policy = RetryPolicy()
    job = RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED)
    assert (job.state, job.filename, job.attempts) == (JobState.PENDING, FIXTURE_WAV.name, 0)
    assert job.is_due(ENDED) and not job.is_due(ENDED - timedelta(seconds=1))

    converting = job.start(ENDED, Path("/spool/x.wav"))
    assert (converting.state, converting.attempts) == (JobState.CONVERTING, 1)
    down = StorageUnavailable("disk full")
    retry = converting.retry_later(ENDED, policy, down)
    assert retry.state is JobState.PENDING
    assert retry.next_attempt_at == ENDED + timedelta(seconds=5)
    assert (retry.error_id, retry.error) == ("recording-storage-unavailable", "disk full")
    again = retry.start(ENDED, Path("/spool/x.wav")).retry_later(ENDED, policy, down)
    assert again.next_attempt_at == ENDED + timedelta(seconds=10)

    done = again.start(ENDED, Path("/spool/x.wav")).stored(ENDED, "2026/11/26/k.mp3")
    assert (done.state, done.storage_key, done.error_id, done.terminal) == (
        JobState.STORED,
        "2026/11/26/k.mp3",
        None,
        True,
    )
    with pytest.raises(InvalidTransition):
        done.start(ENDED, Path("/x"))
    with pytest.raises(InvalidTransition):
        job.stored(ENDED, "k")
    assert converting.recover(ENDED).state is JobState.PENDING
    failed = converting.fail(ENDED, CorruptAudio("bad"))
    assert (failed.state, failed.error_id) == (JobState.FAILED, "recording-corrupt-audio")

    for value in (job, retry, done, failed):
        assert RecordingJob.from_dict(json.loads(json.dumps(value.to_dict()))) == value


# ------------------------------------------------------------------ the processor


class ProcessorOptions(TypedDict, total=False):
    """What a test may set on the processor beyond the folders and timings."""

    policy: RetryPolicy
    keep_original: bool
    clock: Callable[[], datetime]
    on_transition: Callable[[RecordingJob], Awaitable[None]]


def make_processor(
    tmp_path: Path,
    converter: ConverterPool,
    *,
    storage: LocalStorage | None = None,
    **kw: Unpack[ProcessorOptions],
) -> RecordingProcessor:
    return RecordingProcessor(
        spool_dir=tmp_path / "spool",
        work_dir=tmp_path / "work",
        converter=converter,
        storage=storage or LocalStorage(tmp_path / "store"),
        poll_interval_s=0.01,
        stable_polls=2,
        complete_timeout_s=2,
        **kw,
    )


def put_fixture_in_spool(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir(exist_ok=True)
    return Path(shutil.copy(FIXTURE_WAV, spool / FIXTURE_WAV.name))


@needs_ffmpeg
async def test_a_finished_call_is_converted_stored_and_its_source_removed(tmp_path: Path) -> None:
    source = put_fixture_in_spool(tmp_path)
    seen: list[RecordingJob] = []

    async def persist(job: RecordingJob) -> None:
        seen.append(job)

    async with ConverterPool(workers=1, format="mp3", ffmpeg=FFMPEG) as pool:
        processor = make_processor(tmp_path, pool, on_transition=persist)
        outcome = await processor.step(RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED))

    assert [j.state for j in seen] == [JobState.CONVERTING]
    assert outcome.job.state is JobState.STORED
    stored = outcome.stored
    assert stored is not None
    assert (stored.call_id, stored.format, stored.source_name) == (
        FIXTURE_CALL_ID,
        "mp3",
        FIXTURE_WAV.name,
    )
    assert abs(stored.duration_s - 20.2) < 0.05
    assert outcome.job.storage_key == stored.key
    assert listing(tmp_path / "store") == [stored.key]
    assert (tmp_path / "store" / stored.key).stat().st_size == stored.size
    assert stored.source_deleted and not source.exists()
    assert listing(tmp_path / "work") == []


@needs_ffmpeg
async def test_keep_original_keeps_the_source(tmp_path: Path) -> None:
    source = put_fixture_in_spool(tmp_path)
    async with ConverterPool(workers=1, format="ogg", ffmpeg=FFMPEG) as pool:
        processor = make_processor(tmp_path, pool, keep_original=True)
        outcome = await processor.step(RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED))
    assert outcome.stored is not None and outcome.stored.format == "ogg"
    assert not outcome.stored.source_deleted and source.exists()


async def test_a_file_that_never_comes_is_looked_for_with_backoff_then_missing(
    tmp_path: Path,
) -> None:
    clock = Clock(ENDED)
    policy = RetryPolicy(wait_minutes=1, first_delay_s=5, factor=2, max_delay_s=20)
    async with ConverterPool(workers=1, ffmpeg=FFMPEG) as pool:
        processor = make_processor(tmp_path, pool, policy=policy, clock=clock)
        job = RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED)
        delays: list[float] = []
        while not job.terminal:
            outcome = await processor.step(job)
            job = outcome.job
            if job.next_attempt_at is not None:
                delays.append((job.next_attempt_at - clock.now).total_seconds())
                clock.now = job.next_attempt_at

    assert delays == [5, 10, 20, 20, 5]
    assert clock.now == ENDED + timedelta(minutes=1)
    assert (job.state, job.attempts, job.error_id) == (JobState.MISSING, 6, "recording-missing")
    assert listing(tmp_path / "store") == []


@needs_ffmpeg
@pytest.mark.parametrize("appears", [True, False], ids=["late-file", "no-file"])
async def test_in_real_time_a_late_file_is_stored_and_an_absent_one_missing(
    tmp_path: Path, appears: bool
) -> None:
    """On the real clock: a file that Asterisk finishes after the first look is stored on a
    later attempt; one that never comes is given up once ``wait_minutes`` have passed."""
    policy = RetryPolicy(wait_minutes=0.015, first_delay_s=0.05, factor=2, max_delay_s=0.2)
    ended = datetime.now(UTC)
    (tmp_path / "spool").mkdir()
    async with ConverterPool(workers=1, ffmpeg=FFMPEG) as pool:
        processor = make_processor(tmp_path, pool, policy=policy)
        job = RecordingJob.new("1795722999.7", "late-1795722999.7.wav", ended)
        while not job.terminal:
            assert job.next_attempt_at is not None
            wait = (job.next_attempt_at - datetime.now(UTC)).total_seconds()
            await asyncio.sleep(max(0.0, wait))
            job = (await processor.step(job)).job
            if appears and job.attempts == 1:  # the first look found nothing; now it is there
                await asyncio.to_thread(
                    write_wav, tmp_path / "spool" / "late-1795722999.7.wav", 1.0
                )

    if appears:
        assert job.state is JobState.STORED and job.attempts > 1
    else:
        assert job.state is JobState.MISSING and job.attempts > 1
        assert datetime.now(UTC) - ended >= timedelta(minutes=policy.wait_minutes)


@needs_ffmpeg
async def test_corrupt_audio_fails_and_keeps_the_source(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    source = spool / FIXTURE_WAV.name
    source.write_bytes(FIXTURE_WAV.read_bytes()[:100_000])
    async with ConverterPool(workers=1, ffmpeg=FFMPEG) as pool:
        outcome = await make_processor(tmp_path, pool).step(
            RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED)
        )
    assert (outcome.job.state, outcome.job.error_id) == (JobState.FAILED, "recording-corrupt-audio")
    assert outcome.stored is None
    assert "truncated" in (outcome.job.error or "")
    assert source.stat().st_size == 100_000
    assert listing(tmp_path / "store") == [] and listing(tmp_path / "work") == []


@needs_ffmpeg
async def test_storage_down_keeps_everything_and_retries_later(tmp_path: Path) -> None:
    source = put_fixture_in_spool(tmp_path)
    broken_root = tmp_path / "store"
    broken_root.write_bytes(b"a mount point that is not there")
    clock = Clock(datetime.now(UTC))
    async with ConverterPool(workers=1, ffmpeg=FFMPEG) as pool:
        processor = make_processor(tmp_path, pool, storage=LocalStorage(broken_root), clock=clock)
        outcome = await processor.step(RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED))
        job = outcome.job
        assert (job.state, job.error_id) == (JobState.PENDING, "recording-storage-unavailable")
        assert job.next_attempt_at == clock.now + timedelta(seconds=5)
        assert outcome.stored is None
        assert source.read_bytes() == FIXTURE_WAV.read_bytes()
        assert listing(tmp_path / "work") == []

        # The storage is back (a new root here); the same job goes through.
        clock.now = job.next_attempt_at
        healthy = make_processor(
            tmp_path, pool, storage=LocalStorage(tmp_path / "store2"), clock=clock
        )
        outcome = await healthy.step(job)
    assert outcome.job.state is JobState.STORED and outcome.job.attempts == 2
    assert not source.exists()


async def test_a_file_still_growing_at_the_deadline_fails(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    path = spool / "rec-1.5.wav"
    path.write_bytes(b"")
    stop = asyncio.Event()

    async def grow() -> None:
        while not stop.is_set():
            with path.open("ab") as f:
                f.write(b"\x00" * 10)
            await asyncio.sleep(0.005)

    clock = Clock(ENDED)
    policy = RetryPolicy(wait_minutes=1, first_delay_s=30, max_delay_s=30)
    writer = asyncio.create_task(grow())
    try:
        async with ConverterPool(workers=1, ffmpeg=FFMPEG) as pool:
            processor = make_processor(tmp_path, pool, policy=policy, clock=clock)
            processor.complete_timeout_s = 0.1
            job = (await processor.step(RecordingJob.new("1.5", "rec-1.5.wav", ENDED))).job
            assert (job.state, job.error_id) == (JobState.PENDING, "recording-incomplete")
            clock.now = ENDED + timedelta(minutes=1)
            job = (await processor.step(job)).job
    finally:
        stop.set()
        await writer
    assert (job.state, job.error_id) == (JobState.FAILED, "recording-incomplete")
    assert path.exists()


async def test_without_ffmpeg_the_wav_itself_is_stored(tmp_path: Path) -> None:
    source = put_fixture_in_spool(tmp_path)
    async with ConverterPool(workers=1, format="mp3", ffmpeg=None) as pool:
        outcome = await make_processor(tmp_path, pool).step(
            RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED)
        )
    assert outcome.stored is not None and outcome.stored.format == "wav"
    assert outcome.stored.key.endswith(".wav")
    assert (tmp_path / "store" / outcome.stored.key).read_bytes() == FIXTURE_WAV.read_bytes()
    assert not source.exists()


async def test_a_job_left_converting_by_a_crash_is_resumed(tmp_path: Path) -> None:
    put_fixture_in_spool(tmp_path)
    job = RecordingJob.new(FIXTURE_CALL_ID, AMI_PATH, ENDED).start(ENDED, Path("/x"))
    async with ConverterPool(workers=1, format="wav", ffmpeg=None) as pool:
        processor = make_processor(tmp_path, pool)
        outcome = await processor.step(job)
        assert outcome.job.state is JobState.STORED and outcome.job.attempts == 2
        with pytest.raises(InvalidTransition):
            await processor.step(outcome.job)


# ------------------------------------------------------------------ pushed uploads


async def chunks_of(data: bytes, size: int = 10_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        await asyncio.sleep(0)
        yield data[i : i + size]


async def test_an_upload_lands_atomically_and_a_retry_replaces_it(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    data = FIXTURE_WAV.read_bytes()
    first = await receive_upload(chunks_of(data[:1000]), spool, FIXTURE_WAV.name, FIXTURE_CALL_ID)
    second = await receive_upload(chunks_of(data), spool, FIXTURE_WAV.name, FIXTURE_CALL_ID)
    assert first.path == second.path == spool / FIXTURE_WAV.name
    assert second.size == len(data) and second.path.read_bytes() == data
    assert first.sha256 != second.sha256
    assert listing(spool) == [FIXTURE_WAV.name]


async def test_an_upload_cannot_escape_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    up = await receive_upload(chunks_of(b"RIFF"), spool, "../../x-1.5.wav", "1.5")
    assert up.path == spool / "x-1.5.wav"
    with pytest.raises(InvalidRecordingName, match="not a recording of call"):
        await receive_upload(chunks_of(b"RIFF"), spool, "x-2.5.wav", "1.5")
    with pytest.raises(InvalidRecordingName, match="not a MixMonitor file"):
        await receive_upload(chunks_of(b"RIFF"), spool, "x-1.5.sh", "1.5")


async def test_a_too_large_or_interrupted_upload_leaves_nothing(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with pytest.raises(UploadTooLarge):
        await receive_upload(chunks_of(b"x" * 50_000), spool, "x-1.5.wav", "1.5", max_bytes=20_000)
    assert listing(spool) == []

    started = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"RIFF" * 1000
        started.set()
        await asyncio.Event().wait()
        yield b""

    upload = asyncio.create_task(receive_upload(stalls(), spool, "x-1.5.wav", "1.5"))
    await started.wait()
    await asyncio.sleep(0.05)
    upload.cancel()
    with pytest.raises(asyncio.CancelledError):
        await upload
    assert listing(spool) == []
