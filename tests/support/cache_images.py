"""Small images on a FakeUpstream, pulled through a mirror, for the cache tests."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

from mirror.app import CACHE, FILLS
from mirror.cache.manager import CacheManager
from mirror.oci import parse_digest
from mirror.storage import layout
from tests.support.fake_upstream import FakeUpstream

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class FakeImage:
    """An image added to a FakeUpstream."""

    repository: str
    tag: str
    manifest: str
    config: str
    layers: tuple[str, ...]

    @property
    def blobs(self) -> tuple[str, ...]:
        """Config and layer digests."""
        return (self.config, *self.layers)


def noise(size: int, seed: int) -> bytes:
    """``size`` reproducible, incompressible bytes."""
    return random.Random(seed).randbytes(size)


def add_image(up: FakeUpstream, repository: str, tag: str, layers: list[bytes]) -> FakeImage:
    """An OCI image manifest with a config and ``layers``, tagged ``tag``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "repo": repository}).encode()
    config_digest = up.add_blob(config)
    layer_digests = [up.add_blob(layer) for layer in layers]
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": d, "size": len(b)}
            for d, b in zip(layer_digests, layers, strict=True)
        ],
    }
    body = json.dumps(manifest).encode()
    digest = up.add_manifest(repository, body, OCI_MANIFEST, tag=tag)
    return FakeImage(repository, tag, digest, config_digest, tuple(layer_digests))


def add_index(up: FakeUpstream, repository: str, tag: str, children: list[FakeImage]) -> str:
    """An OCI index over ``children`` (manifests of ``repository``), tagged ``tag``."""
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": c.manifest, "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}}
            for c in children
        ],
    }  # fmt: skip
    return up.add_manifest(repository, json.dumps(index).encode(), OCI_INDEX, tag=tag)


async def get_blob(http: aiohttp.ClientSession, url: str, repository: str, digest: str) -> bytes:
    """GET a blob through the mirror and check it hashes to ``digest``."""
    async with http.get(f"{url}/v2/{repository}/blobs/{digest}") as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == digest
    return body


async def pull(http: aiohttp.ClientSession, url: str, image: FakeImage) -> None:
    """Pull ``image`` by tag like a client: manifest, then every blob, all verified."""
    headers = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
    async with http.get(f"{url}/v2/{image.repository}/manifests/{image.tag}",
                        headers=headers) as resp:  # fmt: skip
        assert resp.status == 200, await resp.text()
        body = await resp.read()
    assert "sha256:" + hashlib.sha256(body).hexdigest() == image.manifest
    for digest in image.blobs:
        await get_blob(http, url, image.repository, digest)


async def settle(app: web.Application) -> CacheManager:
    """Wait until no download runs and no eviction pass is pending; the app's cache."""
    for _ in range(500):
        if len(app[FILLS]) == 0:
            break
        await asyncio.sleep(0.01)
    cache = app[CACHE]
    await cache.evictor.settled()
    return cache


async def committed(app: web.Application, upstream: str, digest: str) -> None:
    """Wait until the blob ``digest`` is in the cache index (its fill has committed)."""
    key = layout.blob_key(upstream, parse_digest(digest))
    for _ in range(500):
        if key in app[CACHE].storage.index:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{digest} was never committed")


def content_on_disk(cache_dir: Path) -> dict[str, int]:
    """Size of every blob, manifest and tag record file under ``cache_dir``, by key.

    These are what the cache budget counts.
    """
    found = {}
    for path in cache_dir.rglob("*"):
        parts = path.relative_to(cache_dir).parts
        content = len(parts) == 5 and parts[1] in ("blobs", "manifests")
        if path.is_file() and (content or (len(parts) > 4 and parts[1] == "tags")):
            found["/".join(parts)] = path.stat().st_size
    return found


def blob_path(cache_dir: Path, upstream: str, digest: str) -> Path:
    """The disk file of a cached blob."""
    hex_part = digest.removeprefix("sha256:")
    return cache_dir / upstream / "blobs" / "sha256" / hex_part[:2] / hex_part


def manifest_path(cache_dir: Path, upstream: str, digest: str) -> Path:
    """The disk file of a cached manifest."""
    hex_part = digest.removeprefix("sha256:")
    return cache_dir / upstream / "manifests" / "sha256" / hex_part[:2] / hex_part


def upstream_name(up: FakeUpstream) -> str:
    """The name the mirror gives a FakeUpstream configured by URL only."""
    return urlsplit(up.url).netloc
