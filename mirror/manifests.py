"""Manifests and tag records in storage.

A manifest is stored by digest as ``b"<media type>\\n" + body`` in one object,
so its media type can never be lost apart from it. A tag record maps
(upstream, repository, tag, Accept variant) to the digest the upstream
last answered, with the wall-clock time it was last confirmed.

What is read back is checked as carefully as what came from the upstream:
a manifest whose bytes no longer match its digest, or that is not a valid
manifest (:mod:`mirror.manifest_check`; an older version may have cached
an HTML page), is deleted and fetched again; a tag record that does not
parse, or names a type that is not a manifest type, is ignored.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TypeGuard

from cachetools import LRUCache

from mirror.accept import Accepted
from mirror.errors import ManifestRejected, MirrorError
from mirror.manifest_check import check_manifest_off_loop
from mirror.metrics import Metrics
from mirror.oci import MANIFEST_MEDIA_TYPES, Digest, parse_digest
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError

log = logging.getLogger(__name__)

_LATEST_TIME = 2**53  # a record's "checked" beyond this is not a time (nor a float)
_CHECKED_KEYS = 100_000  # about 15 MB of keys at most


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest's bytes with its media type."""

    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class TagRecord:
    """What a tag pointed to when the upstream was last asked."""

    digest: str
    media_type: str
    size: int
    checked: float  # wall-clock seconds, so it survives restarts

    def age(self, now: float | None = None) -> float:
        """Seconds since the upstream last confirmed this record."""
        return (time.time() if now is None else now) - self.checked


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
        media_type, sep, body = raw.partition(b"\n")
        if not sep or not digest.matches(body):
            # Never serve a damaged entry: drop it and let the caller re-fetch.
            log.warning("cached manifest %s is damaged; discarding it", digest)
            self._metrics.digest_mismatch("manifest")
            await self._delete(key)
            return None
        stored_type = media_type.decode("ascii", "replace")
        if self._checked.get(key) == stored_type:
            return StoredManifest(stored_type, body)
        try:
            checked = await check_manifest_off_loop(body, stored_type)
        except ManifestRejected as exc:
            log.warning("cached manifest %s is not a manifest (%s); discarding it", digest,
                        exc.reason)  # fmt: skip
            await self._delete(key)
            return None
        self._checked[key] = checked
        return StoredManifest(checked, body)

    async def put_manifest(
        self, upstream: str, digest: Digest, media_type: str, body: bytes
    ) -> None:
        """Cache a manifest already checked, and verified against ``digest``."""
        data = media_type.encode() + b"\n" + body
        key = layout.manifest_key(upstream, digest)
        await self._put(key, data)
        self._checked[key] = media_type

    async def get_tag(
        self, upstream: str, repository: str, tag: str, variant: str
    ) -> TagRecord | None:
        """The record for this Accept variant."""
        raw = await self._get(layout.tag_key(upstream, repository, tag, variant))
        return _parse_record(raw) if raw is not None else None

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
                record = _parse_record(raw) if raw is not None else None
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
        data = json.dumps(asdict(record)).encode()
        await self._put(layout.tag_key(upstream, repository, tag, variant), data)

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


def _parse_record(raw: bytes) -> TagRecord | None:
    """A record as written by :meth:`ManifestStore.put_tag`; None for anything else."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    digest, media_type = doc.get("digest"), doc.get("media_type")
    size, checked = doc.get("size"), doc.get("checked")
    if not isinstance(digest, str) or not _is_digest(digest):
        return None
    if not isinstance(media_type, str) or media_type not in MANIFEST_MEDIA_TYPES:
        return None
    if not _is_number(size) or not _is_number(checked) or not isinstance(size, int):
        return None
    return TagRecord(digest, media_type, size, float(checked))


def _is_number(value: object) -> TypeGuard[int | float]:
    """A JSON number from 0 up to :data:`_LATEST_TIME` (``true`` is no number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value < _LATEST_TIME


def _is_digest(value: str) -> bool:
    try:
        parse_digest(value)
    except MirrorError:
        return False
    return True
