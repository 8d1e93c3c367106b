"""htpasswd files written by the real ``htpasswd`` tool (apache2-utils), as operators do."""

from __future__ import annotations

import subprocess
from pathlib import Path


def write_htpasswd(path: Path, *entries: tuple[str, str], flags: tuple[str, ...] = ("-B",)) -> Path:
    """Add ``(user, password)`` entries to ``path`` (created when missing) with ``htpasswd``."""
    for user, password in entries:
        create = [] if path.exists() else ["-c"]
        subprocess.run(
            ["htpasswd", *create, "-b", *flags, str(path), user, password],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    return path
