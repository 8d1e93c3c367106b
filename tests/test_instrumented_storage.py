"""The instrumented storage wrapper: what the storage metrics record, and where.

Values are read from the app's own registry: each test asserts how many
observations and errors an operation adds, not only that a series exists.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mirror.app import METRICS, STORAGE
from mirror.config import Config, StorageConfig
from mirror.metrics import Metrics
from mirror.storage.base import Storage, StorageError
from mirror.storage.factory import open_storage
from mirror.storage.memo import MemoStorage
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.s3 import MotoS3, dead_endpoint

MANIFEST_KEY = "127.0.0.1/manifests/sha256/ab/" + "ab" * 32
TAG_KEY = "127.0.0.1/tags/library/alpine/3.20/any"


def observations(metrics: Metrics, action: str, backend: str = "disk") -> float:
    """How many ``action`` operations the latency histogram has seen."""
    value = metrics.registry.get_sample_value(
        "mirror_storage_operation_duration_seconds_count", {"backend": backend, "action": action}
    )
    return value or 0.0


def seconds(metrics: Metrics, action: str, backend: str = "disk") -> float:
    """The summed latency of ``action`` operations."""
    value = metrics.registry.get_sample_value(
        "mirror_storage_operation_duration_seconds_sum", {"backend": backend, "action": action}
    )
    return value or 0.0


def errors(metrics: Metrics, action: str, backend: str = "disk") -> float:
    """How many ``action`` operations failed."""
    value = metrics.registry.get_sample_value(
        "mirror_storage_errors_total", {"backend": backend, "action": action}
    )
    return value or 0.0


def all_errors(metrics: Metrics) -> float:
    """Failed operations of every backend and action."""
    return sum(
        sample.value
        for family in metrics.registry.collect()
        if family.name == "mirror_storage_errors"
        for sample in family.samples
        if sample.name == "mirror_storage_errors_total"
    )


async def disk_stack(tmp_path: Path) -> tuple[Storage, Metrics]:
    metrics = Metrics()
    config = Config(storage=StorageConfig(path=tmp_path / "cache"))
    return await open_storage(config, metrics), metrics


async def test_a_memo_hit_in_the_running_mirror_is_not_a_backend_operation(
    tmp_path: Path,
) -> None:
    async with run_mirror(mirror_config(tmp_path / "cache", "http://127.0.0.1:9")) as mirror:
        storage, metrics = mirror.app[STORAGE], mirror.app[METRICS]
        await storage.put(TAG_KEY, b'{"digest": "x"}')
        assert observations(metrics, "put") == 1
        for _ in range(3):
            assert await storage.get(TAG_KEY) == b'{"digest": "x"}'  # from memory
        assert observations(metrics, "get") == 0

        # Written behind the mirror's back: the first read goes to the disk, once.
        path = tmp_path / "cache" / MANIFEST_KEY
        path.parent.mkdir(parents=True)
        path.write_bytes(b"application/vnd.oci.image.manifest.v1+json\n{}")
        for _ in range(3):
            assert await storage.get(MANIFEST_KEY) is not None
        assert observations(metrics, "get") == 1


async def test_every_operation_is_observed_once(tmp_path: Path) -> None:
    storage, metrics = await disk_stack(tmp_path)
    await storage.put("up/blobs/a", b"a")
    await storage.stat("up/blobs/a")
    await storage.get("up/blobs/a")
    await storage.touch("up/blobs/a")
    assert [c async for c in storage.read("up/blobs/a")] == [b"a"]
    assert [i.key async for i in storage.walk("up/")] == ["up/blobs/a"]
    writer = await storage.writer("up/blobs/b")
    await writer.write(b"b1")
    await writer.write(b"b2")
    await writer.commit()
    await writer.abort()  # after commit: a no-op, still an operation
    await storage.delete("up/blobs/a")
    await storage.redirect_url("up/blobs/b")
    await storage.sweep_partials()
    counts = {
        action: observations(metrics, action)
        for action in ("put", "stat", "get", "touch", "read", "walk", "create", "write",
                       "commit", "abort", "delete", "redirect", "sweep")
    }  # fmt: skip
    assert counts == {
        "put": 1, "stat": 1, "get": 1, "touch": 1, "read": 1, "walk": 1, "create": 1,
        "write": 2, "commit": 1, "abort": 1, "delete": 1, "redirect": 1, "sweep": 1,
    }  # fmt: skip
    assert all_errors(metrics) == 0


async def test_a_streamed_read_counts_the_backend_not_the_client(tmp_path: Path) -> None:
    storage, metrics = await disk_stack(tmp_path)
    await storage.put("up/blobs/big", os.urandom(3 * 1024 * 1024))  # three disk reads
    pause = 0.3
    async for _ in storage.read("up/blobs/big"):
        await asyncio.sleep(pause)  # a slow client
    assert observations(metrics, "read") == 1
    assert seconds(metrics, "read") < 3 * pause  # the client's pauses are not in it


async def test_failures_are_counted_by_action(tmp_path: Path) -> None:
    storage, metrics = await disk_stack(tmp_path)
    (tmp_path / "cache" / "up" / "blobs" / "dir").mkdir(parents=True)
    with pytest.raises(StorageError):
        await storage.get("up/blobs/dir")  # a directory where an object should be
    with pytest.raises(StorageError):
        [c async for c in storage.read("up/blobs/dir")]
    (tmp_path / "cache" / "file").write_bytes(b"")
    writer = await storage.writer("file/under/a/file")
    await writer.write(b"x")
    with pytest.raises(StorageError):
        await writer.commit()  # its folder cannot be made: "file" is a file
    assert (errors(metrics, "get"), errors(metrics, "read"), errors(metrics, "commit")) == (1, 1, 1)
    assert all_errors(metrics) == 3
    # A missing key is an answer, not a failure.
    with pytest.raises(StorageError):
        [c async for c in storage.read("up/blobs/missing")]
    assert await storage.get("up/blobs/missing") is None
    assert all_errors(metrics) == 3


async def test_refused_keys_never_reach_the_backend(tmp_path: Path) -> None:
    storage, metrics = await disk_stack(tmp_path)
    with pytest.raises(StorageError, match="unsafe key"):
        await storage.put("../outside", b"x")
    assert not (tmp_path / "outside").exists()
    assert observations(metrics, "put") == 0
    assert errors(metrics, "put") == 0


async def test_an_unreachable_s3_is_counted_once_per_failed_operation(tmp_path: Path) -> None:
    metrics = Metrics()
    down = MotoS3(dead_endpoint(), None)  # type: ignore[arg-type]
    config = Config(storage=StorageConfig(backend="s3", s3=down.s3_config("bucket")))
    storage = MemoStorage(await open_storage(config, metrics), 1024 * 1024)
    try:
        for _ in range(2):
            with pytest.raises(StorageError):
                await storage.get(TAG_KEY)
        with pytest.raises(StorageError):
            [c async for c in storage.read(MANIFEST_KEY)]
    finally:
        await storage.close()
    assert errors(metrics, "get", "s3") == 2
    assert errors(metrics, "read", "s3") == 1
    assert observations(metrics, "get", "s3") == 2
