"""The upstream of an offline mirror: it has nothing, and contacts nobody.

Every method raises :class:`NotCachedOffline` with the code of what was
asked for, so the proxy needs no "if offline": a miss is a 404, and what the
cache knows stands in where the proxy's rules allow (see
:mod:`mirror.proxy.freshness`, whose offline policy trusts every record).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from mirror.config import UpstreamConfig
from mirror.errors import NotCachedOffline
from mirror.upstream.base import BlobBody, Listing, ManifestBody, ManifestHead

_NOT_CACHED = "is not cached and the mirror is offline"


class OfflineUpstream:
    """An :class:`mirror.upstream.base.Upstream` that answers nothing."""

    def __init__(self, config: UpstreamConfig) -> None:
        self._config = config

    @property
    def name(self) -> str:
        """The upstream's configured name."""
        return self._config.name

    @property
    def config(self) -> UpstreamConfig:
        """Its configuration."""
        return self._config

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestHead:
        """Never available."""
        raise _manifest(repository, reference)

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestBody:
        """Never available."""
        raise _manifest(repository, reference)

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """Never available."""
        raise NotCachedOffline(f"blob {digest} {_NOT_CACHED}", "BLOB_UNKNOWN")

    @asynccontextmanager
    async def open_blob(
        self, repository: str, digest: str, offset: int, *, idle_timeout: float, read_size: int
    ) -> AsyncIterator[BlobBody]:
        """Never available."""
        raise NotCachedOffline(f"blob {digest} {_NOT_CACHED}", "BLOB_UNKNOWN")
        # asynccontextmanager needs a generator, even one that never yields.
        yield

    async def tags(self, repository: str, query: dict[str, str]) -> Listing:
        """Never available (the proxy answers with the tags it has seen)."""
        raise NotCachedOffline(f"no tags of {repository!r} are cached", "NAME_UNKNOWN")

    async def referrers(self, repository: str, digest: str, query: dict[str, str]) -> Listing:
        """Never available: referrers are not cached."""
        raise NotCachedOffline("referrers are not available offline", "MANIFEST_UNKNOWN")

    async def ping(self) -> int:
        """Never called: an offline mirror's readiness does not ask upstreams."""
        raise NotCachedOffline("the mirror is offline", "UNAVAILABLE")

    async def close(self) -> None:
        """Nothing to release."""


def _manifest(repository: str, reference: str) -> NotCachedOffline:
    return NotCachedOffline(
        f"manifest {reference} of {repository} {_NOT_CACHED}", "MANIFEST_UNKNOWN"
    )
