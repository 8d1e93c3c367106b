"""Pulling every test image through the mirror from a real distribution registry.

The upstream is CNCF distribution 2.8 (Debian's docker-registry) in each auth
mode; what reached it is read from its own access log.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.images import Image, ImageSet
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.registry import UpstreamRegistry

MANIFEST_ACCEPT = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
]
SMALL_IMAGES = [
    "library/tiny:oci",
    "library/tiny:docker",
    "library/medium:latest",
    "library/multi:latest",
    "library/multi:docker",
]


@pytest.fixture(params=["none", "basic", "token"])
def upstream(request: pytest.FixtureRequest) -> UpstreamRegistry:
    """The real registry, once per auth mode."""
    registry: UpstreamRegistry = request.getfixturevalue(f"registry_{request.param}")
    return registry


def upstream_settings(registry: UpstreamRegistry) -> list[dict[str, object]]:
    """The mirror's upstream table for ``registry``, with credentials when it has auth."""
    table: dict[str, object] = {"url": registry.url, "retries": 1}
    if registry.auth != "none":
        table |= {"username": registry.username, "password": registry.password}
    return [table]


def successful_gets(registry: UpstreamRegistry, path: str, since: int) -> int:
    """GETs of ``path`` the upstream answered with content (not 401 challenges)."""
    entries = registry.requests(since)
    return sum(1 for e in entries if e.method == "GET" and e.path == path and e.status < 300)


async def get_manifest(
    session: aiohttp.ClientSession, base: str, repository: str, reference: str
) -> tuple[str, bytes]:
    """GET a manifest with one Accept line per type, as docker does; check its digest."""
    headers = [("Accept", media_type) for media_type in MANIFEST_ACCEPT]
    url = f"{base}/v2/{repository}/manifests/{reference}"
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.read()
        digest = resp.headers["Docker-Content-Digest"]
    assert digest == "sha256:" + hashlib.sha256(body).hexdigest()
    return digest, body


async def get_blob(session: aiohttp.ClientSession, base: str, repository: str, digest: str) -> int:
    """GET a blob, hash it while reading, and return its size."""
    hasher = hashlib.sha256()
    size = 0
    async with session.get(f"{base}/v2/{repository}/blobs/{digest}") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Docker-Content-Digest"] == digest
        async for chunk in resp.content.iter_chunked(1 << 20):
            hasher.update(chunk)
            size += len(chunk)
    assert "sha256:" + hasher.hexdigest() == digest
    return size


async def pull_image(session: aiohttp.ClientSession, base: str, image: Image) -> None:
    """Pull like a client: the tag, every child manifest by digest, every blob."""
    digest, body = await get_manifest(session, base, image.repository, image.tag)
    assert digest == image.digest
    document = json.loads(body)
    manifests = [document]
    for child in document.get("manifests", []):
        _, child_body = await get_manifest(session, base, image.repository, child["digest"])
        manifests.append(json.loads(child_body))
    for manifest in manifests:
        for blob in [manifest.get("config"), *manifest.get("layers", [])]:
            if blob:
                assert (
                    await get_blob(session, base, image.repository, blob["digest"]) == blob["size"]
                )


async def test_pull_all_images_then_hit(
    upstream: UpstreamRegistry,
    image_set: ImageSet,
    tmp_path: Path,
    storage_settings: dict[str, Any],
) -> None:
    config = mirror_config(
        tmp_path, upstream.url, upstreams=upstream_settings(upstream), storage=storage_settings
    )
    mark, token_mark = upstream.log_mark(), upstream.token_log_mark()
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        for ref in SMALL_IMAGES:
            await pull_image(session, mirror.url, image_set.image(ref))
        cold = upstream.count_requests(mark)
        assert cold, "the cold pull must have reached the upstream"
        if upstream.auth == "token":
            # One token per repository scope, reused for the whole pull.
            repositories = {image_set.image(ref).repository for ref in SMALL_IMAGES}
            assert len(upstream.token_requests(token_mark)) <= len(repositories)

        mark = upstream.log_mark()
        for ref in SMALL_IMAGES:
            await pull_image(session, mirror.url, image_set.image(ref))
        warm = upstream.count_requests(mark)
    assert sum(warm.values()) == 0, f"a warm pull within the tag TTL went upstream: {warm}"


async def test_blob_fetched_once_and_published_whole(
    registry_token: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    blob = image_set.large_layer()
    config = mirror_config(
        tmp_path, registry_token.url, upstreams=upstream_settings(registry_token)
    )
    mark = registry_token.log_mark()
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        assert await get_blob(session, mirror.url, "library/large", blob.digest) == blob.size
        assert await get_blob(session, mirror.url, "library/large", blob.digest) == blob.size
    blob_path = f"/v2/library/large/blobs/{blob.digest}"
    assert successful_gets(registry_token, blob_path, mark) == 1
    cached = (
        tmp_path / registry_token.host / "blobs" / "sha256" / blob.digest[7:9] / blob.digest[7:]
    )
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == blob.digest[7:]
    assert list((tmp_path / ".partial").iterdir()) == []


async def test_wrong_credentials_give_unauthorized(
    registry_basic: UpstreamRegistry, tmp_path: Path
) -> None:
    settings = [{"url": registry_basic.url, "username": "testuser", "password": "wrong"}]
    config = mirror_config(tmp_path, registry_basic.url, upstreams=settings)
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.url}/v2/library/tiny/manifests/oci") as resp:
            assert resp.status == 401
            document = await resp.json()
    assert document["errors"][0]["code"] == "UNAUTHORIZED"


async def test_unknown_manifest_and_blob(
    registry_none: UpstreamRegistry, tmp_path: Path, storage_settings: dict[str, Any]
) -> None:
    config = mirror_config(tmp_path, registry_none.url, storage=storage_settings)
    missing = "sha256:" + "0" * 64
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.url}/v2/library/tiny/manifests/nosuchtag") as resp:
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        async with session.get(f"{mirror.url}/v2/library/tiny/blobs/{missing}") as resp:
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "BLOB_UNKNOWN"


async def test_range_and_head_on_a_cached_blob(
    registry_none: UpstreamRegistry,
    image_set: ImageSet,
    tmp_path: Path,
    storage_settings: dict[str, Any],
) -> None:
    blob = image_set.blobs_of(image_set.image("library/medium:latest").manifest)[-1]
    data = blob.path.read_bytes()
    config = mirror_config(tmp_path, registry_none.url, storage=storage_settings)
    url_path = f"/v2/library/medium/blobs/{blob.digest}"
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        await get_blob(session, mirror.url, "library/medium", blob.digest)
        url = mirror.url + url_path
        async with session.get(url, headers={"Range": "bytes=100-1099"}) as resp:
            assert resp.status == 206
            assert resp.headers["Content-Range"] == f"bytes 100-1099/{blob.size}"
            assert await resp.read() == data[100:1100]
        async with session.get(url, headers={"Range": "bytes=-10"}) as resp:
            assert resp.status == 206
            assert await resp.read() == data[-10:]
        async with session.get(url, headers={"Range": f"bytes={blob.size}-"}) as resp:
            assert resp.status == 416
            assert resp.headers["Content-Range"] == f"bytes */{blob.size}"
        async with session.head(url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(blob.size)
            assert resp.headers["ETag"] == f'"{blob.digest}"'


async def test_concurrent_cold_pulls_share_one_download(
    registry_none: UpstreamRegistry,
    image_set: ImageSet,
    tmp_path: Path,
    storage_settings: dict[str, Any],
) -> None:
    blob = image_set.blobs_of(image_set.image("library/medium:latest").manifest)[-1]
    config = mirror_config(tmp_path, registry_none.url, storage=storage_settings)
    mark = registry_none.log_mark()
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        sizes = await asyncio.gather(
            *(get_blob(session, mirror.url, "library/medium", blob.digest) for _ in range(10))
        )
    assert sizes == [blob.size] * 10
    assert successful_gets(registry_none, f"/v2/library/medium/blobs/{blob.digest}", mark) == 1


async def test_docker_style_head_then_get_by_digest(
    registry_none: UpstreamRegistry,
    image_set: ImageSet,
    tmp_path: Path,
    storage_settings: dict[str, Any],
) -> None:
    """docker HEADs the tag, then GETs the manifest by digest: one upstream GET in all."""
    image = image_set.image("library/multi:docker")
    headers = [("Accept", media_type) for media_type in MANIFEST_ACCEPT]
    config = mirror_config(tmp_path, registry_none.url, storage=storage_settings)
    mark = registry_none.log_mark()
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        url = f"{mirror.url}/v2/library/multi/manifests/docker"
        async with session.head(url, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers["Docker-Content-Digest"] == image.digest
            assert resp.headers["Content-Length"] == str(len(image.manifest.data))
            assert resp.headers["Content-Type"] == image.media_type
        _, body = await get_manifest(session, mirror.url, "library/multi", image.digest)
        assert body == image.manifest.data
    manifest_path = "/v2/library/multi/manifests/"
    requests = [e for e in registry_none.requests(mark) if e.path.startswith(manifest_path)]
    assert [(e.method, e.path.rsplit("/", 1)[1]) for e in requests] == [
        ("HEAD", "docker"),
        ("GET", image.digest),
    ]


async def test_tag_list(registry_none: UpstreamRegistry, tmp_path: Path) -> None:
    config = mirror_config(tmp_path, registry_none.url)
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
        async with session.get(f"{mirror.url}/v2/library/tiny/tags/list") as resp:
            assert resp.status == 200
            listing = await resp.json()
        async with session.get(f"{mirror.url}/v2/library/nosuch/tags/list") as resp:
            assert resp.status == 404
            assert (await resp.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    assert listing["name"] == "library/tiny"
    assert sorted(listing["tags"]) == ["docker", "oci"]


async def test_tag_list_pagination_is_passed_through(tmp_path: Path) -> None:
    """distribution 2.8 ignores n and last, so a fake upstream that honours them shows it."""
    media_type = "application/vnd.oci.image.index.v1+json"
    async with FakeUpstream() as upstream:
        for tag in ("a", "b", "c"):
            body = b'{"schemaVersion":2,"manifests":[],"annotations":{"t":"%s"}}' % tag.encode()
            upstream.add_manifest("org/app", body, media_type, tag=tag)
        config = mirror_config(tmp_path, upstream.url)
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as session:
            url = f"{mirror.url}/v2/org/app/tags/list"
            async with session.get(url, params={"n": "2"}) as resp:
                assert (await resp.json())["tags"] == ["a", "b"]
                link = resp.headers["Link"]
            async with session.get(url, params={"n": "2", "last": "b"}) as resp:
                assert (await resp.json())["tags"] == ["c"]
    assert "last=b" in link
    assert upstream.requests[0].query == {"n": "2"}
    assert upstream.requests[1].query == {"n": "2", "last": "b"}
