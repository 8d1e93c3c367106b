"""The byte budget: LRU eviction, pins, in-flight downloads, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.app import CACHE, METRICS
from mirror.oci import parse_digest
from tests.support.cache_images import (
    OCI_INDEX,
    FakeImage,
    add_image,
    add_index,
    blob_path,
    committed,
    content_on_disk,
    get_blob,
    manifest_path,
    noise,
    pull,
    settle,
    upstream_name,
)
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror

LAYER = 20_000
BUDGET = {"max_size": 100_000, "high_watermark": 0.9, "low_watermark": 0.65}


def images(up: FakeUpstream, count: int) -> list[FakeImage]:
    return [add_image(up, f"team/app{i}", "1", [noise(LAYER, i)]) for i in range(count)]


def cached(cache_dir: Path, up: FakeUpstream, image: FakeImage) -> list[bool]:
    """For the manifest and each blob of ``image``: is it on disk?"""
    paths = [manifest_path(cache_dir, upstream_name(up), image.manifest)]
    paths += [blob_path(cache_dir, upstream_name(up), d) for d in image.blobs]
    return [p.exists() for p in paths]


def gone(cache_dir: Path, up: FakeUpstream, image: FakeImage) -> bool:
    """Whether the manifest and the layers of ``image`` were evicted.

    The small config blob may commit after the layer (both fills run at once
    under load), so whether it goes too depends on that order; it is not checked.
    """
    paths = [manifest_path(cache_dir, upstream_name(up), image.manifest)]
    paths += [blob_path(cache_dir, upstream_name(up), d) for d in image.layers]
    return not any(p.exists() for p in paths)


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.split("{")[0].split(" ")[0] == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_budget_evicts_least_recent_and_keeps_pins(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pinned = add_image(up, "base/pinned", "stable", [noise(LAYER, 99)])
    a, b, c, d = images(up, 4)
    config = mirror_config(tmp_path, up.url, cache={**BUDGET, "pins": ["base/pinned:stable"]})
    async with run_mirror(config) as mirror:
        for image in (pinned, a, b, c):
            await pull(http, mirror.url, image)
            await settle(mirror.app)
        await pull(http, mirror.url, a)  # a hit: a becomes the most recent
        await pull(http, mirror.url, d)  # past 90 000 bytes: evict down to 65 000
        cache = await settle(mirror.app)

        on_disk = content_on_disk(tmp_path)
        assert sum(on_disk.values()) == cache.storage.index.size <= 65_000
        assert all(cached(tmp_path, up, pinned)), "pinned image was evicted"
        assert [k for k in on_disk if "/tags/base/pinned/stable/" in k], "pinned tag's record"
        assert all(cached(tmp_path, up, a))
        assert all(cached(tmp_path, up, d))
        assert gone(tmp_path, up, b)
        assert gone(tmp_path, up, c)
        text = mirror.app[METRICS].render().decode()
        pulled = 4 * 5  # tag record, manifest, config, layer of five images
        assert metric(text, "mirror_cache_evictions_total") == pulled - len(on_disk)
        assert metric(text, "mirror_cache_size_bytes") == cache.storage.index.size
        assert metric(text, "mirror_cache_entries") == len(on_disk)
        assert metric(text, "mirror_cache_max_size_bytes") == 100_000

        # An evicted image is simply a miss: fetched again, verified, correct.
        await pull(http, mirror.url, b)
        assert up.count("GET", "/blobs/" + b.layers[0]) == 2
        assert up.count("GET", "/blobs/" + a.layers[0]) == 1
        await settle(mirror.app)
        assert sum(content_on_disk(tmp_path).values()) <= 90_000


async def test_pinned_index_keeps_children_and_their_blobs(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    child = add_image(up, "team/multi", "amd64", [noise(LAYER, 50)])
    index = add_index(up, "team/multi", "1", [child])
    others = images(up, 4)
    pin = f"{upstream_name(up)}/team/multi@{index}"  # upstream first, then a digest
    config = mirror_config(tmp_path, up.url, cache={**BUDGET, "pins": [pin]})
    async with run_mirror(config) as mirror:
        async with http.get(f"{mirror.url}/v2/team/multi/manifests/1",
                            headers={"Accept": OCI_INDEX}) as resp:  # fmt: skip
            assert resp.status == 200
        await pull(http, mirror.url, child)
        for image in others:
            await pull(http, mirror.url, image)
            await settle(mirror.app)
        assert gone(tmp_path, up, others[0]), "nothing was evicted"
        assert manifest_path(tmp_path, upstream_name(up), index).exists()
        assert all(cached(tmp_path, up, child)), "the pinned index's child was evicted"


async def test_shared_blob_counted_once(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    shared = noise(LAYER, 7)
    one = add_image(up, "team/one", "1", [shared])
    two = add_image(up, "team/two", "1", [shared])
    config = mirror_config(tmp_path, up.url, cache=BUDGET)
    async with run_mirror(config) as mirror:
        await pull(http, mirror.url, one)
        await pull(http, mirror.url, two)
        cache = await settle(mirror.app)
        assert cache.storage.index.size == sum(content_on_disk(tmp_path).values())
        assert cache.storage.index.size < 2 * LAYER
        assert up.count("GET", "/blobs/" + one.layers[0]) == 1


async def test_eviction_while_the_same_blob_downloads_again(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """An evicted blob is fetched again by two clients while more pulls push the
    cache over budget: passes run during the download, both clients get the right
    bytes, the blob is cached once more and the budget holds."""
    big = add_image(up, "team/big", "1", [noise(40_000, 1234)])
    a, b, c, d, e = images(up, 5)
    config = mirror_config(tmp_path, up.url, cache=BUDGET)
    async with run_mirror(config) as mirror:
        for image in (big, a, b, c):
            await pull(http, mirror.url, image)
            await settle(mirror.app)
        assert gone(tmp_path, up, big), "the oldest image should have gone"
        layer = big.layers[0]
        up.add_fault(Fault(layer, method="GET", chunk_delay=0.05, chunk_size=4096))
        first = asyncio.create_task(get_blob(http, mirror.url, big.repository, layer))
        for _ in range(200):  # let the download start before the second client joins
            if up.count("GET", "/blobs/" + layer) == 2:
                break
            await asyncio.sleep(0.01)
        second = asyncio.create_task(get_blob(http, mirror.url, big.repository, layer))
        metrics = mirror.app[METRICS]
        evictions_before = metric(metrics.render().decode(), "mirror_cache_evictions_total")
        for image in (d, e):  # these commits start passes while the layer downloads
            await pull(http, mirror.url, image)
            await committed(mirror.app, upstream_name(up), image.layers[0])
            await mirror.app[CACHE].evictor.settled()
        assert not first.done(), "the download should still be running"
        text = mirror.app[METRICS].render().decode()
        assert metric(text, "mirror_cache_evictions_total") > evictions_before
        assert await first == await second == noise(40_000, 1234)
        cache = await settle(mirror.app)
        assert blob_path(tmp_path, upstream_name(up), layer).exists()
        assert cache.storage.index.size == sum(content_on_disk(tmp_path).values()) <= 65_000
        assert up.count("GET", "/blobs/" + layer) == 2  # once at first, once after eviction


async def test_blob_removed_while_being_sent(up: FakeUpstream, tmp_path: Path) -> None:
    """Deleting a blob mid-transfer (eviction or purge) never cuts or changes the body."""
    data = noise(16 * 1024 * 1024, 5)
    digest = up.add_blob(data)
    config = mirror_config(tmp_path, up.url, admin={"token": "t"})
    # A small receive buffer keeps most of the body waiting in the mirror's sendfile.
    connector = aiohttp.TCPConnector(force_close=True)
    async with run_mirror(config) as mirror, aiohttp.ClientSession(connector=connector) as http:
        await get_blob(http, mirror.url, "team/app", digest)
        await settle(mirror.app)
        async with http.get(f"{mirror.url}/v2/team/app/blobs/{digest}",
                            read_bufsize=4096) as resp:  # fmt: skip
            assert resp.status == 200
            head = await resp.content.readexactly(4096)
            cache = mirror.app[CACHE]
            report = await cache.purge(upstream_name(up), None, None, parse_digest(digest))
            assert report.blobs == 1
            assert not blob_path(tmp_path, upstream_name(up), digest).exists()
            body = head + await resp.read()
        assert hashlib.sha256(body).hexdigest() == digest.removeprefix("sha256:")
        await get_blob(http, mirror.url, "team/app", digest)  # fetched again
        assert up.count("GET", "/blobs/" + digest) == 2


async def test_restart_keeps_recency(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b, c, d, e = images(up, 5)
    config = mirror_config(tmp_path, up.url, cache=BUDGET)
    async with run_mirror(config) as mirror:
        for image in (a, b, c, d):
            await pull(http, mirror.url, image)
            await settle(mirror.app)
            await asyncio.sleep(0.02)  # distinct modification times
        await pull(http, mirror.url, a)  # a is now the most recent
        await settle(mirror.app)
    async with run_mirror(config) as mirror:
        cache = mirror.app[CACHE]
        assert cache.storage.index.size == sum(content_on_disk(tmp_path).values())
        await pull(http, mirror.url, e)  # past the high watermark
        await settle(mirror.app)
        for kept in (a, d, e):
            assert all(cached(tmp_path, up, kept))
        assert gone(tmp_path, up, b)
        assert gone(tmp_path, up, c)


async def test_start_over_budget_evicts_at_once(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    all_images = images(up, 4)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        for image in all_images:
            await pull(http, mirror.url, image)
        await settle(mirror.app)
    assert sum(content_on_disk(tmp_path).values()) > 80_000
    config = mirror_config(tmp_path, up.url, cache={**BUDGET, "max_size": 50_000})
    async with run_mirror(config) as mirror:
        await settle(mirror.app)
        assert sum(content_on_disk(tmp_path).values()) <= 50_000 * 0.65
        assert all(cached(tmp_path, up, all_images[-1]))


async def test_a_blob_evicted_between_lookup_and_open_is_served_whole(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process sharing the directory (a second mirror, ``registry-mirror gc``)
    removes the file just after the lookup found it, and puts a fresh copy back just
    after the open failed: the request must become a miss, not a 500."""
    data = noise(LAYER, 99)
    digest = up.add_blob(data, "team/app")
    cache = tmp_path / "cache"
    path = blob_path(cache, upstream_name(up), digest)
    real_open = os.open
    raced: list[Path] = []

    def evicting_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(file) == path and not raced:
            raced.append(path)
            aside = path.with_name(path.name + ".elsewhere")
            path.rename(aside)
            try:
                return real_open(file, flags, *args, **kwargs)
            finally:
                aside.rename(path)
        return real_open(file, flags, *args, **kwargs)

    async with run_mirror(mirror_config(cache, up.url)) as mirror:
        await get_blob(http, mirror.url, "team/app", digest)
        await committed(mirror.app, upstream_name(up), digest)
        monkeypatch.setattr(os, "open", evicting_open)
        async with http.get(f"{mirror.url}/v2/team/app/blobs/{digest}") as resp:
            status, body = resp.status, await resp.read()

    assert raced == [path]
    assert status == 200
    assert body == data


async def test_objects_of_an_upstream_no_longer_configured_count_and_age_out(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    old = images(up, 2)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        for image in old:
            await pull(http, mirror.url, image)
        await settle(mirror.app)
    left_behind = sum(content_on_disk(tmp_path).values())
    caplog.set_level(logging.INFO, logger="mirror.cache.manager")
    async with FakeUpstream() as other:
        new = [add_image(other, f"team/new{i}", "1", [noise(LAYER, 50 + i)]) for i in range(3)]
        async with run_mirror(mirror_config(tmp_path, other.url, cache=BUDGET)) as mirror:
            index = mirror.app[CACHE].storage.index
            assert index.size == left_behind  # on disk, so counted
            for image in new:
                await pull(http, mirror.url, image)
                await settle(mirror.app)
            assert index.size == sum(content_on_disk(tmp_path).values()) <= BUDGET["max_size"]
            assert all(gone(tmp_path, up, image) for image in old)  # the oldest, never used
            assert all(cached(tmp_path, other, new[-1]))
    assert f"of upstream {upstream_name(up)}, which the configuration does not name" in caplog.text
