"""What the proxy asks of an upstream registry: the :class:`Upstream` protocol.

Two implementations: :class:`mirror.upstream.client.UpstreamClient` asks a
registry over HTTP; :class:`mirror.upstream.offline.OfflineUpstream` answers
that nothing is available offline. Each method knows what it fetches, so it
raises that resource's own error when the upstream has no such thing
(``MANIFEST_UNKNOWN``, ``BLOB_UNKNOWN``, ``NAME_UNKNOWN``). Every other failure
is an :class:`mirror.errors.UpstreamError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from mirror.config import UpstreamConfig


@dataclass(frozen=True, slots=True)
class ManifestHead:
    """What a manifest HEAD (or GET) tells about a manifest."""

    media_type: str | None
    digest: str | None
    size: int | None


@dataclass(frozen=True, slots=True)
class ManifestBody:
    """A manifest GET: its bytes and the upstream's headers about it."""

    body: bytes
    media_type: str | None
    digest: str | None


@dataclass(frozen=True, slots=True)
class Listing:
    """A tags/list answer passed through to the client, or a referrers answer for the proxy."""

    status: int
    body: bytes
    content_type: str
    link: str | None
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class DetachedBody:
    """The rest of a blob body, to be read straight off the connection's socket.

    ``buffered``: body bytes aiohttp had already read, which come first;
    ``remaining``: how many more the socket ``fd`` (non-blocking) will deliver.
    """

    fd: int
    buffered: list[bytes]
    remaining: int


class BlobBody(Protocol):
    """An upstream's answer to a blob GET from some offset on."""

    @property
    def total_size(self) -> int | None:
        """The whole blob's size, when the upstream announced it."""
        ...

    def detach(self, minimum: int) -> DetachedBody | None:
        """The connection's socket, to read the rest (at least ``minimum`` bytes) off it directly.

        None when that is not possible (TLS, no ``Content-Length``, ...):
        then read the body with :meth:`chunks`. See
        :meth:`mirror.upstream.blobs.BlobResponse.detach`.
        """
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The bytes from the offset asked for, in the pieces the network delivered.

        A connection that breaks or stays silent raises
        :class:`mirror.errors.UpstreamUnavailable` (the download may resume).
        """
        ...


class Upstream(Protocol):
    """One configured upstream registry, as the proxy uses it."""

    @property
    def name(self) -> str:
        """The upstream's configured name (``docker.io``, ``ghcr.io``, ...)."""
        ...

    @property
    def config(self) -> UpstreamConfig:
        """Its configuration."""
        ...

    async def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestHead:
        """HEAD a manifest (free against Docker Hub's pull limit)."""
        ...

    async def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str]
    ) -> ManifestBody:
        """GET a manifest's bytes."""
        ...

    async def head_blob(self, repository: str, digest: str) -> int | None:
        """The size of a blob, from a HEAD."""
        ...

    def open_blob(
        self, repository: str, digest: str, offset: int, *, idle_timeout: float, read_size: int
    ) -> AbstractAsyncContextManager[BlobBody]:
        """GET a blob from ``offset`` on (resuming with ``Range``).

        ``idle_timeout`` bounds each read of the body; ``read_size`` is how
        much one read from the network may bring.
        """
        ...

    async def tags(self, repository: str, query: dict[str, str]) -> Listing:
        """The repository's tag list (``n`` and ``last`` passed on)."""
        ...

    async def referrers(self, repository: str, digest: str, query: dict[str, str]) -> Listing:
        """The referrers index of a manifest (``artifactType`` passed on)."""
        ...

    async def ping(self) -> int:
        """GET ``/v2/`` and return the status (401 counts as reachable)."""
        ...

    async def close(self) -> None:
        """Release what the upstream opened itself."""
        ...
