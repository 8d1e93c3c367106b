"""An in-memory cache behind the UI's view-model, for UI tests and page-time measurements.

:class:`MemoryCache` implements :class:`mirror.ui.model.CacheView` and
:class:`mirror.ui.model.CacheActions` over plain dicts, with the same
semantics the real cache has: a blob shared by several images is stored
once and counted once in the budget; a purge removes the tag records and
every object no remaining tag uses; eviction order is least recently used
first, skipping pinned images. ``tests/support/ui_data.py`` fills it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from mirror.ui.model import (
    CacheBudget,
    EvictionCandidate,
    FillProgress,
    PinState,
    PurgeOutcome,
    RepositoryDetail,
    RepositoryQuery,
    RepositoryResults,
    RepositorySummary,
    TagDetail,
    TagQuery,
    UpstreamStatus,
)
from mirror.ui.query import select_repositories, select_tags

RepoKey = tuple[str, str]  # (upstream, repository)


@dataclass
class StoredObject:
    """A blob, manifest or tag record, and the tags that use it."""

    key: str
    upstream: str
    kind: str
    name: str
    size: int
    last_used: float
    users: set[tuple[str, str, str]] = field(default_factory=set)  # (upstream, repo, tag)


@dataclass
class StoredTag:
    """One tag: what the page shows, and the keys of every object its image uses."""

    detail: TagDetail
    keys: tuple[str, ...]


@dataclass
class StoredRepository:
    """A repository's tags and pull statistics."""

    upstream: str
    name: str
    pulls: int = 0
    last_pulled: float | None = None
    tags: dict[str, StoredTag] = field(default_factory=dict)


@dataclass(frozen=True)
class SimulatedFill:
    """A download whose received bytes grow with the wall clock."""

    upstream: str
    repository: str
    digest: str
    total: int
    rate: float  # bytes per second
    started: float
    followers: int = 1

    def progress(self, now: float) -> FillProgress:
        """The fill as it stands at ``now`` (it never quite finishes)."""
        received = min(self.total - 1, int(self.rate * (now - self.started)))
        return FillProgress(
            f"{self.upstream}/{self.digest}",
            self.upstream,
            self.repository,
            self.digest,
            received,
            self.total,
            self.followers,
            self.started,
        )


class MemoryCache:
    """A whole cache in memory; both the UI's view and its admin actions."""

    def __init__(self, upstreams: Sequence[UpstreamStatus], max_size: int = 0,
                 high: float = 0.95, low: float = 0.85) -> None:  # fmt: skip
        self.upstream_list = list(upstreams)
        self.max_size = max_size
        self.high, self.low = high, low
        self.objects: dict[str, StoredObject] = {}
        self.repos: dict[RepoKey, StoredRepository] = {}
        self.simulated_fills: list[SimulatedFill] = []
        self.size = 0
        self._summaries: dict[RepoKey, RepositorySummary] = {}
        self._lru: list[StoredObject] | None = None  # least recently used first, when known

    # -- filling it -------------------------------------------------------

    def add_object(self, upstream: str, kind: str, name: str, size: int, last_used: float) -> str:
        """Store an object once (a second add of the same one keeps the first); its key."""
        key = f"{upstream}/{kind}/{name}"
        if key not in self.objects:
            self.objects[key] = StoredObject(key, upstream, kind, name, size, last_used)
            self.size += size
            self._lru = None
        return key

    def add_tag(self, upstream: str, repository: str, detail: TagDetail,
                keys: Sequence[str]) -> None:  # fmt: skip
        """Add a tag whose image uses the objects at ``keys`` (its record is added here)."""
        record = self.add_object(upstream, "tag", f"{repository}:{detail.tag}", 300,
                                 detail.last_pulled or time.time())  # fmt: skip
        all_keys = (record, *keys)
        for key in all_keys:
            self.objects[key].users.add((upstream, repository, detail.tag))
        repo = self.repos.setdefault((upstream, repository), StoredRepository(upstream, repository))
        repo.tags[detail.tag] = StoredTag(detail, all_keys)
        self._summaries.pop((upstream, repository), None)

    def set_pulls(self, upstream: str, repository: str, pulls: int, last: float | None) -> None:
        """The repository's pull statistics."""
        repo = self.repos[(upstream, repository)]
        repo.pulls, repo.last_pulled = pulls, last
        self._summaries.pop((upstream, repository), None)

    # -- CacheView --------------------------------------------------------

    async def upstreams(self) -> Sequence[UpstreamStatus]:
        return list(self.upstream_list)

    async def budget(self, evicted_next: int) -> CacheBudget:
        candidates: list[EvictionCandidate] = []
        for obj in self._least_recently_used():
            if len(candidates) == evicted_next:
                break
            if not self._pinned(obj):
                repos = sorted({repo for _, repo, _ in obj.users})
                candidates.append(EvictionCandidate(obj.upstream, obj.kind, obj.name, obj.size,
                                                    obj.last_used, tuple(repos[:3])))  # fmt: skip
        return CacheBudget(self.size, self.max_size, len(self.objects),
                           int(self.max_size * self.high), int(self.max_size * self.low),
                           tuple(candidates))  # fmt: skip

    async def fills(self) -> Sequence[FillProgress]:
        now = time.time()
        return [fill.progress(now) for fill in self.simulated_fills]

    async def repositories(self, query: RepositoryQuery) -> RepositoryResults:
        return select_repositories(self._all_summaries(), query)

    async def repository(self, upstream: str, name: str, tags: TagQuery) -> RepositoryDetail | None:
        repo = self.repos.get((upstream, name))
        if repo is None:
            return None
        status = next(u for u in self.upstream_list if u.name == upstream)
        shown, page, pages = select_tags((t.detail for t in repo.tags.values()), tags)
        return RepositoryDetail(self._summary(repo), status.url, status.default,
                                status.url == "https://registry-1.docker.io", shown, page,
                                pages)  # fmt: skip

    # -- CacheActions -----------------------------------------------------

    async def purge(self, upstream: str, repository: str, tag: str | None) -> PurgeOutcome:
        repo = self.repos.get((upstream, repository))
        if repo is None or (tag is not None and tag not in repo.tags):
            return PurgeOutcome(0, 0, 0)
        names = [tag] if tag is not None else list(repo.tags)
        removed, freed = 0, 0
        for name in names:
            for key in repo.tags.pop(name).keys:
                obj = self.objects[key]
                obj.users.discard((upstream, repository, name))
                if not obj.users:
                    del self.objects[key]
                    self.size -= obj.size
                    removed, freed = removed + 1, freed + obj.size
        if not repo.tags:
            del self.repos[(upstream, repository)]
        self._summaries.pop((upstream, repository), None)
        self._lru = None
        return PurgeOutcome(len(names), removed, freed)

    async def set_pinned(self, upstream: str, repository: str, tag: str, pinned: bool) -> None:
        stored = self.repos[(upstream, repository)].tags[tag]
        if stored.detail.pin is not PinState.CONFIGURED:
            state = PinState.PINNED if pinned else PinState.UNPINNED
            stored.detail = replace(stored.detail, pin=state)

    # -- helpers ----------------------------------------------------------

    def _least_recently_used(self) -> list[StoredObject]:
        if self._lru is None:
            self._lru = sorted(self.objects.values(), key=lambda o: o.last_used)
        return self._lru

    def _pinned(self, obj: StoredObject) -> bool:
        for upstream, repository, tag in obj.users:
            if self.repos[(upstream, repository)].tags[tag].detail.pin is not PinState.UNPINNED:
                return True
        return False

    def _all_summaries(self) -> list[RepositorySummary]:
        return [self._summary(repo) for repo in self.repos.values()]

    def _summary(self, repo: StoredRepository) -> RepositorySummary:
        key = (repo.upstream, repo.name)
        summary = self._summaries.get(key)
        if summary is None:
            keys = {k for stored in repo.tags.values() for k in stored.keys}
            size = sum(self.objects[k].size for k in keys)
            summary = RepositorySummary(repo.upstream, repo.name, size, len(repo.tags),
                                        repo.last_pulled, repo.pulls)  # fmt: skip
            self._summaries[key] = summary
        return summary
