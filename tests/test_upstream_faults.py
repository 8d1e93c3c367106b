"""Upstream faults during pulls: cuts, wrong bytes, stalls, 5xx and 429."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.config import FillConfig
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.pulls import (
    Pulled,
    blob_url,
    is_cached,
    manifest_url,
    pull,
    running_fill,
    wait_for,
    wait_idle,
)
from tests.support.small_images import minimal_manifest

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IDLE_TIMEOUT = 0.5


@pytest.fixture
async def mirror(
    up: FakeUpstream, tmp_path: Path, storage_settings: dict[str, Any]
) -> AsyncIterator[RunningMirror]:
    """The mirror on each backend (disk, S3): faults must never leave a bad object in either."""
    fill = {"idle_timeout": IDLE_TIMEOUT, "total_timeout": 30}
    config = mirror_config(tmp_path / "cache", up.url, fill=fill, storage=storage_settings)
    async with run_mirror(config) as running:
        yield running


def blob_gets(up: FakeUpstream, digest: str) -> list[str | None]:
    """The Range header (or None) of every upstream GET of the blob, in order."""
    return [
        r.headers.get("Range")
        for r in up.requests
        if r.method == "GET" and r.path.endswith(f"/blobs/{digest}")
    ]


def assert_intact(pulled: Pulled, data: bytes) -> None:
    assert pulled.error is None, pulled.error
    assert pulled.status == 200
    assert pulled.sha256 == hashlib.sha256(data).hexdigest()


def assert_aborted(pulled: Pulled, data: bytes) -> None:
    """The client saw a broken transfer, never a complete (wrong or short) body."""
    assert pulled.status == 200  # the status line went out before the failure
    assert isinstance(pulled.error, aiohttp.ClientPayloadError), pulled.error
    assert pulled.size < len(data)


async def test_cut_upstream_is_resumed_with_range(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(2 * 1024 * 1024 + 5)
    digest = up.add_blob(data)
    cut = 700_001
    up.add_fault(Fault(digest, method="GET", cut_after=cut, times=1))
    url = blob_url(mirror.url, REPO, digest)

    results = await asyncio.gather(*(pull(session, url) for _ in range(3)))

    for pulled in results:
        assert_intact(pulled, data)
        assert pulled.body == data
    first, resumed = blob_gets(up, digest)
    assert first is None
    # Resumed, not restarted. aiohttp drops what it had buffered but not yet
    # handed out when a stream breaks, so the mirror may resume a little before the cut.
    assert resumed is not None
    start = int(resumed.removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= cut
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)


async def test_resume_against_an_upstream_that_ignores_range(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(2 * 1024 * 1024)
    digest = up.add_blob(data)
    up.honour_range = False
    up.add_fault(Fault(digest, method="GET", cut_after=900_000, times=1))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert_intact(pulled, data)
    first, resumed = blob_gets(up, digest)
    assert first is None
    assert resumed is not None  # asked for a range, got the whole blob, skipped ahead
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)


async def test_resumes_that_bring_no_byte_give_up_and_cache_nothing(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    digest = up.add_blob(data)
    # The first answer is cut after 64 KiB, every later one before its first byte.
    up.add_fault(Fault(digest, method="GET", cut_after=64 * 1024, times=1))
    up.add_fault(Fault(digest, method="GET", cut_after=0))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert_aborted(pulled, data)
    await wait_idle(mirror.app)
    assert not await is_cached(mirror.app, up.host, digest)
    assert len(blob_gets(up, digest)) == 1 + FillConfig().max_resumes


async def test_cuts_that_each_bring_bytes_still_finish_the_blob(
    up: FakeUpstream, tmp_path: Path, storage_settings: dict[str, Any],
    session: aiohttp.ClientSession,
) -> None:  # fmt: skip
    data = os.urandom(2 * 1024 * 1024)
    digest = up.add_blob(data)
    # Every answer is cut after 256 KiB: more cuts than max_resumes, each one progress.
    up.add_fault(Fault(digest, method="GET", cut_after=256 * 1024))
    # What counts here is resumes, not the stall clock (tested below): on a loaded
    # CI machine one cut and its resume once took longer than twice idle_timeout.
    fill = {"idle_timeout": IDLE_TIMEOUT, "stall_timeout": 10, "total_timeout": 30}
    config = mirror_config(tmp_path / "cache", up.url, fill=fill, storage=storage_settings)
    async with run_mirror(config) as mirror:
        pulled = await pull(session, blob_url(mirror.url, REPO, digest))

        assert_intact(pulled, data)
        assert len(blob_gets(up, digest)) > FillConfig().max_resumes + 1
        await wait_idle(mirror.app)
        assert await is_cached(mirror.app, up.host, digest)


async def test_wrong_bytes_abort_every_follower_and_cache_nothing(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    up.add_fault(
        Fault(digest, method="GET", corrupt=True, times=1, chunk_size=64 * 1024, chunk_delay=0.02)
    )
    url = blob_url(mirror.url, REPO, digest)

    results = await asyncio.gather(*(pull(session, url) for _ in range(5)))

    for pulled in results:
        assert_aborted(pulled, data)
    await wait_idle(mirror.app)
    assert not await is_cached(mirror.app, up.host, digest)
    assert len(blob_gets(up, digest)) == 1

    again = await pull(session, url)  # the fault is used up: this fetch is good

    assert_intact(again, data)
    assert len(blob_gets(up, digest)) == 2
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)


async def test_wrong_bytes_in_a_small_blob_never_reach_the_client_whole(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1000)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", corrupt=True))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    # Either an error status or a broken transfer; never 1000 clean bytes.
    if pulled.status == 200:
        assert_aborted(pulled, data)
    else:
        assert pulled.status == 502
    await wait_idle(mirror.app)
    assert not await is_cached(mirror.app, up.host, digest)


async def test_stalled_upstream_aborts_the_client_within_bounded_time(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    # The first answer stalls after 100 KiB, every resume before its first byte.
    up.add_fault(Fault(digest, method="GET", stall_after=100 * 1024, times=1))
    up.add_fault(Fault(digest, method="GET", stall_after=0))

    started = time.monotonic()
    pulled = await asyncio.wait_for(pull(session, blob_url(mirror.url, REPO, digest)), 20)
    elapsed = time.monotonic() - started

    assert_aborted(pulled, data)
    # fill.stall_timeout (twice idle_timeout here) since the last byte, resumes or not.
    assert elapsed < 15
    # The first stall and a resume that stalls in turn (at most one more if its own idle
    # timeout wins the race with stall_timeout); before, every resume restarted the clock.
    assert len(blob_gets(up, digest)) <= 3
    await wait_idle(mirror.app)
    assert not await is_cached(mirror.app, up.host, digest)


async def test_stall_once_is_resumed(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", stall_after=100 * 1024, times=1))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert_intact(pulled, data)
    assert blob_gets(up, digest) == [None, f"bytes={100 * 1024}-"]


async def test_blob_503_once_is_retried(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(10_000)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", status=503, times=1))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert_intact(pulled, data)
    assert len(blob_gets(up, digest)) == 2


async def test_manifest_503_once_is_retried(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    body = minimal_manifest()
    up.add_manifest(REPO, body, OCI_MANIFEST, tag="v1")
    up.add_fault(Fault("/manifests/v1", status=503, times=1))

    pulled = await pull(session, manifest_url(mirror.url, REPO, "v1"), {"Accept": OCI_MANIFEST})

    assert pulled.status == 200
    assert pulled.body == body
    assert up.count("GET", "/manifests/v1") == 2


async def test_persistent_503_gives_the_client_an_oci_error(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    digest = up.add_blob(b"x" * 100)
    up.add_fault(Fault(digest, status=503))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert pulled.status == 502
    assert b'"UNAVAILABLE"' in pulled.body
    # retries = 1 in the test config: the first try and one retry.
    assert len(blob_gets(up, digest)) == 2


@pytest.mark.parametrize("kind", ["blob", "manifest"])
async def test_429_is_passed_on_with_retry_after(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession, kind: str
) -> None:
    body = minimal_manifest()
    up.add_manifest(REPO, body, OCI_MANIFEST, tag="v1")
    digest = up.add_blob(b"y" * 100)
    up.add_fault(Fault(status=429, retry_after=37))
    if kind == "blob":
        url = blob_url(mirror.url, REPO, digest)
    else:
        url = manifest_url(mirror.url, REPO, "v1")

    pulled = await pull(session, url, {"Accept": OCI_MANIFEST})

    assert pulled.status == 429
    assert pulled.headers["Retry-After"] == "37"
    assert b'"TOOMANYREQUESTS"' in pulled.body
    assert len(up.requests) == 1  # a 429 is never retried by the mirror


async def test_blob_fill_failure_before_headers_is_not_cached_and_retried_later(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(10_000)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, status=500, times=1))
    url = blob_url(mirror.url, REPO, digest)

    first = await pull(session, url)
    await wait_for(lambda: running_fill(mirror.app, up.host, digest) is None, "no fill")
    second = await pull(session, url)

    assert first.status == 502
    assert_intact(second, data)


async def test_fill_total_timeout_aborts_a_slow_download(
    up: FakeUpstream, session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    # Bytes keep coming (never idle), but the whole blob would take ~10 s.
    up.add_fault(Fault(digest, method="GET", rate=100 * 1024))
    config = mirror_config(tmp_path, up.url, fill={"idle_timeout": 5, "total_timeout": 1})
    async with run_mirror(config) as mirror:
        started = time.monotonic()
        pulled = await pull(session, blob_url(mirror.url, REPO, digest))
        elapsed = time.monotonic() - started
        await wait_idle(mirror.app)
        cached = await is_cached(mirror.app, up.host, digest)

    assert_aborted(pulled, data)
    assert elapsed < 8
    assert not cached


async def test_upstream_that_never_answers_gives_a_504_in_bounded_time(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    digest = up.add_blob(os.urandom(1000))
    up.add_fault(Fault(digest, method="GET", first_byte_delay=math.inf))

    started = time.monotonic()
    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    assert pulled.status == 504
    assert json.loads(pulled.body)["errors"][0]["code"] == "UNAVAILABLE"
    assert time.monotonic() - started < 10


async def test_without_content_length_wrong_bytes_never_reach_the_client_whole(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", chunked=True, corrupt=True))

    pulled = await pull(session, blob_url(mirror.url, REPO, digest))

    # No size announced: the last byte received is held back until the digest is checked.
    assert pulled.status == 200
    assert "Content-Length" not in pulled.headers
    assert isinstance(pulled.error, aiohttp.ClientPayloadError), pulled.error
    assert pulled.size < len(data)
    await wait_idle(mirror.app)
    assert not await is_cached(mirror.app, up.host, digest)


async def test_without_content_length_right_bytes_are_served_and_cached(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024 + 3)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", chunked=True, chunk_size=100_000, chunk_delay=0.001))

    results = await asyncio.gather(
        *(pull(session, blob_url(mirror.url, REPO, digest)) for _ in range(3))
    )

    for pulled in results:
        assert_intact(pulled, data)
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)
    assert len(blob_gets(up, digest)) == 1
