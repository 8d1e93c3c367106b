"""A full cache disk: cold pulls are served through, verified; the cache recovers by itself.

The cache (disk backend) or the local spool (S3 backend) lives on a real,
small tmpfs. When it refuses writes, a download goes on from memory at the
pace of its slowest client, its clients get every byte (the last one only
after the digest matched), cache hits keep working, and once space returns
the next pull is cached again.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.app import FILLS, METRICS
from tests.support import fault_clients
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.pulls import blob_url, is_cached, pull, running_fill, wait_for, wait_idle
from tests.support.tmpfs import FILLER, fill_up, free_bytes, resize, small_disk
from tests.support.watchdog import HealthWatch

REPO = "team/app"
FILL = {"idle_timeout": 5, "memory_limit": "256KiB"}
LIMIT = 15.0  # seconds any pull here may take, however busy the machine


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system."""
    with small_disk(tmp_path / "small", "1m") as path:
        yield path


def on_disk(storage_settings: dict[str, Any], disk: Path) -> dict[str, Any]:
    """The storage table with the cache (disk) or the spool (S3) on ``disk``."""
    return {**storage_settings, "path": str(disk)}


def expect_exact(outcomes: list[fault_clients.Outcome], data: bytes) -> None:
    for outcome in outcomes:
        assert outcome.kind(hashlib.sha256(data).hexdigest()) == "exact", outcome
        assert outcome.elapsed < LIMIT, outcome


def leftovers(disk: Path) -> list[Path]:
    return [p for d in (".partial", ".spool") if (disk / d).is_dir() for p in (disk / d).iterdir()]


async def test_cold_pulls_are_served_through_and_the_cache_recovers(
    up: FakeUpstream, disk: Path, storage_settings: dict[str, Any], session: aiohttp.ClientSession
) -> None:
    small, large = os.urandom(100_000), os.urandom(3 * 1024 * 1024)
    small_digest, large_digest = up.add_blob(small), up.add_blob(large)
    # About half a second: the clients follow the download as the disk fills up.
    up.add_fault(Fault(large_digest, method="GET", chunk_size=128 * 1024, chunk_delay=0.02))
    config = mirror_config(disk, up.url, fill=FILL, storage=on_disk(storage_settings, disk))
    async with run_mirror(config, send_buffer=64 * 1024) as mirror:
        assert (await pull(session, blob_url(mirror.url, REPO, small_digest))).body == small
        await wait_idle(mirror.app)
        url = blob_url(mirror.url, REPO, large_digest)

        def running() -> bool:
            return len(mirror.app[FILLS]) > 0

        def joinable() -> bool:
            return running_fill(mirror.app, up.host, large_digest) is not None

        async with HealthWatch(mirror.url, asyncio.get_running_loop()) as watch:
            clients = asyncio.gather(
                fault_clients.fast(url, running), fault_clients.slow(url, running)
            )
            # Once the disk refused a write the download takes no new client: a late
            # one gets a download of its own.
            await wait_for(joinable, "the download")
            await wait_for(lambda: not joinable(), "the disk to refuse a write")
            late = await fault_clients.fast(url, running)
            first, second = await clients
            await wait_idle(mirror.app)
        watch.check()
        expect_exact(first + second + late, large)
        gets = [r for r in up.requests if r.method == "GET" and r.path.endswith(large_digest)]
        # One download each; a download that was splicing into the disk when it
        # filled up resumes the rest with Range, from the byte it had got to.
        assert len([r for r in gets if "Range" not in r.headers]) == 2
        assert all(r.headers["Range"] != "bytes=0-" for r in gets if "Range" in r.headers)
        assert leftovers(disk) == []
        # S3 still took the blob; a full disk cache could not.
        cached = storage_settings.get("backend") == "s3"
        assert await is_cached(mirror.app, up.host, large_digest) == cached
        action = "spool" if cached else "write"  # what refused: the local spool, or the cache
        errors = f'mirror_storage_errors_total{{action="{action}",backend="disk"}}'
        assert errors in mirror.app[METRICS].render().decode()

        hit = await pull(session, blob_url(mirror.url, REPO, small_digest))
        assert hit.body == small
        assert up.count("GET", f"/blobs/{small_digest}") == 1  # from the cache

        up.faults.clear()
        resize(disk, "16m")  # space comes back
        assert (await pull(session, url)).body == large
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, large_digest)


async def test_a_disk_full_to_the_last_byte_still_serves_every_byte(
    up: FakeUpstream, disk: Path, storage_settings: dict[str, Any], session: aiohttp.ClientSession
) -> None:
    data = os.urandom(3972)  # the size seen cut one byte short
    digest = up.add_blob(data)
    config = mirror_config(disk, up.url, fill=FILL, storage=on_disk(storage_settings, disk))
    async with run_mirror(config) as mirror:
        (disk / ".partial").mkdir(exist_ok=True)
        fill_up(disk)
        assert free_bytes(disk) == 0
        started = time.monotonic()
        pulled = await pull(session, blob_url(mirror.url, REPO, digest))
        assert pulled.error is None, pulled.error
        assert pulled.body == data
        assert time.monotonic() - started < LIMIT
        await wait_idle(mirror.app)
        assert not await is_cached(mirror.app, up.host, digest) or _is_s3(storage_settings)
        if not _is_s3(storage_settings):
            await assert_not_ready(mirror, session)

        (disk / FILLER).unlink()
        assert (await pull(session, blob_url(mirror.url, REPO, digest))).body == data
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, digest)
        assert leftovers(disk) == []


def _is_s3(storage_settings: dict[str, Any]) -> bool:
    return storage_settings.get("backend") == "s3"


async def assert_not_ready(mirror: RunningMirror, session: aiohttp.ClientSession) -> None:
    """/readyz says the cache storage takes no write (as it did before)."""
    async with session.get(f"{mirror.url}/readyz") as resp:
        body = await resp.json()
    assert resp.status == 503
    assert "storage" in body["reason"]
