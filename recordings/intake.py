"""Intake of MixMonitor files: find a call's file in the spool, wait until Asterisk has finished
writing it, convert, store, and account for every outcome in a :class:`RecordingJob`.

The job is a frozen value with pure transitions (``pending → converting → stored | missing |
failed``) and a retry schedule computed from the clock it is given, so the composition root can
persist it as it is and run :meth:`RecordingProcessor.step` for due jobs from its scheduler.
Nothing here deletes a source before a verified copy is stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from recordings.convert import ConversionResult
from recordings.errors import (
    InvalidRecordingName,
    InvalidTransition,
    RecordingError,
    RecordingIncomplete,
    RecordingMissing,
    StorageUnavailable,
    UploadTooLarge,
)
from recordings.storage import Storage

log = logging.getLogger(__name__)

# Extensions Asterisk gives MixMonitor files: wav (slin), WAV and wav49 (GSM in RIFF), gsm.
SPOOL_EXTENSIONS = (".wav", ".WAV", ".wav49", ".gsm")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ finding the file


def recording_basename(mixmonitor_filename: str) -> str:
    """The file name of a MixMonitor recording as AMI reports it.

    AMI gives a full path on the PBX (``/var/spool/asterisk/monitor/NAME.wav``, or without an
    extension in ``MONITOR_FILENAME``); only the last component matters, since ``spool_dir`` is
    where this server sees that folder. Raises :class:`InvalidRecordingName` for names that are
    empty, hidden or carry anything but letters, digits and ``._+-``.
    """
    value = mixmonitor_filename.strip()
    name = PurePosixPath(PureWindowsPath(value).as_posix()).name
    if value.endswith(("/", "\\")) or not _NAME.match(name):
        raise InvalidRecordingName(
            f"not a recording file name: {mixmonitor_filename!r}",
            details={"filename": mixmonitor_filename},
        )
    return name


def spool_candidates(spool_dir: Path, mixmonitor_filename: str) -> list[Path]:
    """Paths to look at in ``spool_dir``: the name as given, then its stem with each of
    :data:`SPOOL_EXTENSIONS` (the format in AMI and on disk can differ: ``wav49`` writes
    ``.WAV``)."""
    name = recording_basename(mixmonitor_filename)
    stem = name
    for ext in SPOOL_EXTENSIONS:
        if name.endswith(ext):
            stem = name[: -len(ext)]
            break
    names = [name, *(stem + ext for ext in SPOOL_EXTENSIONS)]
    return [Path(spool_dir) / n for n in dict.fromkeys(names)]


def find_recording(spool_dir: Path, mixmonitor_filename: str) -> Path | None:
    """The first candidate that is a regular file, or ``None``. Blocking (``stat`` calls)."""
    for path in spool_candidates(spool_dir, mixmonitor_filename):
        try:
            if path.is_file():
                return path
        except OSError:
            continue
    return None


EMPTY_WAV_BYTES = 44
"""A WAV file of this size or less is its header and no sound: what ``MixMonitor(…,b)`` leaves
for a call that was never bridged (nobody answered)."""


def sweep_empty_recordings(spool_dir: Path, *, now: float, older_than_s: float) -> list[str]:
    """Delete the sound-less WAVs of ``spool_dir`` untouched for ``older_than_s`` (a call
    nobody answered: the server never attaches them, since an unanswered call has no
    recording); their names. A live call's file grows once bridged, so an old empty one is
    never a call in progress. Blocking (a directory listing)."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(spool_dir))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.endswith((".wav", ".WAV")):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        stale = info.st_size <= EMPTY_WAV_BYTES and now - info.st_mtime > older_than_s
        if stale and _unlink_quietly(Path(entry.path)):
            removed.append(entry.name)
    return sorted(removed)


def find_call_recording(spool_dir: Path, call_id: str) -> str | None:
    """The name of the MixMonitor file in ``spool_dir`` whose name carries ``call_id`` (the
    Linkedid, as the guide's MONITOR_FILENAME does), for a call the AMI link never told about;
    the largest when there are several. Blocking (a directory listing)."""
    best: tuple[int, str] | None = None
    try:
        entries = list(os.scandir(spool_dir))
    except OSError:
        return None
    for entry in entries:
        name = entry.name
        if not name.endswith(SPOOL_EXTENSIONS) or not _names_call(name, call_id):
            continue
        try:
            size = entry.stat().st_size if entry.is_file() else -1
        except OSError:
            continue
        if size >= 0 and (best is None or size > best[0]):
            best = (size, name)
    return best[1] if best else None


async def wait_until_complete(
    path: Path,
    *,
    poll_interval_s: float = 0.5,
    stable_polls: int = 3,
    timeout_s: float = 60.0,
) -> int:
    """Wait until ``path`` has stopped changing and return its size.

    Complete means ``stable_polls`` consecutive observations, ``poll_interval_s`` apart, with
    the same size and modification time. Asterisk writes the WAV header when it closes the
    file, so the last change is the close. Raises :class:`RecordingIncomplete` when the file is
    still changing after ``timeout_s``, :class:`RecordingMissing` when it disappears.
    """
    if stable_polls < 2:
        raise ValueError(f"stable_polls must be at least 2, got {stable_polls}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: tuple[int, int] | None = None
    same = 0
    while True:
        try:
            # stat can block for long on a shared mount (NFS), so not on the loop.
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            raise RecordingMissing(
                f"recording {path.name} disappeared while waiting for it",
                details={"file": path.name},
            ) from None
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot stat recording {path.name}: {exc.strerror}",
                details={"file": path.name, "errno": exc.errno},
            ) from exc
        seen = (st.st_size, st.st_mtime_ns)
        same = same + 1 if seen == last else 1
        last = seen
        if same >= stable_polls:
            return st.st_size
        if loop.time() + poll_interval_s > deadline:
            raise RecordingIncomplete(
                f"recording {path.name} was still being written after {timeout_s} s"
                f" ({st.st_size} bytes)",
                details={"file": path.name, "size": st.st_size},
            )
        await asyncio.sleep(poll_interval_s)


# ------------------------------------------------------------------ the job and its schedule


class JobState(enum.StrEnum):
    """Where a recording job stands."""

    PENDING = "pending"
    CONVERTING = "converting"
    STORED = "stored"
    MISSING = "missing"
    FAILED = "failed"


TERMINAL_STATES = frozenset({JobState.STORED, JobState.MISSING, JobState.FAILED})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to look again.

    A file that is not there (or still growing) is looked for again after ``first_delay_s``,
    then ``factor`` times longer each time, at most ``max_delay_s``, until ``wait_minutes``
    after the call ended (``recordings.wait_minutes``); then the job is ``missing``. A transient
    failure (storage down, disk full, converter crashed) is retried with the same growth up to
    ``transient_max_delay_s`` apart, without a deadline: the source stays in the spool.
    """

    wait_minutes: float = 10.0
    first_delay_s: float = 5.0
    factor: float = 2.0
    max_delay_s: float = 60.0
    transient_max_delay_s: float = 900.0


def backoff_delay(attempt: int, *, first_s: float, factor: float, max_s: float) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt (1-based): ``first_s``,
    ``first_s * factor``, … capped at ``max_s``."""
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    return float(min(max_s, first_s * factor ** (attempt - 1)))


def next_look_at(
    attempt: int, now: datetime, ended_at: datetime, policy: RetryPolicy
) -> datetime | None:
    """When to look for a file again after ``attempt`` looks found none, or ``None`` when the
    wait is over. The last look is made at the deadline itself."""
    deadline = ended_at + timedelta(minutes=policy.wait_minutes)
    if now >= deadline:
        return None
    delay = backoff_delay(
        attempt, first_s=policy.first_delay_s, factor=policy.factor, max_s=policy.max_delay_s
    )
    return min(now + timedelta(seconds=delay), deadline)


@dataclass(frozen=True, slots=True)
class RecordingJob:
    """The state of one call's recording, as a value to persist.

    ``attempts`` counts the times the job looked for its file or started converting it;
    ``next_attempt_at`` is when a pending job is due. ``error_id``/``error`` describe the last
    failure. Transitions return a new job and raise :class:`InvalidTransition` from a state
    they do not start from.
    """

    call_id: str
    filename: str
    ended_at: datetime
    state: JobState = JobState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    source_path: str | None = None
    storage_key: str | None = None
    error_id: str | None = None
    error: str | None = None
    updated_at: datetime | None = None

    @classmethod
    def new(cls, call_id: str, mixmonitor_filename: str, ended_at: datetime) -> RecordingJob:
        """A pending job for the file AMI named, due at once."""
        return cls(
            call_id=call_id,
            filename=recording_basename(mixmonitor_filename),
            ended_at=ended_at,
            next_attempt_at=ended_at,
            updated_at=ended_at,
        )

    @property
    def terminal(self) -> bool:
        """Stored, missing or failed: nothing more will happen."""
        return self.state in TERMINAL_STATES

    def is_due(self, now: datetime) -> bool:
        """Whether a pending job should be stepped now."""
        return self.state is JobState.PENDING and (
            self.next_attempt_at is None or self.next_attempt_at <= now
        )

    def not_there(self, now: datetime, policy: RetryPolicy, error: RecordingError) -> RecordingJob:
        """The file is absent (or still growing): look again later, or give up at the deadline
        as ``missing`` (no file) or ``failed`` (a file that never stopped growing)."""
        self._expect(JobState.PENDING, JobState.CONVERTING)
        attempts = self.attempts + 1
        when = next_look_at(attempts, now, self.ended_at, policy)
        if when is None:
            final = JobState.MISSING if isinstance(error, RecordingMissing) else JobState.FAILED
            return self._to(final, now, attempts=attempts, next_attempt_at=None, error=error)
        return self._to(JobState.PENDING, now, attempts=attempts, next_attempt_at=when, error=error)

    def start(self, now: datetime, source: Path) -> RecordingJob:
        """The file is complete; conversion begins."""
        self._expect(JobState.PENDING)
        return self._to(
            JobState.CONVERTING,
            now,
            attempts=self.attempts + 1,
            next_attempt_at=None,
            source_path=str(source),
        )

    def retry_later(
        self, now: datetime, policy: RetryPolicy, error: RecordingError
    ) -> RecordingJob:
        """A transient failure: back to pending, due after a growing delay."""
        self._expect(JobState.PENDING, JobState.CONVERTING)
        delay = backoff_delay(
            max(1, self.attempts),
            first_s=policy.first_delay_s,
            factor=policy.factor,
            max_s=policy.transient_max_delay_s,
        )
        return self._to(
            JobState.PENDING, now, next_attempt_at=now + timedelta(seconds=delay), error=error
        )

    def fail(self, now: datetime, error: RecordingError) -> RecordingJob:
        """A permanent failure (corrupt audio, conversion that does not verify)."""
        self._expect(JobState.PENDING, JobState.CONVERTING)
        return self._to(JobState.FAILED, now, next_attempt_at=None, error=error)

    def stored(self, now: datetime, key: str) -> RecordingJob:
        """A verified copy is stored under ``key``."""
        self._expect(JobState.CONVERTING)
        return dataclasses.replace(
            self,
            state=JobState.STORED,
            storage_key=key,
            next_attempt_at=None,
            error_id=None,
            error=None,
            updated_at=now,
        )

    def recover(self, now: datetime) -> RecordingJob:
        """After a restart: a job left ``converting`` is pending again, due now."""
        self._expect(JobState.CONVERTING)
        return dataclasses.replace(
            self, state=JobState.PENDING, next_attempt_at=now, updated_at=now
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO 8601 times)."""
        data = dataclasses.asdict(self)
        data["state"] = self.state.value
        for name in ("ended_at", "next_attempt_at", "updated_at"):
            value = data[name]
            data[name] = value.isoformat() if value is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecordingJob:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["state"] = JobState(values["state"])
        for name in ("ended_at", "next_attempt_at", "updated_at"):
            value = values.get(name)
            values[name] = datetime.fromisoformat(value) if isinstance(value, str) else value
        return cls(**values)

    def _expect(self, *states: JobState) -> None:
        if self.state not in states:
            raise InvalidTransition(
                f"recording job of call {self.call_id} is {self.state.value}",
                details={"call_id": self.call_id, "state": self.state.value},
            )

    def _to(
        self,
        state: JobState,
        now: datetime,
        *,
        error: RecordingError | None = None,
        **changes: Any,
    ) -> RecordingJob:
        if error is not None:
            changes["error_id"] = error.error_id
            changes["error"] = error.message
        return dataclasses.replace(self, state=state, updated_at=now, **changes)


# ------------------------------------------------------------------ processing a job


class Converter(Protocol):
    """What the processor needs from :class:`recordings.pool.ConverterPool`."""

    async def convert(self, src: Path, out_dir: Path) -> ConversionResult:
        """Convert and verify ``src`` into ``out_dir``."""
        ...


@dataclass(frozen=True, slots=True)
class StoredRecording:
    """What the metadata row of a stored recording needs."""

    call_id: str
    key: str
    format: str
    duration_s: float
    size: int
    sha256: str
    source_name: str
    source_deleted: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """The job after one step, and the stored recording when the step stored it."""

    job: RecordingJob
    stored: StoredRecording | None = None


class RecordingProcessor:
    """Runs one step of a recording job: find → wait until complete → convert → store →
    delete the source (unless ``keep_original``) → ``stored``.

    Every failure ends in a returned job, never a lost file: absent or growing files are looked
    for again until the wait runs out (``missing``/``failed``), transient errors (storage down,
    disk full, converter crashed) are retried later, corrupt audio and unverifiable conversions
    are ``failed`` with the source kept. ``on_transition`` (optional) is awaited with the job
    when it becomes ``converting``, so the caller can persist that before the long part.
    """

    def __init__(
        self,
        *,
        spool_dir: Path,
        work_dir: Path,
        converter: Converter,
        storage: Storage,
        policy: RetryPolicy | None = None,
        keep_original: bool = False,
        poll_interval_s: float = 0.5,
        stable_polls: int = 3,
        complete_timeout_s: float = 60.0,
        clock: Callable[[], datetime] = _utc_now,
        on_transition: Callable[[RecordingJob], Awaitable[None]] | None = None,
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.work_dir = Path(work_dir)
        self.converter = converter
        self.storage = storage
        self.policy = policy or RetryPolicy()
        self.keep_original = keep_original
        self.poll_interval_s = poll_interval_s
        self.stable_polls = stable_polls
        self.complete_timeout_s = complete_timeout_s
        self._clock = clock
        self._on_transition = on_transition

    async def step(self, job: RecordingJob) -> StepOutcome:
        """Advance ``job`` as far as it goes now and return where it stands."""
        if job.state is JobState.CONVERTING:
            job = job.recover(self._clock())
        if job.state is not JobState.PENDING:
            raise InvalidTransition(
                f"recording job of call {job.call_id} is {job.state.value}, not pending",
                details={"call_id": job.call_id, "state": job.state.value},
            )
        source = await asyncio.to_thread(find_recording, self.spool_dir, job.filename)
        if source is None:
            error = RecordingMissing(
                f"no {job.filename} in the spool directory", details={"file": job.filename}
            )
            return self._waiting(job, error)
        try:
            await wait_until_complete(
                source,
                poll_interval_s=self.poll_interval_s,
                stable_polls=self.stable_polls,
                timeout_s=self.complete_timeout_s,
            )
        except (RecordingMissing, RecordingIncomplete) as exc:
            return self._waiting(job, exc)
        except RecordingError as exc:
            return StepOutcome(self._after_error(job, exc))

        job = job.start(self._clock(), source)
        log.info("recordings: call_id=%s converting %s", job.call_id, source.name)
        if self._on_transition is not None:
            await self._on_transition(job)
        try:
            await self._make_work_dir()
            result = await self.converter.convert(source, self.work_dir)
        except RecordingError as exc:
            return StepOutcome(self._after_error(job, exc))
        try:
            stored = await self.storage.put(result.path, f"recording.{result.format}")
        except RecordingError as exc:
            return StepOutcome(self._after_error(job, exc))
        finally:
            if result.converted:
                await asyncio.to_thread(_unlink_quietly, result.path)

        source_deleted = False
        if not self.keep_original:
            source_deleted = await asyncio.to_thread(_unlink_quietly, source)
            if not source_deleted:
                log.warning(
                    "recordings: call_id=%s stored as %s but could not delete %s",
                    job.call_id,
                    stored.key,
                    source,
                )
        now = self._clock()
        log.info(
            "recordings: call_id=%s stored %s (%s, %.1f s, %d bytes)",
            job.call_id,
            stored.key,
            result.format,
            result.duration_s,
            stored.size,
        )
        return StepOutcome(
            job.stored(now, stored.key),
            StoredRecording(
                call_id=job.call_id,
                key=stored.key,
                format=result.format,
                duration_s=result.duration_s,
                size=stored.size,
                sha256=stored.sha256,
                source_name=source.name,
                source_deleted=source_deleted,
                created_at=now,
            ),
        )

    def _waiting(self, job: RecordingJob, error: RecordingError) -> StepOutcome:
        job = job.not_there(self._clock(), self.policy, error)
        if job.terminal:
            log.warning(
                "recordings: call_id=%s gave up on %s: %s", job.call_id, job.filename, job.error
            )
        else:
            log.info(
                "recordings: call_id=%s %s; next look at %s",
                job.call_id,
                error.message,
                job.next_attempt_at,
            )
        return StepOutcome(job)

    def _after_error(self, job: RecordingJob, error: RecordingError) -> RecordingJob:
        now = self._clock()
        if isinstance(error, RecordingMissing):
            return self._waiting(job, error).job
        if error.transient:
            job = job.retry_later(now, self.policy, error)
            log.warning(
                "recordings: call_id=%s %s; retrying at %s (source kept)",
                job.call_id,
                error.message,
                job.next_attempt_at,
            )
            return job
        log.error("recordings: call_id=%s failed: %s (source kept)", job.call_id, error.message)
        return job.fail(now, error)

    async def _make_work_dir(self) -> None:
        try:
            await asyncio.to_thread(self.work_dir.mkdir, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(
                f"cannot create the work directory (recordings.work_dir): {exc.strerror}",
                details={"errno": exc.errno},
            ) from exc


def _unlink_quietly(path: Path) -> bool:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        return False
    return True


# ------------------------------------------------------------------ files pushed by a PBX


@dataclass(frozen=True, slots=True)
class UploadedRecording:
    """A pushed file, now in the spool under its MixMonitor name."""

    path: Path
    size: int
    sha256: str


def check_upload_name(filename: str, call_id: str) -> str:
    """The spool name for a file a PBX pushes for ``call_id``: a MixMonitor-style basename with
    a known extension that contains the call id (MixMonitor names carry the Linkedid)."""
    name = recording_basename(filename)
    if not name.endswith(SPOOL_EXTENSIONS):
        raise InvalidRecordingName(
            f"{name!r} is not a MixMonitor file ({', '.join(SPOOL_EXTENSIONS)})",
            details={"filename": name},
        )
    if not _names_call(name, call_id):
        raise InvalidRecordingName(
            f"{name!r} is not a recording of call {call_id!r}",
            details={"filename": name, "call_id": call_id},
        )
    return name


def _names_call(name: str, call_id: str) -> bool:
    """Whether the call id is one of the name's parts: a whole ``-``/``_``/``+``-separated
    part of the name without its extension (``…-74950000001-1795722921.5.wav`` names call
    ``1795722921.5``; it does not name ``1``, ``5`` or ``1795722921``)."""
    if not call_id:
        return False
    stem = name
    for ext in SPOOL_EXTENSIONS:
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
            break
    pattern = rf"(?:^|[-_+]){re.escape(call_id)}(?:$|[-_+])"
    return re.search(pattern, stem) is not None


async def receive_upload(
    chunks: AsyncIterable[bytes],
    spool_dir: Path,
    filename: str,
    call_id: str,
    *,
    max_bytes: int = 512 * 1024 * 1024,
) -> UploadedRecording:
    """Write a pushed recording into ``spool_dir`` atomically.

    The bytes go to a temporary file that is fsynced and renamed over ``spool_dir/filename``,
    so a retried upload simply replaces the previous one and a reader never sees half a file;
    an interrupted upload leaves nothing behind. The caller then creates (or re-steps) the
    call's job; comparing ``sha256`` with a stored recording's tells a repeat from new audio.
    Raises :class:`InvalidRecordingName`, :class:`UploadTooLarge`, :class:`StorageUnavailable`.
    """
    name = check_upload_name(filename, call_id)
    spool_dir = Path(spool_dir)
    tmp = spool_dir / f".upload-{secrets.token_hex(8)}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        f = await asyncio.to_thread(tmp.open, "xb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise UploadTooLarge(
                        f"recording {name} is larger than {max_bytes} bytes",
                        details={"filename": name, "max_bytes": max_bytes},
                    )
                digest.update(chunk)
                await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(_flush_and_sync, f)
        finally:
            f.close()
        await asyncio.to_thread(os.replace, tmp, spool_dir / name)
    except OSError as exc:
        raise StorageUnavailable(
            f"cannot write {name} into the spool directory (recordings.spool_dir): {exc.strerror}",
            details={"filename": name, "errno": exc.errno},
        ) from exc
    finally:
        # Synchronous on purpose: it must run even when the upload task is being cancelled.
        _unlink_quietly(tmp)
    log.info("recordings: call_id=%s received %s (%d bytes)", call_id, name, size)
    return UploadedRecording(path=spool_dir / name, size=size, sha256=digest.hexdigest())


def _flush_and_sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())
