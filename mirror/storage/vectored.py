"""Writing several buffers to a file in one system call (``writev``/``pwritev``).

A download hands its bytes on as the socket delivered them, 256 KiB or less
at a time. Joining them into one buffer before a write cost the event loop a
copy of every byte (0.2 s of CPU per GiB); the kernel gathers them instead.
These functions block: they are worker-thread jobs.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence

# The kernel takes at most this many buffers per call (IOV_MAX on Linux).
_IOV_MAX = 1024


def write_all(fd: int, chunks: Sequence[bytes | memoryview], offset: int | None = None) -> int:
    """Write every byte of ``chunks``, in order, at ``offset`` (None: the file position).

    Returns the number of bytes written. Short writes are resumed where they
    stopped; an ``OSError`` (a full disk) propagates with part of the bytes
    written, as a single ``write`` would.
    """
    views = [memoryview(chunk) for chunk in chunks if len(chunk)]
    total = 0
    while views:
        batch = views[:_IOV_MAX]
        done = os.writev(fd, batch) if offset is None else os.pwritev(fd, batch, offset + total)
        if done <= 0:  # never for a regular file, but a loop must not spin on it
            raise OSError(errno.EIO, "write took no bytes")
        total += done
        views = _skip(views, done)
    return total


def _skip(views: list[memoryview], count: int) -> list[memoryview]:
    """``views`` without their first ``count`` bytes."""
    index = 0
    while index < len(views) and count >= len(views[index]):
        count -= len(views[index])
        index += 1
    rest = views[index:]
    if count and rest:
        rest[0] = rest[0][count:]
    return rest
