"""The measuring tools beside ``python -m bench`` run end to end and file time where it belongs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.memory import warm_free_memory
from bench.profile_cold import IDLE, OTHER, classify

REPO_ROOT = Path(__file__).resolve().parent.parent


def _run(*argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize(
    ("frames", "stage"),
    [
        # The event loop waiting in epoll is idle, whatever called it.
        ("run (/x/asyncio/runners.py:118);EpollSelector.select (/x/selectors.py:468)", IDLE),
        # The innermost frame that names a stage wins over the frames around it.
        ("_worker (/x/concurrent/futures/thread.py:83);pwrite_all (/x/fill_run.py:57)",
         "page-cache write (spool, partial)"),
        ("FillManager._run (/x/fills.py:1);_publish (/x/disk.py:98)", "commit: fsync + rename"),
        ("S3Writer._upload_part (/x/s3_writer.py:1);SigV4Auth.payload (/x/botocore/auth.py:1)",
         "S3: payload sha256 for SigV4 (botocore)"),
        ("Handle._run (/x/asyncio/events.py:80);ResponseHandler.data_received "
         "(/x/aiohttp/client_proto.py:359)", "HTTP parser + StreamReader (aiohttp)"),
        ("Handle._run (/x/asyncio/events.py:80)", OTHER),
        # A batch hashed in a worker thread, and a follower taking its bytes.
        ("_worker (/x/concurrent/futures/thread.py:83);_hash (/x/mirror/proxy/transfer.py:1)",
         "sha256"),
        ("Follower._next (/x/mirror/proxy/download.py:1)", "hand-off to followers (download)"),
    ],
)  # fmt: skip
def test_a_sample_is_filed_under_its_innermost_known_stage(frames: str, stage: str) -> None:
    assert classify(frames) == stage


@pytest.mark.slow
def test_cold_profile_accounts_for_the_mirror_threads() -> None:
    if shutil.which("/usr/bin/docker-registry") is None or shutil.which("curl") is None:
        pytest.skip("needs docker-registry and curl: run .ci/install-debian-packages")
    # 64 MiB: thread times come in 10 ms ticks, and a spliced 8 MiB pull can
    # leave every thread below one.
    out = _run("bench/profile_cold.py", "--pulls", "1", "--blob-mib", "64")
    assert "pull 1: total" in out
    assert "  thread " in out  # at least the hashing thread spent CPU on the pull
    if shutil.which("py-spy") is not None:
        assert "of busy samples" in out
    (account,) = [line for line in out.splitlines() if "until the last byte:" in line]
    for process in ("mirror", "upstream", "curl"):
        assert f" {process} " in account
    assert "s of wall time on" in account


@pytest.mark.slow
def test_cold_profile_accounts_for_distribution_too() -> None:
    if shutil.which("/usr/bin/docker-registry") is None or shutil.which("curl") is None:
        pytest.skip("needs docker-registry and curl: run .ci/install-debian-packages")
    out = _run("bench/profile_cold.py", "--pulls", "1", "--blob-mib", "16", "--distribution")
    assert "py-spy off" in out  # it samples only the mirror
    (account,) = [line for line in out.splitlines() if "until the last byte:" in line]
    assert account.startswith("  until the last byte: distribution ")


@pytest.mark.slow
def test_cold_ab_pulls_each_tree_in_turn() -> None:
    if shutil.which("/usr/bin/docker-registry") is None or shutil.which("curl") is None:
        pytest.skip("needs docker-registry and curl: run .ci/install-debian-packages")
    out = _run("bench/cold_ab.py", "--rounds", "2", "--blob-mib", "4", "--probe", "a=.", "b=.")
    rounds = [line.split()[2] for line in out.splitlines() if line.startswith("round ")]
    assert rounds == ["a", "b", "b", "a"]  # the order rotates
    assert "  direct     total s" in out
    assert "  b          total s" in out
    assert "peak RSS MiB" in out
    assert "healthz max ms" in out


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["bench/floors.py", "bench/pipeline.py"])
def test_floor_tools_time_every_stage(tool: str, tmp_path: Path) -> None:
    out = _run(tool, "--sizes", "4", "--reps", "1", "--settle", "0", "--dir", str(tmp_path))
    lines = [line for line in out.splitlines() if "MiB/s" in line]
    assert len(lines) >= 6, out
    assert not list(tmp_path.iterdir())  # every file written was removed


def test_page_cost_tool_writes_with_and_without_warming() -> None:
    out = _run("bench/memory.py", "--mib", "8", "--rounds", "1", "--pause", "0")
    lines = [line for line in out.splitlines() if "s of CPU to write 8 MiB" in line]
    assert [line.split(" round ")[0].strip() for line in lines] == ["as it comes", "after warming"]


def test_warming_leaves_no_memory_held() -> None:
    before = _vm_rss_kib()
    warm_free_memory(64 * 1024 * 1024)
    assert _vm_rss_kib() - before < 16 * 1024  # touched, then given back


def _vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")
