"""Manifests by tag: the cached record while it is fresh, else the upstream, else a stand-in.

A tag record maps (upstream, repository, tag, Accept variant) to the digest
the upstream last answered (:mod:`mirror.proxy.tag_records`). The rules of
when it is trusted, revalidated or served stale are
:class:`mirror.proxy.freshness.FreshnessPolicy`'s; this module applies them:

1. a fresh record answers at once (its manifest comes from
   :class:`mirror.proxy.manifests.ManifestStore`, fetched by digest if evicted);
2. otherwise one request per (tag, variant, HEAD or GET) at a time asks the
   upstream: ``HEAD`` first when the policy says so, a ``GET`` when the tag
   moved or the client needs the body;
3. when that fails, the record of this variant, or the newest of any
   variant the client takes, stands in where the policy allows.

A client is served only a media type its ``Accept`` names (404
``MANIFEST_UNKNOWN`` otherwise, as distribution answers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from mirror.accept import VARIANT_TYPES, Accepted
from mirror.errors import ManifestUnknown, MirrorError
from mirror.manifest_check import media_type_of
from mirror.oci import MANIFEST_MEDIA_TYPES, parse_digest
from mirror.proxy.flight import SingleFlight
from mirror.proxy.freshness import FreshnessPolicy, stale_warning
from mirror.proxy.manifests import ManifestAnswer, ManifestStore
from mirror.proxy.tag_records import TagRecords
from mirror.routing import Target
from mirror.stored import TagRecord
from mirror.upstream.base import ManifestHead

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TagRequest:
    """One client's question about a tag: which manifest, for which Accept, HEAD or GET."""

    target: Target
    tag: str
    accepted: Accepted
    head: bool

    @property
    def variant(self) -> str:
        """The Accept variant the records and the upstream request are made for."""
        return self.accepted.variant

    @property
    def flight_key(self) -> tuple[str, str, str, str, bool]:
        """Requests that the same upstream answer serves."""
        upstream = self.target.upstream.name
        return (upstream, self.target.repository, self.tag, self.variant, self.head)


class TagService:
    """Answers manifest requests by tag."""

    def __init__(
        self,
        records: TagRecords,
        manifests: ManifestStore,
        policies: Mapping[str, FreshnessPolicy],
    ) -> None:
        self._records = records
        self._manifests = manifests
        self._policies = policies  # by upstream name
        self._flight: SingleFlight[tuple[str, str, str, str, bool], ManifestAnswer] = SingleFlight()

    async def close(self) -> None:
        """Cancel upstream requests still running (at shutdown)."""
        await self._flight.close()

    async def manifest(self, request: TagRequest) -> ManifestAnswer:
        """The manifest the tag points to, of a type the client takes."""
        answer = await self._answer(request)
        if not request.accepted.allows(answer.media_type):
            raise ManifestUnknown(
                f"tag {request.tag!r} is a {answer.media_type}, which the request's Accept "
                "does not list"
            )
        return answer

    async def _answer(self, request: TagRequest) -> ManifestAnswer:
        policy = self._policies[request.target.upstream.name]
        record = await self._record(request)
        if record is not None and policy.is_fresh(record.checked):
            return await self._from_record(request, record, "hit")
        try:
            return await self._flight.run(
                request.flight_key, lambda: self._refresh(request, record)
            )
        except MirrorError as error:
            stand_in = await self._stand_in(request, record, error, policy)
            if stand_in is None:
                raise
            return stand_in

    async def _refresh(self, request: TagRequest, record: TagRecord | None) -> ManifestAnswer:
        """Ask the upstream what the tag points to now (HEAD first when the policy says so)."""
        target = request.target
        policy = self._policies[target.upstream.name]
        accept = VARIANT_TYPES[request.variant]
        if policy.head_first(known=record is not None, head=request.head):
            found = await target.upstream.head_manifest(target.repository, request.tag, accept)
            new = _record_from_head(found)
            if new is not None and request.head and (record is None or new.digest != record.digest):
                await self._save(request, new)
                return ManifestAnswer(new.digest, new.media_type, new.size, None, "miss")
            if record is not None and found.digest == record.digest:
                renewed = TagRecord(record.digest, record.media_type, record.size, time.time())
                await self._save(request, renewed)
                return await self._from_record(request, renewed, "revalidated")
        fetched = await self._manifests.fetch(target, request.tag, accept, None)
        stored = fetched.stored
        await self._save(
            request, TagRecord(fetched.digest, stored.media_type, len(stored.body), time.time())
        )
        return _sent(request, ManifestAnswer.of(fetched.digest, stored, "miss"))

    async def _from_record(
        self, request: TagRequest, record: TagRecord, result: str
    ) -> ManifestAnswer:
        """Answer from a record; its manifest is fetched by digest if it was evicted."""
        if request.head:
            return ManifestAnswer(record.digest, record.media_type, record.size, None, result)
        digest = parse_digest(record.digest)
        stored = await self._manifests.cached(request.target.upstream.name, digest)
        if stored is None:
            stored = await self._manifests.fetch_by_digest(request.target, digest)
        return ManifestAnswer.of(record.digest, stored, result)

    async def _stand_in(
        self,
        request: TagRequest,
        record: TagRecord | None,
        error: MirrorError,
        policy: FreshnessPolicy,
    ) -> ManifestAnswer | None:
        """The last known manifest in the upstream's place, where the policy allows it."""
        target = request.target
        record = record or await self._records.last_known(
            target.upstream.name, target.repository, request.tag, request.accepted
        )
        result = policy.stand_in(error, record.checked) if record is not None else None
        if record is None or result is None:
            return None
        stored = await self._manifests.cached(target.upstream.name, parse_digest(record.digest))
        if stored is None and not request.head:
            return None
        body = stored.body if stored is not None and not request.head else None
        if result == "hit":
            return ManifestAnswer(record.digest, record.media_type, record.size, body, result)
        log.warning(
            "serving stale %s/%s:%s (%s, last confirmed %.0fs ago): upstream failed: %s",
            target.upstream.name, target.repository, request.tag, record.digest, record.age(),
            error,
        )  # fmt: skip
        warning = stale_warning(error, "manifest", record.checked)
        return ManifestAnswer(record.digest, record.media_type, record.size, body, result, warning)

    async def _record(self, request: TagRequest) -> TagRecord | None:
        target = request.target
        return await self._records.get(
            target.upstream.name, target.repository, request.tag, request.variant
        )

    async def _save(self, request: TagRequest, record: TagRecord) -> None:
        target = request.target
        await self._records.put(
            target.upstream.name, target.repository, request.tag, request.variant, record
        )


def _sent(request: TagRequest, answer: ManifestAnswer) -> ManifestAnswer:
    """``answer`` without its body when the client asked ``HEAD``."""
    if not request.head or answer.body is None:
        return answer
    return ManifestAnswer(answer.digest, answer.media_type, answer.size, None, answer.result)


def _record_from_head(found: ManifestHead) -> TagRecord | None:
    """A tag record from a HEAD answer that names a manifest type, a valid digest and a size.

    Anything less (a generic or foreign ``Content-Type``, no digest) is no
    record: the GET that follows gets the body and checks it.
    """
    media_type = media_type_of(found.media_type)
    if found.digest is None or found.size is None or media_type not in MANIFEST_MEDIA_TYPES:
        return None
    try:
        digest = parse_digest(found.digest)
    except MirrorError:
        return None
    return TagRecord(str(digest), media_type, found.size, time.time())
