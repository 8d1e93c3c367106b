"""A disk cache of ``objects`` real-format objects, for timing the UI over the running mirror.

Manifests (image manifests and indexes, with platforms) and tag records are
written in the mirror's stored formats under the key layout, so the mirror
reads them as its own. Blobs are sparse files of their nominal size: the
index and the pages only ever see a blob's size and age, never its bytes
(``verify`` would of course call them damaged). Shared base layers, a few
repositories with very many tags, four upstreams; object ages spread over
weeks, as the files' modification times (the index's recency at start).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from mirror.oci import parse_digest
from mirror.storage import layout
from mirror.stored import StoredManifest, TagRecord

MiB = 1024 * 1024
UPSTREAMS = (("docker.io", "https://registry-1.docker.io", 0.6),
             ("ghcr.io", "https://ghcr.io", 0.25), ("quay.io", "https://quay.io", 0.1),
             ("registry.k8s.io", "https://registry.k8s.io", 0.05))  # fmt: skip
PLATFORMS = (("linux", "amd64", None), ("linux", "arm64", "v8"), ("linux", "arm", "v7"),
             ("linux", "s390x", None))  # fmt: skip
WORDS = ("api", "app", "base", "build", "cache", "cli", "core", "data", "db", "dev", "edge",
         "gateway", "go", "java", "job", "kafka", "lab", "log", "mail", "metrics", "node",
         "ops", "proxy", "py", "queue", "redis", "runner", "search", "server", "sync", "tools",
         "ui", "web", "worker")  # fmt: skip
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class DiskCache:
    """What was written: counts for the report, and a few names for the pages."""

    root: Path
    objects: int = 0
    tags: int = 0
    repositories: list[tuple[str, str]] = field(default_factory=list)
    _written: set[str] = field(default_factory=set)

    def write(self, key: str, data: bytes | int, age: float) -> None:
        """Write an object (bytes, or a sparse blob of that size) once, aged ``age`` seconds."""
        if key in self._written:
            return
        self._written.add(key)
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            if isinstance(data, int):
                f.truncate(data)
            else:
                f.write(data)
        when = time.time() - age
        os.utime(path, (when, when))
        self.objects += 1


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def build(
    root: Path, objects: int = 100_000, repositories: int = 3_000, seed: int = 17
) -> DiskCache:
    """Write the cache into ``root`` (which should be empty)."""
    rng = random.Random(seed)
    cache = DiskCache(root)
    names = _names(rng, repositories)
    cache.repositories = names
    shared = {u: [(digest_of(f"{u} base {i}"), rng.randint(2, 80) * MiB) for i in range(400)]
              for u, _, _ in UPSTREAMS}  # fmt: skip
    hot = [names[0]] * 1500 + [names[1]] * 300 + [names[2]] * 100
    serial = 0
    while serial < len(names) + len(hot) or cache.objects < objects:
        if serial < len(names):
            upstream, repository = names[serial]
        elif serial < len(names) + len(hot):
            upstream, repository = hot[serial - len(names)]
        else:
            upstream, repository = rng.choice(names)
        _tag(cache, rng, upstream, repository, serial, shared[upstream])
        serial += 1
    return cache


def _names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    names: set[tuple[str, str]] = set()
    while len(names) < count:
        upstream = rng.choices([u for u, _, _ in UPSTREAMS], [w for _, _, w in UPSTREAMS])[0]
        owner = "library" if upstream == "docker.io" and rng.random() < 0.1 else \
            f"{rng.choice(WORDS)}{rng.randint(1, 400)}"  # fmt: skip
        names.add((upstream, f"{owner}/{'-'.join(rng.sample(WORDS, rng.randint(1, 2)))}"))
    return sorted(names)


def _tag(cache: DiskCache, rng: random.Random, upstream: str, repository: str, serial: int,
         shared: list[tuple[str, int]]) -> None:  # fmt: skip
    age = rng.expovariate(1 / (14 * 86400))
    children = []
    for number, (os_name, arch, variant) in enumerate(PLATFORMS[: rng.choice((1, 1, 2, 4))]):
        layers = rng.sample(shared, rng.randint(1, 2))
        layers += [(digest_of(f"{serial} {number} {n}"), rng.randint(1, 40 * MiB))
                   for n in range(rng.randint(1, 4))]  # fmt: skip
        body, digest = _image(cache, upstream, layers, f"{serial} {number}", age)
        platform = {
            "os": os_name,
            "architecture": arch,
            **({"variant": variant} if variant else {}),
        }
        children.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                         "platform": platform})  # fmt: skip
    if len(children) == 1:
        top, media_type, size = str(children[0]["digest"]), OCI_MANIFEST, len(body)
    else:
        source = {"org.opencontainers.image.source": f"https://example.com/{repository}"}
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
                            "annotations": source}).encode()  # fmt: skip
        top = _put_manifest(cache, upstream, index, OCI_INDEX, age)
        media_type, size = OCI_INDEX, len(index)
    tag = f"{rng.randint(1, 9)}.{serial % 100}.{serial}"
    record = TagRecord(str(top), media_type, size, time.time() - age)
    cache.write(layout.tag_key(upstream, repository, tag, "any"), record.encode(), age)
    cache.tags += 1


def _image(cache: DiskCache, upstream: str, layers: list[tuple[str, int]], seed: str,
           age: float) -> tuple[bytes, str]:  # fmt: skip
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    config_digest = digest_of(config.decode())
    cache.write(layout.blob_key(upstream, parse_digest(config_digest)), config, age)
    for digest, size in layers:
        cache.write(layout.blob_key(upstream, parse_digest(digest)), size, age)
    body = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                    "size": s} for d, s in layers],
    }).encode()  # fmt: skip
    return body, _put_manifest(cache, upstream, body, OCI_MANIFEST, age)


def _put_manifest(cache: DiskCache, upstream: str, body: bytes, media_type: str, age: float) -> str:
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    stored = StoredManifest(media_type, body).encode()
    cache.write(layout.manifest_key(upstream, parse_digest(digest)), stored, age)
    return digest
