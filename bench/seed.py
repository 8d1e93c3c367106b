"""Content for the benchmark: random blobs and one small image, pushed to the upstream.

Every cold scenario needs content no proxy has seen yet, so each repetition
gets fresh random bytes (random data: nothing in the path can compress it)
and fresh tags, each naming a manifest of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.support.images import Manifest
from tests.support.registry import UpstreamRegistry

REPOSITORY = "library/bench"
TAG = "latest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
_CHUNK = 8 * 1024 * 1024
_PUSHERS = 4  # concurrent uploads when seeding many small objects


@dataclass(frozen=True)
class BlobFile:
    """A blob pushed to the upstream, with its local copy."""

    digest: str
    size: int
    path: Path

    def url_path(self, repository: str = REPOSITORY) -> str:
        """``/v2/<repository>/blobs/<digest>``."""
        return f"/v2/{repository}/blobs/{self.digest}"


def write_random_blob(directory: Path, size: int) -> BlobFile:
    """``size`` random bytes in a file named by their digest."""
    directory.mkdir(parents=True, exist_ok=True)
    temp = directory / f".blob-{os.getpid()}-{os.urandom(4).hex()}"
    hasher = hashlib.sha256()
    with temp.open("wb") as out:
        remaining = size
        while remaining > 0:
            chunk = os.urandom(min(_CHUNK, remaining))
            hasher.update(chunk)
            out.write(chunk)
            remaining -= len(chunk)
    path = directory / hasher.hexdigest()
    temp.replace(path)
    return BlobFile(f"sha256:{hasher.hexdigest()}", size, path)


def push_blob(
    registry: UpstreamRegistry, directory: Path, size: int, *, keep: bool = True
) -> BlobFile:
    """A fresh random blob, pushed to ``REPOSITORY`` on the upstream.

    With ``keep=False`` the local copy is removed once pushed (a 1 GiB blob
    per repetition adds up); ``path`` then names a file that is gone.
    """
    blob = write_random_blob(directory, size)
    try:
        registry.client().push_blob(REPOSITORY, blob.digest, blob.path, blob.size)
    finally:
        if not keep:
            blob.path.unlink()
    return blob


def drop_blob(registry: UpstreamRegistry, digest: str) -> None:
    """Delete the upstream's stored copy of a blob every peer has pulled.

    Its page cache goes with it, so a run of many repetitions does not
    fill the memory with blobs nobody asks for again (bench/memory.py says
    why memory matters on this VM).
    """
    hex_digest = digest.removeprefix("sha256:")
    blobs = registry.workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    (blobs / hex_digest[:2] / hex_digest / "data").unlink()  # missing: the layout changed


def push_blobs(
    registry: UpstreamRegistry, directory: Path, count: int, size: int
) -> list[BlobFile]:
    """``count`` fresh random blobs of ``size`` bytes, pushed a few at a time."""
    with ThreadPoolExecutor(max_workers=_PUSHERS) as pool:
        return list(pool.map(lambda _: push_blob(registry, directory, size, keep=False),
                             range(count)))  # fmt: skip


@dataclass(frozen=True)
class SmallImage:
    """A tagged one-layer image for the manifest scenario."""

    manifest: Manifest
    tag: str = TAG

    def url_path(self, reference: str) -> str:
        """``/v2/<repository>/manifests/<reference>``."""
        return f"/v2/{REPOSITORY}/manifests/{reference}"


def push_small_image(registry: UpstreamRegistry, directory: Path) -> SmallImage:
    """Push a 4 KiB layer, a config and an OCI manifest tagged ``TAG``."""
    client = registry.client()
    layer = push_blob(registry, directory, 4096)
    config_bytes = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
    config_path = directory / config_digest[7:]
    config_path.write_bytes(config_bytes)
    client.push_blob(REPOSITORY, config_digest, config_path, len(config_bytes))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer.digest, "size": layer.size}],
    }
    data = json.dumps(doc, separators=(",", ":")).encode()
    manifest = Manifest("sha256:" + hashlib.sha256(data).hexdigest(), OCI_MANIFEST, data)
    client.push_manifest(REPOSITORY, TAG, manifest)
    return SmallImage(manifest)


def push_tagged_manifests(registry: UpstreamRegistry, image: SmallImage, tags: list[str]) -> None:
    """One distinct manifest per tag, each a variant of ``image`` (an annotation differs).

    Distinct digests make every tag a full miss for every proxy: distribution
    finds no manifest of that digest in its store and must GET it upstream,
    like our mirror.
    """
    doc = json.loads(image.manifest.data)

    def push(tag: str) -> None:
        variant = {**doc, "annotations": {"org.example.bench.tag": tag}}
        data = json.dumps(variant, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        registry.client().push_manifest(REPOSITORY, tag, Manifest(digest, OCI_MANIFEST, data))

    with ThreadPoolExecutor(max_workers=_PUSHERS) as pool:
        list(pool.map(push, tags))
