"""The state of one fill's download.

:mod:`mirror.proxy.downloads` runs the download; this module holds what one run
keeps between its steps: the writer, the hash, the batch being persisted and
the stall deadline.
"""

from __future__ import annotations

import asyncio
import os

from mirror.errors import UpstreamError, UpstreamUnavailable
from mirror.proxy.download import Download
from mirror.storage.base import BlobWriter
from mirror.upstream.client import UpstreamClient


class DownloadRun:
    """The state of one fill's download."""

    def __init__(
        self,
        fill: Download,
        upstream: UpstreamClient,
        repository: str,
        writer: BlobWriter | None,
        stall_timeout: float,
    ) -> None:
        self.fill = fill
        self.upstream = upstream
        self.repository = repository
        self.writer = writer
        # Backends without a readable local partial (S3) need a spool of our own.
        self.own_spool = writer is None or writer.local_path is None
        self.hasher = fill.digest.hasher()
        self.pending: list[bytes] = []  # received, not yet handed to a batch
        self.pending_size = 0
        self.inflight: asyncio.Future[None] | None = None  # the batch being persisted
        self.stall_timeout = stall_timeout
        # Moved on by every byte received, never by a resume: a stalled upstream
        # cannot hold a client longer than stall_timeout past its last byte.
        self.deadline = asyncio.timeout(None)

    def progressed(self) -> None:
        """A byte arrived: the upstream has ``stall_timeout`` seconds for the next one."""
        self.deadline.reschedule(asyncio.get_running_loop().time() + self.stall_timeout)

    async def settle(self) -> None:
        """Wait for the batch in flight, if any, whatever its outcome."""
        if self.inflight is not None:
            await asyncio.wait([self.inflight])
            if not self.inflight.cancelled():
                self.inflight.exception()  # seen: the failure was already handled
            self.inflight = None


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (a worker thread's job)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def as_upstream_error(exc: BaseException) -> UpstreamError:
    """What a client is told when the download broke off with ``exc``."""
    if isinstance(exc, UpstreamError):
        return exc
    return UpstreamUnavailable(f"upstream download broke off: {type(exc).__name__}")
