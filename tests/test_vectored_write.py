"""``write_all``: many buffers per system call, in order, whatever the kernel takes at once."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mirror.storage.vectored import write_all

REPO = Path(__file__).resolve().parent.parent


def read(path: Path) -> bytes:
    return path.read_bytes()


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    offset=st.integers(0, 5000),
)
def test_chunks_land_in_order_at_the_offset(sizes: list[int], offset: int) -> None:
    chunks = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "f"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            assert write_all(fd, chunks, offset) == sum(sizes)
        finally:
            os.close(fd)
        # Nothing to write writes nothing, not even the hole before the offset.
        expected = b"\0" * offset + b"".join(chunks) if sum(sizes) else b""
        assert read(path) == expected


def test_more_buffers_than_one_call_takes(tmp_path: Path) -> None:
    # Linux takes 1024 buffers per writev; 3000 need three calls.
    chunks = [bytes([n % 256]) * (1 + n % 5) for n in range(3000)]
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert write_all(fd, chunks) == sum(map(len, chunks))
        assert write_all(fd, [b"tail"]) == 4  # at the file position, after the rest
    finally:
        os.close(fd)
    assert read(tmp_path / "f") == b"".join(chunks) + b"tail"


_SHORT_WRITE = """
import os, resource, signal, sys
from mirror.storage.vectored import write_all
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600)
try:
    write_all(fd, [b"a" * 6000, b"b" * 6000])
except OSError as exc:
    print(exc.errno)
"""


def test_a_short_write_is_resumed_and_a_refusal_raises(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel take the first 10,000 bytes (a short writev)
    # and refuse the rest with EFBIG, as a disk filling up mid-write would.
    target = tmp_path / "f"
    done = subprocess.run(
        [sys.executable, "-c", _SHORT_WRITE, str(target)],
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO,
    )  # fmt: skip
    assert done.stdout.strip() == str(27)  # EFBIG
    assert read(target) == b"a" * 6000 + b"b" * 4000
