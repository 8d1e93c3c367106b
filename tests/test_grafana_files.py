"""The Grafana dashboard and provisioning files hang together (no Grafana needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "grafana" / "dashboards" / "registry-mirror.json"
PROVISIONING = ROOT / "grafana" / "provisioning"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[dict[str, Any]]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


def test_every_query_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["upstream"]["datasource"] == DATASOURCE
    for panel in panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    all_panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in all_panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_questions_of_the_issue_have_panels() -> None:
    exprs = " ".join(t["expr"] for p in panels() for t in p["targets"])
    for needle in (
        'mirror_served_bytes_total{source="cache"}',  # byte hit ratio, egress saved
        "mirror_requests_total",  # request hit ratio
        "histogram_quantile(0.99, sum by (le, upstream) (rate(mirror_upstream_request",
        "mirror_upstream_rate_limited_total",
        "mirror_upstream_ratelimit_remaining",
        "mirror_cache_size_bytes",
        "mirror_cache_evictions_total",
        "mirror_fills_in_flight",
        "mirror_signature_verifications_total",  # content trust: verdicts
        "mirror_signature_refusals_total",  # and refusals by reason
        "mirror_tls_certificate_expiry_timestamp_seconds",  # the front door's certificate
    ):
        assert needle in exprs, needle


def test_provisioning_points_at_the_dashboard() -> None:
    provider = (PROVISIONING / "dashboards" / "mirror.yml").read_text()
    assert "type: file" in provider
    assert "path: /var/lib/grafana/dashboards/registry-mirror" in provider
    datasource = (PROVISIONING / "datasources" / "prometheus.yml").read_text()
    assert "type: prometheus" in datasource
    assert "apiVersion: 1" in datasource
