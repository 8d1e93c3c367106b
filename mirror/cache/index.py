"""The in-memory index of what the cache holds: a size-weighted LRU.

Every blob, manifest and tag record in storage has one entry, keyed by its
storage key, so a blob shared by many repositories of one upstream is
counted once. The
entries live in a :class:`cachetools.LRUCache` whose ``getsizeof`` is the
object's size: ``currsize`` is the bytes held and ``popitem`` yields the
least recently used entry. Its own ``maxsize`` is unbounded on purpose:
cachetools would evict synchronously and blindly, while eviction here must
skip pinned, downloading and in-use entries and delete from storage, which
is asynchronous (see :mod:`mirror.cache.eviction`).

At start the index is rebuilt from ``storage.walk()`` of the whole key
space (every upstream, configured or not) in order of each object's
modification time, which the backend advances on every hit
(:meth:`Storage.touch`), so recency survives a restart. Tag records are
small, but a mirror can gather very many (one per tag and Accept variant,
plus those older versions wrote per Accept spelling), so they count toward
the budget and are evicted like the rest: an evicted record only means the
next pull of that tag asks the upstream again.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from cachetools import Cache, LRUCache

from mirror.metrics import Metrics
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class CacheEntry:
    """One cached blob, manifest or tag record."""

    key: str
    upstream: str
    kind: str  # "blobs", "manifests" or "tags", as in the key layout
    digest: str  # "" for a tag record
    size: int
    accessed: float  # wall-clock seconds of the last hit or write

    @property
    def metric_kind(self) -> str:
        """``blob``, ``manifest`` or ``tag``, the label used by metrics."""
        return _METRIC_KINDS[self.kind]


_METRIC_KINDS = {layout.BLOBS: "blob", layout.MANIFESTS: "manifest", layout.TAGS: "tag"}


def _entry_size(entry: CacheEntry) -> int:
    return entry.size


class _SizedLRU(LRUCache[str, CacheEntry]):
    """An LRUCache weighted by entry size that never evicts on its own."""

    def __init__(self) -> None:
        super().__init__(maxsize=math.inf, getsizeof=_entry_size)

    def peek(self, key: str) -> CacheEntry | None:
        """The entry of ``key`` without moving it (``get`` and ``[]`` count as a use)."""
        if key not in self:
            return None
        return Cache.__getitem__(self, key)


class CacheIndex:
    """Sizes and recency of every cached blob, manifest and tag record."""

    def __init__(self, max_size: int = 0, metrics: Metrics | None = None) -> None:
        self._lru = _SizedLRU()
        self._max_size = max_size
        self._metrics = metrics
        self._report()

    @property
    def max_size(self) -> int:
        """The configured budget in bytes (0: unbounded)."""
        return self._max_size

    @property
    def size(self) -> int:
        """Bytes held by indexed objects."""
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: object) -> bool:
        return key in self._lru

    def get(self, key: str) -> CacheEntry | None:
        """The entry of ``key`` without counting it as an access."""
        return self._lru.peek(key)

    def add(self, key: str, size: int, accessed: float | None = None) -> CacheEntry | None:
        """Record an object written (or found) at ``key``; keys of no cached kind are ignored."""
        parsed = indexed_kind(key)
        if parsed is None:
            return None
        upstream, kind, digest = parsed
        when = time.time() if accessed is None else accessed
        entry = CacheEntry(key, upstream, kind, digest, size, when)
        self._lru[key] = entry  # a re-write replaces the entry and makes it most recent
        self._report()
        return entry

    def touch(self, key: str) -> None:
        """Make ``key`` the most recently used entry (a cache hit)."""
        if key in self._lru:
            self._lru[key].accessed = time.time()  # __getitem__ also moves it to the end

    def remove(self, key: str) -> CacheEntry | None:
        """Forget ``key`` (it was deleted); the entry, if there was one."""
        if key not in self._lru:
            return None
        entry = self._lru.pop(key)
        self._report()
        return entry

    def pop_oldest(self) -> CacheEntry:
        """Remove and return the least recently used entry; KeyError when empty."""
        _, entry = self._lru.popitem()
        self._report()
        return entry

    def restore(self, entry: CacheEntry) -> None:
        """Put back an entry taken by :meth:`pop_oldest` that was not evicted after all.

        It goes to the most recent end: it was skipped because it is pinned or
        in use, and the next pass should not have to step over it again.
        """
        if entry.key not in self._lru:
            self._lru[entry.key] = entry
            self._report()

    def entries(self) -> list[CacheEntry]:
        """Every entry (in no particular order), without touching recency."""
        return [e for e in map(self._lru.peek, list(self._lru)) if e is not None]

    def _report(self) -> None:
        if self._metrics is not None:
            self._metrics.cache_usage(self.size, len(self._lru), self._max_size)


def indexed_kind(key: str) -> tuple[str, str, str] | None:
    """``(upstream, kind, digest)`` of a key the index counts; the digest is "" for tags."""
    content = layout.parse_content_key(key)
    if content is not None:
        upstream, kind, digest = content
        return upstream, kind, str(digest)
    tag = layout.parse_tag_key(key)
    return (tag[0], layout.TAGS, "") if tag is not None else None


async def rebuild_index(
    storage: Storage, max_size: int = 0, metrics: Metrics | None = None
) -> CacheIndex:
    """An index of every blob, manifest and tag record in storage, least recently modified first.

    Every upstream's objects count, also those of upstreams the configuration
    no longer names: they take space as much as the rest, so the budget must
    count them. No request reaches them any more, so they only grow older and
    the eviction reaches them before anything still in use (see :func:`unconfigured`).

    A storage that cannot be listed (S3 down at start) gives an empty index:
    pulls are served through meanwhile, and the budget counts what is
    written from then on.
    """
    found = []
    try:
        async for info in storage.walk(""):
            if indexed_kind(info.key) is not None:
                found.append(info)
    except StorageError as exc:
        log.warning("cannot list the cache to rebuild its index: %s", exc)
        found = []
    found.sort(key=lambda info: info.modified)
    index = CacheIndex(max_size, metrics)
    for info in found:
        index.add(info.key, info.size, accessed=info.modified)
    return index


@dataclass(frozen=True, slots=True)
class Usage:
    """Objects and bytes."""

    objects: int
    bytes: int


def unconfigured(index: CacheIndex, upstreams: list[str]) -> dict[str, Usage]:
    """What the index holds of each upstream that is not in ``upstreams``."""
    found: dict[str, Usage] = {}
    for entry in index.entries():
        if entry.upstream not in upstreams:
            seen = found.get(entry.upstream, Usage(0, 0))
            found[entry.upstream] = Usage(seen.objects + 1, seen.bytes + entry.size)
    return dict(sorted(found.items()))
