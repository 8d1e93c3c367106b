"""Blob (and manifest) access follows repositories: nothing cached through A leaks through B.

The fake upstream serves a layer only under the repositories it was added
for, as a registry does. The mirror caches it through repository ``a/app``;
under ``b/app`` it must answer as the upstream does for ``b/app`` (404),
serve it from the cache once the upstream confirms it for ``b/app`` or a
manifest of ``b/app`` names it, and after a restart (offline too) still
serve what it cached by tag without asking anyone.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.fake_upstream_helpers import Fault
from tests.support.manifest_samples import OCI_MANIFEST
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.small_images import settle

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class Image:
    repository: str
    manifest: str
    config: str
    layer: str


def descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "size": len(data),
            "digest": "sha256:" + hashlib.sha256(data).hexdigest()}  # fmt: skip


def add_image(up: FakeUpstream, repository: str, layer: bytes, seed: str) -> Image:
    """An image of ``repository`` whose blobs the upstream serves under that repository only."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config), "layers": [descriptor(OCI_LAYER, layer)],
    }).encode()  # fmt: skip
    config_digest = up.add_blob(config, repository)
    layer_digest = up.add_blob(layer, repository)
    manifest = up.add_manifest(repository, body, OCI_MANIFEST, tag="1")
    return Image(repository, manifest, config_digest, layer_digest)


LAYER = bytes(range(256)) * 400  # 100 KiB


@pytest.fixture
async def up() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


async def fetch(http: aiohttp.ClientSession, url: str, method: str = "GET") -> tuple[int, bytes]:
    async with http.request(method, url, headers={"Accept": OCI_MANIFEST}) as resp:
        return resp.status, await resp.read()


async def pull(http: aiohttp.ClientSession, base: str, image: Image) -> None:
    """Manifest by tag, then the blobs, as clients pull; all cached afterwards."""
    assert (await fetch(http, f"{base}/v2/{image.repository}/manifests/1"))[0] == 200
    for digest in (image.config, image.layer):
        assert (await fetch(http, f"{base}/v2/{image.repository}/blobs/{digest}"))[0] == 200
    await settle(http, base)


def blob_requests(up: FakeUpstream, repository: str, digest: str) -> list[str]:
    return [r.method for r in up.requests if r.path == f"/v2/{repository}/blobs/{digest}"]


async def test_a_blob_cached_through_a_is_refused_under_b_that_does_not_contain_it(
    tmp_path: Path, up: FakeUpstream
) -> None:
    a = add_image(up, "a/app", LAYER, "a")
    up.add_manifest("b/app", b"{}", OCI_MANIFEST)  # b/app exists upstream, without the layer
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with aiohttp.ClientSession() as http:
            await pull(http, mirror.url, a)
            for method in ("GET", "HEAD"):
                status, body = await fetch(http, f"{mirror.url}/v2/b/app/blobs/{a.layer}", method)
                assert status == 404, method
                if method == "GET":
                    assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
            # The manifest, by digest, neither.
            status, body = await fetch(http, f"{mirror.url}/v2/b/app/manifests/{a.manifest}")
            assert status == 404
            assert json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
            # Still served under A, from the cache.
            assert (await fetch(http, f"{mirror.url}/v2/a/app/blobs/{a.layer}")) == (200, LAYER)
    # The upstream was asked under B's own name, and refused.
    assert blob_requests(up, "b/app", a.layer) == ["HEAD", "HEAD"]
    assert blob_requests(up, "a/app", a.layer) == ["GET"]


async def test_served_under_b_once_its_manifest_names_it_or_the_upstream_confirms_it(
    tmp_path: Path, up: FakeUpstream
) -> None:
    a = add_image(up, "a/app", LAYER, "a")
    b = add_image(up, "b/app", LAYER, "b")  # the same layer, another config
    up.add_blob(LAYER, "c/app")  # c/app has the layer upstream, no manifest pulled
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with aiohttp.ClientSession() as http:
            await pull(http, mirror.url, a)
            status, _ = await fetch(http, f"{mirror.url}/v2/b/app/manifests/1")
            assert status == 200
            for _ in range(2):
                got = await fetch(http, f"{mirror.url}/v2/b/app/blobs/{b.layer}")
                assert got == (200, LAYER)
            for _ in range(2):
                got = await fetch(http, f"{mirror.url}/v2/c/app/blobs/{a.layer}")
                assert got == (200, LAYER)
    # B's manifest named the layer: no upstream request for it at all; c/app: one HEAD.
    assert blob_requests(up, "b/app", b.layer) == []
    assert blob_requests(up, "c/app", a.layer) == ["HEAD"]
    assert blob_requests(up, "a/app", a.layer) == ["GET"]  # downloaded once


async def test_a_running_download_of_a_is_not_joined_under_b(
    tmp_path: Path, up: FakeUpstream
) -> None:
    a = add_image(up, "a/app", LAYER, "a")
    up.add_manifest("b/app", b"{}", OCI_MANIFEST)
    up.add_fault(Fault(match=re.compile(f"/a/app/blobs/{a.layer}"), chunk_delay=0.05,
                       chunk_size=4096))  # about 1.25 s: still running when B asks  # fmt: skip
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with aiohttp.ClientSession() as http:
            assert (await fetch(http, f"{mirror.url}/v2/a/app/manifests/1"))[0] == 200
            a_pull = asyncio.create_task(fetch(http, f"{mirror.url}/v2/a/app/blobs/{a.layer}"))
            for _ in range(100):  # bounded: until A's download has started upstream
                if blob_requests(up, "a/app", a.layer):
                    break
                await asyncio.sleep(0.02)
            status, _ = await fetch(http, f"{mirror.url}/v2/b/app/blobs/{a.layer}")
            assert status == 404
            assert await a_pull == (200, LAYER)


async def test_after_a_restart_links_come_from_the_stored_tags_even_offline(
    tmp_path: Path, up: FakeUpstream
) -> None:
    a = add_image(up, "a/app", LAYER, "a")
    up.add_manifest("b/app", b"{}", OCI_MANIFEST)
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with aiohttp.ClientSession() as http:
            await pull(http, mirror.url, a)
    asked = len(up.requests)
    offline = mirror_config(tmp_path, up.url, offline=True)
    async with run_mirror(offline) as mirror, aiohttp.ClientSession() as http:
        assert (await fetch(http, f"{mirror.url}/v2/a/app/blobs/{a.layer}")) == (200, LAYER)
        assert (await fetch(http, f"{mirror.url}/v2/a/app/manifests/{a.manifest}"))[0] == 200
        assert (await fetch(http, f"{mirror.url}/v2/a/app/blobs/{a.layer}", "HEAD"))[0] == 200
        assert (await fetch(http, f"{mirror.url}/v2/b/app/blobs/{a.layer}"))[0] == 404
        assert (await fetch(http, f"{mirror.url}/v2/b/app/manifests/{a.manifest}"))[0] == 404
    assert len(up.requests) == asked, "offline: nothing asked upstream"
