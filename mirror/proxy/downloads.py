"""Single-flight blob downloads: one per blob, followed by every client that asks for it.

One :class:`Download` per (upstream, digest) fetches the blob once
(:mod:`mirror.proxy.transfer`) into a spool file and, at the same time, into
the storage backend's partial object. Any number of clients follow it
(:mod:`mirror.proxy.download`): fresh bytes from memory, older ones from the
spool, then they wait for more. Nobody waits for the whole blob and nobody
opens a second upstream download. The download runs in its own task, so a
client hanging up never stops it. (The settings call a download a *fill*:
``[fill]``, ``mirror_fills_in_flight``, ``mirror_fill_followers_total``.)

Integrity: until the digest has been checked, no client is given the last
byte of what it asked for, so a client can never see a complete body of
wrong bytes: on a mismatch or an upstream failure every follower's
connection is aborted and the partial object is discarded. Only a verified
blob is committed to the cache. A download takes at most ``fill.total_timeout``.

A download whose spool refused writes (a full disk) takes no new followers:
a client that arrives later starts a download of its own, which tries the
cache again, so the cache recovers by itself once space returns.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from mirror.config import FillConfig
from mirror.errors import MirrorError, UpstreamTimeout, UpstreamUnavailable
from mirror.metrics import Metrics
from mirror.oci import Digest
from mirror.proxy.download import Download
from mirror.proxy.transfer import Transfer, abort_quietly
from mirror.storage.base import BlobWriter, Storage, StorageError
from mirror.upstream.base import Upstream

log = logging.getLogger(__name__)


class Downloads:
    """Starts downloads, lets clients join running ones, and runs each to its end."""

    def __init__(
        self, storage: Storage, spool_dir: Path, config: FillConfig, metrics: Metrics
    ) -> None:
        self._storage = storage
        self._spool_dir = spool_dir
        self._config = config
        self._metrics = metrics
        # Downloads that take followers, by storage key; one that lost its
        # spool leaves this map but runs on in _tasks for its followers.
        self._joinable: dict[str, Download] = {}
        self._tasks: dict[asyncio.Task[None], Download] = {}

    def __len__(self) -> int:
        """Downloads running, including those that take no new followers."""
        return len(self._tasks)

    def running(self, key: str) -> Download | None:
        """The download of ``key`` in progress, if it takes followers."""
        return self._joinable.get(key)

    def is_downloading(self, key: str) -> bool:
        """Whether ``key`` is being downloaded (eviction must leave it alone)."""
        return key in self._joinable

    def join(self, key: str) -> Download | None:
        """The download of ``key`` in progress, for one more client to follow (counted)."""
        download = self._joinable.get(key)
        if download is not None:
            self._metrics.follower_joined()
        return download

    def start(self, upstream: Upstream, repository: str, digest: Digest, key: str) -> Download:
        """Start downloading ``digest`` from ``upstream`` into ``key``."""
        download = Download(key, digest)
        self._joinable[key] = download
        task = asyncio.create_task(self._run(download, upstream, repository))
        self._tasks[task] = download
        task.add_done_callback(self._forget)
        return download

    async def close(self, grace: float) -> None:
        """At shutdown: give verified downloads up to ``grace`` s to publish, cancel the rest.

        A download whose bytes were all verified is only committing; dropping
        it would throw away a whole blob that clients already received. A
        cancelled download discards its partial object.
        """
        committing = [t for t, d in self._tasks.items() if d.verified]
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

    async def _run(self, download: Download, upstream: Upstream, repository: str) -> None:
        self._metrics.fill_started()
        transfer: Transfer | None = None
        try:
            # Inside the try: whatever opening the writer raises must fail the download,
            # or its followers would wait for it forever.
            writer = await self._open_writer(download.key)
            transfer = Transfer(
                download, upstream, repository, writer, self._config, self._metrics,
                backend=self._storage.backend, on_spool_lost=lambda: self._unjoinable(download),
            )  # fmt: skip
            transfer.open_spool(self._spool_dir)
            async with asyncio.timeout(self._config.total_timeout):
                await transfer.run()
            download.succeed()
            if transfer.writer is not None:
                await self._commit(download, transfer.writer)
        except MirrorError as exc:
            download.fail(exc)
        except TimeoutError:
            download.fail(UpstreamTimeout("blob download took longer than fill.total_timeout"))
        except asyncio.CancelledError:
            download.fail(UpstreamUnavailable("mirror is shutting down"))
            raise
        except Exception as exc:  # a bug must not leave followers waiting forever
            log.exception("download of %s crashed", download.digest)
            download.fail(UpstreamUnavailable(f"internal error: {type(exc).__name__}"))
        finally:
            # Unjoinable before any await: a client arriving after a failure starts
            # a fresh download instead of joining the dead one.
            self._unjoinable(download)
            if transfer is not None:
                await transfer.settle()  # no thread may still write when the files close
            if transfer is not None and transfer.writer is not None and not download.committed:
                await abort_quietly(transfer.writer)
            download.finish()
            self._metrics.fill_finished()

    def _unjoinable(self, download: Download) -> None:
        """Take no more followers for ``download``."""
        if self._joinable.get(download.key) is download:
            del self._joinable[download.key]

    async def _open_writer(self, key: str) -> BlobWriter | None:
        try:
            return await self._storage.writer(key)
        except StorageError as exc:
            # The pull still succeeds, served through without caching.
            log.warning("cannot cache %s (%s); serving it through", key, exc)
            return None

    async def _commit(self, download: Download, writer: BlobWriter) -> None:
        try:
            await writer.commit()
        except StorageError as exc:
            log.warning("cannot commit %s (%s)", download.key, exc)
            return
        download.committed = True
