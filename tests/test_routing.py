"""Several upstreams behind one mirror: routing by ns, by path prefix and by default,
kept apart in the cache, and never an open proxy. Two FakeUpstreams on real sockets."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from mirror.config import Config, build_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import RunningMirror, run_mirror

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


@dataclass
class Pushed:
    """An image put into a fake upstream: its manifest digest and its one layer."""

    digest: str
    layer: bytes
    layer_digest: str


def push_image(up: FakeUpstream, repository: str, tag: str, layer: bytes) -> Pushed:
    """A one-layer OCI image whose bytes depend on ``layer``."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": layer.hex()}).encode()
    config_digest = up.add_blob(config, repository)
    layer_digest = up.add_blob(layer, repository)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
    }
    body = json.dumps(manifest).encode()
    return Pushed(up.add_manifest(repository, body, OCI_MANIFEST, tag), layer, layer_digest)


def two_upstream_config(
    cache: Path, hub: FakeUpstream, ghcr: FakeUpstream, **extra: object
) -> Config:
    """ghcr.io listed first: docker.io must still be the default."""
    raw: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "storage": {"path": str(cache)},
        "upstreams": [
            {"name": "ghcr.io", "url": ghcr.url, "retries": 0, "connect_timeout": 2},
            {"name": "docker.io", "url": hub.url, "retries": 0, "connect_timeout": 2},
        ],
    }
    raw.update(extra)
    return build_config(raw, environ={})


@pytest.fixture
async def hub() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def ghcr() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(auth="token") as upstream:
        yield upstream


@pytest.fixture
async def stranger() -> AsyncIterator[FakeUpstream]:
    """A registry that is NOT configured: the mirror must never connect to it."""
    async with FakeUpstream() as upstream:
        push_image(upstream, "org/app", "v1", b"from an unconfigured host")
        yield upstream


@pytest.fixture
async def mirror(
    tmp_path: Path, hub: FakeUpstream, ghcr: FakeUpstream
) -> AsyncIterator[RunningMirror]:
    async with run_mirror(two_upstream_config(tmp_path, hub, ghcr)) as running:
        yield running


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Accept": OCI_MANIFEST}
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_ns_picks_the_upstream_and_is_echoed(
    mirror: RunningMirror, http: aiohttp.ClientSession, hub: FakeUpstream, ghcr: FakeUpstream
) -> None:
    on_hub = push_image(hub, "org/app", "v1", b"hub layer")
    on_ghcr = push_image(ghcr, "org/app", "v1", b"ghcr layer")
    for ns, want in (("ghcr.io", on_ghcr), ("docker.io", on_hub), ("index.docker.io", on_hub)):
        status, body, headers = await get(http, f"{mirror.url}/v2/org/app/manifests/v1?ns={ns}")
        assert status == 200, body
        assert sha256(body) == want.digest
        assert headers["OCI-Namespace"] == ns
        status, body, _ = await get(
            http, f"{mirror.url}/v2/org/app/blobs/{want.layer_digest}?ns={ns}"
        )
        assert (status, body) == (200, want.layer)


async def test_prefix_picks_the_upstream(
    mirror: RunningMirror, http: aiohttp.ClientSession, hub: FakeUpstream, ghcr: FakeUpstream
) -> None:
    on_ghcr = push_image(ghcr, "org/app", "v1", b"ghcr layer")
    status, body, headers = await get(http, f"{mirror.url}/v2/ghcr.io/org/app/manifests/v1")
    assert status == 200, body
    assert sha256(body) == on_ghcr.digest
    assert "OCI-Namespace" not in headers
    # containerd with override_path and a catch-all may send both: prefix and ns.
    status, body, _ = await get(http, f"{mirror.url}/v2/ghcr.io/org/app/manifests/v1?ns=ghcr.io")
    assert sha256(body) == on_ghcr.digest
    assert ghcr.count("GET", "/v2/org/app/manifests/v1") >= 1
    assert hub.count(None, "/manifests/v1") == 0


async def test_default_is_docker_hub_with_library(
    mirror: RunningMirror, http: aiohttp.ClientSession, hub: FakeUpstream, ghcr: FakeUpstream
) -> None:
    official = push_image(hub, "library/alpine", "3", b"alpine layer")
    for path in ("alpine", "library/alpine", "docker.io/alpine", "docker.io/library/alpine"):
        status, body, headers = await get(http, f"{mirror.url}/v2/{path}/manifests/3")
        assert status == 200, (path, body)
        assert sha256(body) == official.digest
        assert "OCI-Namespace" not in headers
    assert ghcr.connections == 0


async def test_cache_keeps_upstreams_apart(
    tmp_path: Path, http: aiohttp.ClientSession, hub: FakeUpstream, ghcr: FakeUpstream
) -> None:
    config = two_upstream_config(tmp_path, hub, ghcr)
    on_hub = push_image(hub, "org/app", "v1", b"hub layer")
    on_ghcr = push_image(ghcr, "org/app", "v1", b"ghcr layer, different bytes")
    shared = hub.add_blob(b"same blob on both", "org/app")
    assert ghcr.add_blob(b"same blob on both", "org/app") == shared
    async with run_mirror(config) as mirror:
        for _ in range(2):  # the second round must come from the cache
            for ns, want in (("docker.io", on_hub), ("ghcr.io", on_ghcr)):
                base = f"{mirror.url}/v2/org/app"
                status, body, _ = await get(http, f"{base}/manifests/{want.digest}?ns={ns}")
                assert (status, sha256(body)) == (200, want.digest)
                status, body, _ = await get(http, f"{base}/blobs/{want.layer_digest}?ns={ns}")
                assert (status, body) == (200, want.layer)
                status, body, _ = await get(http, f"{base}/blobs/{shared}?ns={ns}")
                assert (status, body) == (200, b"same blob on both")
        # A blob of one upstream is not served for the other, even from the cache.
        status, body, _ = await get(
            http, f"{mirror.url}/v2/org/app/blobs/{on_ghcr.layer_digest}?ns=docker.io"
        )
        assert status == 404, body
    for up, want in ((hub, on_hub), (ghcr, on_ghcr)):
        assert up.count("GET", f"/blobs/{want.layer_digest}") == 1
        assert up.count("GET", f"/blobs/{shared}") == 1
    for name, want in (("docker.io", on_hub), ("ghcr.io", on_ghcr)):
        hex_ = want.layer_digest.removeprefix("sha256:")
        cached = tmp_path / name / "blobs" / "sha256" / hex_[:2] / hex_
        assert cached.read_bytes() == want.layer
        assert (tmp_path / name / "blobs" / "sha256" / shared[7:9] / shared[7:]).is_file()


@pytest.mark.parametrize(
    ("path", "ns", "status", "code"),
    [
        ("org/app", "127.0.0.1:{port}", 403, "DENIED"),
        ("org/app", "localhost:{port}", 403, "DENIED"),
        ("org/app", "quay.io", 403, "DENIED"),
        ("127.0.0.1:{port}/org/app", None, 403, "DENIED"),
        ("localhost:{port}/org/app", None, 403, "DENIED"),
        ("quay.io/org/app", None, 403, "DENIED"),
        ("127.0.0.1:{port}/org/app", "ghcr.io", 400, "NAME_INVALID"),
    ],
)
async def test_no_open_proxy(
    mirror: RunningMirror,
    http: aiohttp.ClientSession,
    stranger: FakeUpstream,
    hub: FakeUpstream,
    ghcr: FakeUpstream,
    path: str,
    ns: str | None,
    status: int,
    code: str,
) -> None:
    path = path.format(port=stranger.port)
    query = "" if ns is None else "?ns=" + ns.format(port=stranger.port)
    for kind in ("manifests/v1", "blobs/sha256:" + "0" * 64, "tags/list"):
        got, body, _ = await get(http, f"{mirror.url}/v2/{path}/{kind}{query}")
        assert (got, json.loads(body)["errors"][0]["code"]) == (status, code), (kind, body)
    assert stranger.connections == 0
    assert hub.connections == 0
    assert ghcr.connections == 0
