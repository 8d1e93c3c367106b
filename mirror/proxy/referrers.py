"""Referrers: the manifests that name an image as their ``subject``, kept in the cache.

``GET /v2/<name>/referrers/<digest>`` is always an OCI image index (OCI
distribution spec 1.1), never a 404: an empty one when nothing is known.
It is filled from the upstream's referrers API when it answers with an
index, else from the tag schema cosign and the spec's fallback use:

* ``sha256-<hex>``: the referrers fallback tag, an index of referrers;
* ``sha256-<hex>.sig``, ``.att``, ``.sbom``: cosign's signatures,
  attestations and SBOMs, each one manifest (its ``artifactType``, or else
  its config's media type, is the descriptor's ``artifactType``).

Those tags are read through :class:`~mirror.proxy.tags.TagService`, so
their manifests are cached like any other, with tag records of their own.

The list is kept as an image index stored like a manifest, under a tag
record of the variant ``referrers`` of the fallback tag: the freshness rules
are the tags' (:class:`~mirror.proxy.freshness.FreshnessPolicy`). Within
``tag_ttl`` the record answers; after it the upstream is asked again (the
tags of the schema are revalidated with a ``HEAD``); if that fails the
record stands in with a ``Warning``. With no usable record and an upstream
that is down, or offline, the answer is what the cache holds of the tag
schema, possibly nothing, with a ``Warning`` that it may be incomplete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mirror.accept import ANY
from mirror.errors import (
    ManifestRejected,
    ManifestUnknown,
    MirrorError,
    NameUnknown,
    NotCachedOffline,
    is_retryable_upstream,
)
from mirror.oci import INDEX_MEDIA_TYPES, OCI_INDEX, Digest, parse_digest
from mirror.proxy.flight import SingleFlight
from mirror.proxy.freshness import FreshnessPolicy, stale_warning
from mirror.proxy.manifests import ManifestStore
from mirror.proxy.tag_records import TagRecords
from mirror.proxy.tags import TagRequest, TagService
from mirror.routing import Target
from mirror.stored import StoredManifest, TagRecord
from mirror.stored_referrers import (
    MAX_REFERRERS,
    REFERRERS_VARIANT,
    descriptors_of,
    fallback_tag,
    index_body,
    is_fallback_tag,
    json_object,
    referrer_descriptor,
    valid_descriptors,
)

__all__ = [
    "MAX_REFERRERS",
    "REFERRERS_VARIANT",
    "Referrers",
    "ReferrersAnswer",
    "fallback_tag",
    "is_fallback_tag",
]

log = logging.getLogger(__name__)

#: cosign's tags beside the fallback tag: signatures, attestations, SBOMs
COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
# An upstream that answers the referrers API with one of these has no such API.
_NO_API = (ManifestUnknown, NameUnknown)


@dataclass(frozen=True, slots=True)
class ReferrersAnswer:
    """The referrers of one subject, and where they came from."""

    descriptors: tuple[dict[str, Any], ...]
    result: str  # hit, miss, revalidated, stale
    warning: str | None = None

    def index(self, artifact_type: str | None = None) -> bytes:
        """The image index a client gets, filtered by ``artifact_type`` when given."""
        entries = [
            d
            for d in self.descriptors
            if artifact_type is None or d.get("artifactType") == artifact_type
        ]
        return index_body(entries)


class Referrers:
    """Answers referrers requests from the cache, filled from the upstream."""

    def __init__(
        self,
        records: TagRecords,
        manifests: ManifestStore,
        tags: TagService,
        policies: Mapping[str, FreshnessPolicy],
    ) -> None:
        self._records = records
        self._manifests = manifests
        self._tags = tags
        self._policies = policies  # by upstream name
        self._flight: SingleFlight[tuple[str, str, str], ReferrersAnswer] = SingleFlight()

    async def close(self) -> None:
        """Cancel upstream requests still running (at shutdown)."""
        await self._flight.close()

    async def answer(self, target: Target, digest: Digest) -> ReferrersAnswer:
        """The referrers of ``digest``: cached while fresh, else asked for, else what is known."""
        policy = self._policies[target.upstream.name]
        record = await self._record(target, digest)
        kept = await self._kept(target, record)
        if record is not None and kept is not None and policy.is_fresh(record.checked):
            return ReferrersAnswer(kept, "hit")
        key = (target.upstream.name, target.repository, str(digest))
        try:
            return await self._flight.run(key, lambda: self._refresh(target, digest, record))
        except MirrorError as error:
            if not (is_retryable_upstream(error) or isinstance(error, NotCachedOffline)):
                raise  # a refusal (403, a refused redirect): the operator must see it
            return await self._stand_in(target, digest, record, kept, error, policy)

    async def cached(self, upstream: str, repository: str, digest: Digest) -> list[dict[str, Any]]:
        """The referrers the cache holds for ``digest`` (asks nobody; empty if none are known)."""
        record = await self._records.get(
            upstream, repository, fallback_tag(str(digest)), REFERRERS_VARIANT
        )
        if record is None:
            return []
        stored = await self._manifests.cached(upstream, parse_digest(record.digest))
        return list(descriptors_of(stored.body)) if stored is not None else []

    async def _refresh(
        self, target: Target, digest: Digest, record: TagRecord | None
    ) -> ReferrersAnswer:
        found = await self._from_api(target, digest)
        if found is None:
            found = await self._from_tags(target, digest)
        body = index_body(list(found))
        stored = await self._manifests.keep(target.upstream.name, StoredManifest(OCI_INDEX, body))
        await self._records.put(
            target.upstream.name, target.repository, fallback_tag(str(digest)), REFERRERS_VARIANT,
            TagRecord(str(stored), OCI_INDEX, len(body), time.time()),
        )  # fmt: skip
        same = record is not None and record.digest == str(stored)
        return ReferrersAnswer(found, "revalidated" if same else "miss")

    async def _from_api(self, target: Target, digest: Digest) -> tuple[dict[str, Any], ...] | None:
        """The upstream's referrers API answer; ``None`` when it has no such API."""
        try:
            listing = await target.upstream.referrers(target.repository, str(digest), {})
        except _NO_API:
            return None
        if listing.status != 200:
            return None  # 2xx without an index: no API worth the name
        doc = json_object(listing.body)
        if doc is None or not isinstance(doc.get("manifests"), list):
            raise ManifestRejected("the upstream's referrers answer is not an image index")
        return valid_descriptors(doc["manifests"])

    async def _from_tags(self, target: Target, digest: Digest) -> tuple[dict[str, Any], ...]:
        """Descriptors from the referrers fallback tag and cosign's tags (absent ones skipped).

        The four tags are asked for at once: a cold verification waits for
        one round trip, not four.
        """
        base = fallback_tag(str(digest))
        tags = (base, *(base + suffix for suffix in COSIGN_SUFFIXES))
        answers = await asyncio.gather(
            *(self._tags.manifest(TagRequest(target, tag, ANY, head=False)) for tag in tags),
            return_exceptions=True,
        )
        found: list[dict[str, Any]] = []
        for tag, answer in zip(tags, answers, strict=True):
            if isinstance(answer, _NO_API):
                continue
            if isinstance(answer, BaseException):
                raise answer
            if answer.body is not None:
                found += _from_tagged(tag == base, answer.digest, answer.media_type, answer.body)
        return _unique(found)

    async def _stand_in(
        self,
        target: Target,
        digest: Digest,
        record: TagRecord | None,
        kept: tuple[dict[str, Any], ...] | None,
        error: MirrorError,
        policy: FreshnessPolicy,
    ) -> ReferrersAnswer:
        """What the cache knows, in the place of an upstream that failed (or of none, offline)."""
        result = policy.stand_in(error, record.checked) if record is not None else None
        if record is not None and kept is not None and result is not None:
            if result == "hit":
                return ReferrersAnswer(kept, "hit")
            return ReferrersAnswer(kept, "stale", stale_warning(error, "referrers", record.checked))
        known = await self._known_from_tags(target, digest)
        log.info("referrers of %s/%s@%s from the cache only (%d): %s", target.upstream.name,
                 target.repository, digest, len(known), error)  # fmt: skip
        warning = f'299 - "referrers may be incomplete: upstream not asked ({error.code})"'
        return ReferrersAnswer(known, "stale", warning)

    async def _known_from_tags(self, target: Target, digest: Digest) -> tuple[dict[str, Any], ...]:
        """The tag schema as the cache holds it: the newest record of each tag, if cached."""
        base = fallback_tag(str(digest))
        found: list[dict[str, Any]] = []
        for tag in (base, *(base + suffix for suffix in COSIGN_SUFFIXES)):
            record = await self._records.last_known(
                target.upstream.name, target.repository, tag, ANY
            )
            if record is None:
                continue
            stored = await self._manifests.cached(target.upstream.name, parse_digest(record.digest))
            if stored is not None:
                found += _from_tagged(tag == base, record.digest, stored.media_type, stored.body)
        return _unique(found)

    async def _record(self, target: Target, digest: Digest) -> TagRecord | None:
        return await self._records.get(
            target.upstream.name, target.repository, fallback_tag(str(digest)), REFERRERS_VARIANT
        )

    async def _kept(
        self, target: Target, record: TagRecord | None
    ) -> tuple[dict[str, Any], ...] | None:
        if record is None:
            return None
        stored = await self._manifests.cached(target.upstream.name, parse_digest(record.digest))
        return descriptors_of(stored.body) if stored is not None else None


def _from_tagged(
    is_index_tag: bool, digest: str, media_type: str, body: bytes
) -> list[dict[str, Any]]:
    """Descriptors a tag of the schema gives: an index's entries, or the manifest itself."""
    doc = json_object(body)
    if doc is None:
        return []
    if is_index_tag:
        if media_type not in INDEX_MEDIA_TYPES or not isinstance(doc.get("manifests"), list):
            return []
        return list(valid_descriptors(doc["manifests"]))
    if media_type in INDEX_MEDIA_TYPES:
        return []
    return [referrer_descriptor(digest, media_type, body, doc)]


def _unique(found: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    seen: dict[str, dict[str, Any]] = {}
    for descriptor in found:
        seen.setdefault(descriptor["digest"], descriptor)
    return tuple(seen.values())[:MAX_REFERRERS]
