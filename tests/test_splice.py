"""SplicePump: a real loopback TCP socket into a real file, hashed as the bytes land.

Each ending of the pump keeps its promise (the module doc of
:mod:`mirror.storage.splice`): every byte that progress() reported is in the
file at its offset and was hashed, in order, and no other byte was; every
byte the pump took from the socket but did not write comes back as
``leftover``, so nothing the peer sent is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from mirror.storage import splice
from mirror.storage.splice import (
    FileRefused,
    HashFailed,
    PeerBroke,
    SplicePump,
    SpliceUnsupported,
)
from tests.support.pulls import wait_for
from tests.support.splice_peer import GatedHasher, Peer
from tests.support.tmpfs import small_disk

BLOB = 5 * 1024 * 1024 + 4099  # several pipe loads and hash windows, and an odd tail
PREFIX = 12_345  # not a multiple of the page size: the hash mapping starts mid-page
THREADS = ("splice", "splice-hash")


@dataclass
class Run:
    """What one pump did, as its owner saw it."""

    counts: list[int] = field(default_factory=list)
    error: splice.SpliceEnded | None = None
    elapsed: float = 0.0

    @property
    def landed(self) -> int:
        return sum(self.counts)

    @property
    def leftover(self) -> bytes:
        return self.error.leftover if self.error is not None else b""


async def pump_all(pump: SplicePump, run: Run | None = None) -> Run:
    """Start ``pump``, take its progress to the end, close it: as the transfer does."""
    run = run or Run()
    started = time.monotonic()
    pump.start()
    try:
        async for count in pump.progress():
            assert count > 0
            run.counts.append(count)
    except splice.SpliceEnded as exc:
        run.error = exc
    finally:
        await pump.close()
        run.elapsed = time.monotonic() - started
    return run


def open_file(path: Path, content: bytes = b"", flags: int = 0) -> int:
    path.write_bytes(content)
    return os.open(path, os.O_RDWR | flags)


def pump_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name in THREADS]


def hasher_of(prefix: bytes) -> hashlib._Hash:
    """A sha256 that already took ``prefix``, as a transfer's hasher did before the splice."""
    return hashlib.sha256(prefix)


def check_landed(
    run: Run, path: Path, data: bytes, hasher: hashlib._Hash, prefix: bytes = b""
) -> None:
    """The file holds ``prefix`` and exactly the landed bytes; the digest covers exactly those."""
    landed = data[: run.landed]
    assert path.read_bytes() == prefix + landed
    assert hasher.hexdigest() == hashlib.sha256(prefix + landed).hexdigest()
    # Taken from the socket and not written: the next bytes of the stream, in order.
    assert run.leftover == data[run.landed : run.landed + len(run.leftover)]
    assert pump_threads() == []


@pytest.mark.parametrize("prefix", [b"", os.urandom(PREFIX)], ids=["empty file", "after bytes"])
async def test_moves_every_byte_into_the_file_and_hashes_it(tmp_path: Path, prefix: bytes) -> None:
    data = os.urandom(BLOB)
    path = tmp_path / "spool"
    fd, hasher = open_file(path, prefix), hasher_of(prefix)
    with Peer() as peer:
        peer.send(data, then="hold")  # the pump must stop at `count`, not at the close
        pump = SplicePump(peer.receiver.fileno(), fd, len(prefix), len(data), hasher, 10)
        run = await pump_all(pump)
    os.close(fd)
    assert run.error is None
    assert run.landed == len(data)
    check_landed(run, path, data, hasher, prefix)


async def test_the_default_pipe_size_will_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a pipe keeps when F_SETPIPE_SZ is refused (an unprivileged user past
    # fs.pipe-user-pages-soft): 64 KiB, less than the pump gathers before a flush.
    monkeypatch.setattr(splice, "_PIPE_SIZE", 64 * 1024)
    data = os.urandom(BLOB)
    path = tmp_path / "spool"
    fd, hasher = open_file(path), hasher_of(b"")
    with Peer() as peer:
        peer.send(data, then="hold")
        run = await pump_all(SplicePump(peer.receiver.fileno(), fd, 0, len(data), hasher, 10))
    os.close(fd)
    assert run.error is None, run.error
    check_landed(run, path, data, hasher)


async def test_a_peer_that_closes_early_breaks_the_pump(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    path = tmp_path / "spool"
    fd, hasher = open_file(path), hasher_of(b"")
    with Peer() as peer:
        peer.send(data, then="close")
        run = await pump_all(SplicePump(peer.receiver.fileno(), fd, 0, BLOB, hasher, 10))
    os.close(fd)
    assert isinstance(run.error, PeerBroke), run.error
    assert "closed the connection" in str(run.error)
    assert run.landed + len(run.leftover) == len(data)
    check_landed(run, path, data, hasher)


async def test_a_silent_peer_breaks_the_pump_after_the_idle_timeout(tmp_path: Path) -> None:
    data = os.urandom(200_000)
    path = tmp_path / "spool"
    fd, hasher = open_file(path), hasher_of(b"")
    with Peer() as peer:
        started = time.monotonic()
        peer.send(data, then="hold")
        run = await pump_all(SplicePump(peer.receiver.fileno(), fd, 0, BLOB, hasher, 0.3))
        silent = time.monotonic() - started
    os.close(fd)
    assert isinstance(run.error, PeerBroke), run.error
    assert "no byte from the upstream for 0.3s" in str(run.error)
    assert 0.29 <= silent < 10  # the idle timeout ran from the last byte on
    assert (run.landed, run.leftover) == (len(data), b"")
    check_landed(run, path, data, hasher)


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: a write past ``limit`` is cut short, then refused (EFBIG).

    Like a disk that fills up mid-write. SIGXFSZ, which would kill the
    process, is ignored meanwhile; both are put back on exit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def refusing_file(kind: str, tmp_path: Path) -> Iterator[tuple[Path, int, int | None]]:
    """A file that refuses writes past some byte: the file, the errno it refuses with,
    and the size it takes (None: about what the file system has room for)."""
    if kind == "file size limit":
        limit = PREFIX + 3 * 1024 * 1024 + 333
        with file_size_limit(limit):
            yield tmp_path / "spool", errno.EFBIG, limit
    else:
        with small_disk(tmp_path / "small", "2m") as disk:
            yield disk / "spool", errno.ENOSPC, None


@pytest.mark.parametrize("kind", ["file size limit", "full disk"])
async def test_a_file_that_refuses_a_write_stops_the_pump(tmp_path: Path, kind: str) -> None:
    prefix, data = os.urandom(PREFIX), os.urandom(BLOB)
    hasher = hasher_of(prefix)
    with Peer() as peer, refusing_file(kind, tmp_path) as (path, refusal, limit):
        fd = open_file(path, prefix)
        peer.send(data, then="close")
        try:
            run = await pump_all(
                SplicePump(peer.receiver.fileno(), fd, PREFIX, len(data), hasher, 10)
            )
        finally:
            os.close(fd)
        assert isinstance(run.error, FileRefused), run.error
        assert run.error.cause.errno == refusal
        assert 0 < run.landed < len(data)
        if limit is not None:  # a write across the limit is cut short there, then refused
            assert PREFIX + run.landed == limit
        check_landed(run, path, data, hasher, prefix)
        # What the pump did not take is still on the socket: nothing got lost.
        assert peer.rest() == data[run.landed + len(run.leftover) :]


async def test_a_file_the_kernel_cannot_splice_into_stops_the_pump(tmp_path: Path) -> None:
    # splice(2) refuses an O_APPEND file with EINVAL, as some file systems refuse any.
    data = os.urandom(BLOB)
    path = tmp_path / "spool"
    fd, hasher = open_file(path, b"kept", os.O_APPEND), hasher_of(b"kept")
    with Peer() as peer:
        peer.send(data, then="close")
        run = await pump_all(SplicePump(peer.receiver.fileno(), fd, 4, len(data), hasher, 10))
        os.close(fd)
        assert isinstance(run.error, SpliceUnsupported), run.error
        assert run.landed == 0
        assert run.leftover  # the pump had taken bytes before the file refused them
        check_landed(run, path, data, hasher, b"kept")
        assert run.leftover + peer.rest() == data


async def test_a_file_that_cannot_be_read_back_fails_the_hash(tmp_path: Path) -> None:
    # Written but never readable (write-only): neither mapped nor read for hashing.
    data = os.urandom(BLOB)
    path = tmp_path / "spool"
    path.write_bytes(b"")
    fd = os.open(path, os.O_WRONLY)
    with Peer() as peer:
        peer.send(data, then="hold")
        run = await pump_all(
            SplicePump(peer.receiver.fileno(), fd, 0, len(data), hasher_of(b""), 10)
        )
    os.close(fd)
    assert isinstance(run.error, HashFailed), run.error
    assert pump_threads() == []


@contextlib.contextmanager
def descriptors_left(count: int) -> Iterator[None]:
    """Let this process open only ``count`` more file descriptors (new ones fill gaps first)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    used = {int(name) for name in os.listdir("/proc/self/fd")}
    free = [number for number in range(max(used) + count + 2) if number not in used]
    resource.setrlimit(resource.RLIMIT_NOFILE, (free[count], hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_pump_without_a_pipe_reports_splice_unsupported(tmp_path: Path) -> None:
    fd = open_file(tmp_path / "spool")
    with Peer() as peer:
        peer.send(b"x" * 1000, then="close")
        with descriptors_left(0), pytest.raises(SpliceUnsupported, match="no pipe"):
            SplicePump(peer.receiver.fileno(), fd, 0, 1000, hasher_of(b""), 10)
        # Nothing was taken from the socket: the caller reads it all another way.
        assert peer.rest() == b"x" * 1000
    os.close(fd)
    assert pump_threads() == []


async def test_close_stops_a_pump_waiting_for_a_silent_peer(tmp_path: Path) -> None:
    fd, hasher = open_file(tmp_path / "spool"), hasher_of(b"")
    with Peer() as peer:
        peer.send(b"x" * 1000, then="hold")
        pump = SplicePump(peer.receiver.fileno(), fd, 0, BLOB, hasher, 30)
        pump.start()
        # Nobody needs to take progress(): once the bytes are in, the pump waits for the peer.
        await wait_for(lambda: os.fstat(fd).st_size == 1000, "the first bytes")
        closing = asyncio.ensure_future(pump.close())
        await asyncio.wait([closing], timeout=5)
        assert closing.done(), "close() did not return"
        closing.result()
        assert pump_threads() == []
    os.close(fd)


async def test_close_stops_the_pump_of_a_cancelled_task(tmp_path: Path) -> None:
    fd, hasher = open_file(tmp_path / "spool"), hasher_of(b"")
    run = Run()
    with Peer() as peer:
        peer.send(b"x" * 1000, then="hold")
        pump = SplicePump(peer.receiver.fileno(), fd, 0, BLOB, hasher, 30)
        task = asyncio.ensure_future(pump_all(pump, run))
        await wait_for(lambda: run.landed == 1000, "the first bytes")
        task.cancel()
        await ends_cancelled(task)
        assert pump_threads() == []
    os.close(fd)


async def ends_cancelled(task: asyncio.Future[Run]) -> None:
    """``task`` ends, cancelled, within 5 s (without cancelling it again, as wait_for would)."""
    await asyncio.wait([task], timeout=5)
    assert task.cancelled(), "the pump's close() did not return"


async def gated_pump(peer: Peer, fd: int, run: Run) -> tuple[asyncio.Future[Run], GatedHasher]:
    """A pump whose hashing thread is stuck in its first update after 100,000 bytes landed."""
    hasher = GatedHasher()
    # A stand-in for hashlib's type, which cannot be subclassed; the pump only calls update().
    pump = SplicePump(peer.receiver.fileno(), fd, 0, BLOB, cast("hashlib._Hash", hasher), 30)
    task = asyncio.ensure_future(pump_all(pump, run))
    peer.sender.sendall(b"a" * 100_000)
    await wait_for(lambda: run.landed == 100_000 and hasher.entered.is_set(), "a stuck hasher")
    return task, hasher


async def test_close_stops_a_hashing_thread_that_fell_behind(tmp_path: Path) -> None:
    fd, run = open_file(tmp_path / "spool"), Run()
    with Peer() as peer:
        task, hasher = await gated_pump(peer, fd, run)
        peer.sender.sendall(b"b" * 100_000)  # lands while the hashing thread is stuck
        await wait_for(lambda: run.landed == 200_000, "more bytes")
        task.cancel()  # the pump is closed with 100,000 bytes landed but not hashed
        await asyncio.sleep(0.1)
        hasher.gate.set()
        await ends_cancelled(task)
        assert pump_threads() == []
    os.close(fd)


async def test_close_waits_for_the_threads_however_often_it_is_cancelled(tmp_path: Path) -> None:
    fd, run = open_file(tmp_path / "spool"), Run()
    with Peer() as peer:
        task, hasher = await gated_pump(peer, fd, run)
        for _ in range(3):  # say a stall timeout, then a shutdown, then another
            task.cancel()
            await asyncio.sleep(0.1)
            # Returning now would let the caller close the descriptors under the threads.
            assert not task.done()
            assert pump_threads() == ["splice-hash"]
        hasher.gate.set()
        await ends_cancelled(task)
        assert pump_threads() == []
    os.close(fd)
