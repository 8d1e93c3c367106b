"""Free memory that costs the same for every peer: warmed just before a cold pull.

This VM gives memory it has not used for a while back to its host (a
``kdamond`` pages out cold memory, and ``virtio_balloon`` takes free pages).
The first touch of such a page then costs the guest about ten times what
reusing a page costs: writing 1 GiB into a new file took 2.4-2.5 s of CPU,
against 0.21-0.35 s right after 2 GiB of memory had been touched and freed.
A cold pull writes the blob into the page cache, so it pays that price
wherever the pages come from: on the client's path for a server that sends
from what it stored (our mirror), after the client for one that stores a
second download in the background (distribution). Which of the two a pull
gets depends on how long ago the previous peer freed its pages, so the
figures swung by a factor of two between repetitions.

:func:`warm_free_memory`, called just before each cold measurement, touches
and frees as much memory as the pull will write, so every peer finds warm
free pages, as on a machine whose memory is its own. Measure the effect::

    python bench/memory.py --mib 1024 --rounds 3
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import tempfile
import time
from pathlib import Path

MIB = 1024 * 1024
PAGE = mmap.PAGESIZE


def settle(pause: float, writes: int = 0) -> None:
    """Before a measurement: write back every dirty page, pause, and warm free memory.

    Without the write-back and the pause, the page-cache writeback of an
    earlier download runs into the measurement. ``writes``: how much the
    pull measured next will store; that much free memory, and a quarter
    more, is warmed.
    """
    os.sync()
    time.sleep(pause)
    warm_free_memory(writes + writes // 4)


def warm_free_memory(size: int) -> None:
    """Touch ``size`` bytes of fresh memory and give it back: free pages the kernel reuses next."""
    if size <= 0:
        return
    area = mmap.mmap(-1, size)
    try:
        for offset in range(0, size, PAGE):
            area[offset] = 1
    finally:
        area.close()


def cpu_seconds() -> float:
    """CPU seconds this process has spent so far, user and system."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_new_file(path: Path, size: int) -> float:
    """CPU seconds to write ``size`` bytes into a new file (the page cache only: no sync)."""
    piece = os.urandom(8 * MIB)
    started = cpu_seconds()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(size // len(piece)):
            os.write(fd, piece)
    finally:
        os.close(fd)
    return cpu_seconds() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="size of each file")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between writes")
    parser.add_argument("--warm-factor", type=int, default=2, help="memory warmed per byte written")
    args = parser.parse_args()
    size = args.mib * MIB
    with tempfile.TemporaryDirectory(prefix="page-cost-", dir="/var/tmp") as tmp:
        for warmed in (False, True):
            for number in range(args.rounds):
                path = Path(tmp) / f"{int(warmed)}-{number}"
                if warmed:
                    warm_free_memory(args.warm_factor * size)
                cpu = write_new_file(path, size)
                label = "after warming" if warmed else "as it comes  "
                print(f"{label} round {number + 1}: {cpu:.2f} s of CPU to write {args.mib} MiB "
                      "into a new file", flush=True)  # fmt: skip
                time.sleep(args.pause)
            for path in Path(tmp).iterdir():  # files kept until here: no freed page to reuse
                path.unlink()


if __name__ == "__main__":
    main()
