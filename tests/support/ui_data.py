"""Caches for the UI: a small one with known content (and hostile text), and a large one.

:func:`sample_cache` holds a few repositories whose tags, digests and
platforms the tests check on the pages, plus upstream-controlled text that
tries to inject HTML and script (a platform, annotations, a health detail,
a repository name the grammar would refuse). :func:`synthetic_cache` builds
a cache of 100,000 objects in thousands of repositories, with shared base
layers, multi-platform indexes and a power-law of pulls, for page times.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Sequence

from mirror.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from mirror.ui.model import (
    Health,
    PinState,
    PlatformImage,
    SignatureState,
    SignatureStatus,
    TagDetail,
    UpstreamStatus,
)
from tests.support.ui_cache import MemoryCache, SimulatedFill

MiB = 1024 * 1024
GiB = 1024 * MiB
HUB = "https://registry-1.docker.io"
# Text an upstream controls, each trying to run script if it were not escaped.
XSS_PLATFORM = "linux/<script>alert('platform')</script>"
XSS_ANNOTATION = "<img src=x onerror=alert('annotation')>"
XSS_URL = "javascript:alert('link')"
XSS_HEALTH = "refused: <script>alert('health')</script>"
NOT_CHECKED = SignatureStatus()
XSS_REPOSITORY = "evil/\"><svg onload=alert('name')>"


def digest_of(text: str) -> str:
    """A stable sha256 digest for a name."""
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def upstream(name: str, url: str, *, default: bool = False, health: Health = Health.UP,
             detail: str = "", hit_ratio: float | None = 0.9,
             requests: int = 12_345) -> UpstreamStatus:  # fmt: skip
    """An upstream's status with plausible counters."""
    requests = 0 if hit_ratio is None else requests
    saved = int(requests * (hit_ratio or 0) * 3 * MiB)
    return UpstreamStatus(name, url, default, health, detail, requests, hit_ratio, saved,
                          200 if url == HUB else None, 187 if url == HUB else None)  # fmt: skip


def add_image(cache: MemoryCache, upstream_name: str, repository: str, tag: str, *,
              platforms: Sequence[tuple[str, Sequence[tuple[str, int]], bool]],
              last_pulled: float | None, pin: PinState = PinState.UNPINNED,
              signature: SignatureStatus = NOT_CHECKED, seed: str = "",
              annotations: tuple[tuple[str, str], ...] = ()) -> TagDetail:  # fmt: skip
    """Add ``repository:tag``; each platform is (name, [(layer digest, size)], cached).

    More than one platform makes an index. The image's digest depends on its
    platforms and ``seed``, so two tags with the same arguments share one image.
    """
    used = last_pulled or time.time() - 86400
    keys, images = [], []
    for name, layers, cached in platforms:
        manifest = digest_of(f"{upstream_name}/{repository}/{name}/{seed}")
        config = digest_of(f"config {manifest}")
        size = 1200 + 900 + sum(s for _, s in layers)
        images.append(PlatformImage(name, manifest, size, cached))
        if cached:
            keys.append(cache.add_object(upstream_name, "manifest", manifest, 1200, used))
            keys.append(cache.add_object(upstream_name, "blob", config, 900, used))
            keys += [cache.add_object(upstream_name, "blob", d, s, used) for d, s in layers]
    if len(platforms) > 1:
        digest = digest_of(f"index {upstream_name}/{repository} {seed} {len(platforms)}")
        keys.append(cache.add_object(upstream_name, "manifest", digest, 800, used))
        media_type = OCI_INDEX if seed.endswith("oci") else DOCKER_LIST
    else:
        digest = images[0].digest
        media_type = OCI_MANIFEST if seed.endswith("oci") else DOCKER_MANIFEST
    size = sum(cache.objects[k].size for k in set(keys))
    detail = TagDetail(tag, digest, media_type, size, last_pulled, pin, tuple(images), signature,
                       annotations)  # fmt: skip
    cache.add_tag(upstream_name, repository, detail, keys)
    return detail


def sample_cache(now: float | None = None) -> MemoryCache:
    """A few repositories the tests know by heart, and text that tries to inject script."""
    now = time.time() if now is None else now
    cache = MemoryCache([
        upstream("docker.io", HUB, default=True),
        upstream("ghcr.io", "https://ghcr.io"),
        upstream("quay.io", "https://quay.io", health=Health.DOWN, detail=XSS_HEALTH,
                 hit_ratio=None),
    ], max_size=4 * GiB)  # fmt: skip
    base = [(digest_of("alpine base layer"), 3 * MiB)]
    two = [("linux/amd64", base, True), ("linux/arm64/v8", [(digest_of("arm layer"), 3 * MiB)],
                                           True)]  # fmt: skip
    add_image(cache, "docker.io", "library/alpine", "3.19", platforms=[("linux/amd64", base, True)],
              last_pulled=now - 30 * 86400, seed="3.19")  # fmt: skip
    signed = SignatureStatus(SignatureState.VERIFIED, "cosign, key ops@example.com")
    for tag in ("3.20", "latest"):
        add_image(cache, "docker.io", "library/alpine", tag, platforms=two,
                  last_pulled=now - 3600, seed="3.20 oci", signature=signed)  # fmt: skip
    cache.set_pulls("docker.io", "library/alpine", 42, now - 3600)
    nginx = [(digest_of("nginx layer"), 60 * MiB), *base]
    add_image(cache, "docker.io", "library/nginx", "1.27", platforms=[("linux/amd64", nginx, True)],
              last_pulled=now - 7200, pin=PinState.CONFIGURED, seed="1.27")  # fmt: skip
    cache.set_pulls("docker.io", "library/nginx", 7, now - 7200)
    add_image(cache, "ghcr.io", "acme/web-app", "v1.4.0", last_pulled=now - 600, seed="v1.4.0",
              platforms=[(XSS_PLATFORM, [(digest_of("web layer"), 25 * MiB)], True)],
              annotations=(("org.opencontainers.image.source", "https://github.com/acme/web-app"),
                           ("org.opencontainers.image.url", XSS_URL),
                           ("org.opencontainers.image.description", XSS_ANNOTATION)))  # fmt: skip
    cache.set_pulls("ghcr.io", "acme/web-app", 3, now - 600)
    add_image(cache, "quay.io", XSS_REPOSITORY, "1", last_pulled=None, seed="evil",
              platforms=[("linux/amd64", [(digest_of("evil layer"), MiB)], True)])  # fmt: skip
    cache.simulated_fills.append(SimulatedFill(
        "docker.io", "library/postgres", digest_of("postgres layer"), 2 * GiB, 5 * MiB, now - 1,
        followers=3))  # fmt: skip
    return cache


_WORDS = ("api", "app", "base", "build", "cache", "cli", "core", "data", "db", "dev", "edge",
          "gateway", "go", "java", "job", "kafka", "lab", "log", "mail", "metrics", "node",
          "ops", "proxy", "py", "queue", "redis", "runner", "search", "server", "sync", "tools",
          "ui", "web", "worker")  # fmt: skip
_UPSTREAMS = (("docker.io", HUB, 0.6), ("ghcr.io", "https://ghcr.io", 0.25),
              ("quay.io", "https://quay.io", 0.1), ("registry.k8s.io", "https://registry.k8s.io",
                                                     0.05))  # fmt: skip
_PLATFORMS = ("linux/amd64", "linux/arm64/v8", "linux/arm/v7", "linux/s390x")


def synthetic_cache(objects: int = 100_000, repositories: int = 3_000, seed: int = 17,
                    now: float | None = None) -> MemoryCache:  # fmt: skip
    """A cache of at least ``objects`` objects in ``repositories`` repositories."""
    now = time.time() if now is None else now
    rng = random.Random(seed)
    statuses = [
        upstream(n, u, default=n == "docker.io", hit_ratio=rng.uniform(0.6, 0.98),
                 requests=rng.randint(1_000, 400_000)) for n, u, _ in _UPSTREAMS
    ]  # fmt: skip
    quay = statuses[2]
    statuses[2] = upstream(quay.name, quay.url, health=Health.DOWN, hit_ratio=quay.hit_ratio,
                           detail="connection to quay.io:443 timed out after 10 s",
                           requests=quay.requests)  # fmt: skip
    cache = MemoryCache(statuses, max_size=2000 * GiB)
    shared = {n: [(digest_of(f"{n} base {i}"), rng.randint(2, 80) * MiB) for i in range(400)]
              for n, _, _ in _UPSTREAMS}  # fmt: skip
    names = _repository_names(rng, repositories)
    # Every repository gets a tag; a few get very many (CI images tagged per commit);
    # then random repositories get more, up to the object count.
    hot = [names[0]] * 1500 + [names[1]] * 300 + [names[2]] * 100
    serial = 0
    while serial < len(names) + len(hot) or len(cache.objects) < objects:
        if serial < len(names):
            upstream_name, repository = names[serial]
        elif serial < len(names) + len(hot):
            upstream_name, repository = hot[serial - len(names)]
        else:
            upstream_name, repository = rng.choice(names)
        _synthetic_tag(cache, rng, upstream_name, repository, serial, shared[upstream_name], now)
        serial += 1
    for number, (upstream_name, repository) in enumerate(rng.sample(names, 3)):
        total, rate = rng.randint(200, 900) * MiB, rng.randint(2, 20) * MiB
        cache.simulated_fills.append(SimulatedFill(
            upstream_name, repository, digest_of(f"fill {number}"), total, rate,
            now - rng.randint(1, 30), followers=rng.randint(1, 4)))  # fmt: skip
    for repo in cache.repos.values():
        pulls = int(rng.paretovariate(1.2) * 3) - 3
        last = max((t.detail.last_pulled or 0.0) for t in repo.tags.values()) or None
        cache.set_pulls(repo.upstream, repo.name, max(pulls, 0), last if pulls > 0 else None)
    return cache


def _repository_names(rng: random.Random, count: int) -> list[tuple[str, str]]:
    names: set[tuple[str, str]] = set()
    while len(names) < count:
        upstream_name = rng.choices([n for n, _, _ in _UPSTREAMS],
                                    [w for _, _, w in _UPSTREAMS])[0]  # fmt: skip
        owner = "library" if upstream_name == "docker.io" and rng.random() < 0.1 else \
            f"{rng.choice(_WORDS)}{rng.randint(1, 400)}"  # fmt: skip
        name = "-".join(rng.sample(_WORDS, rng.randint(1, 2)))
        names.add((upstream_name, f"{owner}/{name}"))
    return sorted(names)


def _synthetic_tag(cache: MemoryCache, rng: random.Random, upstream_name: str, repository: str,
                   serial: int, shared: list[tuple[str, int]], now: float) -> None:  # fmt: skip
    count = rng.choices((1, 2, 4), (5, 3, 2))[0]
    platforms = []
    for index, platform in enumerate(_PLATFORMS[:count]):
        layers = rng.sample(shared, rng.randint(1, 2))
        layers += [(digest_of(f"{serial} {index} {n}"), rng.randint(1, 40 * MiB))
                   for n in range(rng.randint(1, 4))]  # fmt: skip
        platforms.append((platform, layers, index == 0 or rng.random() < 0.3))
    last = now - rng.expovariate(1 / (14 * 86400))
    kind = "oci" if rng.random() < 0.5 else "docker"
    add_image(cache, upstream_name, repository, f"{rng.randint(1, 9)}.{serial % 100}.{serial}",
              platforms=platforms, last_pulled=last, seed=f"{serial} {kind}")  # fmt: skip
