"""The admin API: bearer token, cache listing, purge, gc."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cache_images import (
    add_image,
    blob_path,
    manifest_path,
    noise,
    pull,
    settle,
    upstream_name,
)
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def mirror(up: FakeUpstream, tmp_path: Path) -> AsyncIterator[RunningMirror]:
    async with run_mirror(mirror_config(tmp_path, up.url, admin={"token": TOKEN})) as running:
        yield running


async def test_admin_is_off_without_a_token(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with run_mirror(mirror_config(tmp_path, up.url)) as running:
        async with http.get(running.url + "/admin/cache", headers=AUTH) as resp:
            assert resp.status == 404
        async with http.delete(running.url + "/admin/cache?repository=a", headers=AUTH) as resp:
            assert resp.status in (404, 405)


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
async def test_wrong_or_missing_token_is_401(
    mirror: RunningMirror, http: aiohttp.ClientSession, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    for method, path in (("GET", "/admin/cache"), ("DELETE", "/admin/cache?repository=x"),
                         ("POST", "/admin/gc")):  # fmt: skip
        async with http.request(method, mirror.url + path, headers=headers) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
            body = await resp.json()
            assert body["errors"][0]["code"] == "UNAUTHORIZED"


async def test_listing_shows_repositories_tags_sizes(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    shared = noise(5000, 1)
    one = add_image(up, "team/one", "1", [shared, noise(3000, 2)])
    two = add_image(up, "team/two", "latest", [shared])
    await pull(http, mirror.url, one)
    await pull(http, mirror.url, two)
    await settle(mirror.app)
    async with http.get(mirror.url + "/admin/cache", headers=AUTH) as resp:
        assert resp.status == 200
        listing = await resp.json()
    repos = {r["repository"]: r for r in listing["repositories"]}
    assert set(repos) == {"team/one", "team/two"}
    assert repos["team/one"]["upstream"] == upstream_name(up)
    (tag,) = repos["team/one"]["tags"]
    assert tag["tag"] == "1"
    assert tag["digests"] == [one.manifest]
    assert tag["objects"] == 4  # manifest, config, two layers
    assert tag["size"] > 8000
    assert tag["last_access"].endswith("+00:00")
    assert repos["team/two"]["size"] > 5000
    assert listing["size"] < repos["team/one"]["size"] + repos["team/two"]["size"]  # shared once
    assert listing["entries"] == 8  # the shared layer once, and the two tag records
    assert listing["untagged"] == {"entries": 0, "size": 0}
    async with http.get(mirror.url + "/admin/cache?repository=team/two", headers=AUTH) as resp:
        assert [r["repository"] for r in (await resp.json())["repositories"]] == ["team/two"]


async def test_purge_by_tag_removes_unreferenced_and_pull_fetches_again(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    shared = noise(5000, 1)
    one = add_image(up, "team/one", "1", [shared, noise(3000, 2)])
    two = add_image(up, "team/two", "1", [shared])
    await pull(http, mirror.url, one)
    await pull(http, mirror.url, two)
    await settle(mirror.app)
    name = upstream_name(up)
    url = mirror.url + "/admin/cache?repository=team/one&tag=1"
    async with http.delete(url, headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        removed = (await resp.json())["removed"]
    assert removed["tags"] == 1
    assert removed["manifests"] == 1
    assert removed["blobs"] == 2  # config and own layer; the shared layer stays
    assert removed["bytes"] > 3000
    assert not manifest_path(tmp_path, name, one.manifest).exists()
    assert not blob_path(tmp_path, name, one.layers[1]).exists()
    assert not blob_path(tmp_path, name, one.config).exists()
    assert blob_path(tmp_path, name, shared_digest := one.layers[0]).exists()
    assert not list((tmp_path / name / "tags" / "team" / "one").rglob("*/*"))
    async with http.get(mirror.url + "/admin/cache", headers=AUTH) as resp:
        repos = [r["repository"] for r in (await resp.json())["repositories"]]
    assert repos == ["team/two"]

    await pull(http, mirror.url, one)  # fetched again from the upstream
    assert up.count("GET", "/manifests/1") == 3  # one, two, one again
    assert up.count("GET", "/blobs/" + one.layers[1]) == 2
    assert up.count("GET", "/blobs/" + shared_digest) == 1  # still served from the cache
    async with http.delete(url, headers=AUTH) as resp:
        assert resp.status == 200
    async with http.delete(url, headers=AUTH) as resp:  # nothing left to purge
        assert resp.status == 404
        assert (await resp.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_purge_repository_and_digest(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    one = add_image(up, "team/one", "1", [noise(4000, 3)])
    one_b = add_image(up, "team/one", "2", [noise(4000, 4)])
    two = add_image(up, "team/two", "1", [noise(4000, 5)])
    for image in (one, one_b, two):
        await pull(http, mirror.url, image)
    await settle(mirror.app)
    name = upstream_name(up)
    async with http.delete(mirror.url + "/admin/cache?repository=team/one", headers=AUTH) as resp:
        removed = (await resp.json())["removed"]
    # Both tags share one config blob (same repository, same config JSON).
    assert removed == {"tags": 2, "manifests": 2, "blobs": 3, "bytes": removed["bytes"]}
    assert blob_path(tmp_path, name, two.layers[0]).exists()
    url = f"{mirror.url}/admin/cache?digest={two.layers[0]}"
    async with http.delete(url, headers=AUTH) as resp:  # one blob, by digest
        assert (await resp.json())["removed"]["blobs"] == 1
    assert not blob_path(tmp_path, name, two.layers[0]).exists()
    assert manifest_path(tmp_path, name, two.manifest).exists()
    url = f"{mirror.url}/admin/cache?repository=team/two&digest={two.manifest}"
    async with http.delete(url, headers=AUTH) as resp:  # a manifest by digest
        removed = (await resp.json())["removed"]
    assert (removed["tags"], removed["manifests"], removed["blobs"]) == (1, 1, 1)
    async with http.get(mirror.url + "/admin/cache", headers=AUTH) as resp:
        listing = await resp.json()
    assert listing["entries"] == 0
    assert listing["size"] == 0


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("", 400, "UNSUPPORTED"),  # a purge of nothing (was PAGINATION_NUMBER_INVALID)
        ("?tag=1", 400, "UNSUPPORTED"),
        ("?repository=Bad..Name", 400, "NAME_INVALID"),
        ("?repository=a&tag=-bad", 400, "MANIFEST_INVALID"),
        ("?digest=sha256:xyz", 400, "DIGEST_INVALID"),
        ("?upstream=nowhere.example&repository=a", 404, "NAME_UNKNOWN"),
        ("?repository=never/pulled", 404, "MANIFEST_UNKNOWN"),
    ],
)
async def test_purge_bad_requests(
    mirror: RunningMirror, http: aiohttp.ClientSession, query: str, status: int, code: str
) -> None:
    async with http.delete(mirror.url + "/admin/cache" + query, headers=AUTH) as resp:
        assert resp.status == status
        assert (await resp.json())["errors"][0]["code"] == code


async def test_gc_endpoint_enforces_budget(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    images = [add_image(up, f"team/app{i}", "1", [noise(20_000, i)]) for i in range(3)]
    async with run_mirror(mirror_config(tmp_path, up.url)) as running:
        for image in images:
            await pull(http, running.url, image)
        await settle(running.app)
    config = mirror_config(
        tmp_path, up.url, admin={"token": TOKEN},
        cache={"max_size": 100_000, "high_watermark": 0.9, "low_watermark": 0.3},
    )  # fmt: skip
    async with run_mirror(config) as running:  # 61 KB: under the high watermark
        await settle(running.app)
        async with http.post(running.url + "/admin/gc", headers=AUTH) as resp:
            report = await resp.json()
        assert report["size_before"] > 60_000
        assert report["size_after"] <= 30_000
        assert report["removed"] >= 6
