"""SIGTERM/SIGINT: stop accepting, drain within ``shutdown_grace``, cancel the rest, exit 0.

Real ``registry-mirror serve`` processes, a fake upstream on a real socket
that stalls or trickles, and clients in the middle of their downloads.
Before ``shutdown_grace`` existed, a request waiting on a stalled upstream
held the process for aiohttp's default 60 s.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.pulls import wait_for
from tests.support.s3 import MotoS3

MIB = 1024 * 1024
# Generous for a loaded 2-core machine; aiohttp's own default alone is 60 s.
EXIT_MARGIN = 10.0


def settings(upstream: FakeUpstream, storage: dict[str, Any], grace: str) -> dict[str, Any]:
    """A mirror of ``upstream`` with ``storage`` and ``shutdown_grace``."""
    return {
        "shutdown_grace": grace,
        "storage": storage,
        "upstreams": [{"url": upstream.url, "retries": 0, "read_timeout": 300}],
    }


async def stop_and_time(mirror: MirrorProcess, sig: signal.Signals = signal.SIGTERM) -> float:
    """Send ``sig`` and wait (at most 90 s) for the exit; seconds it took."""
    started = time.monotonic()
    mirror.process.popen.send_signal(sig)
    await wait_for(lambda: not mirror.process.alive(), f"the exit after {sig.name}", 90)
    return time.monotonic() - started


def assert_nothing_partial(storage: dict[str, Any], s3: MotoS3 | None) -> None:
    """No partial file on disk, no multipart upload left in the bucket."""
    if storage.get("backend") == "s3":
        assert s3 is not None
        assert s3.uploads(storage["s3"]["bucket"]) == []
    else:
        partial = Path(storage["path"]) / ".partial"
        assert list(partial.iterdir()) == []


def stored_blobs(storage: dict[str, Any], s3: MotoS3 | None) -> list[str]:
    """The blob keys or files in the cache."""
    if storage.get("backend") == "s3":
        assert s3 is not None
        return [k for k in s3.keys(storage["s3"]["bucket"]) if "/blobs/" in k]
    return [str(p) for p in Path(storage["path"]).glob("*/blobs/*/*/*")]


def s3_of(request: pytest.FixtureRequest, storage: dict[str, Any]) -> MotoS3 | None:
    """The moto server behind ``storage``, if it is an S3 one."""
    if storage.get("backend") != "s3":
        return None
    server: MotoS3 = request.getfixturevalue("s3_server")
    return server


async def read_some(resp: aiohttp.ClientResponse, size: int) -> bytes:
    """Read ``size`` body bytes: the download is under way."""
    assert resp.status == 200
    return await resp.content.readexactly(size)


async def test_sigterm_with_stalled_upstream_exits_within_grace(
    up: FakeUpstream, storage_settings: dict[str, Any], request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:  # fmt: skip
    s3 = s3_of(request, storage_settings)
    rng = random.Random(16)
    headers_stall = up.add_blob(rng.randbytes(MIB))
    up.add_fault(Fault(match=headers_stall, method="GET", first_byte_delay=math.inf))
    # Past one S3 part, so a multipart upload is open when the bytes stop.
    body_stalls = [up.add_blob(rng.randbytes(8 * MIB)) for _ in range(2)]
    for digest in body_stalls:
        up.add_fault(Fault(match=digest, method="GET", stall_after=6 * MIB))
    mirror = start_mirror_process(tmp_path, settings(up, storage_settings, "2s"), wait=False)
    await asyncio.to_thread(mirror.wait_ready)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        waiting = asyncio.ensure_future(session.get(f"{mirror.url}/v2/a/blobs/{headers_stall}"))
        responses = [await session.get(f"{mirror.url}/v2/a/blobs/{d}") for d in body_stalls]
        for resp in responses:
            await read_some(resp, 6 * MIB)
        await wait_for(lambda: up.count("GET", headers_stall) > 0, "the upstream GET")
        took = await stop_and_time(mirror)
        for resp in responses:
            with pytest.raises(aiohttp.ClientPayloadError):
                await resp.read()
        with pytest.raises(aiohttp.ClientError):
            await waiting
    assert mirror.process.popen.returncode == 0
    assert took < 2 + EXIT_MARGIN
    log = mirror.log()
    assert (
        "SIGTERM received: no longer accepting connections; draining 3 requests "
        "and 3 downloads (shutdown_grace 2s)"
    ) in log
    assert "shutdown_grace over: cancelling 3 requests still running" in log
    assert "shutdown: 0 verified downloads committed, 3 downloads cancelled" in log
    assert log.rstrip().endswith("mirror.shutdown: stopped")
    assert_nothing_partial(storage_settings, s3)
    assert stored_blobs(storage_settings, s3) == []


async def test_sigterm_lets_active_downloads_finish_and_commit(
    up: FakeUpstream, storage_settings: dict[str, Any], request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:  # fmt: skip
    s3 = s3_of(request, storage_settings)
    rng = random.Random(17)
    blobs = [rng.randbytes(3 * MIB) for _ in range(3)]
    digests = [up.add_blob(blob) for blob in blobs]
    for digest in digests:  # about 3 s each
        up.add_fault(Fault(match=digest, method="GET", rate=MIB))
    mirror = start_mirror_process(tmp_path, settings(up, storage_settings, "60s"), wait=False)
    await asyncio.to_thread(mirror.wait_ready)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        responses = [await session.get(f"{mirror.url}/v2/a/blobs/{d}") for d in digests]
        heads = [await read_some(resp, 64 * 1024) for resp in responses]
        stopping = asyncio.ensure_future(stop_and_time(mirror))
        bodies = [head + await resp.read() for head, resp in zip(heads, responses, strict=True)]
        await stopping
    for body, digest in zip(bodies, digests, strict=True):
        assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    assert mirror.process.popen.returncode == 0
    log = mirror.log()
    assert "draining 3 requests and 3 downloads (shutdown_grace 60s)" in log
    assert "all requests finished" in log
    assert "stopped" in log
    assert len(stored_blobs(storage_settings, s3)) == 3
    assert_nothing_partial(storage_settings, s3)
    for digest in digests:
        assert up.count("GET", digest) == 1


async def test_second_signal_stops_without_waiting(up: FakeUpstream, tmp_path: Path) -> None:
    digest = up.add_blob(b"x" * 4096)
    up.add_fault(Fault(match=digest, method="GET", first_byte_delay=math.inf))
    storage = {"path": str(tmp_path / "cache")}
    mirror = start_mirror_process(tmp_path, settings(up, storage, "5m"), wait=False)
    await asyncio.to_thread(mirror.wait_ready)
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.ensure_future(session.get(f"{mirror.url}/v2/a/blobs/{digest}"))
        await wait_for(lambda: up.count("GET", digest) > 0, "the upstream GET")
        mirror.process.popen.send_signal(signal.SIGINT)
        await asyncio.sleep(0.5)
        took = await stop_and_time(mirror, signal.SIGINT)
        with pytest.raises(aiohttp.ClientError):
            await waiting
    assert mirror.process.popen.returncode == 0
    assert took < EXIT_MARGIN
    log = mirror.log()
    assert "SIGINT received" in log
    assert "SIGINT again: stopping without waiting" in log
    assert_nothing_partial(storage, None)
