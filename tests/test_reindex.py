"""``gc`` and ``verify`` beside a running mirror keep it truthful (issue 17, papercut 4).

A real ``registry-mirror serve`` process and real ``registry-mirror gc`` /
``verify`` processes work on one cache directory. Before ``--mirror``, the
mirror went on counting what gc evicted (``/admin/cache``,
``mirror_cache_size_bytes``); now the command has it re-read the cache
(``POST /admin/cache/reindex``) and its figures match the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.cache.index import CacheIndex, reconcile_index
from mirror.oci import parse_digest
from mirror.storage import layout
from mirror.storage.disk import DiskStorage
from tests.support.cache_images import (
    FakeImage,
    add_image,
    blob_path,
    content_on_disk,
    noise,
    pull,
    upstream_name,
)
from tests.support.cli import run_cli
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.pulls import wait_for

TOKEN = "reindex-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def served(tmp_path: Path, cache: Path, up: FakeUpstream) -> Iterator[MirrorProcess]:
    """A mirror process of ``up`` on ``cache``, with the admin API on and no budget."""
    settings = {"storage": {"path": str(cache)}, "admin": {"token": TOKEN},
                "upstreams": [{"url": up.url, "retries": 0}]}  # fmt: skip
    mirror = start_mirror_process(tmp_path, settings)
    try:
        yield mirror
    finally:
        mirror.process.stop()


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread, so the fake upstream on this loop keeps answering."""
    env = {"MIRROR_ADMIN_TOKEN": TOKEN}
    return await asyncio.to_thread(run_cli, *args, env=env)


async def mirror_figures(http: aiohttp.ClientSession, url: str) -> tuple[int, int, float]:
    """``/admin/cache`` size and entries, and ``mirror_cache_size_bytes``."""
    async with http.get(url + "/admin/cache", headers=AUTH) as resp:
        listing: dict[str, Any] = await resp.json()
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("mirror_cache_size_bytes ")]
    return listing["size"], listing["entries"], float(line.split()[1])


async def pulled(
    up: FakeUpstream, http: aiohttp.ClientSession, url: str, cache: Path
) -> list[FakeImage]:
    """Three 20 KB images pulled through the mirror, and on disk."""
    images = [add_image(up, f"team/app{i}", "1", [noise(20_000, i)]) for i in range(3)]
    for image in images:
        await pull(http, url, image)
    # Commits finish after the last byte went out: wait until the mirror counts them all.
    await wait_for(lambda: len(content_on_disk(cache)) == 12, "every object on disk", 30)
    return images


async def test_gc_beside_a_mirror_updates_its_index(
    up: FakeUpstream, served: MirrorProcess, cache: Path, http: aiohttp.ClientSession
) -> None:
    await pulled(up, http, served.url, cache)
    on_disk = sum(content_on_disk(cache).values())
    assert (await mirror_figures(http, served.url))[:2] == (on_disk, 12)

    done = await cli("gc", "--cache-dir", str(cache), "--upstream", up.url,
                     "--max-size", "30KB", "--mirror", served.url)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    left = content_on_disk(cache)
    assert sum(left.values()) < on_disk / 2  # gc evicted most of it
    size, entries, gauge = await mirror_figures(http, served.url)
    assert (size, entries, gauge) == (sum(left.values()), len(left), sum(left.values()))
    assert f"mirror {served.url}: index reconciled (" in done.stdout


async def test_verify_beside_a_mirror_updates_its_index(
    up: FakeUpstream, served: MirrorProcess, cache: Path, http: aiohttp.ClientSession
) -> None:
    images = await pulled(up, http, served.url, cache)
    damaged = blob_path(cache, upstream_name(up), images[0].layers[0])
    damaged.write_bytes(b"not the layer")
    done = await cli("verify", "--cache-dir", str(cache), "--upstream", up.url,
                     "--mirror", served.url)  # fmt: skip
    assert done.returncode == 1  # something was damaged
    assert "1 dropped, 0 added" in done.stdout
    left = content_on_disk(cache)
    assert (await mirror_figures(http, served.url))[:2] == (sum(left.values()), 11)
    await pull(http, served.url, images[0])  # a miss again, fetched and verified
    assert up.count("GET", "/blobs/" + images[0].layers[0]) == 2


async def test_a_mirror_that_cannot_be_told_fails_the_command(
    up: FakeUpstream, served: MirrorProcess, cache: Path
) -> None:
    done = await asyncio.to_thread(
        run_cli, "gc", "--cache-dir", str(cache), "--mirror", served.url,
        env={"MIRROR_ADMIN_TOKEN": "wrong"},
    )  # fmt: skip
    assert done.returncode == 1
    assert f"mirror {served.url}: not reindexed: answered 401" in done.stdout
    assert "Traceback" not in done.stderr


def blob_key(data: bytes) -> str:
    """The cache key of ``data`` as a blob of upstream ``registry.test``."""
    return layout.blob_key(
        "registry.test", parse_digest("sha256:" + hashlib.sha256(data).hexdigest())
    )


async def test_reconcile_keeps_what_was_committed_while_it_listed(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    kept, written_elsewhere = b"kept", b"written by another process"
    for data in (kept, written_elsewhere):
        await storage.put(blob_key(data), data)
    index = CacheIndex()
    index.add(blob_key(kept), len(kept))
    index.add(blob_key(b"deleted by gc"), 10, accessed=time.time() - 60)
    # Listed as missing, but committed after the listing began: it may be behind its position.
    index.add(blob_key(b"committed meanwhile"), 20, accessed=time.time() + 60)
    result = await reconcile_index(storage, index)
    assert (result.removed, result.added) == (1, 1)
    assert {e.key for e in index.entries()} == {
        blob_key(kept),
        blob_key(written_elsewhere),
        blob_key(b"committed meanwhile"),
    }
    assert index.size == len(kept) + len(written_elsewhere) + 20
