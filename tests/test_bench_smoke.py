"""The benchmark's smoke mode runs end to end, so the harness cannot rot unnoticed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS = ("/usr/bin/docker-registry", "/usr/sbin/nginx", "wrk", "curl")


@pytest.mark.slow
def test_quick_benchmark_measures_every_scenario(tmp_path: Path) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {missing}; run .ci/install-debian-packages")
    pytest.importorskip("matplotlib", reason="pip install -e .[bench]")
    raw, docs = tmp_path / "raw.json", tmp_path / "docs" / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--workdir", str(tmp_path / "work"),
         "--json", str(raw), "--docs", str(docs)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(raw.read_text())
    timed = ("a1_mibs", "a16_mibs", "b_total_s", "b_ttfb_ms", "f_total_s", "f_ttfb_ms",
             "g_blobs_per_s", "h_tags_per_s", "d_digest_rps", "d_tag_rps")  # fmt: skip
    for metric in timed:  # every peer, so that every ratio can be formed
        for peer in ("mirror", "distribution", "upstream"):
            assert results[metric][peer][0] > 0, (metric, peer)
    assert results["c_wall_s"]["mirror"][0] > 0
    # Every cold pull cost the mirror some CPU: the counters were read around it.
    assert results["f_cpu_s_per_gib"]["mirror"][0] > 0
    assert results["c_upstream_gets"]["mirror"] == [1]
    for failures in ("c_failures", "g_failures", "h_failures"):
        assert results[failures]["mirror"] == [0], failures
    for rss in ("c_rss_mib", "f_rss_mib", "e_rss_mib"):
        assert 0 < results[rss]["mirror"][0] < 1024, rss
    assert "targets (mirror):" in done.stdout
    assert "ratios of medians" in done.stdout
    report = docs.read_text()
    assert "| (a) cached blob, 1 client |" in report
    assert "| (g) cold 4 KiB blobs, 8 clients | higher |" in report  # the ratio table
    assert docs.with_suffix(".png").read_bytes().startswith(b"\x89PNG")


def run_script(*argv: str) -> str:
    """``python ARGV`` from the repository root (skipped without the tools): its output."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {missing}; run .ci/install-debian-packages")
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_manifest_ab_compares_source_trees() -> None:
    out = run_script("bench/manifest_ab.py", "--rounds", "1", "--seconds", "1", "one=.", "two=.")
    for name in ("one", "two"):
        found = re.search(rf"  {name}: by digest (\d+) req/s, .* (\d+) us CPU/request; by tag", out)
        assert found is not None, out
        assert int(found.group(1)) > 0
        assert int(found.group(2)) > 0


@pytest.mark.slow
def test_tls_cost_compares_plain_and_tls() -> None:
    out = run_script("bench/tls_cost.py", "--rounds", "1", "--blob-mib", "4", "--clients", "2",
                     "--seconds", "1")  # fmt: skip
    for name in ("plain", "tls"):
        found = re.search(rf"  {name}: blob 1 client (\d+) MiB/s .* manifest (\d+) req/s", out)
        assert found is not None, out
        assert int(found.group(1)) > 0
        assert int(found.group(2)) > 0
    assert "  tls/plain: " in out
