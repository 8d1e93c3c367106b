"""One upstream GET per blob (and per manifest) for any number of concurrent clients."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mirror.app import METRICS
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.images import ImageSet
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
from tests.support.registry import UpstreamRegistry
from tests.support.small_images import minimal_manifest

REPO = "team/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
async def mirror(
    up: FakeUpstream, tmp_path: Path, storage_settings: dict[str, Any]
) -> AsyncIterator[RunningMirror]:
    """The mirror on each backend (disk, S3): the fill logic must hold for both."""
    config = mirror_config(
        tmp_path / "cache", up.url, fill={"idle_timeout": 5}, storage=storage_settings
    )
    async with run_mirror(config) as running:
        yield running


def blob_gets(up: FakeUpstream, digest: str) -> int:
    return up.count("GET", f"/blobs/{digest}")


def assert_intact(pulled: Pulled, data: bytes) -> None:
    assert pulled.error is None, pulled.error
    assert pulled.status == 200
    assert pulled.size == len(data)
    assert pulled.sha256 == hashlib.sha256(data).hexdigest()


async def test_fifty_concurrent_cold_gets_make_one_upstream_get(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = up.add_blob(data)
    # The upstream waits before answering, so every client arrives while the fill runs.
    up.add_fault(Fault(digest, method="GET", first_byte_delay=0.5))
    url = blob_url(mirror.url, REPO, digest)

    results = await asyncio.gather(*(pull(session, url, keep_body=False) for _ in range(50)))

    for pulled in results:
        assert_intact(pulled, data)
        assert pulled.headers["Docker-Content-Digest"] == digest
    assert blob_gets(up, digest) == 1
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)


def counter(mirror: RunningMirror, sample: str) -> float:
    """The value of an unlabelled counter sample."""
    text = mirror.app[METRICS].render().decode()
    values = [s.value for f in text_string_to_metric_families(text) for s in f.samples
              if s.name == sample]  # fmt: skip
    assert len(values) == 1, sample
    return values[0]


async def test_twenty_concurrent_cold_gets_are_one_download_and_nineteen_followers(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024 + 5)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", first_byte_delay=0.5))
    url = blob_url(mirror.url, REPO, digest)

    results = await asyncio.gather(*(pull(session, url, keep_body=False) for _ in range(20)))

    for pulled in results:
        assert_intact(pulled, data)
    assert blob_gets(up, digest) == 1
    assert counter(mirror, "mirror_fill_followers_total") == 19
    await wait_idle(mirror.app)
    cached = await pull(session, url, keep_body=False)  # a hit follows no download
    assert_intact(cached, data)
    assert counter(mirror, "mirror_fill_followers_total") == 19


async def test_every_client_gets_bytes_before_the_upstream_has_finished(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    # 16 chunks of 64 KiB, 0.15 s apart: at least 2.25 s to send the whole blob.
    up.add_fault(Fault(digest, method="GET", chunk_size=64 * 1024, chunk_delay=0.15))
    url = blob_url(mirror.url, REPO, digest)

    async def note_progress(pulled: Pulled, chunk: bytes) -> bool:
        if "upstream_sent" not in pulled.notes:
            fill = running_fill(mirror.app, up.host, digest)
            pulled.notes["upstream_sent"] = None if fill is None else fill.written
        return True

    results = await asyncio.gather(*(pull(session, url, on_chunk=note_progress) for _ in range(8)))

    for pulled in results:
        assert_intact(pulled, data)
        sent = pulled.notes["upstream_sent"]
        # At its first byte, the upstream was still sending: the fill was running, not complete.
        assert isinstance(sent, int)
        assert sent < len(data)
    assert blob_gets(up, digest) == 1


async def test_client_joining_mid_fill_gets_the_whole_body(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", chunk_size=64 * 1024, chunk_delay=0.1))
    url = blob_url(mirror.url, REPO, digest)

    first = asyncio.create_task(pull(session, url))

    def half_written() -> bool:
        fill = running_fill(mirror.app, up.host, digest)
        return fill is not None and fill.written >= len(data) // 2

    await wait_for(half_written, "the fill to pass half the blob")
    joiner = await pull(session, url)

    assert_intact(joiner, data)
    assert joiner.body == data
    assert_intact(await first, data)
    assert blob_gets(up, digest) == 1


async def test_follower_hanging_up_affects_nobody_and_the_fill_commits(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(1024 * 1024)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", chunk_size=64 * 1024, chunk_delay=0.05))
    url = blob_url(mirror.url, REPO, digest)

    async def hang_up_early(pulled: Pulled, chunk: bytes) -> bool:
        return pulled.size < 100 * 1024

    # The client that started the fill is the one that leaves.
    quitter = asyncio.create_task(pull(session, url, on_chunk=hang_up_early))
    await wait_for(lambda: running_fill(mirror.app, up.host, digest) is not None, "a fill")
    others = await asyncio.gather(*(pull(session, url) for _ in range(3)))

    assert (await quitter).size < len(data)
    for pulled in others:
        assert_intact(pulled, data)
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)
    before = len(up.requests)
    assert_intact(await pull(session, url), data)
    assert len(up.requests) == before  # a cache hit: the upstream heard nothing


async def test_range_on_a_cold_miss_is_answered_from_the_fill(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(512 * 1024)
    digest = up.add_blob(data)
    up.add_fault(Fault(digest, method="GET", chunk_size=32 * 1024, chunk_delay=0.02))
    url = blob_url(mirror.url, REPO, digest)

    ranged, whole = await asyncio.gather(
        pull(session, url, {"Range": "bytes=1000-200999"}), pull(session, url)
    )

    assert ranged.error is None
    assert ranged.status == 206
    assert ranged.headers["Content-Range"] == f"bytes 1000-200999/{len(data)}"
    assert ranged.body == data[1000:201000]
    assert_intact(whole, data)
    assert blob_gets(up, digest) == 1
    # The mirror downloaded the whole blob once, never just the range.
    assert all("Range" not in r.headers for r in up.requests)
    await wait_idle(mirror.app)
    assert await is_cached(mirror.app, up.host, digest)


async def test_range_alone_on_a_cold_miss_caches_the_whole_blob(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    data = os.urandom(300 * 1024)
    digest = up.add_blob(data)
    url = blob_url(mirror.url, REPO, digest)

    ranged = await pull(session, url, {"Range": "bytes=-1000"})

    assert ranged.status == 206
    assert ranged.body == data[-1000:]
    await wait_idle(mirror.app)
    assert_intact(await pull(session, url), data)
    assert blob_gets(up, digest) == 1


async def test_concurrent_gets_of_one_tag_make_one_upstream_manifest_get(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    body = minimal_manifest()
    digest = up.add_manifest(REPO, body, OCI_MANIFEST, tag="v1")
    up.add_fault(Fault("/manifests/v1", first_byte_delay=0.5))
    headers = {"Accept": OCI_MANIFEST}

    results = await asyncio.gather(
        *(pull(session, manifest_url(mirror.url, REPO, "v1"), headers) for _ in range(20))
    )

    for pulled in results:
        assert pulled.status == 200
        assert pulled.body == body
        assert pulled.headers["Docker-Content-Digest"] == digest
    assert up.count(None, f"/{REPO}/manifests/v1") == 1


async def test_concurrent_gets_of_one_manifest_digest_make_one_upstream_get(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    body = minimal_manifest()
    digest = up.add_manifest(REPO, body, OCI_MANIFEST)
    up.add_fault(Fault(digest, first_byte_delay=0.5))
    url = manifest_url(mirror.url, REPO, digest)

    results = await asyncio.gather(*(pull(session, url) for _ in range(20)))

    assert [r.body for r in results] == [body] * 20
    assert up.count(None, f"/manifests/{digest}") == 1


async def test_manifest_fetch_survives_its_only_client_hanging_up(
    up: FakeUpstream, mirror: RunningMirror, session: aiohttp.ClientSession
) -> None:
    body = minimal_manifest()
    up.add_manifest(REPO, body, OCI_MANIFEST, tag="v1")
    up.add_fault(Fault("/manifests/v1", first_byte_delay=0.5))
    url = manifest_url(mirror.url, REPO, "v1")

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pull(session, url, {"Accept": OCI_MANIFEST}), 0.2)
    await wait_for(lambda: up.count("GET", "/manifests/v1") == 1, "the upstream GET")
    await asyncio.sleep(0.6)  # the shared fetch goes on without its client and caches
    again = await pull(session, url, {"Accept": OCI_MANIFEST})

    assert again.body == body
    assert up.count(None, "/manifests/v1") == 1


@pytest.mark.slow
async def test_twenty_concurrent_pulls_of_a_large_layer_from_distribution_make_one_get(
    registry_none: UpstreamRegistry,
    image_set: ImageSet,
    session: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    blob = image_set.large_layer()
    mark = registry_none.log_mark()
    async with run_mirror(mirror_config(tmp_path, registry_none.url)) as mirror:
        url = blob_url(mirror.url, "library/large", blob.digest)
        results = await asyncio.gather(*(pull(session, url, keep_body=False) for _ in range(20)))
        await wait_idle(mirror.app)
        cached = await is_cached(mirror.app, registry_none.host, blob.digest)

    for pulled in results:
        assert pulled.error is None
        assert pulled.status == 200
        assert pulled.digest == blob.digest
    assert cached
    assert registry_none.count("GET", f"/v2/library/large/blobs/{blob.digest}", mark) == 1
