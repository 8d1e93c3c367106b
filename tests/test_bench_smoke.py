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
    for metric in ("a1_mibs", "a16_mibs", "b_total_s", "c_wall_s", "d_digest_rps", "d_tag_rps"):
        assert results[metric]["mirror"][0] > 0, metric
    assert results["c_upstream_gets"]["mirror"] == [1]
    assert results["c_failures"]["mirror"] == [0]
    assert 0 < results["e_rss_mib"]["mirror"][0] < 1024
    assert "targets (mirror):" in done.stdout
    assert "| (a) cached blob, 1 client |" in docs.read_text()
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
