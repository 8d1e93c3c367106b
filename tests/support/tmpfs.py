"""Small real file systems for tests of a full cache disk (tmpfs, mounted as root).

::

    with small_disk(tmp_path / "cache", "1m") as cache:   # pytest.skip if mount is impossible
        fill_up(cache)                                     # 100 % full
        ...
        resize(cache, "8m")                                # space comes back
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = "filler"


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (``mount -o size=``) at ``path``, unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=True)


def resize(path: Path, size: str) -> None:
    """Grow or shrink the tmpfs at ``path`` in place."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def fill_up(path: Path) -> Path:
    """Write a filler file into ``path`` until the file system is 100 % full."""
    filler = path / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                if os.write(fd, block) == 0:
                    break
            except OSError:
                if len(block) == 1:
                    break
                block = block[: len(block) // 2]  # top up the last few bytes
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0, "the file system still has room"
    return filler


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still put on the file system of ``path``."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize
