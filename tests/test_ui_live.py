"""The web UI over the running mirror: its view follows pulls, purges, evictions and restarts.

A real mirror app on a real socket, a fake upstream on another, images pulled
through it like a client pulls them. The view is read both as values
(``app[UI][VIEW]``) and as the pages a browser gets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mirror.app import UI
from mirror.cache.index import CacheEntry, CacheIndex
from mirror.routes.keys import CACHE, PULLS
from mirror.storage import layout
from mirror.ui.keys import VIEW
from mirror.ui.live import LiveView
from mirror.ui.model import Health, PinState, RepositoryQuery, SortKey, TagQuery
from tests.support.cache_images import OCI_INDEX, add_image, add_index, noise, pull, settle
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.pulls import wait_for

TOKEN = "ui-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SAME_SITE = {**ADMIN, "Sec-Fetch-Site": "same-origin"}


def live_view(mirror: RunningMirror) -> LiveView:
    view = mirror.app[UI][VIEW]
    assert isinstance(view, LiveView)
    return view


@pytest.fixture
def settings() -> dict[str, Any]:
    return {"admin": {"token": TOKEN}}


@pytest.fixture
async def mirror(
    up: FakeUpstream, tmp_path: Path, settings: dict[str, Any]
) -> AsyncIterator[RunningMirror]:
    async with run_mirror(mirror_config(tmp_path, up.url, **settings)) as running:
        yield running


async def page(http: aiohttp.ClientSession, url: str, status: int = 200) -> str:
    async with http.get(url, headers=ADMIN) as resp:
        text = await resp.text()
        assert resp.status == status, text
        return text


async def test_listing_has_pulled_repositories_with_sizes_tags_and_pulls(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    shared = noise(5000, 1)
    one = add_image(up, "team/one", "1", [shared, noise(3000, 2)])
    two = add_image(up, "team/two", "latest", [shared])
    await pull(http, mirror.url, one)
    await pull(http, mirror.url, one)
    await pull(http, mirror.url, two)
    await settle(mirror.app)
    results = await live_view(mirror).repositories(RepositoryQuery(sort=SortKey.NAME))
    by_name = {s.name: s for s in results.items}
    assert set(by_name) == {"team/one", "team/two"}
    # Sizes count every object the tags use, the shared layer in each repository.
    assert by_name["team/one"].size > 8000 > by_name["team/two"].size > 5000
    assert (by_name["team/one"].tags, by_name["team/one"].pulls) == (1, 2)
    assert (by_name["team/two"].tags, by_name["team/two"].pulls) == (1, 1)
    assert by_name["team/one"].last_pulled is not None
    html = await page(http, mirror.url + "/ui/repositories?q=team/*")
    assert "team/one" in html
    assert "team/two" in html
    html = await page(http, mirror.url + "/ui/repositories?q=two")
    assert "team/two" in html
    assert "team/one" not in html


async def test_repository_page_has_tags_digests_and_platforms(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    amd = add_image(up, "multi", "amd", [noise(2000, 3)])
    arm = add_image(up, "multi", "arm", [noise(2000, 4)])
    index = add_index(up, "multi", "latest", [amd, arm])
    async with http.get(f"{mirror.url}/v2/multi/manifests/latest",
                        headers={"Accept": OCI_INDEX}) as resp:  # fmt: skip
        assert resp.status == 200
    await pull(http, mirror.url, amd)  # the amd64 child, not the arm one
    await settle(mirror.app)
    detail = await live_view(mirror).repository(up_name(mirror), "multi", TagQuery())
    assert detail is not None
    tags = {t.tag: t for t in detail.tags}
    assert set(tags) == {"latest", "amd"}
    assert (tags["latest"].digest, tags["latest"].media_type) == (index, OCI_INDEX)
    platforms = {p.digest: p for p in tags["latest"].platforms}
    assert set(platforms) == {amd.manifest, arm.manifest}
    assert [platforms[d].cached for d in (amd.manifest, arm.manifest)] == [True, False]
    assert platforms[amd.manifest].platform == "linux/amd64"
    assert tags["amd"].pin is PinState.UNPINNED
    html = await page(http, f"{mirror.url}/ui/repositories/{up_name(mirror)}/multi")
    assert index in html
    assert amd.manifest in html


def up_name(mirror: RunningMirror) -> str:
    return mirror.config.upstreams[0].name


async def test_purge_and_new_pulls_show_without_a_restart(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    view = live_view(mirror)
    one = add_image(up, "keep", "1", [noise(1000, 5)])
    two = add_image(up, "drop", "1", [noise(1000, 6)])
    await pull(http, mirror.url, one)
    assert [s.name for s in (await view.repositories(RepositoryQuery())).items] == ["keep"]
    await pull(http, mirror.url, two)
    await settle(mirror.app)
    assert {s.name for s in (await view.repositories(RepositoryQuery())).items} == {"keep", "drop"}
    async with http.delete(mirror.url + "/admin/cache?repository=drop", headers=ADMIN) as resp:
        assert resp.status == 200
    assert [s.name for s in (await view.repositories(RepositoryQuery())).items] == ["keep"]
    assert await view.repository(up_name(mirror), "drop", TagQuery()) is None


async def test_a_restart_lists_what_the_cache_holds(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "lasting", "v1", [noise(1500, 7)])
    config = mirror_config(tmp_path, up.url)
    async with run_mirror(config) as first:
        await pull(http, first.url, image)
        await settle(first.app)
        before = (await live_view(first).repositories(RepositoryQuery())).items
    async with run_mirror(config) as second:
        after = (await live_view(second).repositories(RepositoryQuery())).items
    assert [(s.name, s.size, s.tags, s.pulls) for s in after] == [
        (s.name, s.size, s.tags, s.pulls) for s in before
    ]
    assert after[0].pulls == 1  # the pull count survived the restart


async def test_the_ui_never_counts_as_a_use_of_an_object(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "quiet", "1", [noise(1000, 8)])
    await pull(http, mirror.url, image)
    await settle(mirror.app)
    entries = {e.key: e.accessed for e in live_cache_entries(mirror)}
    for path in ("/ui/", "/ui/repositories", f"/ui/repositories/{up_name(mirror)}/quiet"):
        await page(http, mirror.url + path)
    assert {e.key: e.accessed for e in live_cache_entries(mirror)} == entries


def live_cache_entries(mirror: RunningMirror) -> list[CacheEntry]:
    return mirror.app[CACHE].storage.index.entries()


async def test_upstream_hit_ratio_bytes_saved_health_and_rate_limit(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    (status,) = await live_view(mirror).upstreams()
    assert (status.health, status.requests, status.hit_ratio) == (Health.UNKNOWN, 0, None)
    up.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "76;w=21600"}
    image = add_image(up, "counted", "1", [noise(4000, 9)])
    await pull(http, mirror.url, image)  # 3 misses: manifest, config, layer
    await settle(mirror.app)
    await pull(http, mirror.url, image)  # 3 hits
    view = live_view(mirror)
    # The client has every byte a moment before the handler counts its request.
    await wait_for(lambda: view.upstream_tally(up_name(mirror)).requests == 6, "6 requests")
    (status,) = await view.upstreams()
    assert (status.health, status.default) == (Health.UP, True)
    assert (status.requests, status.hit_ratio) == (6, 0.5)
    assert status.bytes_saved >= 4000
    assert (status.rate_limit, status.rate_limit_remaining) == (100, 76)
    html = await page(http, mirror.url + "/ui/")
    assert "50.0 %" in html
    assert "76 of 100" in html


# A stalled download ends soon after the test, instead of after the default minute.
@pytest.mark.parametrize("settings", [{"fill": {"idle_timeout": 1, "stall_timeout": 2}}])
async def test_downloads_in_progress_show_live_bytes(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    layer = noise(200_000, 10)
    image = add_image(up, "slow", "1", [layer])
    up.add_fault(Fault(image.layers[0], method="GET", stall_after=50_000, times=1))
    task = asyncio.create_task(pull(http, mirror.url, image))
    try:
        for _ in range(500):
            fills = await live_view(mirror).fills()
            if fills and fills[0].received >= 50_000:
                break
            await asyncio.sleep(0.02)
        (fill,) = fills
        assert (fill.repository, fill.digest, fill.total) == ("slow", image.layers[0], 200_000)
        assert fill.followers == 1
        async with http.get(mirror.url + "/ui/fills.json") as resp:
            listed = (await resp.json())["fills"]
        assert [(f["digest"], f["received"]) for f in listed] == [(image.layers[0], 50_000)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("settings", [{"admin": {"token": TOKEN}, "cache": {"max_size": 100_000}}])
async def test_budget_lists_least_recently_used_and_skips_pinned(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    old = add_image(up, "old", "1", [noise(3000, 11)])
    new = add_image(up, "new", "1", [noise(3000, 12)])
    await pull(http, mirror.url, old)
    await pull(http, mirror.url, new)
    await settle(mirror.app)
    view = live_view(mirror)
    budget = await view.budget(3)
    assert (budget.max_size, budget.high_watermark, budget.low_watermark) == (
        100_000, 95_000, 85_000)  # fmt: skip
    assert (budget.objects, budget.size > 6000) == (8, True)
    assert [c.repositories for c in budget.evicted_next] == [("old",)] * 3
    form = {"upstream": up_name(mirror), "repository": "old", "tag": "1", "pinned": "true"}
    async with http.post(mirror.url + "/ui/actions/pin", data=form, headers=SAME_SITE,
                         allow_redirects=False) as resp:  # fmt: skip
        assert resp.status == 303
    budget = await view.budget(3)
    assert all(c.repositories == ("new",) for c in budget.evicted_next)


async def test_pull_counts_need_a_tag_and_stay_out_of_the_cache(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "counts", "1", [noise(500, 13)])
    await pull(http, mirror.url, image)
    async with http.head(f"{mirror.url}/v2/counts/manifests/1") as resp:
        assert resp.status == 200  # containerd resolves a tag with HEAD: a pull
    async with http.get(f"{mirror.url}/v2/counts/manifests/{image.manifest}") as resp:
        assert resp.status == 200  # by digest: part of a pull already counted
    async with http.get(f"{mirror.url}/v2/counts/manifests/nope") as resp:
        assert resp.status == 404  # no such tag: no pull
    await settle(mirror.app)
    (summary,) = (await live_view(mirror).repositories(RepositoryQuery())).items
    assert summary.pulls == 2
    stats = mirror.app[PULLS]
    assert await stats.flush()
    keys = [info.key async for info in mirror.app[CACHE].storage.walk(layout.STATS + "/")]
    assert keys
    assert not [key for key in keys if key in mirror.app[CACHE].storage.index]


def test_the_index_lists_objects_in_the_order_eviction_takes_them() -> None:
    index = CacheIndex()
    for number in range(5):
        index.add(f"up/blobs/sha256/0{number}/0{number}", 10, accessed=float(number))
    index.touch("up/blobs/sha256/01/01")  # used again: goes last
    listed = [entry.key for entry in index.oldest()]
    assert [entry.accessed for entry in index.entries()].count(0.0) == 1  # untouched by listing
    popped = [index.pop_oldest().key for _ in range(5)]
    assert listed == popped
    assert listed[-1] == "up/blobs/sha256/01/01"


async def test_repositories_of_an_upstream_no_longer_configured_are_not_listed(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "left", "1", [noise(1000, 14)])
    async with run_mirror(mirror_config(tmp_path, up.url)) as first:
        await pull(http, first.url, image)
        await settle(first.app)
    renamed = mirror_config(tmp_path, up.url, upstreams=[{"name": "other.test", "url": up.url}])
    async with run_mirror(renamed) as second:
        results = await live_view(second).repositories(RepositoryQuery())
        assert results.total == 0
        assert await live_view(second).repository(up_name(first), "left", TagQuery()) is None


async def test_the_view_on_disk_and_on_s3(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession, storage_settings: dict[str, Any]
) -> None:
    image = add_image(up, "stored", "1", [noise(3000, 15)])
    config = mirror_config(tmp_path, up.url, storage=storage_settings, admin={"token": TOKEN})
    async with run_mirror(config) as mirror:
        await pull(http, mirror.url, image)
        await settle(mirror.app)
        view = live_view(mirror)
        detail = await view.repository(up_name(mirror), "stored", TagQuery())
        assert detail is not None
        assert [(t.tag, t.digest) for t in detail.tags] == [("1", image.manifest)]
        assert detail.summary.size > 3000
        form = {"upstream": up_name(mirror), "repository": "stored", "confirm": "yes"}
        async with http.post(mirror.url + "/ui/actions/purge", data=form, headers=SAME_SITE,
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303
        assert await view.repository(up_name(mirror), "stored", TagQuery()) is None


@pytest.mark.parametrize("settings", [{"admin": {"token": TOKEN}, "cache": {"max_size": 40_000}}])
async def test_the_listing_agrees_with_the_admin_api_through_evictions(
    up: FakeUpstream, mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    view = live_view(mirror)
    for number in range(6):  # 6 x 10 KB through a 40 KB budget: passes evict the oldest
        image = add_image(up, f"churn/{number}", "1", [noise(10_000, 40 + number)])
        await pull(http, mirror.url, image)
        await settle(mirror.app)
        listed = {(s.name, s.tags, s.size) for s in
                  (await view.repositories(RepositoryQuery(per_page=100))).items}  # fmt: skip
        described = (await mirror.app[CACHE].describe(None, None))["repositories"]
        index = mirror.app[CACHE].storage.index
        # The admin API counts a repository's images; the UI also its tag records.
        expected = set()
        for repo in described:
            prefix = layout.tag_prefix(repo["upstream"], repo["repository"])
            records = [e for e in index.entries() if e.key.startswith(prefix)]
            size = repo["size"] + sum(e.size for e in records)
            expected.add((repo["repository"], len(repo["tags"]), size))
        assert listed == expected
    assert len(listed) < 6  # eviction did remove whole repositories
