"""/metrics, /healthz and /readyz of a mirror serving real pulls from a fake upstream."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mirror.metrics import (
    CONTENT_TYPE,
    KINDS,
    REFUSED_REASONS,
    REFUSED_VIA,
    RESULTS,
    SOURCES,
    STATUS_CLASSES,
)
from mirror.storage.instrumented import ACTIONS
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.processes import free_port
from tests.support.small_images import add_small_image, pull

EXPECTED_SAMPLES = {
    "mirror_requests_total",
    "mirror_served_bytes_total",
    "mirror_upstream_fetched_bytes_total",
    "mirror_upstream_requests_total",
    "mirror_upstream_request_duration_seconds_bucket",
    "mirror_upstream_rate_limited_total",
    "mirror_upstream_ratelimit_remaining",
    "mirror_upstream_ratelimit_limit",
    "mirror_upstream_up",
    "mirror_upstream_refused_destinations_total",
    "mirror_fills_in_flight",
    "mirror_fill_followers_total",
    "mirror_upstream_resumes_total",
    "mirror_digest_mismatches_total",
    "mirror_storage_operation_duration_seconds_bucket",
    "mirror_storage_operation_duration_seconds_count",
    "mirror_cache_size_bytes",
    "mirror_cache_entries",
    "mirror_cache_max_size_bytes",
    "mirror_cache_evictions_total",
    "mirror_cache_evicted_bytes_total",
}
# Every operation of the storage protocol, and the fill's local spool.
STORAGE_ACTIONS = {*ACTIONS, "spool"}


def closed_label_sets(upstream: str) -> dict[str, set[str]]:
    """Every label name the mirror may use, with every value it may take."""
    return {
        "kind": set(KINDS) | {"tag"},
        "result": set(RESULTS),
        "source": set(SOURCES),
        "status": set(STATUS_CLASSES),
        "method": {"GET", "HEAD"},
        "backend": {"disk", "s3"},
        "action": STORAGE_ACTIONS,
        "upstream": {upstream},
        "via": set(REFUSED_VIA),
        "reason": set(REFUSED_REASONS),
    }


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parsed exposition: (sample name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    """The value of one series (0 when absent)."""
    return parsed.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_real_pulls_with_closed_label_sets(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    up.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "97;w=21600"}
    images = [
        add_small_image(up, "team-alpha/service-one", "v1", "alpha"),
        add_small_image(up, "team-beta/tool-two", "2.0", "beta"),
    ]
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        for _ in range(2):  # a miss, then a hit
            for image in images:
                await pull(http, mirror.url, image)
        async with http.get(mirror.url + "/v2/team-alpha/service-one/manifests/nope") as resp:
            assert resp.status == 404
        async with http.get(mirror.url + "/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == CONTENT_TYPE
            text = await resp.text()

    parsed = samples(text)
    assert {name for name, _ in parsed} >= EXPECTED_SAMPLES
    allowed = closed_label_sets(up.host)
    for (name, labels), _ in parsed.items():
        for label, label_value in labels:
            if label == "le":
                float(label_value)  # histogram bucket bound
                continue
            assert label in allowed, f"{name} has unexpected label {label}"
            assert label_value in allowed[label], f"{name}{{{label}={label_value!r}}}"
    for image in images:
        assert image.repository.split("/")[0] not in text
        for digest in [image.manifest_digest, *image.blobs]:
            assert digest.split(":")[1][:12] not in text

    assert value(parsed, "mirror_requests_total", kind="manifest", result="miss") == 2
    assert value(parsed, "mirror_requests_total", kind="manifest", result="hit") == 2
    assert value(parsed, "mirror_requests_total", kind="blob", result="miss") == 4
    assert value(parsed, "mirror_requests_total", kind="blob", result="hit") == 4
    assert value(parsed, "mirror_requests_total", kind="manifest", result="error") == 1
    # Every byte went out once from upstream and once from the cache, manifests included.
    pulled = sum(len(b) for image in images for b in image.blobs.values())
    from_cache = value(parsed, "mirror_served_bytes_total", source="cache")
    assert from_cache == value(parsed, "mirror_served_bytes_total", source="upstream")
    assert from_cache > pulled  # the manifests are counted too
    assert value(parsed, "mirror_upstream_fetched_bytes_total", upstream=up.host) == from_cache
    assert value(parsed, "mirror_upstream_ratelimit_remaining", upstream=up.host) == 97
    assert value(parsed, "mirror_upstream_ratelimit_limit", upstream=up.host) == 100
    assert value(parsed, "mirror_upstream_up", upstream=up.host) == 1
    assert value(parsed, "mirror_fills_in_flight") == 0
    assert value(parsed, "mirror_fill_followers_total") == 0  # one client at a time
    assert value(parsed, "mirror_cache_size_bytes") >= pulled
    assert value(parsed, "mirror_cache_entries") >= 6  # 4 blobs, 2 manifests (+ tag records)
    for action in ("stat", "get", "put", "commit"):
        count = value(
            parsed, "mirror_storage_operation_duration_seconds_count", backend="disk", action=action
        )
        assert count > 0, action


async def test_separate_metrics_listener(up: FakeUpstream, http: aiohttp.ClientSession,
                                         tmp_path: Path) -> None:  # fmt: skip
    port = free_port()
    config = mirror_config(tmp_path, up.url, metrics={"listen": f"127.0.0.1:{port}"})
    async with run_mirror(config):
        async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
            assert resp.status == 200
            assert "mirror_requests_total" in await resp.text()
        async with http.get(f"http://127.0.0.1:{port}/v2/") as resp:
            assert resp.status == 404  # only /metrics on that port
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(f"http://127.0.0.1:{port}/metrics"):
            pass


async def test_healthz_and_readyz_with_upstream(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with http.get(mirror.url + "/healthz") as resp:
            assert resp.status == 200
        for _ in range(3):
            async with http.get(mirror.url + "/readyz") as resp:
                assert resp.status == 200, await resp.text()
                doc = await resp.json()
        assert doc["checks"] == {"storage": "ok", f"upstream {up.host}": "ok"}
    # Probes are answered from the last check for a few seconds.
    assert up.count("GET", "/v2/") == 1
    assert not (tmp_path / "_probe" / "readyz").exists()


async def test_readyz_offline_is_ready_without_upstream(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with run_mirror(mirror_config(tmp_path, dead, offline=True)) as mirror:
        async with http.get(mirror.url + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["checks"]["upstreams"].startswith("offline")


async def test_readyz_upstream_down_is_503(http: aiohttp.ClientSession, tmp_path: Path) -> None:
    port = free_port()
    async with run_mirror(mirror_config(tmp_path, f"http://127.0.0.1:{port}")) as mirror:
        async with http.get(mirror.url + "/healthz") as resp:
            assert resp.status == 200  # alive all the same
        async with http.get(mirror.url + "/readyz") as resp:
            assert resp.status == 503
            doc = await resp.json()
    assert doc["status"] == "not ready"
    assert f"upstream 127.0.0.1:{port}: unreachable" in doc["reason"]
    assert doc["checks"]["storage"] == "ok"


async def test_readyz_upstream_5xx_is_503(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from tests.support.fake_upstream import Fault

    up.add_fault(Fault("/v2/", status=503))
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        async with http.get(mirror.url + "/readyz") as resp:
            assert resp.status == 503
            assert "answered 503" in (await resp.json())["reason"]


async def test_readyz_storage_not_writable_is_503(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    async with run_mirror(mirror_config(cache, up.url)) as mirror:
        shutil.rmtree(cache)
        cache.write_bytes(b"not a directory")  # what a lost mount can look like
        async with http.get(mirror.url + "/readyz") as resp:
            assert resp.status == 503
            doc = await resp.json()
    assert doc["checks"]["storage"].startswith("storage not writable")
    assert doc["checks"][f"upstream {up.host}"] == "ok"


async def test_ratelimit_gauge_reaches_zero_on_429(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    from tests.support.fake_upstream import Fault

    image = add_small_image(up, "library/busy", "1", "busy")
    up.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "1;w=21600"}
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        await pull(http, mirror.url, image)
        up.manifest_headers["ratelimit-remaining"] = "0;w=21600"  # as Docker Hub's 429 says
        up.add_fault(Fault("/manifests/2", status=429))
        async with http.get(mirror.url + "/v2/library/busy/manifests/2") as resp:
            assert resp.status == 429
        async with http.get(mirror.url + "/metrics") as resp:
            parsed = samples(await resp.text())
    assert value(parsed, "mirror_upstream_ratelimit_remaining", upstream=up.host) == 0
    assert value(parsed, "mirror_upstream_rate_limited_total", upstream=up.host) == 1
    assert value(parsed, "mirror_requests_total", kind="manifest", result="error") == 1
