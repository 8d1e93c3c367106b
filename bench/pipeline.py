"""The whole data path of a cold pull, serial in one thread and as a pipeline of threads.

Between a source process (the upstream, sending from memory) and a sink
process (the client), this process receives every byte, hashes it (sha256),
writes it to a file (the page cache) and sends it on: first in one thread,
one piece after the other (the shape of today's event loop, without its
Python per chunk), then as a pipeline where the receiving thread hands
large buffers to worker threads (hashlib, ``os.pwrite`` and socket calls
release the GIL). The pipeline is what a proxy bounded by its slowest stage
could reach on this machine; ``bench/floors.py`` times each stage alone.

    python bench/pipeline.py                   # 200 MiB and 1 GiB, 3 repetitions (~1 min)
    python bench/pipeline.py --sizes 200 --reps 5

Each line: median wall seconds until the sink has every byte, CPU seconds of
this process (the proxy's share), and the rate.
"""

from __future__ import annotations

import hashlib
import os
import queue
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import memory
from bench.floors import (
    MIB,
    Timing,
    cli,
    connected,
    report,
    sink_process,
    source_process,
    timed,
)

Middle = Callable[[socket.socket, socket.socket, int, int], None]


def proxy_path(timings: list[Timing], directory: Path, size: int, middle: Middle) -> None:
    """Source process -> ``middle`` (here) -> sink process; timed until the sink has it all."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="floor-")
    os.unlink(path)
    try:
        with (
            connected(source_process, size, None) as upstream,
            connected(sink_process, size) as client,
        ):
            with timed(timings):
                middle(upstream, client, fd, size)
                client.shutdown(socket.SHUT_WR)
                client.recv(1)  # the sink closes once it has every byte
    finally:
        os.close(fd)


def serial(piece: int, store: bool = True) -> Middle:
    """Receive, hash, write and send each piece in turn, in one thread (today's shape).

    Without ``store``: receive and send only, the loopback itself.
    """

    def middle(upstream: socket.socket, client: socket.socket, fd: int, size: int) -> None:
        buffer = bytearray(piece)
        view = memoryview(buffer)
        hasher = hashlib.sha256()
        offset = 0
        while offset < size:
            count = upstream.recv_into(buffer)
            if not count:
                raise RuntimeError("source closed early")
            if store:
                hasher.update(view[:count])
                os.pwrite(fd, view[:count], offset)
            client.sendall(view[:count])
            offset += count

    return middle


Job = tuple[bytearray, int, int] | None  # a buffer, how much of it is filled, its offset


def pipelined(piece: int, depth: int, split: bool) -> Middle:
    """Receive here into ``depth`` rotating buffers of ``piece`` bytes; worker threads hash
    and write each buffer (one thread, or one each with ``split``) and send it; a buffer is
    reused once every worker is done with it. hashlib, os.pwrite and socket calls release
    the GIL on large buffers, so the stages overlap.
    """

    def middle(upstream: socket.socket, client: socket.socket, fd: int, size: int) -> None:
        hasher = hashlib.sha256()

        def digest(buffer: bytearray, count: int, offset: int) -> None:
            hasher.update(memoryview(buffer)[:count])

        def write(buffer: bytearray, count: int, offset: int) -> None:
            os.pwrite(fd, memoryview(buffer)[:count], offset)

        def digest_and_write(buffer: bytearray, count: int, offset: int) -> None:
            digest(buffer, count, offset)
            write(buffer, count, offset)

        def send(buffer: bytearray, count: int, offset: int) -> None:
            client.sendall(memoryview(buffer)[:count])

        steps = [digest, write, send] if split else [digest_and_write, send]
        _run_pipeline(upstream, size, piece, depth, steps)

    return middle


def _run_pipeline(
    upstream: socket.socket,
    size: int,
    piece: int,
    depth: int,
    steps: Sequence[Callable[[bytearray, int, int], None]],
) -> None:
    free: queue.Queue[bytearray] = queue.Queue()
    users: dict[int, int] = {}
    for _ in range(depth):
        buffer = bytearray(piece)
        users[id(buffer)] = 0
        free.put(buffer)
    lock = threading.Lock()

    def worker(step: Callable[[bytearray, int, int], None], jobs: queue.Queue[Job]) -> None:
        while (job := jobs.get()) is not None:
            step(*job)
            with lock:  # the last stage done with a buffer gives it back
                users[id(job[0])] += 1
                if users[id(job[0])] == len(steps):
                    users[id(job[0])] = 0
                    free.put(job[0])

    queues: list[queue.Queue[Job]] = [queue.Queue() for _ in steps]
    threads = [threading.Thread(target=worker, args=pair) for pair in zip(steps, queues,
                                                                          strict=True)]  # fmt: skip
    for thread in threads:
        thread.start()
    offset = 0
    while offset < size:
        buffer = free.get()
        count = _fill(upstream, buffer)
        for jobs in queues:
            jobs.put((buffer, count, offset))
        offset += count
    for jobs in queues:
        jobs.put(None)
    for thread in threads:
        thread.join()


def _fill(conn: socket.socket, buffer: bytearray) -> int:
    """recv_into until ``buffer`` is full or the peer is done: few, large pieces."""
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        count = conn.recv_into(view[filled:])
        if not count:
            if not filled:
                raise RuntimeError("source closed early")
            break
        filled += count
    return filled


def measure(size: int, reps: int, directory: Path, settle: float) -> None:
    """Every shape of the data path for one size."""
    print(f"{size / MIB:g} MiB, median of {reps}:")
    middles: list[tuple[str, Middle]] = [
        ("receive and send only (the loopback itself), 1 MiB", serial(MIB, store=False)),
        ("serial in one thread, 256 KiB reads", serial(256 * 1024)),
        ("serial in one thread, 1 MiB reads", serial(MIB)),
        ("threads: recv | sha256+pwrite | send, 1 MiB x 8", pipelined(MIB, 8, split=False)),
        ("threads: recv | sha256 | pwrite | send, 1 MiB x 8", pipelined(MIB, 8, split=True)),
        ("threads: recv | sha256 | pwrite | send, 4 MiB x 4",
         pipelined(4 * MIB, 4, split=True)),
    ]  # fmt: skip
    for label, middle in middles:
        timings: list[Timing] = []
        for _ in range(reps):
            memory.settle(settle)
            proxy_path(timings, directory, size, middle)
        report(label, size, timings)


if __name__ == "__main__":
    sys.exit(cli(__doc__.splitlines()[0], measure))
