"""LocalStorage on the real filesystem (and S3Storage against a local S3-compatible server when
boto3 and moto[server] are installed)."""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from recordings.errors import (
    InvalidRecordingName,
    RangeNotSatisfiable,
    RecordingMissing,
    StorageUnavailable,
    StoredObjectNotFound,
)
from recordings.storage import (
    KEY_PATTERN,
    FileOps,
    LocalStorage,
    S3Storage,
    Storage,
    check_key,
    content_type,
    new_key,
)
from tests.conftest import need_service
from tests.recordings import listing

NOW = datetime(2026, 11, 26, 19, 55, 21, tzinfo=UTC)


def clock() -> datetime:
    return NOW


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    src = tmp_path / "work" / "1795722921.5.mp3"
    src.parent.mkdir()
    src.write_bytes(os.urandom(200_000))
    return src


def content(path: Path) -> bytes:
    return path.read_bytes()


def exists(path: Path) -> bool:
    return path.exists()


async def read_all(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_put_stores_a_verified_copy_in_a_dated_folder(tmp_path: Path, payload: Path) -> None:
    storage = LocalStorage(tmp_path / "store", clock=clock)
    before = content(payload)

    stored = await storage.put(payload, "whatever.mp3")

    assert KEY_PATTERN.match(stored.key)
    assert stored.key.startswith("2026/11/26/") and stored.key.endswith(".mp3")
    assert stored.size == len(before)
    assert stored.sha256 == hashlib.sha256(before).hexdigest()
    assert (tmp_path / "store" / stored.key).read_bytes() == before
    assert content(payload) == before
    assert listing(tmp_path / "store") == [stored.key]  # no temporary file left
    assert await storage.exists(stored.key)
    assert await storage.size(stored.key) == len(before)
    assert content_type(stored.key) == "audio/mpeg"


async def test_names_are_random_and_say_nothing_about_the_call(
    tmp_path: Path, payload: Path
) -> None:
    storage = LocalStorage(tmp_path / "store", clock=clock)
    keys = [(await storage.put(payload, "ogg")).key for _ in range(50)]
    assert len(set(keys)) == 50
    names = [key.rsplit("/", 1)[1] for key in keys]
    assert all(len(name) == 32 + len(".ogg") and name.endswith(".ogg") for name in names)
    assert not any("1795722921" in key for key in keys)
    assert len({k[11:15] for k in keys}) > 40  # not sequential


async def test_ranges_are_half_open_and_clamped(tmp_path: Path, payload: Path) -> None:
    storage = LocalStorage(tmp_path / "store", chunk_size=4096, clock=clock)
    data = content(payload)
    key = (await storage.put(payload, "mp3")).key

    assert await read_all(await storage.open_range(key)) == data
    assert await read_all(await storage.open_range(key, 10, 100)) == data[10:100]
    assert await read_all(await storage.open_range(key, 150_000)) == data[150_000:]
    assert await read_all(await storage.open_range(key, 199_990, 10**9)) == data[199_990:]
    assert await read_all(await storage.open_range(key, len(data))) == b""
    chunks = [c async for c in await storage.open_range(key, 0, 10_000)]
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(key, len(data) + 1)
    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(key, 100, 50)


async def test_delete_and_missing_objects(tmp_path: Path, payload: Path) -> None:
    storage = LocalStorage(tmp_path / "store", clock=clock)
    key = (await storage.put(payload, "mp3")).key
    await storage.delete(key)
    assert not await storage.exists(key)
    await storage.delete(key)  # idempotent
    with pytest.raises(StoredObjectNotFound):
        await storage.size(key)
    with pytest.raises(StoredObjectNotFound):
        await storage.open_range(key)
    assert exists(payload)


@pytest.mark.parametrize(
    "key",
    [
        "../etc/passwd",
        "2026/11/26/../../../../etc/passwd",
        "/2026/11/26/" + "a" * 32,
        "2026/11/26/" + "a" * 31,
        "2026/11/26/" + "a" * 32 + ".mp3/x",
        "",
    ],
)
async def test_keys_it_did_not_make_are_refused(tmp_path: Path, key: str) -> None:
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(InvalidRecordingName):
        await storage.exists(key)
    with pytest.raises(InvalidRecordingName):
        check_key(key)


def test_new_key_takes_only_the_extension_from_the_hint() -> None:
    assert new_key("../../x.MP3", NOW).endswith(".mp3")
    assert new_key("wav", NOW).endswith(".wav")
    assert KEY_PATTERN.match(new_key("no extension here!", NOW))


async def test_a_root_that_is_a_file_is_storage_unavailable(tmp_path: Path, payload: Path) -> None:
    root = tmp_path / "store"
    root.write_bytes(b"not a directory")
    storage = LocalStorage(root, clock=clock)
    with pytest.raises(StorageUnavailable) as err:
        await storage.put(payload, "mp3")
    assert err.value.transient
    assert err.value.details["errno"] in (errno.ENOTDIR, errno.EEXIST)
    assert exists(payload) and root.read_bytes() == b"not a directory"


async def test_a_missing_source_is_not_a_storage_failure(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    with pytest.raises(RecordingMissing):
        await storage.put(tmp_path / "gone.mp3", "mp3")


class DiskFillsUp(FileOps):
    """A filesystem with ``free`` bytes left: writes past that fail with ENOSPC."""

    def __init__(self, free: int) -> None:
        self.free = free

    def write(self, fd: int, data: bytes) -> None:
        if len(data) > self.free:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        super().write(fd, data)


class RenameFails(FileOps):
    """A filesystem whose rename fails with EIO."""

    def replace(self, src: Path, dst: Path) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


@pytest.mark.parametrize("fs", [DiskFillsUp(free=100_000), RenameFails()], ids=type)
async def test_a_failed_write_leaves_nothing_and_keeps_the_source(
    tmp_path: Path, payload: Path, fs: FileOps
) -> None:
    storage = LocalStorage(tmp_path / "store", clock=clock, fs=fs)
    before = content(payload)
    with pytest.raises(StorageUnavailable) as err:
        await storage.put(payload, "mp3")
    expected = errno.ENOSPC if isinstance(fs, DiskFillsUp) else errno.EIO
    assert err.value.details["errno"] == expected
    assert listing(tmp_path / "store") == []
    assert content(payload) == before


async def test_local_storage_satisfies_the_protocol(tmp_path: Path) -> None:
    storage: Storage = LocalStorage(tmp_path)
    assert storage is not None


# ------------------------------------------------------------------ S3-compatible

HAVE_S3 = all(importlib.util.find_spec(m) for m in ("boto3", "moto", "flask", "flask_cors"))


@pytest.fixture
def require_s3_libraries() -> None:
    if not HAVE_S3:
        need_service("S3 tests need boto3 and moto[server] (the dev extra installs them)")


s3_only = pytest.mark.usefixtures("require_s3_libraries")


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str, **config: Any) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(**config) if config else None,
    )


@s3_only
async def test_s3_put_range_delete(moto_endpoint: str, payload: Path) -> None:
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="recordings")
    storage = S3Storage(client, "recordings", prefix="cc/", chunk_size=50_000, clock=clock)
    data = content(payload)

    stored = await storage.put(payload, "x.mp3")

    assert stored.key.startswith("2026/11/26/") and KEY_PATTERN.match(stored.key)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    head = client.head_object(Bucket="recordings", Key="cc/" + stored.key)
    assert head["ContentType"] == "audio/mpeg"
    assert await storage.size(stored.key) == len(data)
    assert await read_all(await storage.open_range(stored.key)) == data
    assert await read_all(await storage.open_range(stored.key, 1000, 2000)) == data[1000:2000]
    assert await read_all(await storage.open_range(stored.key, len(data))) == b""
    with pytest.raises(RangeNotSatisfiable):
        await storage.open_range(stored.key, len(data) + 5)
    await storage.delete(stored.key)
    assert not await storage.exists(stored.key)
    with pytest.raises(StoredObjectNotFound):
        await storage.size(stored.key)


@s3_only
async def test_s3_unreachable_is_storage_unavailable(payload: Path) -> None:
    client = s3_client(
        "http://127.0.0.1:9", connect_timeout=1, retries={"max_attempts": 1, "mode": "standard"}
    )
    storage = S3Storage(client, "recordings")
    with pytest.raises(StorageUnavailable, match="unreachable"):
        await storage.put(payload, "mp3")
    assert exists(payload)


@s3_only
async def test_s3_missing_bucket_is_storage_unavailable(moto_endpoint: str, payload: Path) -> None:
    storage = S3Storage(s3_client(moto_endpoint), "no-such-bucket")
    with pytest.raises(StorageUnavailable, match="NoSuchBucket"):
        await storage.put(payload, "mp3")
