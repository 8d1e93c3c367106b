"""Streamed single-flight blob downloads ("fills").

One :class:`Download` per (upstream, digest) downloads the blob once into a spool
file and, at the same time, into the storage backend's partial object. Any
number of clients follow it (:mod:`mirror.proxy.download`): fresh bytes from
memory, older ones from the spool, then they wait for more. Nobody waits
for the whole blob and nobody opens a second upstream download. The fill runs
in its own task, so a client hanging up never stops it.

Integrity: the blob is hashed as it arrives. Until the digest has been
checked, no client is given the last byte of what it asked for, so a client
can never see a complete body of wrong bytes: on a mismatch or an upstream
failure every follower's connection is aborted and the partial object is
discarded. A download that breaks is resumed with ``Range`` from the byte
where it broke.

Time bounds: a read that waits ``fill.idle_timeout`` for a byte breaks the
stream and the download is resumed. The download fails when no byte has
arrived for ``fill.stall_timeout`` (resumes do not restart that clock), after
``fill.max_resumes`` resumes in a row that brought no byte, and in any case
after ``fill.total_timeout``.

Storage failures never fail a download that the upstream still delivers:
when the backend refuses a write, the blob is served through uncached; when
the spool refuses one as well (a full disk: on disk the partial object is
the spool), the fill keeps going from memory, at the pace of its slowest
follower (:meth:`Download.make_room`), and takes no new followers: a client that
arrives later starts a download of its own, which tries the cache again, so
the cache recovers by itself once space returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from mirror.config import FillConfig
from mirror.errors import (
    BlobUnknown,
    DigestMismatch,
    MirrorError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from mirror.metrics import Metrics
from mirror.numbers import parse_count
from mirror.oci import Digest
from mirror.proxy.download import Download, FollowersGone
from mirror.proxy.download_run import DownloadRun, as_upstream_error, pwrite_all
from mirror.storage.base import BlobWriter, Storage, StorageError
from mirror.upstream.client import UpstreamClient

log = logging.getLogger(__name__)

_READ_CHUNK = 256 * 1024
# Received bytes go to the spool and the storage backend one batch at a time:
# whatever arrived while the previous batch was being written, so a slow disk
# gets fewer, larger writes. Reading from the upstream waits for the disk only
# once this much is pending (8 MiB raised the peak RSS of a fill into S3 by
# 37 MiB and saved no CPU).
_MAX_PENDING = 2 * 1024 * 1024

__all__ = ["Download", "Downloads"]

CommitHook = Callable[[str, int], Awaitable[None]]


class Downloads:
    """Starts fills, finds running ones, and runs them to the end."""

    def __init__(
        self,
        storage: Storage,
        spool_dir: Path,
        config: FillConfig,
        metrics: Metrics,
        on_commit: CommitHook | None = None,
    ) -> None:
        self._storage = storage
        self._spool_dir = spool_dir
        self._config = config
        self._metrics = metrics
        self._on_commit = on_commit
        self._fills: dict[str, Download] = {}
        self._tasks: dict[asyncio.Task[None], Download] = {}

    def __len__(self) -> int:
        """Downloads running, including those that take no new followers."""
        return len(self._tasks)

    def running(self, key: str) -> Download | None:
        """The fill of ``key`` in progress, if any."""
        return self._fills.get(key)

    def is_downloading(self, key: str) -> bool:
        """Whether ``key`` is being downloaded (eviction must leave it alone)."""
        return key in self._fills

    def start_or_join(
        self, upstream: UpstreamClient, repository: str, digest: Digest, key: str
    ) -> tuple[Download, bool]:
        """The fill for ``key``, and whether it was already running (a join)."""
        fill = self._fills.get(key)
        if fill is not None:
            self._metrics.follower_joined()
            return fill, True
        fill = Download(key, digest)
        self._fills[key] = fill
        task = asyncio.create_task(self._run(fill, upstream, repository))
        self._tasks[task] = fill
        task.add_done_callback(self._forget)
        return fill, False

    async def close(self, grace: float) -> None:
        """At shutdown: give verified fills up to ``grace`` s to publish, cancel the rest.

        A fill whose bytes were all verified is only committing; dropping it
        would throw away a whole download that clients already received. A
        cancelled fill discards its partial object.
        """
        committing = [t for t, f in self._tasks.items() if f.verified]
        if committing:
            await asyncio.wait(committing, timeout=grace)
        cancelled = [t for t in self._tasks if not t.done()]
        for task in cancelled:
            task.cancel()
        await asyncio.gather(*cancelled, return_exceptions=True)
        if committing or cancelled:
            committed = sum(1 for t in committing if t not in cancelled)
            log.info("shutdown: %d verified downloads committed, %d downloads cancelled",
                     committed, len(cancelled))  # fmt: skip

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    async def _run(self, fill: Download, upstream: UpstreamClient, repository: str) -> None:
        self._metrics.fill_started()
        run: DownloadRun | None = None
        try:
            # Inside the try: whatever opening the writer raises must fail the fill,
            # or its followers would wait for it forever.
            writer = await self._open_writer(fill.key)
            run = DownloadRun(fill, upstream, repository, writer, self._config.stall_timeout)
            self._attach_spool(run)
            async with asyncio.timeout(self._config.total_timeout):
                await self._download(run)
            fill.succeed()
            if run.writer is not None:
                await self._commit(fill, run.writer)
        except MirrorError as exc:
            fill.fail(exc)
        except TimeoutError:
            fill.fail(UpstreamTimeout("blob download took longer than fill.total_timeout"))
        except asyncio.CancelledError:
            fill.fail(UpstreamUnavailable("mirror is shutting down"))
            raise
        except Exception as exc:  # a bug must not leave followers waiting forever
            log.exception("fill of %s crashed", fill.digest)
            fill.fail(UpstreamUnavailable(f"internal error: {type(exc).__name__}"))
        finally:
            # Forgotten before any await: a client arriving after a failure starts
            # a fresh download instead of joining the dead one.
            if self._fills.get(fill.key) is fill:
                del self._fills[fill.key]
            if run is not None:
                await run.settle()  # no thread may still write when the files close
            if run is not None and run.writer is not None and not fill.committed:
                await self._abort(run.writer)
            fill.finish()
            self._metrics.fill_finished()

    async def _open_writer(self, key: str) -> BlobWriter | None:
        try:
            return await self._storage.writer(key)
        except StorageError as exc:
            # The pull still succeeds, served through without caching.
            log.warning("cannot cache %s (%s); serving it through", key, exc)
            self._metrics.storage_error(self._storage.backend, "write")
            return None

    def _attach_spool(self, run: DownloadRun) -> None:
        try:
            fd = self._open_spool(run)
        except OSError as exc:
            self._metrics.storage_error("disk", "spool")
            self._spool_failed(run, exc)
            return
        run.fill.attach_spool(fd)

    def _open_spool(self, run: DownloadRun) -> int:
        if not run.own_spool and run.writer is not None and run.writer.local_path is not None:
            return os.open(run.writer.local_path, os.O_RDONLY)
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        # Unlinked at once: a crash leaves nothing behind.
        fd, path = tempfile.mkstemp(dir=self._spool_dir, prefix="spool-")
        os.unlink(path)
        return fd

    def _spool_failed(self, run: DownloadRun, exc: BaseException) -> None:
        """Go on from memory; new clients start a download of their own (see the module doc)."""
        if run.fill.spooling:
            log.warning("spool of %s failed (%s); following from memory", run.fill.key, exc)
            run.fill.stop_spooling()
        if self._fills.get(run.fill.key) is run.fill:
            del self._fills[run.fill.key]

    async def _download(self, run: DownloadRun) -> None:
        fill = run.fill
        deadline = run.deadline
        try:
            async with deadline:
                run.progressed()  # the first byte, too, must come within stall_timeout
                await self._stream_with_resumes(run)
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # fill.total_timeout, handled by the caller
            stall = self._config.stall_timeout
            raise UpstreamTimeout(f"no byte from the upstream for {stall:g}s") from exc
        await self._drain(run)
        if fill.size is not None and fill.written != fill.size:
            self._metrics.digest_mismatch("blob")
            raise DigestMismatch(f"upstream sent {fill.written} bytes, announced {fill.size}")
        if run.hasher.hexdigest() != fill.digest.hex:
            self._metrics.digest_mismatch("blob")
            raise DigestMismatch(f"upstream bytes do not match {fill.digest}")

    async def _stream_with_resumes(self, run: DownloadRun) -> None:
        """Stream the blob, resuming with ``Range`` as long as resumes bring bytes."""
        fill = run.fill
        fruitless = 0  # resumes in a row that brought no byte
        while True:
            before = fill.written
            try:
                await self._stream_once(run)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError,
                    UpstreamTimeout, UpstreamUnavailable) as exc:  # fmt: skip
                if fill.written > before:
                    fruitless = 0
                if (
                    isinstance(exc, DigestMismatch | FollowersGone)
                    or fill.size is None
                    or fruitless >= self._config.max_resumes
                ):
                    raise as_upstream_error(exc) from exc
                fruitless += 1
                self._metrics.resumed(run.upstream.name)
                log.info("resuming %s at byte %d after %r", fill.digest, fill.written, exc)
                continue
            if fill.size is None or fill.written >= fill.size:
                return

    async def _stream_once(self, run: DownloadRun) -> None:
        fill = run.fill
        async with run.upstream.open_blob(
            run.repository, str(fill.digest), fill.written, BlobUnknown, self._config.idle_timeout
        ) as resp:
            total = _total_size(resp)
            if not fill.started.done():
                fill.set_size(total)
            elif total is not None and total != fill.size:
                raise DigestMismatch("upstream changed the blob's size between requests")
            if resp.status == 200 and fill.written:
                # The upstream ignored Range and sent the whole blob again.
                await _skip(resp.content, fill.written)
            _read_size(resp, self._config.chunk_size)
            # Whole pieces as the socket delivered them: re-cutting them to a
            # fixed size would copy every byte once more.
            async for chunk in resp.content.iter_any():
                if fill.size is not None and fill.written + len(chunk) > fill.size:
                    self._metrics.digest_mismatch("blob")
                    raise DigestMismatch("upstream sent more bytes than it announced")
                run.progressed()
                # Hashing here costs less than a thread hop per batch on two busy
                # cores (measured, bench/analysis.md).
                run.hasher.update(chunk)
                fill.receive(chunk)  # followers that keep up take it from here
                run.pending.append(chunk)
                run.pending_size += len(chunk)
                await self._spool(run)
                if not fill.spooling:
                    await self._make_room(run)

    async def _make_room(self, run: DownloadRun) -> None:
        """Without a spool, read on only as followers free memory (waiting is no stall)."""
        run.deadline.reschedule(None)
        await run.fill.make_room(self._config.memory_limit, self._config.idle_timeout)
        run.progressed()

    async def _spool(self, run: DownloadRun, final: bool = False) -> None:
        """Start persisting the pending bytes once the batch before them is done.

        Waits for that batch only when it is still running and too much is
        pending (or at the end, ``final``); otherwise returns at once.
        """
        if run.inflight is not None:
            if not (final or run.inflight.done() or run.pending_size >= _MAX_PENDING):
                return
            task, run.inflight = run.inflight, None
            await task
        if run.pending:
            batch, run.pending, run.pending_size = run.pending, [], 0
            run.inflight = asyncio.ensure_future(self._persist(run, batch))

    async def _drain(self, run: DownloadRun) -> None:
        """Persist and hash everything received (two rounds at most)."""
        while run.inflight is not None or run.pending:
            await self._spool(run, final=True)

    async def _persist(self, run: DownloadRun, batch: list[bytes]) -> None:
        """Write one batch to the spool and to the backend, side by side."""
        data = batch[0] if len(batch) == 1 else b"".join(batch)
        fill = run.fill
        self._metrics.fetched(run.upstream.name, len(data))
        jobs = [self._store(run, data)]
        if run.own_spool and fill.spooling and fill.spool_fd is not None:
            jobs.append(self._write_spool(run, fill.spool_fd, data, fill.persisted))
        # Wait for every job, even after one failed: no thread may outlive the batch.
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, BaseException):
                raise outcome
        if fill.spooling:
            fill.persist(len(data))

    async def _write_spool(self, run: DownloadRun, fd: int, data: bytes, offset: int) -> None:
        try:
            await asyncio.to_thread(pwrite_all, fd, data, offset)
        except OSError as exc:
            self._metrics.storage_error("disk", "spool")  # the local disk, whatever the backend
            self._spool_failed(run, exc)

    async def _store(self, run: DownloadRun, data: bytes) -> None:
        if run.writer is None:
            return
        try:
            await run.writer.write(data)
        except StorageError as exc:
            self._metrics.storage_error(self._storage.backend, "write")
            log.warning("cache write of %s failed (%s); serving it through", run.fill.key, exc)
            await self._abort(run.writer)
            run.writer = None
            if not run.own_spool:
                self._spool_failed(run, exc)  # the partial object was the spool

    async def _commit(self, fill: Download, writer: BlobWriter) -> None:
        started = time.monotonic()
        try:
            await writer.commit()
        except StorageError as exc:
            log.warning("cannot commit %s (%s)", fill.key, exc)
            self._metrics.storage_error(self._storage.backend, "commit")
            return
        fill.committed = True
        self._metrics.storage_operation(self._storage.backend, "commit", time.monotonic() - started)
        if self._on_commit is not None and fill.size is not None:
            await self._on_commit(fill.key, fill.size)

    async def _abort(self, writer: BlobWriter) -> None:
        with contextlib.suppress(StorageError):
            await writer.abort()


def _read_size(resp: aiohttp.ClientResponse, size: int) -> None:
    """Let the upstream socket deliver up to ``size`` bytes per read.

    asyncio's selector transport reads 256 KiB at a time; every read becomes
    one chunk through the parser, the fill and each follower, so bigger reads
    mean fewer trips through that Python code (TLS transports keep theirs).
    """
    transport = resp.connection.transport if resp.connection is not None else None
    if transport is not None and isinstance(getattr(transport, "max_size", None), int):
        transport.max_size = size  # type: ignore[attr-defined]


def _total_size(resp: aiohttp.ClientResponse) -> int | None:
    """The blob's whole size from a 200 or a 206 answer."""
    if resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")
        return parse_count(content_range.rpartition("/")[2])
    return resp.content_length


async def _skip(content: aiohttp.StreamReader, count: int) -> None:
    """Read and drop ``count`` bytes already received in an earlier attempt."""
    while count > 0:
        dropped = await content.read(min(count, _READ_CHUNK))
        if not dropped:
            raise UpstreamUnavailable("upstream download broke off while skipping")
        count -= len(dropped)
