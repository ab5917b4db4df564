"""Where converted recordings are kept: a :class:`Storage` protocol, the local filesystem
(default) and an S3-compatible bucket.

Keys are ``YYYY/MM/DD/<32 random URL-safe characters>.<ext>``: dated, so retention can walk old
days, and unguessable, so a key leaks nothing about the call and cannot be enumerated. Every
backend verifies the copy it made before ``put`` returns, so the caller may delete its source
afterwards. Backend errors are wrapped: :class:`StorageUnavailable` (retry later),
:class:`StoredObjectNotFound`, :class:`RangeNotSatisfiable`, :class:`InvalidRecordingName`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from recordings.errors import (
    InvalidRecordingName,
    RangeNotSatisfiable,
    RecordingMissing,
    StorageUnavailable,
    StoredObjectNotFound,
)

CHUNK_SIZE = 1 << 16
_TOKEN_BYTES = 24  # 192 bits, 32 characters
KEY_PATTERN = re.compile(r"^\d{4}/\d{2}/\d{2}/[A-Za-z0-9_-]{32}(\.[a-z0-9]{1,8})?$")
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,8})$")

CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "ogg": "audio/ogg",
    "wav": "audio/wav",
    "gsm": "audio/x-gsm",
}


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A verified stored copy: its key, size in bytes and hex SHA-256."""

    key: str
    size: int
    sha256: str


class Storage(Protocol):
    """A place to keep recordings.

    Byte ranges are half-open, Python style: ``open_range(key, 0, 100)`` yields bytes 0..99;
    ``end=None`` means to the end, an ``end`` past the end is clamped. (HTTP ranges are
    inclusive: ``bytes=a-b`` is ``open_range(key, a, b + 1)``.)
    """

    async def put(self, local_path: Path, key_hint: str) -> StoredObject:
        """Copy ``local_path`` in under a new key and verify the copy. ``key_hint`` gives the
        extension only (``"x.mp3"`` or ``"mp3"``); the name is random. The source is untouched."""
        ...

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Check the key and range now, and return an iterator over the bytes' chunks."""
        ...

    async def size(self, key: str) -> int:
        """Size in bytes of the object; :class:`StoredObjectNotFound` if there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Delete the object; deleting a missing object is not an error."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...


def new_key(key_hint: str, now: datetime) -> str:
    """A fresh dated, random key with the extension taken from ``key_hint``."""
    match = _EXTENSION.search(key_hint) or _EXTENSION.search("." + key_hint)
    ext = f".{match.group(1).lower()}" if match else ""
    return f"{now:%Y/%m/%d}/{secrets.token_urlsafe(_TOKEN_BYTES)}{ext}"


def check_key(key: str) -> str:
    """Return ``key`` if it is one this module could have made, else raise
    :class:`InvalidRecordingName` (it keeps path tricks such as ``../`` out of the backends)."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise InvalidRecordingName(f"not a recording storage key: {key!r}", details={"key": key})
    return key


def content_type(key: str) -> str:
    """The MIME type of a stored recording, from its extension."""
    match = _EXTENSION.search(key)
    return CONTENT_TYPES.get(match.group(1).lower() if match else "", "application/octet-stream")


def check_range(key: str, start: int, end: int | None, size: int) -> tuple[int, int]:
    """Clamp a half-open range to ``size``; :class:`RangeNotSatisfiable` if it cannot be served."""
    stop = size if end is None else min(end, size)
    if start < 0 or start > size or stop < start:
        raise RangeNotSatisfiable(
            f"range {start}-{end} is outside {key} ({size} bytes)",
            details={"key": key, "start": start, "end": end, "size": size},
        )
    return start, stop


def _utc_now() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ local filesystem


class FileOps:
    """The filesystem calls :class:`LocalStorage` makes to write, one method each.

    It exists so tests can inject faults (a disk that fills up half-way) by subclassing it,
    without touching the storage logic.
    """

    def makedirs(self, path: Path) -> None:
        path.mkdir(mode=0o750, parents=True, exist_ok=True)

    def create_temp(self, directory: Path) -> tuple[int, Path]:
        path = directory / f".tmp-{secrets.token_hex(8)}"
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640), path

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        path.unlink(missing_ok=True)


class LocalStorage:
    """Recordings as files under ``root``: ``root/YYYY/MM/DD/<random>.<ext>``.

    A ``put`` writes a temporary file in the target folder, fsyncs it, reads it back to compare
    checksums, renames it into place atomically and fsyncs the folder; on any failure the
    temporary file is removed and :class:`StorageUnavailable` is raised (ENOSPC, EIO, EROFS, a
    root that is not a directory …). Blocking calls run in threads.
    """

    def __init__(
        self,
        root: Path,
        *,
        chunk_size: int = CHUNK_SIZE,
        clock: Callable[[], datetime] = _utc_now,
        fs: FileOps | None = None,
    ) -> None:
        self.root = Path(root)
        self.chunk_size = chunk_size
        self._clock = clock
        self._fs = fs or FileOps()

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (for ``sendfile``-style serving by the HTTP layer)."""
        return self.root / check_key(key)

    async def put(self, local_path: Path, key_hint: str) -> StoredObject:
        """See :meth:`Storage.put`."""
        key = new_key(key_hint, self._clock())
        return await asyncio.to_thread(self._put_sync, Path(local_path), key)

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """See :meth:`Storage.open_range`."""
        path = self.path_of(key)
        start, stop = check_range(key, start, end, await self.size(key))
        return self._iter_range(key, path, start, stop)

    async def size(self, key: str) -> int:
        """See :meth:`Storage.size`."""
        path = self.path_of(key)
        try:
            stat = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            raise StoredObjectNotFound(f"no recording {key}", details={"key": key}) from None
        except OSError as exc:
            raise _unavailable(f"cannot stat {key}", exc, key=key) from exc
        return stat.st_size

    async def delete(self, key: str) -> None:
        """See :meth:`Storage.delete`."""
        path = self.path_of(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise _unavailable(f"cannot delete {key}", exc, key=key) from exc

    async def exists(self, key: str) -> bool:
        """See :meth:`Storage.exists`."""
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.is_file)
        except OSError as exc:
            raise _unavailable(f"cannot stat {key}", exc, key=key) from exc

    def _put_sync(self, local_path: Path, key: str) -> StoredObject:
        final = self.root / key
        try:
            src = local_path.open("rb")
        except FileNotFoundError:
            raise RecordingMissing(
                f"cannot store {local_path.name}: it does not exist",
                details={"file": local_path.name},
            ) from None
        except OSError as exc:
            raise _unavailable(f"cannot read {local_path.name}", exc) from exc
        tmp: Path | None = None
        try:
            with src:
                self._fs.makedirs(final.parent)
                fd, tmp = self._fs.create_temp(final.parent)
                digest = hashlib.sha256()
                size = 0
                try:
                    while chunk := src.read(self.chunk_size):
                        digest.update(chunk)
                        self._fs.write(fd, chunk)
                        size += len(chunk)
                    self._fs.fsync(fd)
                finally:
                    self._fs.close(fd)
            sha256 = digest.hexdigest()
            with tmp.open("rb") as written:
                if hashlib.file_digest(written, "sha256").hexdigest() != sha256:
                    raise StorageUnavailable(
                        f"the copy of {local_path.name} written to the storage reads back"
                        " different bytes",
                        details={"file": local_path.name},
                    )
            self._fs.replace(tmp, final)
            tmp = None
            self._fs.fsync_dir(final.parent)
        except OSError as exc:
            raise _unavailable(f"cannot store {local_path.name} in the storage", exc) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    self._fs.unlink(tmp)
        return StoredObject(key=key, size=size, sha256=sha256)

    async def _iter_range(
        self, key: str, path: Path, start: int, stop: int
    ) -> AsyncIterator[bytes]:
        try:
            f = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise StoredObjectNotFound(f"no recording {key}", details={"key": key}) from None
        except OSError as exc:
            raise _unavailable(f"cannot open {key}", exc, key=key) from exc
        try:
            await asyncio.to_thread(f.seek, start)
            remaining = stop - start
            while remaining > 0:
                try:
                    chunk = await asyncio.to_thread(f.read, min(self.chunk_size, remaining))
                except OSError as exc:
                    raise _unavailable(f"cannot read {key}", exc, key=key) from exc
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk
        finally:
            f.close()


def _unavailable(what: str, exc: OSError, **details: Any) -> StorageUnavailable:
    return StorageUnavailable(
        f"{what}: {exc.strerror or exc}",
        details={**details, "errno": exc.errno, "reason": os.strerror(exc.errno or 0)},
    )


# ------------------------------------------------------------------ S3-compatible


class S3Storage:
    """Recordings as objects in an S3-compatible bucket, through a boto3 S3 client run in
    threads (boto3 clients are thread-safe).

    ``client`` is built by the composition root (``boto3.client("s3", endpoint_url=…)``); this
    module imports botocore only to recognise its errors. ``put`` sends Content-MD5, so the
    server rejects a corrupted upload, stores the SHA-256 as object metadata, and checks the
    stored size with a HEAD before returning.
    """

    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        prefix: str = "",
        chunk_size: int = CHUNK_SIZE,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.chunk_size = chunk_size
        self._clock = clock

    async def put(self, local_path: Path, key_hint: str) -> StoredObject:
        """See :meth:`Storage.put`."""
        key = new_key(key_hint, self._clock())
        return await asyncio.to_thread(self._put_sync, Path(local_path), key)

    async def open_range(
        self, key: str, start: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """See :meth:`Storage.open_range`."""
        start, stop = check_range(key, start, end, await self.size(key))
        return self._iter_range(key, start, stop)

    async def size(self, key: str) -> int:
        """See :meth:`Storage.size`."""
        head = await asyncio.to_thread(self._head, check_key(key))
        return int(head["ContentLength"])

    async def delete(self, key: str) -> None:
        """See :meth:`Storage.delete`."""
        name = self.prefix + check_key(key)
        await asyncio.to_thread(
            self._call, key, self.client.delete_object, Bucket=self.bucket, Key=name
        )

    async def exists(self, key: str) -> bool:
        """See :meth:`Storage.exists`."""
        try:
            await asyncio.to_thread(self._head, check_key(key))
        except StoredObjectNotFound:
            return False
        return True

    def _put_sync(self, local_path: Path, key: str) -> StoredObject:
        sha256, md5, size = _digests(local_path)
        try:
            body = local_path.open("rb")
        except OSError as exc:
            raise _unavailable(f"cannot read {local_path.name}", exc) from exc
        with body:
            self._call(
                key,
                self.client.put_object,
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=body,
                ContentLength=size,
                ContentMD5=base64.b64encode(md5).decode("ascii"),
                ContentType=content_type(key),
                Metadata={"sha256": sha256},
            )
        head = self._head(key)
        if int(head["ContentLength"]) != size or head.get("Metadata", {}).get("sha256") != sha256:
            raise StorageUnavailable(
                f"the object stored for {local_path.name} does not match it", details={"key": key}
            )
        return StoredObject(key=key, size=size, sha256=sha256)

    def _head(self, key: str) -> dict[str, Any]:
        head: dict[str, Any] = self._call(
            key, self.client.head_object, Bucket=self.bucket, Key=self.prefix + key
        )
        return head

    async def _iter_range(self, key: str, start: int, stop: int) -> AsyncIterator[bytes]:
        if stop == start:
            return
        response = await asyncio.to_thread(
            self._call,
            key,
            self.client.get_object,
            Bucket=self.bucket,
            Key=self.prefix + key,
            Range=f"bytes={start}-{stop - 1}",
        )
        body = response["Body"]
        try:
            while True:
                chunk = await asyncio.to_thread(self._call, key, body.read, self.chunk_size)
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    def _call(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            # A missing bucket is a configuration or backend problem, not a missing object.
            if code != "NoSuchBucket" and (code in ("NoSuchKey", "NotFound") or status == 404):
                raise StoredObjectNotFound(f"no recording {key}", details={"key": key}) from None
            if code == "InvalidRange" or status == 416:
                raise RangeNotSatisfiable(f"bad range for {key}", details={"key": key}) from None
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} refused {fn.__name__} for {key}: {code} {status}",
                details={"key": key, "code": code, "status": status},
            ) from exc
        except (BotoCoreError, OSError) as exc:
            raise StorageUnavailable(
                f"S3 bucket {self.bucket!r} is unreachable ({fn.__name__} {key}): {exc}",
                details={"key": key},
            ) from exc


def _digests(path: Path) -> tuple[str, bytes, int]:
    sha256 = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    size = 0
    try:
        with path.open("rb") as f:
            for chunk in _chunks(f):
                sha256.update(chunk)
                md5.update(chunk)
                size += len(chunk)
    except FileNotFoundError:
        raise RecordingMissing(
            f"cannot store {path}: it does not exist", details={"file": path.name}
        ) from None
    except OSError as exc:
        raise _unavailable(f"cannot read {path}", exc) from exc
    return sha256.hexdigest(), md5.digest(), size


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(CHUNK_SIZE):
        yield chunk
