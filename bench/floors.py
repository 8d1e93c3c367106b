"""The physical floors of a verified cold pull on this machine, one stage at a time.

A cold pull through a caching proxy receives the blob from the upstream,
hashes it (sha256), writes it to the page cache and sends it to the client.
Each line times one of those stages alone over the whole blob: what no
implementation can beat here, and what each way of doing a stage costs.
``bench/pipeline.py`` times the stages together.

    python bench/floors.py                     # 200 MiB and 1 GiB, 3 repetitions (~1 min)
    python bench/floors.py --sizes 200 --reps 5 --dir /var/cache/mirror

Figures are medians: wall seconds, CPU seconds of this process (user +
system) and the rate. Sockets are loopback TCP to a source process (an
upstream sending from memory, or with ``sendfile`` from the page cache);
process start-up is never timed. Page-cache writes go to a fresh file in
``--dir`` (the file system of the cache; default: a temp dir), after
``sync`` and a pause, and are removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from multiprocessing import Event, Process
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import memory

MIB = 1024 * 1024
SOURCE_BUFFER = 64 * MIB  # larger than the L3 cache: every pass reads from memory
SOCKET_BUFFER = 4 * MIB
# The random bytes every job cycles over, made once before any process is forked.
RANDOM: list[memoryview] = []


@dataclass(frozen=True)
class Timing:
    """Wall and CPU seconds of one job."""

    wall: float
    cpu: float


@contextmanager
def timed(into: list[Timing]) -> Iterator[None]:
    wall, cpu = time.perf_counter(), memory.cpu_seconds()
    yield
    into.append(Timing(time.perf_counter() - wall, memory.cpu_seconds() - cpu))


def _pieces(data: memoryview, size: int, piece: int) -> Iterator[memoryview]:
    """``size`` bytes in ``piece``-sized views, cycling over ``data``."""
    offset = 0
    while offset < size:
        start = offset % len(data)
        count = min(piece, size - offset, len(data) - start)
        yield data[start : start + count]
        offset += count


# ------------------------------------------------------------------ one stage alone


def sha256(data: memoryview, size: int, piece: int) -> None:
    """hashlib over ``size`` bytes in ``piece``-sized updates (one core)."""
    hasher = hashlib.sha256()
    for view in _pieces(data, size, piece):
        hasher.update(view)
    hasher.hexdigest()


def copy(data: memoryview, size: int, piece: int) -> None:
    """One user-space copy of every byte (what ``bytes(view)`` or a join costs)."""
    for view in _pieces(data, size, piece):
        bytes(view)


def page_cache_write(directory: Path, data: memoryview, size: int, piece: int) -> float:
    """pwrite ``size`` bytes to a fresh file; returns the fsync time (writeback) after it."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="floor-")
    try:
        offset = 0
        for view in _pieces(data, size, piece):
            offset += os.pwrite(fd, view, offset)
        started = time.perf_counter()
        os.fsync(fd)
        return time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(path)


# ------------------------------------------------------------------ sockets


def source_process(
    server: socket.socket, ready: EventType, size: int, from_file: str | None
) -> None:
    """A process that sends ``size`` bytes to whoever connects (like an upstream)."""
    ready.set()
    conn, _ = server.accept()
    with conn:
        if from_file is not None:
            with open(from_file, "rb") as file:
                offset = 0
                while offset < size:
                    offset += os.sendfile(conn.fileno(), file.fileno(), offset, size - offset)
            return
        for view in _pieces(RANDOM[0], size, MIB):
            conn.sendall(view)


def sink_process(server: socket.socket, ready: EventType, size: int) -> None:
    """A process that reads ``size`` bytes from whoever connects (like curl)."""
    ready.set()
    conn, _ = server.accept()
    buffer = bytearray(MIB)
    received = 0
    with conn:
        while received < size:
            count = conn.recv_into(buffer)
            if not count:
                raise RuntimeError(f"sink: connection closed after {received} bytes")
            received += count


@contextmanager
def connected(target: Callable[..., None], *args: object) -> Iterator[socket.socket]:
    """Fork a source or sink process (it shares the parent's random bytes) and connect to it.

    The timed part starts after this: no process start-up is measured.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    ready = Event()
    address = server.getsockname()
    process = Process(target=target, args=(server, ready, *args), daemon=True)
    process.start()
    server.close()
    ready.wait()
    conn = socket.create_connection(address)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    try:
        yield conn
    finally:
        conn.close()
        process.join()


def loopback_receive(
    timings: list[Timing], size: int, piece: int, *, into: bool, from_file: str | None = None
) -> None:
    """Receive ``size`` bytes from a source process: ``recv_into`` one buffer of ``piece``
    bytes (``into``), or ``recv(piece)``, a new bytes object per read as asyncio's
    transports do.
    """
    buffer = bytearray(piece)
    received = 0
    with connected(source_process, size, from_file) as conn, timed(timings):
        while received < size:
            count = conn.recv_into(buffer) if into else len(conn.recv(piece))
            if not count:
                raise RuntimeError("source closed early")
            received += count


class _Counting(asyncio.Protocol):
    """asyncio's plain protocol: one new bytes object per read (aiohttp's client shape)."""

    def __init__(self, size: int) -> None:
        self.size, self.received = size, 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.size and not self.done.done():
            self.done.set_result(None)


class _Buffered(asyncio.BufferedProtocol):
    """asyncio's buffered protocol: the transport reads into one buffer of ours."""

    def __init__(self, size: int, piece: int) -> None:
        self.size, self.received = size, 0
        self.buffer = bytearray(piece)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self.received >= self.size and not self.done.done():
            self.done.set_result(None)


def asyncio_receive(timings: list[Timing], size: int, piece: int, buffered: bool) -> None:
    """Receive ``size`` bytes in an event loop: ``data_received`` with reads of ``piece``
    bytes, or ``BufferedProtocol`` into a ``piece``-sized buffer.
    """

    async def receive(conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        protocol: _Counting | _Buffered
        if buffered:
            protocol = _Buffered(size, piece)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
        else:
            protocol = _Counting(size)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
            transport.max_size = piece  # type: ignore[attr-defined]
        with timed(timings):
            await protocol.done
        transport.close()

    with connected(source_process, size, None) as conn:
        conn.setblocking(False)
        asyncio.run(receive(conn.dup()))


# ------------------------------------------------------------------ runner


def report(label: str, size: int, timings: list[Timing], extra: str = "") -> None:
    """One line: medians of wall and CPU seconds, and the rate over ``size`` bytes."""
    wall = statistics.median(t.wall for t in timings)
    cpu = statistics.median(t.cpu for t in timings)
    rate = size / MIB / wall
    print(f"  {label:<58} {wall:7.3f} s wall {cpu:7.3f} s CPU {rate:8.0f} MiB/s{extra}",
          flush=True)  # fmt: skip


def measure(size: int, reps: int, directory: Path, settle: float) -> None:
    """Every floor for one size."""
    data = RANDOM[0]
    print(f"{size / MIB:g} MiB, median of {reps}:")
    alone: list[tuple[str, Callable[[], object]]] = [
        (f"sha256, {p // 1024} KiB updates", partial(sha256, data, size, p))
        for p in (256 * 1024, MIB, 8 * MIB)
    ]
    alone.append(("user-space copy, 256 KiB pieces", partial(copy, data, size, 256 * 1024)))
    for label, job in alone:
        timings: list[Timing] = []
        for _ in range(reps):
            with timed(timings):
                job()
        report(label, size, timings)
    for piece, into in ((256 * 1024, False), (256 * 1024, True), (MIB, True), (4 * MIB, True)):
        timings = []
        for _ in range(reps):
            loopback_receive(timings, size, piece, into=into)
        how = "recv_into one buffer of" if into else "recv, a new bytes object per"
        report(f"loopback TCP receive, {how} {piece // 1024} KiB", size, timings)
    for piece, buffered in ((256 * 1024, False), (MIB, False), (MIB, True), (4 * MIB, True)):
        timings = []
        for _ in range(reps):
            asyncio_receive(timings, size, piece, buffered)
        how = "BufferedProtocol into" if buffered else "Protocol.data_received, reads of"
        report(f"asyncio receive, {how} {piece // 1024} KiB", size, timings)
    _disk_floors(size, reps, directory, settle, data)


def _disk_floors(size: int, reps: int, directory: Path, settle: float, data: memoryview) -> None:
    for piece in (256 * 1024, MIB, 8 * MIB):
        timings: list[Timing] = []
        syncs = []
        for _ in range(reps):
            memory.settle(settle)
            with timed(timings):
                syncs.append(page_cache_write(directory, data, size, piece))
        report(f"page-cache write (pwrite, fresh file), {piece // 1024} KiB", size, timings,
                f"; then fsync {statistics.median(syncs):.2f} s")  # fmt: skip
    fd, path = tempfile.mkstemp(dir=directory, prefix="floor-")
    try:
        for view in _pieces(data, size, 8 * MIB):
            os.write(fd, view)
        os.fsync(fd)
        timings = []
        for _ in range(reps):
            loopback_receive(timings, size, MIB, into=True, from_file=path)
        report("sendfile from the page cache to loopback, recv_into 1 MiB", size, timings)
    finally:
        os.close(fd)
        os.unlink(path)


Measure = Callable[[int, int, Path, float], None]


def cli(description: str, measure: Measure) -> int:
    """The command line shared with ``bench/pipeline.py``: sizes, repetitions, where to write."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--sizes", default="200,1024", help="MiB, comma-separated")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp dir)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after sync, seconds")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    RANDOM.append(memoryview(os.urandom(SOURCE_BUFFER)))
    with tempfile.TemporaryDirectory(prefix="floors-", dir=args.dir) as tmp:
        for mib in args.sizes.split(","):
            measure(int(float(mib) * MIB), args.reps, Path(tmp), args.settle)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(__doc__.splitlines()[0], measure))
