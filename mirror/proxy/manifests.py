"""Manifests and tag records in storage.

A manifest is stored by digest, with its media type, in one object. A tag
record maps (upstream, repository, tag, Accept variant) to the digest the
upstream last answered, with the wall-clock time it was last confirmed.
Both formats are :mod:`mirror.stored`'s.

What is read back is checked as carefully as what came from the upstream:
a manifest whose bytes no longer match its digest, or that is not a valid
manifest (:mod:`mirror.manifest_check`; an older version may have cached
an HTML page), is deleted and fetched again; a tag record that does not
parse, or names a type that is not a manifest type, is ignored.
"""

from __future__ import annotations

import logging

from cachetools import LRUCache

from mirror.accept import Accepted
from mirror.errors import ManifestRejected
from mirror.manifest_check import check_manifest_off_loop
from mirror.metrics import Metrics
from mirror.oci import Digest
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError
from mirror.stored import StoredManifest, TagRecord, decode_manifest, decode_record

log = logging.getLogger(__name__)

_CHECKED_KEYS = 100_000  # about 15 MB of keys at most


class ManifestStore:
    """Reads and writes manifests and tag records; storage failures are logged, not raised."""

    def __init__(self, storage: Storage, metrics: Metrics) -> None:
        self._storage = storage
        self._metrics = metrics
        # Key -> media type of manifests that passed the check in this process:
        # a hit on them re-checks the digest only, not the (costlier) structure.
        self._checked: LRUCache[str, str] = LRUCache(maxsize=_CHECKED_KEYS)

    async def get_manifest(self, upstream: str, digest: Digest) -> StoredManifest | None:
        """A cached manifest whose bytes still hash to ``digest`` and still pass the check."""
        key = layout.manifest_key(upstream, digest)
        raw = await self._get(key)
        if raw is None:
            return None
        stored = decode_manifest(raw)
        if stored is None or not digest.matches(stored.body):
            # Never serve a damaged entry: drop it and let the caller re-fetch.
            log.warning("cached manifest %s is damaged; discarding it", digest)
            self._metrics.digest_mismatch("manifest")
            await self._delete(key)
            return None
        if self._checked.get(key) == stored.media_type:
            return stored
        try:
            checked = await check_manifest_off_loop(stored.body, stored.media_type)
        except ManifestRejected as exc:
            log.warning("cached manifest %s is not a manifest (%s); discarding it", digest,
                        exc.reason)  # fmt: skip
            await self._delete(key)
            return None
        self._checked[key] = checked
        return StoredManifest(checked, stored.body)

    async def put_manifest(
        self, upstream: str, digest: Digest, media_type: str, body: bytes
    ) -> None:
        """Cache a manifest already checked, and verified against ``digest``."""
        key = layout.manifest_key(upstream, digest)
        await self._put(key, StoredManifest(media_type, body).encode())
        self._checked[key] = media_type

    async def get_tag(
        self, upstream: str, repository: str, tag: str, variant: str
    ) -> TagRecord | None:
        """The record for this Accept variant."""
        raw = await self._get(layout.tag_key(upstream, repository, tag, variant))
        return decode_record(raw) if raw is not None else None

    async def any_tag(
        self, upstream: str, repository: str, tag: str, accepted: Accepted
    ) -> TagRecord | None:
        """The newest record of the tag, for any Accept variant, that this client can take.

        Used when the upstream cannot be asked (offline, or down) and this
        variant was never seen. Records written by older versions count too.
        """
        best: TagRecord | None = None
        try:
            async for info in self._storage.walk(layout.tag_prefix(upstream, repository, tag)):
                # The prefix also covers deeper repositories (repository/tag/...).
                if layout.parse_tag_key(info.key) != (upstream, repository, tag):
                    continue
                raw = await self._get(info.key)
                record = decode_record(raw) if raw is not None else None
                if record is None or not accepted.allows(record.media_type):
                    continue
                if best is None or record.checked > best.checked:
                    best = record
        except StorageError as exc:
            self._failed("walk", exc)
        return best

    async def put_tag(
        self, upstream: str, repository: str, tag: str, variant: str, record: TagRecord
    ) -> None:
        """Remember what the tag points to now."""
        await self._put(layout.tag_key(upstream, repository, tag, variant), record.encode())

    async def known_tags(self, upstream: str, repository: str) -> list[str]:
        """Every tag of a repository that has a record (for offline tag lists)."""
        tags: set[str] = set()
        try:
            async for info in self._storage.walk(layout.tag_prefix(upstream, repository)):
                parsed = layout.parse_tag_key(info.key)
                if parsed is not None and parsed[1] == repository:
                    tags.add(parsed[2])
        except StorageError as exc:
            self._failed("walk", exc)
        return sorted(tags)

    async def _get(self, key: str) -> bytes | None:
        try:
            with self._metrics.storage_timer(self._storage.backend, "get"):
                return await self._storage.get(key)
        except StorageError as exc:
            self._failed("get", exc)
            return None

    async def _put(self, key: str, data: bytes) -> None:
        try:
            with self._metrics.storage_timer(self._storage.backend, "put"):
                await self._storage.put(key, data)
        except StorageError as exc:
            self._failed("put", exc)

    async def _delete(self, key: str) -> None:
        try:
            with self._metrics.storage_timer(self._storage.backend, "delete"):
                await self._storage.delete(key)
        except StorageError as exc:
            self._failed("delete", exc)

    def _failed(self, action: str, exc: StorageError) -> None:
        log.warning("storage %s failed: %s", action, exc)
        self._metrics.storage_error(self._storage.backend, action)
