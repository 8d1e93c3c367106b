"""``/readyz`` keeps a mirror in rotation while its upstream is down, and says so (issue 17).

A mirror whose upstream is unreachable still serves its cache, so by default
readiness is the storage's; each upstream's health is in the body (reachable,
credentials refused, last error) and in the metrics. ``readiness.require_upstream``
brings back the old behaviour. Refused upstream credentials name the upstream
in the client's 401 and in a WARNING line (papercut 2). Real sockets throughout:
a fake upstream with Basic or token auth, closed ports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import RunningMirror, mirror_config, run_mirror
from tests.support.processes import free_port
from tests.support.small_images import add_small_image, pull

STRICT = {"readiness": {"require_upstream": True}}
WRONG = "not-the-password"


async def readyz(http: aiohttp.ClientSession, mirror: RunningMirror) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of ``/readyz``."""
    async with http.get(mirror.url + "/readyz") as resp:
        return resp.status, await resp.json()


async def metric(http: aiohttp.ClientSession, mirror: RunningMirror, name: str,
                 **labels: str) -> float | None:  # fmt: skip
    """The value of one exported series, or ``None`` when it is not exported."""
    async with http.get(mirror.url + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


async def test_an_unreachable_upstream_leaves_the_mirror_ready_and_is_reported(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    port = free_port()
    name = f"127.0.0.1:{port}"
    async with run_mirror(mirror_config(tmp_path, f"http://{name}")) as mirror:
        status, doc = await readyz(http, mirror)
        up = await metric(http, mirror, "mirror_upstream_up", upstream=name)
    assert status == 200, doc
    assert doc["status"] == "ready"
    assert doc["checks"]["storage"] == "ok"
    assert f"upstream {name}: unreachable" in doc["warnings"]
    assert str(doc["warnings"]).count("unreachable") == 1, doc["warnings"]
    health = doc["upstreams"][name]
    assert health["reachable"] is False
    assert health["credentials_refused"] is False
    assert f"connection to {name} refused" in health["last_error"]
    assert isinstance(health["last_error_at"], float)
    assert up == 0


async def test_a_5xx_upstream_is_a_warning(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    up.add_fault(Fault("/v2/", status=503))
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, doc = await readyz(http, mirror)
    assert status == 200, doc
    assert "answered 503" in doc["warnings"]
    assert doc["upstreams"][up.host]["reachable"] is False


async def test_a_healthy_upstream_is_reported_and_counted(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with run_mirror(mirror_config(tmp_path, up.url)) as mirror:
        status, doc = await readyz(http, mirror)
        up_value = await metric(http, mirror, "mirror_upstream_up", upstream=up.host)
        pings = await metric(http, mirror, "mirror_upstream_requests_total",
                             upstream=up.host, method="GET", status="2xx")  # fmt: skip
    assert status == 200
    assert "warnings" not in doc
    assert doc["upstreams"][up.host] == {
        "reachable": True, "credentials_refused": False, "last_error": None, "last_error_at": None
    }  # fmt: skip
    assert (up_value, pings) == (1, 1)


@pytest.mark.parametrize("auth", ["basic", "token"])
async def test_refused_credentials_name_the_upstream_and_warn(
    auth: str, http: aiohttp.ClientSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FakeUpstream(auth=auth) as up:  # type: ignore[arg-type]
        add_small_image(up, "team/app", "v1", "app")
        upstreams = [{"url": up.url, "username": up.username, "password": WRONG, "retries": 0}]
        config = mirror_config(tmp_path, up.url, upstreams=upstreams)
        with caplog.at_level(logging.WARNING, logger="mirror"):
            async with run_mirror(config) as mirror:
                url = f"{mirror.url}/v2/team/app/manifests/v1"
                for _ in range(2):
                    async with http.get(url) as resp:
                        assert resp.status == 401
                        error = (await resp.json())["errors"][0]
                status, doc = await readyz(http, mirror)
    assert error["code"] == "UNAUTHORIZED"
    assert f"upstream {up.host} refused the mirror's credentials" in error["message"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"upstream {up.host} refused the mirror's credentials" in r.getMessage()
               for r in warnings)  # fmt: skip
    assert all(WRONG not in r.getMessage() for r in caplog.records)
    assert status == 200  # cached images can still be served
    assert doc["upstreams"][up.host]["credentials_refused"] is True
    assert "credentials refused" in doc["warnings"]


async def test_strict_mode_unreadies_on_refused_credentials(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeUpstream(auth="basic") as up:
        add_small_image(up, "team/app", "v1", "app")
        upstreams = [{"url": up.url, "username": up.username, "password": WRONG, "retries": 0}]
        config = mirror_config(tmp_path, up.url, upstreams=upstreams, **STRICT)
        async with run_mirror(config) as mirror:
            async with http.get(f"{mirror.url}/v2/team/app/manifests/v1") as resp:
                assert resp.status == 401
            status, doc = await readyz(http, mirror)
    assert status == 503
    assert f"upstream {up.host}: credentials refused" in doc["reason"]


async def test_refused_credentials_clear_once_a_request_succeeds(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with FakeUpstream(auth="basic") as up:
        image = add_small_image(up, "team/app", "v1", "app")
        upstreams = [{"url": up.url, "username": up.username, "password": WRONG, "retries": 0}]
        async with run_mirror(mirror_config(tmp_path, up.url, upstreams=upstreams)) as mirror:
            async with http.get(f"{mirror.url}/v2/team/app/manifests/v1") as resp:
                assert resp.status == 401
            up.password = WRONG  # the registry now takes what the mirror sends
            await pull(http, mirror.url, image)
            _, doc = await readyz(http, mirror)
    assert doc["upstreams"][up.host]["credentials_refused"] is False


async def test_every_upstream_series_exists_at_zero_from_start(
    http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    names = ["docker.io", "ghcr.io"]
    upstreams = [{"name": n, "url": f"http://127.0.0.1:{free_port()}"} for n in names]
    async with run_mirror(mirror_config(tmp_path, "", upstreams=upstreams)) as mirror:
        for name in names:
            assert await metric(http, mirror, "mirror_upstream_up", upstream=name) == 0
            for method in ("GET", "HEAD"):
                for status in ("2xx", "4xx", "5xx", "error"):
                    value = await metric(http, mirror, "mirror_upstream_requests_total",
                                         upstream=name, method=method, status=status)  # fmt: skip
                    assert value == 0, (name, method, status)
