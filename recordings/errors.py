"""Errors of the recordings adapter.

Each error carries a stable ``error_id`` and ``details`` (``crm_core.errors.DomainError``) and
says whether retrying later can help (``transient``): the job state machine in
:mod:`recordings.intake` turns a transient error into a retry with backoff and a permanent one
into ``failed``. The errors cross process boundaries (conversion runs in worker processes), so
they pickle with their details.
"""

from __future__ import annotations

from typing import Any

from crm_core.errors import DomainError, InvalidInput, NotFound, TooLarge, Unavailable


def _rebuild(cls: type[RecordingError], message: str, details: dict[str, Any]) -> RecordingError:
    return cls(message, details=details)


class RecordingError(DomainError):
    """Base of every error the recordings adapter raises on purpose."""

    error_id = "recording-error"
    transient = False

    def __reduce__(self) -> tuple[Any, ...]:
        # The default reduce calls cls(*args) and would drop the keyword-only details.
        return (_rebuild, (type(self), self.message, self.details))


class RecordingMissing(RecordingError, NotFound):
    """The MixMonitor file is not (or no longer) in the spool directory."""

    error_id = "recording-missing"
    transient = True


class RecordingIncomplete(RecordingError):
    """The file was still growing when the wait for it to be complete ran out."""

    error_id = "recording-incomplete"
    transient = True


class CorruptAudio(RecordingError, InvalidInput):
    """The source file cannot be decoded (truncated, not audio, unknown encoding)."""

    error_id = "recording-corrupt-audio"


class EmptyAudio(CorruptAudio):
    """The source file is well-formed but holds no audio (a header-only WAV)."""

    error_id = "recording-empty-audio"


class ConversionFailed(RecordingError):
    """The encoder failed, or its output did not pass verification (readable, same duration)."""

    error_id = "recording-conversion-failed"


class ConverterUnavailable(RecordingError, Unavailable):
    """No ffmpeg on this machine (or it cannot be executed)."""

    error_id = "recording-converter-unavailable"
    transient = True


class ConverterCrashed(RecordingError, Unavailable):
    """A conversion worker process died (killed, out of memory); the pool was rebuilt."""

    error_id = "recording-converter-crashed"
    transient = True


class StorageUnavailable(RecordingError, Unavailable):
    """The storage (or scratch space) cannot take or serve a file now: disk full, I/O error,
    read-only or missing root, an S3 endpoint that does not answer."""

    error_id = "recording-storage-unavailable"
    transient = True


class StoredObjectNotFound(RecordingError, NotFound):
    """No stored object under this key."""

    error_id = "recording-not-found"


class RangeNotSatisfiable(RecordingError, InvalidInput):
    """The requested byte range lies outside the stored object."""

    error_id = "recording-range-not-satisfiable"


class InvalidRecordingName(RecordingError, InvalidInput):
    """A file name or storage key that the adapter refuses (path tricks, wrong call id)."""

    error_id = "recording-invalid-name"


class InvalidTransition(RecordingError):
    """A recording job was asked to move to a state its current state does not lead to."""

    error_id = "recording-invalid-transition"


class UploadTooLarge(RecordingError, TooLarge):
    """A pushed recording is larger than the configured limit."""

    error_id = "recording-upload-too-large"
