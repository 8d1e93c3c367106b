"""Synthetic container images for tests, built offline and deterministically.

Every byte is derived from fixed seeds, so the same sizes always give the same
digests.  Layers are real gzip'd tar files holding one regular file each, and
config blobs are valid image configs (``rootfs.diff_ids`` are the sha256 of
the uncompressed tars), so docker, podman and containerd can unpack them.

Layout of the output directory::

    blobs/sha256/<hex>   every blob and every manifest, named by digest
    images.json          what was built (see ``ImageSet.load``)

A directory that already holds an ``images.json`` for the same sizes, with
every file present at its recorded size, is reused as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import random
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

INDEX_MEDIA_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

# Bump when the image recipe changes, so that cached directories are rebuilt.
FORMAT_VERSION = 1
DEFAULT_CACHE_ROOT = Path("/tmp/registry-mirror-test-images")
LARGE_MB_ENV = "MIRROR_TEST_LARGE_MB"
IMAGE_CACHE_ENV = "MIRROR_TEST_IMAGE_CACHE"

KIB = 1024
MIB = 1024 * 1024
CHUNK = MIB
CREATED = "2024-01-01T00:00:00Z"
MTIME = 1704067200
# Deflating random bytes gains nothing and costs ~5 s for a 200 MiB layer, so
# big layers use stored (level 0) deflate blocks: still valid gzip for every client.
STORE_ABOVE = MIB
PLATFORMS = (("amd64", None), ("arm64", "v8"))


@dataclass(frozen=True)
class Blob:
    """A config or layer blob on disk."""

    digest: str
    size: int
    media_type: str
    path: Path

    def read(self) -> bytes:
        """Return the whole blob; meant for small blobs only."""
        return self.path.read_bytes()


@dataclass(frozen=True)
class Manifest:
    """An image manifest, index or manifest list, with its exact bytes."""

    digest: str
    media_type: str
    data: bytes
    platform: str | None = None

    @property
    def size(self) -> int:
        """Length of the manifest in bytes."""
        return len(self.data)

    @property
    def is_index(self) -> bool:
        """True for an OCI index or a Docker manifest list."""
        return self.media_type in INDEX_MEDIA_TYPES

    def references(self) -> list[str]:
        """Digests this manifest points at: config + layers, or child manifests."""
        doc = json.loads(self.data)
        if self.is_index:
            return [m["digest"] for m in doc["manifests"]]
        return [doc["config"]["digest"], *(layer["digest"] for layer in doc["layers"])]


@dataclass(frozen=True)
class Image:
    """A tagged image: ``repository:tag`` pointing at a top-level manifest."""

    repository: str
    tag: str
    manifest: Manifest
    # "linux/amd64" -> child manifest digest; empty unless the image is an index.
    platforms: dict[str, str] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``repository:tag``."""
        return f"{self.repository}:{self.tag}"

    @property
    def digest(self) -> str:
        """Digest of the top-level manifest."""
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        """Media type of the top-level manifest."""
        return self.manifest.media_type


@dataclass(frozen=True)
class ImageSet:
    """Everything ``build_images`` produced, indexed for tests."""

    root: Path
    params: dict[str, int]
    images: dict[str, Image]
    # Every manifest by digest: the top-level ones and the children of indexes.
    manifests: dict[str, Manifest]
    # Every config and layer blob by digest.
    blobs: dict[str, Blob]

    @property
    def metadata_path(self) -> Path:
        """The ``images.json`` describing this set."""
        return self.root / "images.json"

    def image(self, ref: str) -> Image:
        """Look an image up by ``repository:tag``, e.g. ``library/tiny:oci``."""
        return self.images[ref]

    def children(self, image: Image) -> list[Manifest]:
        """Child manifests of an index image (empty for a plain image)."""
        return [self.manifests[d] for d in image.platforms.values()]

    def blobs_of(self, manifest: Manifest) -> list[Blob]:
        """Config and layer blobs of an image manifest, or of all children of an index."""
        if manifest.is_index:
            return [b for d in manifest.references() for b in self.blobs_of(self.manifests[d])]
        return [self.blobs[d] for d in manifest.references()]

    def large_layer(self) -> Blob:
        """The big layer of ``library/large:latest`` (``large_mb`` MiB of content)."""
        candidates = self.blobs_of(self.image("library/large:latest").manifest)
        return max(candidates, key=lambda blob: blob.size)

    @classmethod
    def load(cls, root: Path) -> ImageSet:
        """Read ``root/images.json`` back into an ``ImageSet``."""
        meta = json.loads((root / "images.json").read_text())
        manifests = {
            digest: Manifest(
                digest=digest,
                media_type=info["mediaType"],
                data=_blob_path(root, digest).read_bytes(),
                platform=info.get("platform"),
            )
            for digest, info in meta["manifests"].items()
        }
        blobs = {
            digest: Blob(digest, info["size"], info["mediaType"], _blob_path(root, digest))
            for digest, info in meta["blobs"].items()
        }
        images = {
            f"{im['repository']}:{im['tag']}": Image(
                repository=im["repository"],
                tag=im["tag"],
                manifest=manifests[im["digest"]],
                platforms=dict(im["platforms"]),
            )
            for im in meta["images"]
        }
        return cls(
            root=root, params=meta["params"], images=images, manifests=manifests, blobs=blobs
        )


def build_images(
    outdir: Path, *, small_kb: int = 4, medium_mb: int = 4, large_mb: int = 200
) -> ImageSet:
    """Build the test images into ``outdir`` (or reuse it) and return the set.

    Safe to call from several processes at once: builders take a lock file next
    to ``outdir`` and the directory is swapped in only when complete.
    """
    params = {
        "format": FORMAT_VERSION,
        "small_kb": small_kb,
        "medium_mb": medium_mb,
        "large_mb": large_mb,
    }
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with _locked(outdir.parent / f".{outdir.name}.lock"):
        if _is_up_to_date(outdir, params):
            return ImageSet.load(outdir)
        staging = outdir.parent / f".{outdir.name}.building-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        _Builder(staging, params).build_all()
        shutil.rmtree(outdir, ignore_errors=True)
        staging.rename(outdir)
    return ImageSet.load(outdir)


def default_image_dir(*, small_kb: int = 4, medium_mb: int = 4, large_mb: int = 200) -> Path:
    """Cache directory for one combination of sizes, under ``$MIRROR_TEST_IMAGE_CACHE``."""
    root = Path(os.environ.get(IMAGE_CACHE_ENV) or DEFAULT_CACHE_ROOT)
    return root / f"v{FORMAT_VERSION}-s{small_kb}k-m{medium_mb}m-l{large_mb}m"


def large_mb_from_env(default: int = 200) -> int:
    """Size of the large layer: ``$MIRROR_TEST_LARGE_MB`` or ``default``."""
    value = os.environ.get(LARGE_MB_ENV, "").strip()
    return int(value) if value else default


def build_default_images() -> ImageSet:
    """The test suite's image set: default sizes, large layer from the environment, cached."""
    large_mb = large_mb_from_env()
    return build_images(default_image_dir(large_mb=large_mb), large_mb=large_mb)


def _blob_path(root: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":", 1)
    return root / "blobs" / algorithm / hexdigest


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_up_to_date(outdir: Path, params: dict[str, int]) -> bool:
    """True when ``outdir`` was built with ``params`` and no file is missing or truncated."""
    try:
        meta = json.loads((outdir / "images.json").read_text())
    except (OSError, ValueError):
        return False
    if meta.get("params") != params:
        return False
    expected = {**meta["blobs"], **meta["manifests"]}
    for digest, info in expected.items():
        path = _blob_path(outdir, digest)
        if not path.is_file() or path.stat().st_size != info["size"]:
            return False
    return True


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...
    def flush(self) -> None: ...


class _DigestWriter:
    """Write-only file object that counts and hashes what passes through it."""

    def __init__(self, sink: _Sink | None) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        if self.sink is not None:
            self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    @property
    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


def _tar_member_header(name: str, size: int) -> bytes:
    """USTAR header for one regular file with fixed owner, mode and mtime."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = MTIME
    info.uname = info.gname = "root"
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _pseudo_random_chunks(seed: str, size: int) -> Iterator[bytes]:
    """``size`` seeded pseudo-random bytes, in chunks (a 200 MiB layer never sits in memory)."""
    rng = random.Random(seed)
    remaining = size
    while remaining > 0:
        n = min(CHUNK, remaining)
        remaining -= n
        yield rng.randbytes(n)


class _Builder:
    """Writes blobs and manifests into a staging directory and records them."""

    def __init__(self, root: Path, params: dict[str, int]) -> None:
        self.root = root
        self.params = params
        self.blob_dir = root / "blobs" / "sha256"
        self.blob_dir.mkdir(parents=True)
        self.blobs: dict[str, dict[str, Any]] = {}
        self.manifests: dict[str, dict[str, Any]] = {}
        self.images: list[dict[str, Any]] = []

    def build_all(self) -> None:
        """Build every image of the set and write ``images.json``."""
        small = self.params["small_kb"] * KIB
        medium = self.params["medium_mb"] * MIB
        large = self.params["large_mb"] * MIB
        self.add_image("library/tiny", "oci", [("tiny", small)], docker=False)
        self.add_image("library/tiny", "docker", [("tiny", small)], docker=True)
        self.add_image(
            "library/medium", "latest", [("medium-1", medium), ("medium-2", 64 * KIB)], docker=False
        )
        self.add_image(
            "library/large", "latest", [("large-1", large), ("large-2", small)], docker=True
        )
        self.add_index("library/multi", "latest", small, docker=False)
        self.add_index("library/multi", "docker", small, docker=True)
        self.write_metadata()

    def add_image(
        self, repository: str, tag: str, layers: list[tuple[str, int]], *, docker: bool
    ) -> None:
        """Build a single-platform image and tag it."""
        descriptor = self.image_manifest(f"{repository}:{tag}", "amd64", None, layers, docker)
        self.record_image(repository, tag, descriptor, {})

    def add_index(self, repository: str, tag: str, layer_size: int, *, docker: bool) -> None:
        """Build an index (OCI) or manifest list (Docker) of one small image per platform."""
        entries = []
        platforms: dict[str, str] = {}
        for arch, variant in PLATFORMS:
            layers = [(f"multi-{arch}", layer_size)]
            child = self.image_manifest(repository, arch, variant, layers, docker)
            platform = {"architecture": arch, "os": "linux"}
            if variant:
                platform["variant"] = variant
            entries.append({**child, "platform": platform})
            platforms[_platform_name(arch, variant)] = child["digest"]
            self.manifests[child["digest"]]["platform"] = _platform_name(arch, variant)
        media_type = DOCKER_LIST if docker else OCI_INDEX
        index = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
        self.record_image(repository, tag, self.put_manifest(index, media_type), platforms)

    def image_manifest(
        self,
        label: str,
        arch: str,
        variant: str | None,
        layers: list[tuple[str, int]],
        docker: bool,
    ) -> dict[str, Any]:
        """Write layers, config and manifest of one image; return the manifest descriptor."""
        layer_type = DOCKER_LAYER if docker else OCI_LAYER
        written = [self.put_layer(seed, size, layer_type) for seed, size in layers]
        config = _image_config(label, arch, variant, [diff_id for _, diff_id in written], layers)
        config_type = DOCKER_CONFIG if docker else OCI_CONFIG
        manifest_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": self.put_bytes(_json_bytes(config), config_type),
            "layers": [descriptor for descriptor, _ in written],
        }
        return self.put_manifest(manifest, manifest_type)

    def put_layer(self, seed: str, size: int, media_type: str) -> tuple[dict[str, Any], str]:
        """Stream a one-file gzip'd tar to disk; return (descriptor, diff_id)."""
        temp = self.blob_dir / f".layer-{seed}.tmp"
        level = 0 if size > STORE_ABOVE else 6
        with temp.open("wb") as raw:
            compressed = _DigestWriter(raw)
            # filename="" and mtime=0 keep the gzip header free of anything variable.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=compressed, compresslevel=level, mtime=0
            ) as gz:
                uncompressed = _DigestWriter(gz)
                _write_tar(uncompressed, f"{seed}.bin", _pseudo_random_chunks(seed, size), size)
        descriptor = self.adopt(temp, compressed.digest, compressed.size, media_type)
        return descriptor, uncompressed.digest

    def put_bytes(self, data: bytes, media_type: str) -> dict[str, Any]:
        """Store a small blob; return its descriptor."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        temp = self.blob_dir / f".{digest[7:]}.tmp"
        temp.write_bytes(data)
        return self.adopt(temp, digest, len(data), media_type)

    def put_manifest(self, doc: dict[str, Any], media_type: str) -> dict[str, Any]:
        """Store a manifest and record it; return its descriptor."""
        data = _json_bytes(doc)
        descriptor = self.put_bytes(data, media_type)
        del self.blobs[descriptor["digest"]]
        self.manifests[descriptor["digest"]] = {"mediaType": media_type, "size": len(data)}
        return descriptor

    def adopt(self, temp: Path, digest: str, size: int, media_type: str) -> dict[str, Any]:
        """Move a finished temp file to its digest name and record the blob."""
        temp.replace(self.blob_dir / digest.split(":", 1)[1])
        self.blobs.setdefault(digest, {"mediaType": media_type, "size": size})
        return {"mediaType": media_type, "digest": digest, "size": size}

    def record_image(
        self, repository: str, tag: str, descriptor: dict[str, Any], platforms: dict[str, str]
    ) -> None:
        """Remember a tagged top-level manifest for ``images.json``."""
        self.images.append(
            {
                "repository": repository,
                "tag": tag,
                "digest": descriptor["digest"],
                "mediaType": descriptor["mediaType"],
                "size": descriptor["size"],
                "platforms": platforms,
            }
        )

    def write_metadata(self) -> None:
        """Write ``images.json``: the last file, so its presence means a complete build."""
        meta = {
            "params": self.params,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
        }
        (self.root / "images.json").write_text(json.dumps(meta, indent=2) + "\n")


def _write_tar(out: _DigestWriter, name: str, chunks: Iterator[bytes], size: int) -> None:
    """A tar archive with one member, written by hand so the content can be streamed."""
    out.write(_tar_member_header(name, size))
    for chunk in chunks:
        out.write(chunk)
    out.write(b"\0" * (-size % tarfile.BLOCKSIZE))
    # End of archive: two zero blocks.
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))


def _image_config(
    label: str,
    arch: str,
    variant: str | None,
    diff_ids: list[str],
    layers: list[tuple[str, int]],
) -> dict[str, Any]:
    """A minimal but valid image config (OCI and Docker share this shape)."""
    config: dict[str, Any] = {
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"org.example.registry-mirror.test-image": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": CREATED, "created_by": f"layer {seed}"} for seed, _ in layers],
    }
    if variant:
        config["variant"] = variant
    return config


def _json_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def _platform_name(arch: str, variant: str | None) -> str:
    return f"linux/{arch}/{variant}" if variant else f"linux/{arch}"
