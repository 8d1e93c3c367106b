"""The ``registry-mirror`` command line, run as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m mirror ARGS`` in a fresh process, with no ``MIRROR_*`` but those in ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    environ["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        capture_output=True, text=True, env={**environ, **(env or {})}, cwd=cwd,
        timeout=60, check=False,
    )  # fmt: skip
