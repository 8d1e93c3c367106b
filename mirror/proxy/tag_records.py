"""Tag records in the cache: what each tag pointed to when the upstream was last asked.

A record maps (upstream, repository, tag, Accept variant) to a digest, a
media type, a size and the time the upstream last confirmed it
(:class:`mirror.stored.TagRecord`). A record that does not parse, or names a
type that is not a manifest type, is ignored.
"""

from __future__ import annotations

from mirror.accept import Accepted
from mirror.proxy.cache_io import CacheIO
from mirror.storage import layout
from mirror.storage.base import Storage
from mirror.stored import TagRecord, decode_record


class TagRecords:
    """Reads and writes tag records; storage failures are logged, not raised."""

    def __init__(self, storage: Storage) -> None:
        self._cache = CacheIO(storage)

    async def get(self, upstream: str, repository: str, tag: str, variant: str) -> TagRecord | None:
        """The record of this Accept variant."""
        return await self._read(layout.tag_key(upstream, repository, tag, variant))

    async def put(
        self, upstream: str, repository: str, tag: str, variant: str, record: TagRecord
    ) -> None:
        """Remember what the tag points to now."""
        await self._cache.put(layout.tag_key(upstream, repository, tag, variant), record.encode())

    async def last_known(
        self, upstream: str, repository: str, tag: str, accepted: Accepted
    ) -> TagRecord | None:
        """The newest record of the tag, for any Accept variant, that this client can take.

        Used when the upstream cannot be asked (offline, or down) and this
        variant was never seen. Records written by older versions count too.
        """
        best: TagRecord | None = None
        async for info in self._cache.walk(layout.tag_prefix(upstream, repository, tag)):
            # The prefix also covers deeper repositories (repository/tag/...).
            if layout.parse_tag_key(info.key) != (upstream, repository, tag):
                continue
            record = await self._read(info.key)
            if record is None or not accepted.allows(record.media_type):
                continue
            if best is None or record.checked > best.checked:
                best = record
        return best

    async def known_tags(self, upstream: str, repository: str) -> dict[str, float]:
        """Every tag of a repository with a readable record, and when it was last confirmed."""
        confirmed: dict[str, float] = {}
        async for info in self._cache.walk(layout.tag_prefix(upstream, repository)):
            parsed = layout.parse_tag_key(info.key)
            if parsed is None or parsed[:2] != (upstream, repository):
                continue  # a record of a deeper repository
            record = await self._read(info.key)
            if record is not None:
                tag = parsed[2]
                confirmed[tag] = max(record.checked, confirmed.get(tag, 0.0))
        return confirmed

    async def _read(self, key: str) -> TagRecord | None:
        raw = await self._cache.get(key)
        return decode_record(raw) if raw is not None else None
