"""The admin API reads repository names as clients write them (issue 17, papercut 5).

A mirror whose default upstream is Docker Hub (a fake upstream named
``docker.io``) caches ``medium`` as ``library/medium``: the admin API finds and
purges it under ``medium``, ``library/medium`` and ``docker.io/medium``, by the
rule pulls follow. A purge that names nothing is a 400 ``UNSUPPORTED`` saying
what it needs, not a pagination error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tests.support.cache_images import FakeImage, add_image, noise, pull, settle
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror

TOKEN = "admin-names-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def hub(up: FakeUpstream, tmp_path: Path) -> AsyncIterator[tuple[RunningMirror, FakeImage]]:
    """A mirror of ``up`` named docker.io, with ``medium:1`` pulled through it."""
    upstreams = [{"name": "docker.io", "url": up.url, "retries": 0}]
    config = mirror_config(tmp_path, up.url, upstreams=upstreams, admin={"token": TOKEN})
    image = add_image(up, "library/medium", "1", [noise(3000, 7)])
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        await pull(http, mirror.url, replace(image, repository="medium"))  # as docker pull medium
        await settle(mirror.app)
        yield mirror, image


@pytest.mark.parametrize(
    "query",
    ["repository=medium", "repository=library/medium", "repository=docker.io/medium",
     "upstream=docker.io&repository=medium", "upstream=registry-1.docker.io&repository=medium"],
)  # fmt: skip
async def test_a_short_docker_hub_name_is_listed_and_purged(
    hub: tuple[RunningMirror, FakeImage], http: aiohttp.ClientSession, query: str
) -> None:
    mirror, _ = hub
    async with http.get(f"{mirror.url}/admin/cache?{query}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        listed = [(r["upstream"], r["repository"]) for r in (await resp.json())["repositories"]]
    assert listed == [("docker.io", "library/medium")]
    async with http.delete(f"{mirror.url}/admin/cache?{query}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["removed"]["manifests"] == 1


async def test_a_purge_of_nothing_says_what_it_needs(
    hub: tuple[RunningMirror, FakeImage], http: aiohttp.ClientSession
) -> None:
    mirror, _ = hub
    async with http.delete(f"{mirror.url}/admin/cache", headers=AUTH) as resp:
        assert resp.status == 400
        (error,) = (await resp.json())["errors"]
    assert error["code"] == "UNSUPPORTED"
    assert "repository" in error["message"]
    assert "digest" in error["message"]
    assert error["detail"] == {"parameters": ["upstream", "repository", "tag", "digest"]}


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("repository=unknown.example/app", 403, "DENIED"),
     ("repository=Bad..Name", 400, "NAME_INVALID"),
     ("upstream=ghcr.io&repository=app", 404, "NAME_UNKNOWN")],
)  # fmt: skip
async def test_names_of_no_configured_upstream_are_refused(
    hub: tuple[RunningMirror, FakeImage], http: aiohttp.ClientSession, up: FakeUpstream,
    query: str, status: int, code: str,
) -> None:  # fmt: skip
    mirror, _ = hub
    before = len(up.requests)
    for method in ("GET", "DELETE"):
        async with http.request(method, f"{mirror.url}/admin/cache?{query}", headers=AUTH) as resp:
            assert resp.status == status
            assert (await resp.json())["errors"][0]["code"] == code
    assert len(up.requests) == before
