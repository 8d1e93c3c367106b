"""bench/trust_cost.py runs end to end (a tiny run), so the figure in the docs can be made again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_trust_cost_benchmark_runs() -> None:
    done = subprocess.run(
        [sys.executable, "bench/trust_cost.py", "--images", "2", "--hits", "4"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "require - allow: cold" in done.stdout
    assert "load average" in done.stdout
