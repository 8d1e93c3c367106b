"""The 200 MiB image across the air gap: bounded memory, and a kill -9 in the middle."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mirror.oci import parse_digest
from mirror.storage import layout
from mirror.storage.disk import PARTIAL_DIR
from tests.support.airgap_cli import wait_for_partial
from tests.support.airgap_content import UPSTREAM
from tests.support.airgap_process import DELAY_ENV, STATS_ENV
from tests.support.images import ImageSet

pytestmark = pytest.mark.slow

DRIVER = [sys.executable, "-m", "tests.support.airgap_process"]
LARGE = "library/large:latest"
# A process holding a 200 MiB blob would pass this easily; streaming stays far below.
RSS_BOUND_MIB = 150
MIB = 1024 * 1024


@dataclass
class Finished:
    """How a driver process ended."""

    status: int
    stdout: str
    peak_rss_mib: float


def run_driver(args: list[str], work: Path, env: dict[str, str] | None = None) -> Finished:
    """Run the driver to its end; its exit status, output and own peak RSS."""
    stats = work / "stats.json"
    stats.unlink(missing_ok=True)
    environment = {**(env or os.environ), STATS_ENV: str(stats)}
    done = subprocess.run(
        [*DRIVER, *args], capture_output=True, text=True, env=environment, check=False,
        timeout=300,
    )  # fmt: skip
    peak = json.loads(stats.read_text())["peak_rss_mib"] if stats.exists() else -1.0
    return Finished(done.returncode, done.stdout, peak)


def test_large_image_export_and_import_in_bounded_memory(
    image_set: ImageSet, tmp_path: Path
) -> None:
    exported = run_driver(["export", str(tmp_path / "large.tar.zst"), LARGE], tmp_path)
    assert exported.status == 0
    imported = run_driver(["import", str(tmp_path / "large.tar.zst"), str(tmp_path / "cache")],
                          tmp_path)  # fmt: skip
    assert imported.status == 0, imported.stdout
    assert json.loads(imported.stdout)["bytes_written"] >= image_set.large_layer().size
    assert exported.peak_rss_mib < RSS_BOUND_MIB
    assert imported.peak_rss_mib < RSS_BOUND_MIB


def test_kill_9_during_a_large_import_then_rerun_completes(
    image_set: ImageSet, tmp_path: Path
) -> None:
    assert run_driver(["export", str(tmp_path / "layout"), LARGE], tmp_path).status == 0
    cache = tmp_path / "cache"
    layer = image_set.large_layer()
    key = layout.blob_key(UPSTREAM, parse_digest(layer.digest))
    env = {**os.environ, DELAY_ENV: "0.01"}  # 200 chunks: about 2 s for the large layer
    with (tmp_path / "first").open("wb") as out:
        process = subprocess.Popen(
            [*DRIVER, "import", str(tmp_path / "layout"), str(cache)], stdout=out, env=env
        )
        try:
            partial = wait_for_partial(cache / PARTIAL_DIR, 32 * MIB, process)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert partial.exists()  # the half-written layer is there, but only as a partial
    assert not (cache / key).exists()
    assert not list((cache / UPSTREAM / "manifests").rglob("*"))  # no manifest before its blobs

    rerun = run_driver(["import", str(tmp_path / "layout"), str(cache)], tmp_path)
    assert rerun.status == 0, rerun.stdout
    report = json.loads(rerun.stdout)
    assert [i["status"] for i in report["images"]] == ["imported"]
    assert _sha256_file(cache / key) == layer.digest
    assert not partial.exists()  # swept at start, as the cache does


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
