"""Where signatures come from: the interface the pull-through core implements for the verifier.

The verifier never touches storage or the network itself. It asks a
:class:`SignatureSource` for the signature manifests and blobs of one
repository; the core answers from its cache and, on a miss, from the
upstream (or only from the cache, offline). Every byte a source returns is
checked here against the digest it was asked for, so a source may hand on
whatever it has without trusting it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from mirror.errors import DigestInvalid
from mirror.oci import parse_digest
from mirror.trust.verdict import Reason

#: the most bytes a signature manifest, payload or bundle may have
MAX_SIGNATURE_BYTES = 4 * 1024 * 1024


class SignatureSourceUnavailable(Exception):
    """The source cannot tell what signatures exist (upstream unreachable, nothing cached)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The image to verify: ``registry`` is the upstream's name (``docker.io``, ``ghcr.io``).

    ``reference`` is the tag or digest the client asked for, if known (only
    an ``exact`` identity rule uses it).
    """

    registry: str
    repository: str
    digest: str
    reference: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``, as a signature's docker-reference spells it."""
        return f"{self.registry}/{self.repository}"


class SignatureSource(Protocol):
    """Signature material of one upstream, as the pull-through core finds it.

    Each method returns ``None`` (or an empty list) when the thing does not
    exist, and raises :class:`SignatureSourceUnavailable` when it cannot know.
    """

    async def tagged_manifest(self, repository: str, tag: str) -> bytes | None:
        """The manifest a tag points at (cosign's ``sha256-<hex>.sig``)."""
        ...

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is ``digest``.

        From the upstream's referrers API, or else its ``sha256-<hex>``
        fallback tag; each carries ``artifactType`` when the registry knows it.
        """
        ...

    async def manifest(self, repository: str, digest: str) -> bytes | None:
        """A manifest by digest."""
        ...

    async def blob(self, repository: str, digest: str, max_size: int) -> bytes | None:
        """A blob by digest, or ``None`` if it is missing or larger than ``max_size``."""
        ...


def json_object(data: bytes) -> dict[str, Any] | None:
    """``data`` parsed as a JSON object, or ``None`` (not UTF-8, not JSON, not an object)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # absurdly deep nesting
        return None
    return doc if isinstance(doc, dict) else None


def matches_digest(data: bytes, digest: str) -> bool:
    """Whether ``data`` hashes to ``digest`` (False for a malformed digest)."""
    try:
        return parse_digest(digest).matches(data)
    except DigestInvalid:
        return False


async def fetch_manifest(source: SignatureSource, repository: str, digest: str) -> bytes | Reason:
    """A manifest by digest; ``BLOB_MISSING``, or ``SIGNATURE_INVALID`` for other bytes."""
    return _checked(await source.manifest(repository, digest), digest)


async def fetch_blob(source: SignatureSource, repository: str, digest: str) -> bytes | Reason:
    """A signature blob by digest; ``BLOB_MISSING``, or ``SIGNATURE_INVALID`` for other bytes."""
    return _checked(await source.blob(repository, digest, MAX_SIGNATURE_BYTES), digest)


def _checked(data: bytes | None, digest: str) -> bytes | Reason:
    if data is None:
        return Reason.BLOB_MISSING
    if len(data) > MAX_SIGNATURE_BYTES or not matches_digest(data, digest):
        return Reason.SIGNATURE_INVALID
    return data
