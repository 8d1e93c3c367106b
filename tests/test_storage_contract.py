"""The storage contract (mirror/storage/base.py), run against every backend.

S3 runs against moto in server mode over real HTTP, with 5 MiB parts, so the
larger objects here go through real multipart uploads.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.config import Config, S3Config, StorageConfig
from mirror.metrics import Metrics
from mirror.storage.base import ObjectNotFound, Storage, StorageError
from mirror.storage.disk import PARTIAL_DIR
from mirror.storage.factory import BACKENDS, open_storage
from mirror.storage.s3 import S3Storage
from tests.support.s3 import MIN_PART, MotoS3

BIG = 2 * MIN_PART + 12345  # three parts: two full, one short


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic bytes that differ at every offset (so a wrong range shows)."""
    block = bytes((i * 7 + seed) % 251 for i in range(251 * 16))
    return (block * (size // len(block) + 1))[:size]


@dataclass
class Backend:
    """A storage under test plus backend-specific ways to look behind it."""

    name: str
    storage: Storage
    tmp_path: Path
    s3: MotoS3 | None = None
    bucket: str = ""

    async def sweeper(self) -> Storage:
        """A storage over the same data that treats every partial as stale."""
        if self.s3 is None:
            return self.storage
        config = self.s3.s3_config(self.bucket, "contract")
        return await S3Storage.open(config, stale_upload_age=0)

    def make_orphan(self, key: str) -> None:
        """A partial object as a crashed writer leaves it."""
        if self.s3 is None:
            (self.tmp_path / "disk" / PARTIAL_DIR / "crashed").write_bytes(b"half a blob")
            return
        self.s3.client.create_multipart_upload(Bucket=self.bucket, Key=f"contract/{key}")

    def partials(self) -> int:
        """How many partial objects exist."""
        if self.s3 is None:
            return len(os.listdir(self.tmp_path / "disk" / PARTIAL_DIR))
        return len(self.s3.uploads(self.bucket))


def stack_config(name: str, tmp_path: Path, s3: S3Config | None = None) -> Config:
    """A configuration naming backend ``name``."""
    return Config(storage=StorageConfig(backend=name, path=tmp_path / "disk", s3=s3 or S3Config()))


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """Each registered backend as :func:`open_storage` gives it: checked and instrumented."""
    name = request.param
    if name == "disk":
        storage = await open_storage(stack_config(name, tmp_path), Metrics())
        yield Backend("disk", storage, tmp_path)
        return
    assert name == "s3", f"add backend {name!r} to the contract suite's fixture"
    server: MotoS3 = request.getfixturevalue("s3_server")
    bucket = server.create_bucket()
    config = stack_config(name, tmp_path, server.s3_config(bucket, "contract"))
    storage = await open_storage(config, Metrics())
    try:
        yield Backend("s3", storage, tmp_path, server, bucket)
    finally:
        await storage.close()


async def collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


async def keys(storage: Storage, prefix: str = "") -> set[str]:
    return {info.key async for info in storage.walk(prefix)}


async def write_all(storage: Storage, key: str, data: bytes, step: int = 256 * 1024) -> None:
    writer = await storage.writer(key)
    try:
        for start in range(0, len(data), step):
            await writer.write(data[start : start + step])
        await writer.commit()
    finally:
        await writer.abort()


async def test_partial_object_is_never_visible(backend: Backend) -> None:
    storage, data = backend.storage, payload(BIG)
    writer = await storage.writer("a/blob")
    await writer.write(data[:MIN_PART])
    await writer.write(data[MIN_PART:])
    assert await storage.stat("a/blob") is None
    assert await storage.get("a/blob") is None
    assert await keys(storage) == set()
    await writer.commit()
    info = await storage.stat("a/blob")
    assert info is not None
    assert info.size == len(data)
    assert await storage.get("a/blob") == data
    assert backend.partials() == 0


async def test_commit_replaces_an_existing_object_atomically(backend: Backend) -> None:
    storage = backend.storage
    await storage.put("k", b"old")
    writer = await storage.writer("k")
    await writer.write(payload(BIG, seed=3))
    assert await storage.get("k") == b"old"
    await writer.commit()
    assert await storage.get("k") == payload(BIG, seed=3)


@pytest.mark.parametrize("size", [0, 10, MIN_PART, BIG])
async def test_committed_bytes_round_trip(backend: Backend, size: int) -> None:
    await write_all(backend.storage, "x/y/z", payload(size))
    assert await backend.storage.get("x/y/z") == payload(size)
    info = await backend.storage.stat("x/y/z")
    assert info is not None
    assert info.size == size


async def test_several_chunks_in_one_write_land_in_order(backend: Backend) -> None:
    # As a download hands them over: uneven chunks, some empty, straddling parts.
    data = payload(BIG, seed=5)
    cuts = [0, 1, 1, 4096, MIN_PART - 7, MIN_PART + 300_000, 2 * MIN_PART, len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    writer = await backend.storage.writer("many/chunks")
    await writer.write(*chunks[:4])
    await writer.write(*chunks[4:])
    await writer.write()
    await writer.commit()
    assert await backend.storage.get("many/chunks") == data


async def test_abort_leaves_nothing(backend: Backend) -> None:
    storage = backend.storage
    writer = await storage.writer("gone")
    await writer.write(payload(BIG))
    await writer.abort()
    await writer.abort()  # twice is fine
    assert await storage.stat("gone") is None
    assert await keys(storage) == set()
    assert backend.partials() == 0
    with pytest.raises(StorageError):
        await writer.write(b"more")
    with pytest.raises(StorageError):
        await writer.commit()


async def test_abort_after_commit_keeps_the_object(backend: Backend) -> None:
    writer = await backend.storage.writer("kept")
    await writer.write(b"bytes")
    await writer.commit()
    await writer.abort()
    assert await backend.storage.get("kept") == b"bytes"


@pytest.mark.parametrize(
    ("offset", "length"),
    [
        (0, None),
        (0, 1),
        (1, 0),
        (BIG - 1, 1),
        (BIG - 1, None),
        (MIN_PART - 3, 7),  # across a part boundary
        (12345, 3 * 256 * 1024 + 17),
        (MIN_PART, MIN_PART),
    ],
)
async def test_ranged_reads_are_exact(backend: Backend, offset: int, length: int | None) -> None:
    data = payload(BIG, seed=5)
    await write_all(backend.storage, "ranged", data)
    got = await collect(backend.storage.read("ranged", offset, length))
    end = None if length is None else offset + length
    assert got == data[offset:end]


async def test_two_writers_of_one_key_end_with_one_whole_object(backend: Backend) -> None:
    first, second = payload(BIG, seed=1), payload(BIG, seed=2)
    await asyncio.gather(
        write_all(backend.storage, "same", first), write_all(backend.storage, "same", second)
    )
    assert await backend.storage.get("same") in (first, second)
    assert backend.partials() == 0


async def test_walk_lists_committed_keys_only(backend: Backend) -> None:
    storage = backend.storage
    await storage.put("up/blobs/a", b"1")
    await storage.put("up/blobs/b", b"22")
    await storage.put("up/tags/t", b"333")
    await storage.put("other/blobs/c", b"4444")
    pending = await storage.writer("up/blobs/pending")
    await pending.write(payload(MIN_PART + 1))
    try:
        assert await keys(storage) == {"up/blobs/a", "up/blobs/b", "up/tags/t", "other/blobs/c"}
        assert await keys(storage, "up/blobs/") == {"up/blobs/a", "up/blobs/b"}
        sizes = {info.key: info.size async for info in storage.walk("up/")}
        assert sizes == {"up/blobs/a": 1, "up/blobs/b": 2, "up/tags/t": 3}
    finally:
        await pending.abort()


async def test_missing_keys(backend: Backend) -> None:
    storage = backend.storage
    await storage.delete("never/there")
    assert await storage.get("never/there") is None
    assert await storage.stat("never/there") is None
    with pytest.raises(ObjectNotFound):
        await collect(storage.read("never/there"))


async def test_delete_removes_the_object(backend: Backend) -> None:
    await backend.storage.put("d", b"bytes")
    await backend.storage.delete("d")
    assert await backend.storage.get("d") is None
    assert await keys(backend.storage) == set()


async def test_sweep_removes_orphans_and_spares_live_writers(backend: Backend) -> None:
    backend.make_orphan("crashed/blob")
    live = await backend.storage.writer("live/blob")
    await live.write(payload(MIN_PART + 1))
    if backend.name == "disk":
        # A live writer holds its lock. (S3 spares young uploads by their age, which
        # moto cannot show: it reports every upload as started in 2010; see
        # tests/test_s3_storage.py for the age rule.)
        assert await backend.storage.sweep_partials() == 1
        assert backend.partials() == 1
    await live.commit()
    if backend.name == "disk":
        backend.make_orphan("crashed/blob")
    sweeper = await backend.sweeper()
    try:
        assert await sweeper.sweep_partials() == 1
    finally:
        if sweeper is not backend.storage:
            await sweeper.close()
    assert backend.partials() == 0
    assert await backend.storage.get("live/blob") == payload(MIN_PART + 1)
    assert await keys(backend.storage) == {"live/blob"}


@pytest.mark.parametrize(
    "key", ["/abs", "../up", "a/../b", "a/..", "nul\x00", "", ".partial/x", "a//b", "a/./b"]
)
async def test_unsafe_keys_are_refused(backend: Backend, key: str) -> None:
    storage = backend.storage
    with pytest.raises(StorageError):
        await storage.put(key, b"x")
    for refused in (storage.get(key), storage.stat(key), storage.delete(key), storage.writer(key)):
        with pytest.raises(StorageError):
            await refused
    with pytest.raises(StorageError):
        await collect(storage.read(key))
    with pytest.raises(StorageError):
        storage.local_path(key)


@pytest.mark.parametrize("prefix", ["../", "/", "a/../", ".partial/"])
async def test_unsafe_walk_prefixes_are_refused(backend: Backend, prefix: str) -> None:
    with pytest.raises(StorageError):
        await keys(backend.storage, prefix)
