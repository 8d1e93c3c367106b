"""A socket's bytes into a file without passing through Python: ``splice(2)``, hashed as they land.

A download from a plain-HTTP upstream spends most of the event loop's time
receiving: the kernel copies every byte into a Python ``bytes``, the HTTP
parser copies it again, and the spool write copies it into the page cache.
:class:`SplicePump` moves the rest of a body from the socket into the spool in
a thread of its own instead: socket to pipe hands over references to the
received pages, pipe to file copies them once, into the page cache, and the
event loop only hears how far the file has got. A second thread hashes what
has landed, from a read-only mapping of the file, so the digest covers
exactly the bytes that are kept and served. (Both threads spend their time in
system calls and ``hashlib``, which release the GIL.) TLS connections cannot
be spliced: their bytes must be decrypted by Python's ``ssl``.

The pump ends in one of five ways, as :meth:`SplicePump.progress` reports:

- every byte moved and hashed: it returns;
- the peer closed, failed or stayed silent for ``idle_timeout``:
  :class:`PeerBroke`;
- the file refused a write (a full disk): :class:`FileRefused`, with the
  bytes taken from the socket that did not reach the file;
- the kernel cannot splice these descriptors (``EINVAL``: some file
  systems), or the pump cannot get a pipe or a thread:
  :class:`SpliceUnsupported`, with the same;
- the file could not be read back for hashing: :class:`HashFailed` (the
  digest is then unknown: the caller must give up the download).

In every case each byte reported by :meth:`progress` is in the file and was
hashed, in order, before the pump ends; no other byte was hashed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import mmap
import os
import select
import threading
from collections.abc import AsyncIterator, Callable

# The pipe's capacity, when the kernel allows it (the default is 64 KiB).
_PIPE_SIZE = 1024 * 1024
# Bytes gathered in the pipe before they go to the file: fewer, larger copies
# and fewer wake-ups of the event loop.
_FLUSH_AT = 512 * 1024
# Largest mapping hashed at once.
_HASH_WINDOW = 8 * 1024 * 1024
_MOVE = getattr(os, "SPLICE_F_MOVE", 1)
_NONBLOCK = getattr(os, "SPLICE_F_NONBLOCK", 2)


class SpliceEnded(Exception):
    """The pump stopped early; ``leftover``: bytes taken from the socket that reached no file."""

    def __init__(self, message: str, leftover: bytes = b"") -> None:
        super().__init__(message)
        self.leftover = leftover


class PeerBroke(SpliceEnded):
    """The socket closed, failed, or stayed silent for the idle timeout."""


class FileRefused(SpliceEnded):
    """The file refused a write; :attr:`cause` is the error."""

    def __init__(self, cause: OSError, leftover: bytes) -> None:
        super().__init__(f"file refused a write: {cause.strerror or cause}", leftover)
        self.cause = cause


class SpliceUnsupported(SpliceEnded):
    """The kernel cannot splice between these descriptors, or the pump could not start."""


class HashFailed(SpliceEnded):
    """Bytes that landed in the file could not be read back for hashing."""


class _Stopped(Exception):
    """The owner asked the pump to stop."""


def available() -> bool:
    """Whether this platform has ``splice(2)``."""
    return hasattr(os, "splice")


class SplicePump:
    """Moves ``count`` bytes from ``sock_fd`` to ``file_fd`` at ``offset``, hashing them.

    The descriptors stay the caller's and must stay open until
    :meth:`close` has returned. ``sock_fd`` must be non-blocking.
    """

    def __init__(
        self,
        sock_fd: int,
        file_fd: int,
        offset: int,
        count: int,
        hasher: hashlib._Hash,
        idle_timeout: float,
    ) -> None:
        self._sock = sock_fd
        self._file = file_fd
        self._offset = offset
        self._count = count
        self._hasher = hasher
        self._idle_ms = max(1, int(idle_timeout * 1000))
        self._loop = asyncio.get_running_loop()
        self._cond = threading.Condition()
        self._landed = offset  # end of the bytes in the file (guarded by _cond)
        self._splice_over = False  # the splicer is done (guarded by _cond)
        self._stopping = False
        try:
            self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:  # out of descriptors: the caller copies instead
            raise SpliceUnsupported(f"no pipe: {exc.strerror or exc}") from exc
        self._reported = 0  # bytes landed, not yet taken by progress() (loop side)
        self._news = asyncio.Event()
        self._running = 0  # threads started and not yet ended (loop side)
        self._error: BaseException | None = None
        # The hasher first: if the splicer then cannot start, no byte has moved.
        self._threads = [
            threading.Thread(target=self._run_thread, args=(self._hash, False), name="splice-hash"),
            threading.Thread(target=self._run_thread, args=(self._splice, True), name="splice"),
        ]

    # ------------------------------------------------------------ loop side

    def start(self) -> None:
        """Start the two threads; :class:`SpliceUnsupported` (no byte moved) if one cannot start.

        Call :meth:`close` afterwards in either case.
        """
        for thread in self._threads:
            try:
                thread.start()
            except RuntimeError as exc:  # "can't start new thread"
                raise SpliceUnsupported(f"no thread for the splice: {exc}") from exc
            self._running += 1

    async def progress(self) -> AsyncIterator[int]:
        """Byte counts as they land in the file, then the pump's end (see the module doc)."""
        while True:
            await self._news.wait()
            self._news.clear()
            landed, self._reported = self._reported, 0
            if landed:
                yield landed
            if self._running == 0:
                break
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Stop both threads and wait for them, even when cancelled (then the fds are free)."""
        self._stopping = True
        with self._cond:
            self._cond.notify_all()
        with contextlib.suppress(BlockingIOError):  # full: already woken
            os.write(self._wake_w, b"x")
        waiting = asyncio.ensure_future(self._ended())
        # The threads stop within one system call or hash window. Wait for them
        # however often we are cancelled meanwhile: returning early would let
        # the caller close (and the process reuse) descriptors they still use.
        cancelled = False
        while not waiting.done():
            try:
                await asyncio.shield(waiting)
            except asyncio.CancelledError:
                cancelled = True
        for thread in self._threads:
            if thread.ident is not None:  # started: its last act was telling us it ended
                thread.join()
        self._close_wake()
        if cancelled:
            raise asyncio.CancelledError  # now let the cancel through

    async def _ended(self) -> None:
        while self._running:
            await self._news.wait()
            self._news.clear()

    def _close_wake(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _on_loop(self, landed: int, finished: bool, error: BaseException | None) -> None:
        self._reported += landed
        if finished:
            self._running -= 1
        if error is not None and self._error is None:
            self._error = error
        self._news.set()

    # ---------------------------------------------------------- thread side

    def _tell(
        self, landed: int = 0, finished: bool = False, error: BaseException | None = None
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            self._loop.call_soon_threadsafe(self._on_loop, landed, finished, error)

    def _run_thread(self, work: Callable[[], None], splicer: bool) -> None:
        error: BaseException | None = None
        try:
            work()
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the loop, raised by progress()
            error = exc
        finally:
            if splicer:
                with self._cond:
                    self._splice_over = True
                    self._cond.notify_all()
            self._tell(finished=True, error=error)

    def _splice(self) -> None:
        try:
            pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC)
        except OSError as exc:  # nothing taken from the socket yet
            raise SpliceUnsupported(f"no pipe: {exc.strerror or exc}") from exc
        try:
            with contextlib.suppress(OSError):  # the default size works too
                fcntl.fcntl(pipe_w, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            _SpliceLoop(self, pipe_r, pipe_w).run()
        finally:
            os.close(pipe_r)
            os.close(pipe_w)

    def _landed_in_file(self, count: int) -> None:
        with self._cond:
            self._landed += count
            self._cond.notify_all()
        self._tell(landed=count)

    def _hash(self) -> None:
        hashed = self._offset
        while True:
            with self._cond:
                while self._landed == hashed and not self._splice_over and not self._stopping:
                    self._cond.wait()
                landed, over = self._landed, self._splice_over
            if landed == hashed:
                if over:
                    return
                raise _Stopped
            while hashed < landed:
                if self._stopping:  # bytes landed but not hashed: nobody wants them now
                    raise _Stopped
                end = min(landed, hashed + _HASH_WINDOW)
                try:
                    _hash_range(self._hasher, self._file, hashed, end)
                except OSError as exc:
                    raise HashFailed(f"file unreadable for hashing: {exc.strerror or exc}") from exc
                hashed = end


class _SpliceLoop:
    """The splicing thread's state: the pipe and how far the socket and file have got."""

    def __init__(self, pump: SplicePump, pipe_r: int, pipe_w: int) -> None:
        self.pump = pump
        self.pipe_r, self.pipe_w = pipe_r, pipe_w
        self.capacity = _pipe_capacity(pipe_w)
        # A pipe left at its default size holds less than _FLUSH_AT: it must be
        # flushed once full, or the next take would ask for no byte and read
        # the 0 it gets back as the peer's close.
        self.flush_at = min(_FLUSH_AT, self.capacity)
        self.left = pump._count  # still to take from the socket
        self.in_pipe = 0
        self.position = pump._offset  # where the next byte goes in the file
        self.poller = select.poll()
        self.poller.register(pump._sock, select.POLLIN)
        self.poller.register(pump._wake_r, select.POLLIN)

    def run(self) -> None:
        pump = self.pump
        while self.left or self.in_pipe:
            if pump._stopping:
                raise _Stopped
            if self.left and self.in_pipe < self.flush_at and self._take():
                continue
            if self.in_pipe:
                self._flush()
            elif self.left:
                self._wait()

    def _take(self) -> bool:
        """Socket to pipe; False when the socket (or the pipe) has nothing to take now."""
        want = min(self.left, self.capacity - self.in_pipe)
        try:
            moved = os.splice(self.pump._sock, self.pipe_w, want, flags=_MOVE | _NONBLOCK)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.EINVAL and self.left == self.pump._count:
                raise SpliceUnsupported(f"splice from the socket: {exc.strerror}",
                                        self._drain_pipe()) from exc  # fmt: skip
            raise PeerBroke(f"upstream connection failed: {exc.strerror or exc}",
                            self._drain_pipe()) from exc  # fmt: skip
        if moved == 0:
            got = self.pump._count - self.left
            raise PeerBroke(f"upstream closed the connection after {got} of "
                            f"{self.pump._count} bytes", self._drain_pipe())  # fmt: skip
        self.left -= moved
        self.in_pipe += moved
        return True

    def _flush(self) -> None:
        """Pipe to file, all of it."""
        while self.in_pipe:
            try:
                moved = os.splice(self.pipe_r, self.pump._file, self.in_pipe,
                                  offset_dst=self.position, flags=_MOVE)  # fmt: skip
            except OSError as exc:
                if exc.errno == errno.EINVAL and self.position == self.pump._offset:
                    raise SpliceUnsupported(f"splice into the file: {exc.strerror}",
                                            self._drain_pipe()) from exc  # fmt: skip
                raise FileRefused(exc, self._drain_pipe()) from exc
            if moved == 0:  # a file that takes nothing: treat as refused
                raise FileRefused(OSError(errno.EIO, "write took no byte"), self._drain_pipe())
            self.in_pipe -= moved
            self.position += moved
            self.pump._landed_in_file(moved)

    def _wait(self) -> None:
        """Wait for the socket to have bytes (or the owner to stop us)."""
        pump = self.pump
        try:
            events = self.poller.poll(pump._idle_ms)
        except InterruptedError:
            return
        if not events:
            seconds = pump._idle_ms / 1000
            raise PeerBroke(f"no byte from the upstream for {seconds:g}s")
        if any(fd == pump._wake_r for fd, _ in events):
            raise _Stopped

    def _drain_pipe(self) -> bytes:
        """What the pipe holds, read out (it never reached the file)."""
        pieces = []
        while self.in_pipe:
            piece = os.read(self.pipe_r, self.in_pipe)
            if not piece:
                break
            pieces.append(piece)
            self.in_pipe -= len(piece)
        return b"".join(pieces)


def _pipe_capacity(pipe_w: int) -> int:
    try:
        return int(fcntl.fcntl(pipe_w, fcntl.F_GETPIPE_SZ))
    except OSError:
        return 64 * 1024


def _hash_range(hasher: hashlib._Hash, fd: int, start: int, end: int) -> None:
    """Hash bytes ``start``..``end`` of the file, read through a mapping (no copy).

    A file system that cannot map the file has it read instead.
    """
    base = start - start % mmap.ALLOCATIONGRANULARITY
    try:
        mapping = mmap.mmap(fd, end - base, offset=base, access=mmap.ACCESS_READ)
    except OSError:
        _hash_read(hasher, fd, start, end)
        return
    with mapping, memoryview(mapping) as view, view[start - base :] as part:
        hasher.update(part)


def _hash_read(hasher: hashlib._Hash, fd: int, start: int, end: int) -> None:
    """Hash bytes ``start``..``end`` of the file, read with ``pread``."""
    while start < end:
        data = os.pread(fd, min(end - start, 1024 * 1024), start)
        if not data:
            raise OSError(errno.EIO, f"file ends at {start}, before byte {end}")
        hasher.update(data)
        start += len(data)
