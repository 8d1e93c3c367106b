"""Tiny OCI images in a FakeUpstream, and pulls of them the way clients do them."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass

import aiohttp

from tests.support.fake_upstream import FakeUpstream

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass(frozen=True)
class SmallImage:
    """An image added to a fake upstream: its manifest digest and blob digests."""

    repository: str
    tag: str
    manifest_digest: str
    blobs: dict[str, bytes]


def _descriptor(media_type: str, data: bytes) -> dict[str, object]:
    return {
        "mediaType": media_type,
        "digest": "sha256:" + hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }


def minimal_manifest(note: str = "") -> bytes:
    """The smallest valid OCI image manifest: the empty config, no layers.

    ``note`` goes into an annotation, so that different notes give different digests.
    """
    empty = b"{}"
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [],
    }
    if note:
        doc["annotations"] = {"note": note}
    return json.dumps(doc).encode()


def add_small_image(
    up: FakeUpstream, repository: str, tag: str, seed: str, layer_size: int = 64 * 1024
) -> SmallImage:
    """Add a one-layer image whose bytes derive from ``seed``."""
    layer = (hashlib.sha256(seed.encode()).digest() * (layer_size // 32 + 1))[:layer_size]
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [_descriptor(OCI_LAYER, layer)],
        }
    ).encode()
    blobs = {up.add_blob(config): config, up.add_blob(layer): layer}
    digest = up.add_manifest(repository, manifest, OCI_MANIFEST, tag=tag)
    return SmallImage(repository, tag, digest, blobs)


async def pull(http: aiohttp.ClientSession, base: str, image: SmallImage) -> None:
    """Pull ``image`` through the mirror at ``base``: manifest by tag, then every blob."""
    url = f"{base}/v2/{image.repository}/manifests/{image.tag}"
    async with http.get(url, headers={"Accept": OCI_MANIFEST}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == image.manifest_digest
        await resp.read()
    for digest, data in image.blobs.items():
        async with http.get(f"{base}/v2/{image.repository}/blobs/{digest}") as resp:
            assert resp.status == 200, await resp.text()
            assert await resp.read() == data
    await settle(http, base)


async def settle(http: aiohttp.ClientSession, base: str) -> None:
    """Wait until no fill is running, so that every pulled blob is committed.

    A client has all its bytes a moment before the fill commits the blob, and a
    request in that moment follows the fill (a miss) instead of hitting.
    """
    for _ in range(200):
        async with http.get(base + "/metrics") as resp:
            text = await resp.text()
        if "\nmirror_fills_in_flight 0.0\n" in text:
            return
        await asyncio.sleep(0.025)
    raise AssertionError("fills still running after 5 s")
