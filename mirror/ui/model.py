"""The read-only view of the cache that the web UI renders, and the admin actions.

The pages never touch storage, the index or the upstream clients: they ask a
:class:`CacheView` for plain, frozen values and render them. Whatever
implements the protocol owns how those values are gathered (and how cheaply:
every method is called on a page request, so it should answer from memory).
:class:`CacheActions` is the only way the UI changes anything, and only for a
:class:`Viewer` whose ``can_admin`` is true.

Every string here may come from an upstream or a client (repository names,
tags, platforms, annotations, error details): the templates escape all of it.
Times are wall-clock seconds since the epoch; sizes are bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Health(enum.Enum):
    """What the mirror last saw of an upstream."""

    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"  # no request since start


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    """One configured upstream, as the overview shows it."""

    name: str
    url: str
    default: bool  # unprefixed pulls (docker's registry-mirrors) go here
    health: Health
    health_detail: str  # why, in words: "connection refused by registry-1.docker.io:443"
    requests: int  # pull requests answered for this upstream since start
    hit_ratio: float | None  # cache hits / requests; None before the first request
    bytes_saved: int  # bytes served from the cache instead of fetched again
    rate_limit: int | None  # the upstream's announced pull limit, when it sends one
    rate_limit_remaining: int | None


@dataclass(frozen=True, slots=True)
class EvictionCandidate:
    """An object the next eviction pass would remove first (least recently used)."""

    upstream: str
    kind: str  # "blob", "manifest" or "tag"
    name: str  # the digest, or "repository:tag" for a tag record
    size: int
    last_used: float
    repositories: tuple[str, ...]  # those known to use it; may be empty


@dataclass(frozen=True, slots=True)
class CacheBudget:
    """How full the cache is, and what goes first when it must shrink."""

    size: int
    max_size: int  # 0: unbounded
    objects: int
    high_watermark: int  # a pass starts past this many bytes (0 when unbounded)
    low_watermark: int  # and removes objects down to this many
    evicted_next: tuple[EvictionCandidate, ...]  # in eviction order, pinned and busy skipped


@dataclass(frozen=True, slots=True)
class FillProgress:
    """A blob download in progress, which clients follow while it grows."""

    id: str  # stable while it runs: "<upstream>/<digest>"
    upstream: str
    repository: str  # the repository of the request that started it
    digest: str
    received: int
    total: int | None  # None: the upstream announced no size
    followers: int
    started: float


@dataclass(frozen=True, slots=True)
class RepositorySummary:
    """One cached repository, as the listing shows it."""

    upstream: str
    name: str
    size: int  # bytes of everything its cached tags use (shared blobs counted in each)
    tags: int
    last_pulled: float | None
    pulls: int


class SignatureState(enum.Enum):
    """Whether a tag's image is signed; ``NOT_CHECKED`` until signatures are verified."""

    NOT_CHECKED = "not checked"
    VERIFIED = "verified"
    UNSIGNED = "unsigned"
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class SignatureStatus:
    """The outcome of a signature check, with what it was checked against."""

    state: SignatureState = SignatureState.NOT_CHECKED
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PlatformImage:
    """One platform's manifest of an index (or the single manifest of an image)."""

    platform: str  # "linux/arm64/v8"; "" when the manifest names none
    digest: str
    size: int  # manifest, config and layers
    cached: bool  # whether this platform's manifest is in the cache


class PinState(enum.Enum):
    """Whether eviction skips a tag's image, and who can change that."""

    UNPINNED = "unpinned"
    PINNED = "pinned"  # by an admin, from the UI; an admin can unpin it
    CONFIGURED = "pinned in the configuration"  # cache.pins: only the configuration changes it


@dataclass(frozen=True, slots=True)
class TagDetail:
    """One cached tag of a repository."""

    tag: str
    digest: str
    media_type: str
    size: int
    last_pulled: float | None
    pin: PinState
    platforms: tuple[PlatformImage, ...]
    signature: SignatureStatus
    annotations: tuple[tuple[str, str], ...]  # from the manifest: upstream-controlled text


@dataclass(frozen=True, slots=True)
class TagQuery:
    """Which tags the repository page shows: most recently pulled first, a page at a time."""

    page: int = 1
    per_page: int = 100


@dataclass(frozen=True, slots=True)
class RepositoryDetail:
    """Everything the repository page shows."""

    summary: RepositorySummary  # summary.tags counts every tag, on every page
    upstream_url: str
    default_upstream: bool  # unprefixed pulls go to this repository's upstream
    docker_hub: bool  # the upstream is Docker Hub (library/ names, registry-mirrors)
    tags: tuple[TagDetail, ...]  # one page of them (see TagQuery)
    tag_page: int  # the page returned (a page past the end gives the last)
    tag_pages: int


class SortKey(enum.Enum):
    """Orders of the repository listing; each has one direction that makes sense."""

    SIZE = "size"  # largest first
    LAST_PULLED = "last-pulled"  # most recent first
    PULLS = "pulls"  # most pulled first
    NAME = "name"  # alphabetical


@dataclass(frozen=True, slots=True)
class RepositoryQuery:
    """A search of the repository listing (see :mod:`mirror.ui.query`)."""

    text: str = ""  # a substring, or a glob when it has * ? or [
    sort: SortKey = SortKey.SIZE
    page: int = 1
    per_page: int = 50


@dataclass(frozen=True, slots=True)
class RepositoryResults:
    """One page of a repository search."""

    items: tuple[RepositorySummary, ...]
    total: int  # repositories matching, on every page
    page: int  # the page returned (a page past the end gives the last)
    pages: int


@dataclass(frozen=True, slots=True)
class PurgeOutcome:
    """What a purge removed; all zero when nothing matched."""

    tags: int
    objects: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is looking: admins see and may use the purge and pin actions."""

    name: str | None  # None: anonymous
    can_admin: bool


READ_ONLY = Viewer(None, can_admin=False)


class CacheView(Protocol):
    """What the UI reads; every method answers from memory, cheaply."""

    async def upstreams(self) -> Sequence[UpstreamStatus]:
        """Every configured upstream, in configuration order."""
        ...

    async def budget(self, evicted_next: int) -> CacheBudget:
        """Size, budget, and the first ``evicted_next`` objects eviction would remove."""
        ...

    async def fills(self) -> Sequence[FillProgress]:
        """Downloads in progress, oldest first."""
        ...

    async def repositories(self, query: RepositoryQuery) -> RepositoryResults:
        """One page of the repositories matching ``query``."""
        ...

    async def repository(self, upstream: str, name: str, tags: TagQuery) -> RepositoryDetail | None:
        """One repository with a page of its tags, or None when nothing of it is cached."""
        ...


class CacheActions(Protocol):
    """What an admin may do from the UI."""

    async def purge(self, upstream: str, repository: str, tag: str | None) -> PurgeOutcome:
        """Remove a tag, or a whole repository, and the objects nothing else uses."""
        ...

    async def set_pinned(self, upstream: str, repository: str, tag: str, pinned: bool) -> None:
        """Pin a tag (never evicted), or unpin it."""
        ...
