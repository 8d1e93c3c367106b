"""An admin's purge and pin from the UI on the running mirror, and pull counts kept in storage.

A real mirror app and a fake upstream on real sockets; purges and pins are
sent as the UI's forms are; storage faults are real ones (a file where a
folder must be).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from mirror.app import PULL_STATS_INTERVALS
from mirror.cache import runtime_pins
from mirror.cache.commands import run_gc, run_verify
from mirror.cache.pins import Pin
from mirror.cache.runtime_pins import decode, encode
from mirror.config import Config
from mirror.metrics import Metrics
from mirror.oci import parse_digest
from mirror.routes.keys import CACHE, METRICS, PULLS
from mirror.stats.flusher import Intervals
from mirror.storage import layout
from mirror.ui.model import PinState, TagQuery
from tests.support.cache_images import add_image, noise, pull, settle
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.pulls import wait_for
from tests.test_ui_live import ADMIN, SAME_SITE, TOKEN, live_view, up_name


def config_for(tmp_path: Path, up: FakeUpstream, **settings: Any) -> Config:
    return mirror_config(tmp_path, up.url, admin={"token": TOKEN}, **settings)


async def post(http: aiohttp.ClientSession, url: str, form: dict[str, str],
               headers: dict[str, str]) -> tuple[int, str]:  # fmt: skip
    async with http.post(url, data=form, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def test_an_admin_purges_a_repository_and_others_cannot(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "gone", "1", [noise(2000, 20)])
    async with run_mirror(config_for(tmp_path, up)) as mirror:
        await pull(http, mirror.url, image)
        await settle(mirror.app)
        form = {"upstream": up_name(mirror), "repository": "gone", "confirm": "yes"}
        url = mirror.url + "/ui/actions/purge"
        pull_user = {"Authorization": "Bearer not-the-token", "Sec-Fetch-Site": "same-origin"}
        assert (await post(http, url, form, pull_user))[0] == 403
        assert (await post(http, url, form, {**ADMIN, "Sec-Fetch-Site": "cross-site"}))[0] == 403
        assert await live_view(mirror).repository(up_name(mirror), "gone", TagQuery())
        status, _ = await post(http, url, form, SAME_SITE)
        assert status == 303
        assert await live_view(mirror).repository(up_name(mirror), "gone", TagQuery()) is None
        assert not [k for k in mirror.app[CACHE].storage.index.entries() if k.kind == "blobs"]
        assert (await post(http, url, form, SAME_SITE))[0] == 404  # nothing left


async def test_without_an_admin_token_the_ui_is_read_only(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "kept", "1", [noise(2000, 21)])
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        await pull(http, mirror.url, image)
        form = {"upstream": up_name(mirror), "repository": "kept", "confirm": "yes"}
        headers = {"Authorization": "Bearer anything", "Sec-Fetch-Site": "same-origin"}
        assert (await post(http, mirror.url + "/ui/actions/purge", form, headers))[0] == 403
        async with http.get(mirror.url + "/ui/repositories") as resp:
            assert resp.status == 200
            assert "kept" in await resp.text()


async def test_a_pin_from_the_ui_survives_a_restart_and_stops_eviction(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    pinned = add_image(up, "pinned", "1", [noise(30_000, 22)])
    config = config_for(tmp_path, up, cache={"max_size": 60_000})
    async with run_mirror(config) as mirror:
        await pull(http, mirror.url, pinned)
        form = {"upstream": up_name(mirror), "repository": "pinned", "tag": "1",
                "pinned": "true"}  # fmt: skip
        assert (await post(http, mirror.url + "/ui/actions/pin", form, SAME_SITE))[0] == 303
    async with run_mirror(config) as mirror:
        detail = await live_view(mirror).repository(up_name(mirror), "pinned", TagQuery())
        assert detail is not None
        assert [t.pin for t in detail.tags] == [PinState.PINNED]
        for seed in range(3):  # 90 KB more than the 60 KB budget: eviction runs
            await pull(http, mirror.url, add_image(up, f"other{seed}", "1",
                                                   [noise(30_000, 30 + seed)]))  # fmt: skip
            await settle(mirror.app)
        cached = {e.key for e in mirror.app[CACHE].storage.index.entries()}
        kept = {layout.blob_key(up_name(mirror), parse_digest(d)) for d in pinned.blobs}
        assert kept <= cached
        form["pinned"] = "false"
        assert (await post(http, mirror.url + "/ui/actions/pin", form, SAME_SITE))[0] == 303
        raw = await mirror.app[CACHE].storage.get(layout.RUNTIME_PINS_KEY)
        assert raw is not None
        assert decode(raw) == frozenset()


def test_damaged_runtime_pins_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    good = Pin("docker.io", "library/alpine", "3.20")
    assert decode(encode(frozenset({good}))) == {good}
    with caplog.at_level(logging.WARNING):
        assert decode(b"{not json") == frozenset()
        bad = [{"upstream": "_x", "repository": "a", "tag": "b"},
               {"upstream": "d", "repository": "UPPER", "tag": "t"}, 7]  # fmt: skip
        mixed = json.loads(encode(frozenset({good})))
        mixed["pins"] += bad
        assert decode(json.dumps(mixed).encode()) == {good}
    assert "ignoring" in caplog.text


async def test_refused_pull_count_writes_are_counted_retried_and_never_block_pulls(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "counted", "1", [noise(1000, 23)])
    blocker = tmp_path / layout.STATS  # a file where the folder must be: every write fails
    blocker.write_bytes(b"")
    async with run_mirror(config_for(tmp_path, up), adjust=often) as mirror:
        await pull(http, mirror.url, image)  # served, though no count can be written
        metrics = mirror.app[METRICS]
        await wait_for(lambda: _errors(metrics, "flush") >= 2, "two refused flushes")
        blocker.unlink()
        await wait_for(lambda: (tmp_path / layout.STATS / "pulls").is_dir(), "a flush")
        assert mirror.app[PULLS].get(up_name(mirror), "counted") is not None
    async with run_mirror(config_for(tmp_path, up)) as again:
        counts = again.app[PULLS].get(up_name(again), "counted")
        assert counts is not None
        assert counts.count == 1


def often(app: web.Application) -> None:
    app[PULL_STATS_INTERVALS] = Intervals(flush_every=0.05, load_every=0.05, compact_every=0.05)


def _errors(metrics: Metrics, step: str) -> float:
    value = metrics.registry.get_sample_value("mirror_pull_stats_errors_total", {"step": step})
    return float(value or 0)


async def test_pull_counts_are_no_cached_object_for_gc_verify_and_the_index(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    image = add_image(up, "counted", "1", [noise(5000, 24)])
    config = config_for(tmp_path, up, cache={"max_size": 1000})
    async with run_mirror(config) as mirror:
        await pull(http, mirror.url, image)
        await settle(mirror.app)
        assert await mirror.app[PULLS].flush()
        assert not [e for e in mirror.app[CACHE].storage.index.entries()
                    if e.key.startswith(layout.STATS)]  # fmt: skip
    stats_files = sorted((tmp_path / layout.STATS).rglob("w-*"))
    assert stats_files
    report = await run_verify(config, quarantine=True)
    assert report.ok
    result = await run_gc(config)
    assert result.eviction.size_after <= 1000
    assert sorted((tmp_path / layout.STATS).rglob("w-*")) == stats_files
    assert not (tmp_path / layout.QUARANTINE).exists()


async def test_pins_past_the_limit_are_refused_with_a_page(
    up: FakeUpstream, tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_pins, "MAX_PINS", 1)
    async with run_mirror(config_for(tmp_path, up)) as mirror:
        url = mirror.url + "/ui/actions/pin"
        form = {"upstream": up_name(mirror), "repository": "a", "tag": "1", "pinned": "true"}
        assert (await post(http, url, form, SAME_SITE))[0] == 303
        status, page = await post(http, url, {**form, "tag": "2"}, SAME_SITE)
        assert status == 400
        assert "at most 1 runtime pins" in page
        assert mirror.app[CACHE].runtime_pins.pins == {Pin(up_name(mirror), "a", "1")}
