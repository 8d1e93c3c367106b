"""A kill -9 costs at most a re-download, never a half-written cache entry.

A full disk is in tests/test_full_disk.py: the pull is then served through.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http

BLOB_SIZE = 4 * 1024 * 1024


def blob_files(cache: Path) -> list[Path]:
    """Every published blob file in a disk cache."""
    return [p for p in cache.glob("*/blobs/*/*/*") if p.is_file()]


def start_mirror(cache: Path, upstream_url: str, log: Path) -> tuple[ManagedProcess, str]:
    """``python -m mirror serve`` as a child process on a free port."""
    port = free_port()
    argv = [
        sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
        "--cache-dir", str(cache), "--upstream", upstream_url,
    ]  # fmt: skip
    process = start_process("mirror", argv, log_path=log, cwd=Path(__file__).parent.parent)
    return process, f"http://127.0.0.1:{port}"


async def test_kill_9_mid_download_leaves_nothing_visible(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(BLOB_SIZE)
    cache = tmp_path / "cache"
    async with FakeUpstream() as upstream:
        digest = upstream.add_blob(data)
        # Slow enough (about 8 s) that the kill lands mid-blob.
        upstream.add_fault(Fault(match=digest, method="GET", rate=512 * 1024, times=1))
        process, url = start_mirror(cache, upstream.url, tmp_path / "mirror1.log")
        try:
            await asyncio.to_thread(wait_for_http, url + "/v2/", process)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/v2/library/x/blobs/{digest}") as resp:
                    assert resp.status == 200
                    # Past the first batch (transfer._MIN_BATCH): the partial holds bytes.
                    await resp.content.readexactly(2 * 1024 * 1024)
                    os.kill(process.pid, signal.SIGKILL)
                    process.popen.wait(timeout=10)
                    with pytest.raises(aiohttp.ClientPayloadError):
                        await resp.read()
        finally:
            process.stop()
        assert blob_files(cache) == [], "a killed download must not be published"
        leftovers = list((cache / ".partial").iterdir())
        assert len(leftovers) == 1
        assert 0 < leftovers[0].stat().st_size < BLOB_SIZE

        process, url = start_mirror(cache, upstream.url, tmp_path / "mirror2.log")
        try:
            await asyncio.to_thread(wait_for_http, url + "/v2/", process)
            assert list((cache / ".partial").iterdir()) == [], "start-up sweeps orphans"
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{url}/v2/library/x/blobs/{digest}") as resp:
                    assert await resp.read() == data
        finally:
            process.stop()  # SIGTERM: a graceful stop lets the verified fill publish
    (published,) = blob_files(cache)
    assert hashlib.sha256(published.read_bytes()).hexdigest() == digest[7:]
