"""Keeping the cache within its byte budget.

When a write takes the cache past ``high_watermark * max_size``, a
background pass deletes least-recently-used blobs and manifests until it is
below ``low_watermark * max_size``. The gap between the two marks keeps
passes rare. A pass leaves alone:

* pinned images (manifests, child manifests, blobs; see :mod:`mirror.cache.pins`);
* keys being downloaded (``Downloads.is_downloading``): a fill commits while
  still registered, and followers read its spool, never the key;
* keys being streamed to a client (:meth:`TrackedStorage.is_reading`).
  A disk blob sent with sendfile needs no protection: the handler opens the
  file first and an unlinked file stays readable through its descriptor; a
  handler that finds the file already gone fetches it again.

Skipped entries go back to the recent end of the index. Every deletion goes
through :class:`TrackedStorage`, so the index and the gauges stay exact, and
a later pull of an evicted object is simply a miss: it is fetched and
verified again, never served empty.

Passes (and purges, see :mod:`mirror.cache.inventory`) run one at a time under
:attr:`Evictor.lock`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from mirror.cache.index import CacheEntry
from mirror.cache.pins import Pin, pinned_keys
from mirror.cache.tracked import TrackedStorage
from mirror.metrics import Metrics
from mirror.storage.base import StorageError

log = logging.getLogger(__name__)

Busy = Callable[[str], bool]


@dataclass
class EvictionReport:
    """What one pass removed and where it left the cache."""

    removed: list[CacheEntry] = field(default_factory=list)
    kept: int = 0  # entries passed over because pinned or in use
    failed: int = 0  # deletions the backend refused
    size_before: int = 0
    size_after: int = 0

    @property
    def removed_bytes(self) -> int:
        """Bytes freed."""
        return sum(e.size for e in self.removed)


class Evictor:
    """Enforces the budget on a :class:`TrackedStorage` and its index."""

    def __init__(
        self,
        storage: TrackedStorage,
        metrics: Metrics,
        *,
        high_watermark: float,
        low_watermark: float,
        pins: list[Pin],
        busy: Busy | None = None,
    ) -> None:
        self._storage = storage
        self._index = storage.index
        self._metrics = metrics
        self._high = high_watermark
        self._low = low_watermark
        self._pins = pins
        self._busy = busy or (lambda key: False)
        self.lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def over_high_watermark(self) -> bool:
        """Whether the cache is past the point where a pass must run."""
        limit = self._index.max_size
        return limit > 0 and self._index.size > self._high * limit

    def check(self) -> None:
        """Start a background pass if the cache is over budget and none is running."""
        if self._closed:
            return
        if self.over_high_watermark and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._background())

    async def settled(self) -> None:
        """Wait for the running background pass, if any."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop a running pass (at shutdown) and start no more."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _background(self) -> None:
        # Writes that land during a pass may push the cache past the mark
        # again; pass again while that happens and passes still free space.
        while self.over_high_watermark:
            try:
                report = await self.enforce()
            except StorageError as exc:
                log.warning("eviction pass failed: %s", exc)
                return
            log.info(
                "evicted %d objects (%d bytes, %d pinned or in use kept); cache now %d of %d bytes",
                len(report.removed), report.removed_bytes, report.kept, report.size_after,
                self._index.max_size,
            )  # fmt: skip
            if not report.removed:
                return

    async def enforce(self, *, force: bool = False) -> EvictionReport:
        """One pass: evict down to the low watermark if past the high one (or if ``force``)."""
        async with self.lock:
            report = EvictionReport(size_before=self._index.size)
            limit = self._index.max_size
            if limit > 0 and (force or self.over_high_watermark):
                await self._evict_to(int(self._low * limit), report)
            report.size_after = self._index.size
            return report

    async def _evict_to(self, target: int, report: EvictionReport) -> None:
        protected = await pinned_keys(self._storage.inner, self._pins)
        skipped: list[CacheEntry] = []
        skipped_bytes = 0
        try:
            # Skipped entries are out of the index until the end of the pass,
            # so they are added back in when comparing with the target.
            while self._index.size + skipped_bytes > target and len(self._index) > 0:
                entry = self._index.pop_oldest()
                if self._in_use(entry.key) or entry.key in protected:
                    skipped.append(entry)
                elif await self._delete(entry):
                    report.removed.append(entry)
                    continue
                else:
                    report.failed += 1
                    skipped.append(entry)
                skipped_bytes += entry.size
        finally:
            for entry in skipped:
                self._index.restore(entry)
            report.kept = len(skipped)

    def _in_use(self, key: str) -> bool:
        return self._busy(key) or self._storage.is_reading(key)

    async def _delete(self, entry: CacheEntry) -> bool:
        try:
            await self._storage.delete(entry.key)
        except StorageError as exc:
            log.warning("cannot evict %s: %s", entry.key, exc)
            return False
        self._metrics.evicted(entry.metric_kind, entry.size)
        return True
