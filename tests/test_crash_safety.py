"""A kill -9 or a full disk costs at most a re-download, never a half-written cache entry."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror
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
                    await resp.content.readexactly(64 * 1024)
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


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: too small for the test blob."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


async def test_full_disk_never_publishes_a_partial_blob(small_disk: Path) -> None:
    data = random.Random(8).randbytes(BLOB_SIZE)
    async with FakeUpstream() as upstream:
        digest = upstream.add_blob(data)
        config = mirror_config(small_disk, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            url = f"{mirror.url}/v2/library/x/blobs/{digest}"
            received = b""
            with contextlib.suppress(aiohttp.ClientPayloadError):
                async with session.get(url) as resp:
                    received = await resp.read()
            # Either the request failed outright or the transfer was cut; never all bytes.
            assert received != data
            assert blob_files(small_disk) == []
            assert list((small_disk / ".partial").iterdir()) == [], "the partial is removed"
