"""Signatures read through the pull-through stores: the verifier's :class:`SignatureSource`.

Everything the verifier reads (cosign's ``.sig`` manifests and payload
blobs, sigstore bundle referrers and their blobs) goes through the same
stores as a client's pull: cached on the way, checked against its digest,
answered from the cache offline. So an image verified once online can be
verified again offline, and a signature costs one upstream fetch however
many pulls need it.

What a store says maps onto the protocol's three answers: content, ``None``
(the upstream or the offline cache has no such thing), or
:class:`~mirror.trust.source.SignatureSourceUnavailable` (the upstream
failed, so nobody can tell).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from mirror.accept import ANY
from mirror.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    NotCachedOffline,
)
from mirror.oci import parse_digest
from mirror.proxy.blobs import BlobSource, BlobStore, CachedFile, Following, StoredBlob
from mirror.proxy.manifests import ManifestStore
from mirror.proxy.referrers import Referrers
from mirror.proxy.tag_records import TagRecords
from mirror.proxy.tags import TagRequest, TagService
from mirror.routing import Target
from mirror.trust.source import SignatureSourceUnavailable

__all__ = ["CachedSignatures", "ProxySignatures", "SignatureStores"]

T = TypeVar("T")

# What "there is no such thing" looks like, from the upstream or an offline cache.
_ABSENT = (ManifestUnknown, BlobUnknown, NameUnknown, NotCachedOffline, DigestInvalid)


@dataclass(frozen=True, slots=True)
class SignatureStores:
    """The proxy's stores the signature source reads through.

    ``blobs`` must not answer with redirects: the mirror reads the bytes itself.
    """

    tags: TagService
    manifests: ManifestStore
    blobs: BlobStore
    referrers: Referrers
    records: TagRecords


class ProxySignatures:
    """A :class:`~mirror.trust.source.SignatureSource` over one upstream's stores."""

    def __init__(self, target: Target, stores: SignatureStores) -> None:
        self._target = target
        self._stores = stores

    async def tagged_manifest(self, repository: str, tag: str) -> bytes | None:
        """The manifest a tag points at, as a client's pull by tag would get it."""
        request = TagRequest(self._at(repository), tag, ANY, head=False)
        answer = await _guarded(self._stores.tags.manifest(request))
        return answer.body if answer is not None else None

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The referrers index the referrers endpoint would answer (empty if none are known)."""
        answer = await _guarded(
            self._stores.referrers.answer(self._at(repository), parse_digest(digest))
        )
        return list(answer.descriptors) if answer is not None else []

    async def manifest(self, repository: str, digest: str) -> bytes | None:
        """A manifest by digest: cached, else fetched and cached."""
        try:
            parsed = parse_digest(digest)
        except DigestInvalid:
            return None
        answer = await _guarded(self._stores.manifests.get(self._at(repository), parsed))
        return answer.body if answer is not None else None

    async def blob(self, repository: str, digest: str, max_size: int) -> bytes | None:
        """A small blob: cached, else downloaded (and cached) like a client's pull."""
        try:
            parsed = parse_digest(digest)
        except DigestInvalid:
            return None
        source = await _guarded(self._stores.blobs.get(self._at(repository), parsed))
        if source is None:
            return None
        return await _guarded(_read_whole(source, max_size))

    def _at(self, repository: str) -> Target:
        target = self._target
        return Target(target.upstream, repository, target.namespace)


class CachedSignatures:
    """A :class:`~mirror.trust.source.SignatureSource` of what the cache holds: it asks nobody.

    For reports (``/admin/cache``): reading never starts a download or an
    upstream request, and what is not cached does not exist.
    """

    def __init__(self, target: Target, stores: SignatureStores) -> None:
        self._target = target
        self._stores = stores

    async def tagged_manifest(self, repository: str, tag: str) -> bytes | None:
        """The manifest of the tag's newest record, if cached."""
        upstream = self._target.upstream.name
        record = await self._stores.records.last_known(upstream, repository, tag, ANY)
        return await self._manifest(record.digest) if record is not None else None

    async def referrers(self, repository: str, digest: str) -> list[dict[str, Any]]:
        """The referrers index kept for ``digest`` (empty when none is)."""
        try:
            parsed = parse_digest(digest)
        except DigestInvalid:
            return []
        return await self._stores.referrers.cached(self._target.upstream.name, repository, parsed)

    async def manifest(self, repository: str, digest: str) -> bytes | None:
        """A cached manifest."""
        return await self._manifest(digest)

    async def blob(self, repository: str, digest: str, max_size: int) -> bytes | None:
        """A cached blob of at most ``max_size`` bytes."""
        try:
            parsed = parse_digest(digest)
        except DigestInvalid:
            return None
        source = await self._stores.blobs.cached(self._target, parsed)
        return await _guarded(_read_whole(source, max_size)) if source is not None else None

    async def _manifest(self, digest: str) -> bytes | None:
        try:
            parsed = parse_digest(digest)
        except DigestInvalid:
            return None
        stored = await self._stores.manifests.cached(self._target.upstream.name, parsed)
        return stored.body if stored is not None else None


async def _guarded(call: Awaitable[T]) -> T | None:
    """``call``'s answer; ``None`` when there is no such thing; unavailable on other failures."""
    try:
        return await call
    except _ABSENT:
        return None
    except MirrorError as exc:
        raise SignatureSourceUnavailable(str(exc)) from exc


async def _read_whole(source: BlobSource, max_size: int) -> bytes | None:
    """All of a blob's bytes, or ``None`` past ``max_size`` (nothing more is read)."""
    if isinstance(source, CachedFile):
        with source:
            return await _whole(source.chunks(0, source.size), source.size, max_size)
    if isinstance(source, StoredBlob):
        return await _whole(source.chunks(0, source.size), source.size, max_size)
    if isinstance(source, Following):
        return await _followed(source, max_size)
    raise SignatureSourceUnavailable("the blob store answered with a redirect")


async def _whole(chunks: AsyncIterator[bytes], size: int, max_size: int) -> bytes | None:
    """A cached blob, read only when it is small enough."""
    if size > max_size:
        return None
    return b"".join([chunk async for chunk in chunks])


async def _followed(source: Following, max_size: int) -> bytes | None:
    """A blob being downloaded: the last byte comes only once the whole blob matched its digest."""
    if source.size is not None and source.size > max_size:
        return None
    follower = source.follow(0, None, _ignore_cut)  # a failed download raises in the loop
    parts: list[bytes] = []
    total = 0
    try:
        async for chunk in follower:
            total += len(chunk)
            if total > max_size:
                return None
            parts.append(chunk)
    finally:
        await follower.aclose()
    return b"".join(parts)


def _ignore_cut(reason: MirrorError) -> None:
    """Nothing to cut: the follower raises the download's error itself."""
