"""S3-only behaviour: multipart shape, prefixes, presigned URLs, outages, the sweep's age rule."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import random
import signal
import time
import tracemalloc
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mirror.storage.base import BlobWriter, StorageError
from mirror.storage.s3 import S3Storage, stale_uploads
from mirror.storage.s3_errors import S3Unreachable
from mirror.storage.s3_writer import RING_PARTS
from tests.support.s3 import MIN_PART, MotoS3, dead_endpoint
from tests.support.tmpfs import small_disk


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        data: bytes = answer.read()
        return data


async def write_then_commit(writer: BlobWriter, parts: int) -> None:
    for _ in range(parts):
        await writer.write(b"y" * MIN_PART)
    await writer.commit()


async def write_in_pieces(writer: BlobWriter, data: bytes, piece: int) -> None:
    """``data`` in pieces that do not divide a part, then commit."""
    for start in range(0, len(data), piece):
        await writer.write(data[start : start + piece])
    await writer.commit()


@pytest.fixture
async def bucket(s3_server: MotoS3) -> str:
    return s3_server.create_bucket()


@pytest.fixture
async def storage(s3_server: MotoS3, bucket: str) -> AsyncIterator[S3Storage]:
    opened = await S3Storage.open(s3_server.s3_config(bucket, "pre/fix", redirect=True))
    try:
        yield opened
    finally:
        await opened.close()


async def test_large_objects_go_up_in_equal_parts(
    storage: S3Storage, s3_server: MotoS3, bucket: str
) -> None:
    data = bytes(range(256)) * (2 * MIN_PART // 256 + 3)
    await write_in_pieces(await storage.writer("blobs/big"), data, 300_000)
    head = s3_server.client.head_object(Bucket=bucket, Key="pre/fix/blobs/big")
    assert head["ETag"].endswith('-3"')  # a multipart object of three parts
    first = s3_server.client.head_object(Bucket=bucket, Key="pre/fix/blobs/big", PartNumber=1)
    assert first["ContentLength"] == MIN_PART
    assert s3_server.uploads(bucket) == []


async def test_parts_are_collected_and_sent_without_holding_them_in_memory(
    storage: S3Storage, s3_server: MotoS3, bucket: str
) -> None:
    chunk_size = 1024 * 1024
    expected = hashlib.sha256()
    tracemalloc.start()
    try:
        writer = await storage.writer("blobs/ring")
        # The ring's slots and a few more: some are used twice, some chunks straddle parts.
        for number in range((RING_PARTS + 2) * MIN_PART // chunk_size + 1):
            chunk = random.Random(number).randbytes(chunk_size + 12_345)
            expected.update(chunk)
            await writer.write(chunk)
            del chunk
        await writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Parts collected or uploaded from memory would take several parts' worth.
    assert peak < MIN_PART
    stored = s3_server.client.get_object(Bucket=bucket, Key="pre/fix/blobs/ring")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == expected.hexdigest()
    assert s3_server.uploads(bucket) == []


async def test_keys_live_under_the_prefix(
    storage: S3Storage, s3_server: MotoS3, bucket: str
) -> None:
    await storage.put("a/b", b"x")
    s3_server.client.put_object(Bucket=bucket, Key="elsewhere/a/b", Body=b"not ours")
    assert s3_server.keys(bucket) == {"pre/fix/a/b": 1, "elsewhere/a/b": 8}
    assert [info.key async for info in storage.walk()] == ["a/b"]


async def test_sweep_leaves_uploads_outside_the_prefix(s3_server: MotoS3, bucket: str) -> None:
    s3_server.client.create_multipart_upload(Bucket=bucket, Key="other/blob")
    s3_server.client.create_multipart_upload(Bucket=bucket, Key="mine/blob")
    sweeper = await S3Storage.open(s3_server.s3_config(bucket, "mine"), stale_upload_age=0)
    try:
        assert await sweeper.sweep_partials() == 1
    finally:
        await sweeper.close()
    assert [u["Key"] for u in s3_server.uploads(bucket)] == ["other/blob"]


def test_only_uploads_older_than_the_age_are_stale() -> None:
    now = time.time()
    uploads = [
        {"Key": "old", "UploadId": "1", "Initiated": datetime.fromtimestamp(now - 7200, UTC)},
        {"Key": "young", "UploadId": "2", "Initiated": datetime.fromtimestamp(now - 60, UTC)},
    ]
    assert stale_uploads(uploads, now - 3600) == [("old", "1")]


async def test_presigned_url_serves_the_object(storage: S3Storage) -> None:
    await storage.put("blobs/x", b"presigned bytes")
    url = await storage.redirect_url("blobs/x")
    assert url is not None
    assert "Signature=" in url or "X-Amz-Signature=" in url
    assert await asyncio.to_thread(fetch, url) == b"presigned bytes"


async def test_no_redirect_unless_configured(s3_server: MotoS3, bucket: str) -> None:
    plain = await S3Storage.open(s3_server.s3_config(bucket))
    try:
        assert await plain.redirect_url("blobs/x") is None
    finally:
        await plain.close()


async def test_unreachable_s3_fails_fast_with_storage_errors() -> None:
    config = MotoS3(dead_endpoint(), None).s3_config("bucket")  # type: ignore[arg-type]
    down = await S3Storage.open(config)  # opening makes no request
    try:
        with pytest.raises(S3Unreachable):
            await down.stat("k")
        started = time.monotonic()
        for call in (down.stat("k"), down.get("k"), down.put("k", b"x"), down.writer("k")):
            with pytest.raises(StorageError):
                await call
        assert time.monotonic() - started < 1  # no retries while known to be down
    finally:
        await down.close()


async def test_failed_part_upload_aborts_the_whole_upload(s3_server: MotoS3) -> None:
    # The upload is aborted behind the writer's back: its parts fail, and the
    # writer must surface that and leave neither object nor upload behind.
    doomed = s3_server.create_bucket()
    storage = await S3Storage.open(s3_server.s3_config(doomed))
    try:
        writer = await storage.writer("blob")
        await writer.write(b"x" * (MIN_PART + 1))
        # The upload is started in the background (writes never wait for S3).
        for _ in range(100):
            if s3_server.uploads(doomed):
                break
            await asyncio.sleep(0.05)
        assert s3_server.uploads(doomed), "the first part started no upload"
        for upload in s3_server.uploads(doomed):
            s3_server.client.abort_multipart_upload(
                Bucket=doomed, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        with pytest.raises(StorageError):
            await write_then_commit(writer, 3)
        await writer.abort()
    finally:
        await storage.close()
    assert s3_server.keys(doomed) == {}
    assert s3_server.uploads(doomed) == []


async def test_without_a_local_part_file_the_parts_are_collected_in_memory(
    s3_server: MotoS3, bucket: str, tmp_path: Path
) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_bytes(b"")
    storage = await S3Storage.open(s3_server.s3_config(bucket), part_dir=blocked)
    data = random.Random(3).randbytes(2 * MIN_PART + 777)
    try:
        await write_in_pieces(await storage.writer("blobs/x"), data, 300_000)
    finally:
        await storage.close()
    assert s3_server.client.get_object(Bucket=bucket, Key="blobs/x")["Body"].read() == data
    assert s3_server.uploads(bucket) == []


async def test_a_part_file_that_fills_up_mid_part_goes_on_in_memory(
    s3_server: MotoS3, bucket: str, tmp_path: Path
) -> None:
    data = random.Random(4).randbytes(2 * MIN_PART + 999)
    with small_disk(tmp_path / "small", "1m") as disk:
        storage = await S3Storage.open(s3_server.s3_config(bucket), part_dir=disk)
        try:
            # The first pieces fit in the ring; the disk refuses one in the middle of part 1.
            await write_in_pieces(await storage.writer("blobs/y"), data, 200_000)
        finally:
            await storage.close()
    assert s3_server.client.get_object(Bucket=bucket, Key="blobs/y")["Body"].read() == data
    assert s3_server.uploads(bucket) == []


def spool_with(path: Path, data: bytes) -> int:
    """A spool file holding ``data``, as a download leaves it, open for reading."""
    path.write_bytes(data)
    return os.open(path, os.O_RDONLY)


async def test_parts_are_read_from_the_shared_spool_not_copied(
    storage: S3Storage, s3_server: MotoS3, bucket: str, tmp_path: Path
) -> None:
    data = random.Random(5).randbytes(2 * MIN_PART + 4321)
    fd = spool_with(tmp_path / "spool", data)
    writer = await storage.writer("blobs/shared")
    writer.share_spool(fd)
    os.close(fd)  # the writer keeps a descriptor of its own
    # Bytes of the right length but wrong content: only the spool's may be uploaded,
    # which shows the writer keeps no copy of what it is given.
    await write_in_pieces(writer, bytes(len(data)), 700_000)
    stored = s3_server.client.get_object(Bucket=bucket, Key="pre/fix/blobs/shared")["Body"]
    assert stored.read() == data
    assert s3_server.uploads(bucket) == []


async def test_a_spool_that_refuses_a_write_mid_part_leaves_the_rest_in_memory(
    storage: S3Storage, s3_server: MotoS3, bucket: str, tmp_path: Path
) -> None:
    data = random.Random(6).randbytes(2 * MIN_PART + 999)
    cut = MIN_PART + MIN_PART // 2  # the spool refused a write in the middle of part 2
    fd = spool_with(tmp_path / "spool", data[:cut])
    writer = await storage.writer("blobs/half")
    writer.share_spool(fd)
    await writer.write(data[:cut])
    writer.share_spool(None)
    os.close(fd)
    await write_in_pieces(writer, data[cut:], 300_000)
    stored = s3_server.client.get_object(Bucket=bucket, Key="pre/fix/blobs/half")["Body"]
    assert stored.read() == data
    assert s3_server.uploads(bucket) == []


async def test_sharing_the_spool_after_the_first_write_is_refused(
    storage: S3Storage, tmp_path: Path
) -> None:
    fd = spool_with(tmp_path / "spool", b"x")
    writer = await storage.writer("blobs/late")
    try:
        await writer.write(b"x")
        with pytest.raises(StorageError, match="too late"):
            writer.share_spool(fd)
    finally:
        os.close(fd)
        await writer.abort()


async def test_writes_from_a_shared_spool_never_wait_for_s3(
    storage: S3Storage, s3_server: MotoS3, bucket: str, tmp_path: Path
) -> None:
    # More parts than a ring holds, while S3 answers nothing at all: a download
    # writing them must not wait (its clients would), the uploads catch up later.
    data = random.Random(7).randbytes((RING_PARTS + 4) * MIN_PART + 17)
    fd = spool_with(tmp_path / "spool", data)
    writer = await storage.writer("blobs/ahead")
    writer.share_spool(fd)
    os.close(fd)
    os.kill(s3_server.process.pid, signal.SIGSTOP)
    try:
        async with asyncio.timeout(5):
            for start in range(0, len(data), MIN_PART // 2):
                await writer.write(data[start : start + MIN_PART // 2])
    finally:
        os.kill(s3_server.process.pid, signal.SIGCONT)
    await writer.commit()
    stored = s3_server.client.get_object(Bucket=bucket, Key="pre/fix/blobs/ahead")["Body"]
    assert stored.read() == data
    assert s3_server.uploads(bucket) == []


async def test_a_ring_slot_is_reused_only_after_its_part_is_uploaded(
    storage: S3Storage, s3_server: MotoS3, bucket: str
) -> None:
    # S3 answers nothing while the writer fills more parts than the ring has
    # slots: the writes must wait, not overwrite a part still to be uploaded.
    data = random.Random(8).randbytes((RING_PARTS + 3) * MIN_PART + 99)
    writer = await storage.writer("blobs/ring-lag")

    async def write_everything() -> None:
        for start in range(0, len(data), MIN_PART // 2):
            await writer.write(data[start : start + MIN_PART // 2])

    os.kill(s3_server.process.pid, signal.SIGSTOP)
    try:
        writing = asyncio.create_task(write_everything())
        await asyncio.sleep(1.5)  # the ring fills up meanwhile
        assert not writing.done(), "the writer ran more than a ring ahead of S3"
    finally:
        os.kill(s3_server.process.pid, signal.SIGCONT)
    await writing
    await writer.commit()
    stored = s3_server.client.get_object(Bucket=bucket, Key="pre/fix/blobs/ring-lag")["Body"]
    assert hashlib.sha256(stored.read()).hexdigest() == hashlib.sha256(data).hexdigest()
    assert s3_server.uploads(bucket) == []


async def test_an_upload_that_cannot_start_fails_the_writer(
    s3_server: MotoS3, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The upload starts in the background: its failure must still reach the
    # writer, and no task may be left with an exception nobody retrieved.
    gone = s3_server.create_bucket()
    storage = await S3Storage.open(s3_server.s3_config(gone))
    try:
        s3_server.client.delete_bucket(Bucket=gone)
        fd = spool_with(tmp_path / "spool", bytes(3 * MIN_PART))
        writer = await storage.writer("blob")
        writer.share_spool(fd)
        os.close(fd)
        with pytest.raises(StorageError, match=r"create upload|upload part"):
            await write_then_commit(writer, 3)
        await writer.abort()
        del writer
        gc.collect()
    finally:
        await storage.close()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
