"""Manifests by digest: the cache first, else one upstream GET however many clients ask.

A manifest is stored by digest, with its media type, in one object
(:mod:`mirror.stored`). Digests are immutable: a cached manifest is served
until evicted, whatever the client's ``Accept`` (the digest names the
content), and the upstream is asked for every known type, so the cached copy
serves every later client.

Nothing is stored or served unchecked: an upstream answer must be a manifest
(:mod:`mirror.manifest_check`) and match its digest; a cached copy is checked
again on every read, and one that no longer matches its digest or is no
manifest (an older version may have cached an HTML page) is deleted and
fetched again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import LRUCache

from mirror.accept import ALL_TYPES
from mirror.errors import DigestMismatch, ManifestRejected, MirrorError
from mirror.manifest_check import check_manifest_off_loop
from mirror.metrics import Metrics
from mirror.oci import Digest, parse_digest, sha256_digest
from mirror.proxy.cache_io import CacheIO
from mirror.proxy.flight import SingleFlight
from mirror.routing import Target
from mirror.storage import layout
from mirror.storage.base import Storage
from mirror.stored import StoredManifest, decode_manifest

log = logging.getLogger(__name__)

_CHECKED_KEYS = 100_000  # about 15 MB of keys at most


@dataclass(frozen=True, slots=True)
class ManifestAnswer:
    """A manifest for the client; ``body`` is None for answers made for a HEAD only."""

    digest: str
    media_type: str
    size: int
    body: bytes | None
    result: str  # hit, miss, stale, revalidated
    warning: str | None = None

    @classmethod
    def of(cls, digest: str, stored: StoredManifest, result: str) -> ManifestAnswer:
        """The answer that sends ``stored`` whole."""
        return cls(digest, stored.media_type, len(stored.body), stored.body, result)


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """A manifest the upstream sent, checked, verified and cached."""

    digest: str
    stored: StoredManifest


class ManifestStore:
    """Reads, writes and fetches manifests by digest."""

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self._cache = CacheIO(storage)
        self._metrics = metrics
        self._flight: SingleFlight[tuple[str, str], StoredManifest] = SingleFlight()
        # Key -> media type of manifests that passed the check in this process:
        # a hit on them re-checks the digest only, not the (costlier) structure.
        self._checked: LRUCache[str, str] = LRUCache(maxsize=_CHECKED_KEYS)

    async def close(self) -> None:
        """Cancel upstream fetches still running (at shutdown)."""
        await self._flight.close()

    async def get(self, target: Target, digest: Digest) -> ManifestAnswer:
        """The manifest ``digest``: cached (``hit``), else fetched once (``miss``)."""
        stored = await self.cached(target.upstream.name, digest)
        if stored is not None:
            return ManifestAnswer.of(str(digest), stored, "hit")
        return ManifestAnswer.of(str(digest), await self.fetch_by_digest(target, digest), "miss")

    async def fetch_by_digest(self, target: Target, digest: Digest) -> StoredManifest:
        """GET a manifest by digest upstream, once however many ask at the same time."""
        return await self._flight.run(
            (target.upstream.name, str(digest)),
            lambda: self._fetch_stored(target, digest),
        )

    async def _fetch_stored(self, target: Target, digest: Digest) -> StoredManifest:
        return (await self.fetch(target, str(digest), ALL_TYPES, digest)).stored

    async def fetch(
        self, target: Target, reference: str, accept: Sequence[str], expected: Digest | None
    ) -> FetchedManifest:
        """GET a manifest upstream, check that it is one and matches its digest, cache it."""
        upstream = target.upstream
        got = await upstream.get_manifest(target.repository, reference, accept)
        # ManifestRejected goes up: a 502, or a stale answer, each logged once there.
        media_type = await check_manifest_off_loop(got.body, got.media_type)
        digest = _verified_digest(got.body, got.digest, expected)
        if digest is None:
            self._metrics.digest_mismatch("manifest")
            raise DigestMismatch(f"upstream manifest {reference} does not match its digest")
        stored = StoredManifest(media_type, got.body)
        await self._put(upstream.name, digest, stored)
        return FetchedManifest(str(digest), stored)

    async def cached(self, upstream: str, digest: Digest) -> StoredManifest | None:
        """A cached manifest whose bytes still hash to ``digest`` and still pass the check."""
        key = layout.manifest_key(upstream, digest)
        raw = await self._cache.get(key)
        if raw is None:
            return None
        stored = decode_manifest(raw)
        if stored is None or not digest.matches(stored.body):
            # Never serve a damaged entry: drop it and let the caller re-fetch.
            log.warning("cached manifest %s is damaged; discarding it", digest)
            self._metrics.digest_mismatch("manifest")
            await self._cache.delete(key)
            return None
        if self._checked.get(key) == stored.media_type:
            return stored
        try:
            checked = await check_manifest_off_loop(stored.body, stored.media_type)
        except ManifestRejected as exc:
            log.warning("cached manifest %s is not a manifest (%s); discarding it", digest,
                        exc.reason)  # fmt: skip
            await self._cache.delete(key)
            return None
        self._checked[key] = checked
        return StoredManifest(checked, stored.body)

    async def _put(self, upstream: str, digest: Digest, stored: StoredManifest) -> None:
        """Cache a manifest already checked, and verified against ``digest``."""
        key = layout.manifest_key(upstream, digest)
        await self._cache.put(key, stored.encode())
        self._checked[key] = stored.media_type


def _verified_digest(body: bytes, header: str | None, expected: Digest | None) -> Digest | None:
    """The digest of ``body`` if it agrees with what was asked and announced, else None."""
    if expected is not None:
        return expected if expected.matches(body) else None
    if header:
        try:
            announced = parse_digest(header)
        except MirrorError:
            announced = None
        if announced is not None:
            return announced if announced.matches(body) else None
    return sha256_digest(body)
