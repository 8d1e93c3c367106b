"""Every PromQL expression of the Grafana dashboard, evaluated by a real Prometheus.

A mirror serves real pulls (misses, hits, a 429) from a fake upstream while a
Prometheus (Debian package ``prometheus``) scrapes it every second; then each
expression of ``grafana/dashboards/registry-mirror.json`` must parse and
return at least one series.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.small_images import OCI_MANIFEST, add_small_image, pull

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "registry-mirror.json"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
# What Grafana would put in place of its variables.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$upstream": ".*"}
LABEL_VALUES_RE = re.compile(r"label_values\((?P<metric>[^,]+),\s*(?P<label>\w+)\)")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="Debian package prometheus"),
]


def dashboard_exprs(node: Any) -> Iterator[str]:
    """Every ``expr`` anywhere in the dashboard JSON."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


def substitute(expr: str) -> str:
    """The expression as Grafana would send it; unknown variables fail the test."""
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def start_prometheus(workdir: Path, target: str) -> tuple[ManagedProcess, str]:
    """Prometheus on a free loopback port scraping ``target`` every second."""
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: mirror\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    argv = [
        PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
    ]  # fmt: skip
    process = start_process("prometheus", argv, log_path=workdir / "prometheus.log")
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture
async def prometheus_and_mirror(
    tmp_path: Path,
) -> AsyncIterator[tuple[str, str, FakeUpstream]]:
    """(Prometheus URL, mirror URL, upstream), Prometheus already scraping the mirror."""
    async with FakeUpstream() as up:
        config = mirror_config(tmp_path / "cache", up.url)
        async with run_mirror(config) as mirror:
            process, prom = start_prometheus(tmp_path, mirror.url.removeprefix("http://"))
            try:
                # The wait blocks: run it in a thread so the mirror keeps answering scrapes.
                await asyncio.to_thread(wait_for_http, prom + "/-/ready", process, timeout=30)
                await wait_ready(prom)
                yield prom, mirror.url, up
            finally:
                await asyncio.to_thread(process.stop)


async def wait_ready(prom: str) -> None:
    """Until /-/ready says 200: it answers 503 while the TSDB is still starting."""
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            async with session.get(prom + "/-/ready") as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.1)
    raise AssertionError("Prometheus did not become ready within 30 s")


async def query(http: aiohttp.ClientSession, prom: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector; a parse error fails the test."""
    async with http.get(prom + "/api/v1/query", params={"query": expr}) as resp:
        doc = await resp.json()
    assert resp.status == 200, f"{expr}: {doc}"
    assert doc["status"] == "success", f"{expr}: {doc}"
    result: list[dict[str, Any]] = doc["data"]["result"]
    return result


async def wait_for(http: aiohttp.ClientSession, prom: str, expr: str, what: str) -> None:
    """Poll ``expr`` until it returns a series (at most 60 s)."""
    for _ in range(240):
        if await query(http, prom, expr):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"Prometheus never saw {what} ({expr})")


async def serve_some_pulls(
    http: aiohttp.ClientSession, prom: str, mirror: str, up: FakeUpstream
) -> None:
    """Misses, hits and one upstream 429, in two rounds with a scrape between.

    A series is born at its first increment, and rate() cannot see the
    increments that came before the series' first sample; the second round
    moves the series the first round created.
    """
    up.manifest_headers = {"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "97;w=21600"}
    first, second = (add_small_image(up, f"team-{n}/app", "1", n) for n in ("a", "b"))
    await pull(http, mirror, first)
    await wait_for(http, prom, "mirror_upstream_request_duration_seconds_count", "round one")
    await pull(http, mirror, second)
    for _ in range(2):
        for image in (first, second):
            await pull(http, mirror, image)
    add_small_image(up, "team-c/app", "1", "c")
    up.add_fault(Fault("/team-c/app/manifests/1", status=429, retry_after=30))
    headers = {"Accept": OCI_MANIFEST}
    async with http.get(f"{mirror}/v2/team-c/app/manifests/1", headers=headers) as resp:
        assert resp.status == 429


async def test_every_dashboard_expression_returns_data(
    prometheus_and_mirror: tuple[str, str, FakeUpstream],
) -> None:
    prom, mirror, up = prometheus_and_mirror
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = sorted(set(dashboard_exprs(dashboard)))
    assert len(exprs) >= 20
    async with aiohttp.ClientSession() as http:
        await wait_for(http, prom, 'up{job="mirror"} == 1', "a scrape of the mirror")
        await serve_some_pulls(http, prom, mirror, up)
        await wait_for(http, prom, "sum(mirror_upstream_rate_limited_total) > 0", "the 429")
        empty = [expr for expr in exprs if not await query(http, prom, substitute(expr))]
        # Parsed all the same (query() fails on a parse error); only mirrors with [tls]
        # export these series, and this one serves plain HTTP.
        empty = [expr for expr in empty if "mirror_tls_" not in expr]
        assert not empty, "dashboard expressions without data:\n" + "\n".join(empty)
        await check_values(http, prom, dashboard, up.host)


async def check_values(
    http: aiohttp.ClientSession, prom: str, dashboard: dict[str, Any], upstream: str
) -> None:
    """The headline panels show what the pulls did, and the variable lists the upstream."""
    panels = {p["title"]: p for p in dashboard["panels"]}

    async def first_value(title: str) -> float:
        """The largest value of the panel's first query."""
        result = await query(http, prom, substitute(panels[title]["targets"][0]["expr"]))
        return max(float(series["value"][1]) for series in result)

    hit_ratio = await first_value("Request hit ratio")
    assert 0.5 < hit_ratio < 1, hit_ratio  # 2 of 3 pulls were hits
    byte_ratio = await first_value("Byte hit ratio")
    assert 0.5 < byte_ratio < 1, byte_ratio
    assert await first_value("Egress saved (time range)") > 0
    latency = await first_value("Upstream latency (time to headers)")
    assert math.isfinite(latency)
    assert latency > 0
    assert await first_value("Rate limit remaining") == 97
    assert await first_value("Errors and 429s") > 0  # the 429 went back to the client
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = LABEL_VALUES_RE.fullmatch(variable["definition"])
        assert match is not None, variable["definition"]
        url = f"{prom}/api/v1/label/{match['label']}/values"
        async with http.get(url, params={"match[]": match["metric"]}) as resp:
            assert upstream in (await resp.json())["data"]
