"""The web UI's view of the running mirror: a :class:`CacheView` and :class:`CacheActions`.

Everything is answered from memory: the cache index and the catalog
(:mod:`mirror.ui.catalog`) for what is cached, the running downloads, the
metrics' gauges for upstream health and rate limits, the per-upstream
traffic tallies and the pull counts (:mod:`mirror.stats`). An admin's purge
goes through :meth:`CacheManager.purge`, as the admin API's ``DELETE`` does;
a pin is a runtime pin, stored so that it survives a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

from mirror.cache.index import CacheEntry
from mirror.cache.manager import CacheManager
from mirror.cache.pins import Pin, pinned_keys
from mirror.config import Config, UpstreamConfig
from mirror.metrics import Metrics, UpstreamState
from mirror.proxy.downloads import Downloads
from mirror.stats.pulls import PullStats
from mirror.stats.traffic import Traffic, UpstreamTally
from mirror.storage import layout
from mirror.storage.base import StorageError
from mirror.ui.catalog import Catalog, RepositoryUsage
from mirror.ui.errors import PageError
from mirror.ui.live_tags import SignatureLookup, TagDetails, pin_state
from mirror.ui.model import (
    CacheBudget,
    EvictionCandidate,
    FillProgress,
    Health,
    PinState,
    PurgeOutcome,
    RepositoryDetail,
    RepositoryQuery,
    RepositoryResults,
    RepositorySummary,
    TagQuery,
    UpstreamStatus,
)
from mirror.ui.query import select_repositories

DOWN_DETAIL = "the last request got no HTTP answer, or a 5xx"
OFFLINE_DETAIL = "offline: no upstream is contacted"


class LiveView:
    """What the pages show, from the running mirror's memory."""

    def __init__(
        self, config: Config, cache: CacheManager, downloads: Downloads, metrics: Metrics,
        traffic: Traffic, pulls: PullStats, signatures: SignatureLookup | None = None,
    ) -> None:  # fmt: skip
        self._config = config
        self._cache = cache
        self._downloads = downloads
        self._metrics = metrics
        self._traffic = traffic
        self._pulls = pulls
        self.catalog = Catalog(cache.storage)
        self._tags = TagDetails(self.catalog, self._pin_state, signatures)

    async def upstreams(self) -> Sequence[UpstreamStatus]:
        states = self._metrics.upstream_states()
        unseen = UpstreamState(None, None, None)
        return [self._upstream(u, states.get(u.name, unseen)) for u in self._config.upstreams]

    def upstream_tally(self, name: str) -> UpstreamTally:
        """Requests, hits and bytes saved of one upstream since start."""
        return self._traffic.of(name)

    def _upstream(self, upstream: UpstreamConfig, state: UpstreamState) -> UpstreamStatus:
        tally = self._traffic.of(upstream.name)
        if self._config.offline:
            health, detail = Health.UNKNOWN, OFFLINE_DETAIL
        elif state.up is None:
            health, detail = Health.UNKNOWN, ""
        else:
            health, detail = (Health.UP, "") if state.up else (Health.DOWN, DOWN_DETAIL)
        return UpstreamStatus(
            upstream.name, upstream.url, upstream is self._config.default_upstream, health,
            detail, tally.requests, tally.hit_ratio, tally.bytes_saved, state.rate_limit,
            state.rate_limit_remaining,
        )  # fmt: skip

    async def budget(self, evicted_next: int) -> CacheBudget:
        index = self._cache.storage.index
        cache = self._config.cache
        return CacheBudget(
            index.size, index.max_size, len(index),
            int(cache.high_watermark * index.max_size), int(cache.low_watermark * index.max_size),
            await self._evicted_next(evicted_next),
        )  # fmt: skip

    async def _evicted_next(self, count: int) -> tuple[EvictionCandidate, ...]:
        """The least recently used objects a pass would take, pinned and busy ones skipped."""
        storage = self._cache.storage
        try:
            protected = await pinned_keys(storage.inner, self._cache.pins())
        except StorageError:
            return ()  # not known now; the next page asks again
        await self.catalog.refresh()
        free: list[CacheEntry] = []
        for entry in storage.index.oldest():
            if len(free) == count:
                break
            if entry.key not in protected and not self._busy(entry.key):
                free.append(entry)
        return tuple(self._candidate(e) for e in free)

    def _candidate(self, entry: CacheEntry) -> EvictionCandidate:
        tag = layout.parse_tag_key(entry.key)
        name = f"{tag[1]}:{tag[2]}" if tag is not None else entry.digest
        return EvictionCandidate(entry.upstream, entry.metric_kind, name, entry.size,
                                 entry.accessed, self.catalog.users_of(entry.key))  # fmt: skip

    def _busy(self, key: str) -> bool:
        return self._downloads.is_downloading(key) or self._cache.storage.is_reading(key)

    async def fills(self) -> Sequence[FillProgress]:
        found = []
        for download in self._downloads.in_progress():
            content = layout.parse_content_key(download.key)
            upstream = content[0] if content is not None else ""
            found.append(FillProgress(
                f"{upstream}/{download.digest}", upstream, download.repository,
                str(download.digest), download.written, download.size, download.followers,
                download.started_at,
            ))  # fmt: skip
        return found

    async def repositories(self, query: RepositoryQuery) -> RepositoryResults:
        await self.catalog.refresh()
        # As the admin API lists: what upstreams no longer configured left is only
        # waiting for eviction, and has no page (repository() answers None).
        configured = {u.name for u in self._config.upstreams}
        usages = (u for u in self.catalog.repositories() if u.upstream in configured)
        return select_repositories(map(self._summary, usages), query)

    async def repository(self, upstream: str, name: str, tags: TagQuery) -> RepositoryDetail | None:
        configured = self._config.upstream(upstream)
        await self.catalog.refresh()
        usage = self.catalog.usage(upstream, name)
        if configured is None or usage is None:
            return None
        shown, page, pages = self._tags.page(upstream, name, tags)
        return RepositoryDetail(
            self._summary(usage), configured.url, configured is self._config.default_upstream,
            configured.is_docker_hub, shown, page, pages,
        )  # fmt: skip

    def _summary(self, usage: RepositoryUsage) -> RepositorySummary:
        pulls = self._pulls.get(usage.upstream, usage.name)
        last = max(pulls.last if pulls is not None else 0.0, usage.last_used)
        return RepositorySummary(usage.upstream, usage.name, usage.size, usage.tags,
                                 last or None, pulls.count if pulls is not None else 0)  # fmt: skip

    def _pin_state(self, ref: Pin, digest: str) -> PinState:
        return pin_state(self._cache.runtime_pins.pins, self._cache.configured_pins, ref, digest)


class LiveActions:
    """An admin's purge and pin, on the running mirror's cache."""

    def __init__(self, cache: CacheManager) -> None:
        self._cache = cache

    async def purge(self, upstream: str, repository: str, tag: str | None) -> PurgeOutcome:
        report = await self._cache.purge(upstream, repository, tag, None)
        return PurgeOutcome(report.tags, report.manifests + report.blobs, report.bytes)

    async def set_pinned(self, upstream: str, repository: str, tag: str, pinned: bool) -> None:
        try:
            await self._cache.set_pinned(Pin(upstream, repository, tag), pinned)
        except ValueError as exc:  # too many pins
            raise PageError(400, f"{exc}; unpin some first.") from None
        except StorageError:
            raise PageError(503, "The cache storage did not take the change; nothing changed. "
                                 "Try again.") from None  # fmt: skip
