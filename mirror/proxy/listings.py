"""Tag lists and referrers: the upstream's answer, passed through.

A tag list is not cached as such. When the upstream cannot give it (a 5xx, a
429, no answer; or the mirror is offline), the tags the cache has records of
stand in, as :class:`mirror.proxy.freshness.FreshnessPolicy` allows for a
manifest: each tag confirmed within ``tag_ttl + max_stale``, with the same
``Warning`` header, as distribution's proxy serves its local list. Referrers
are never cached: without the upstream there are none to give.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from mirror.errors import MirrorError
from mirror.oci import Digest
from mirror.proxy.freshness import FreshnessPolicy, stale_warning
from mirror.proxy.tag_records import TagRecords
from mirror.routing import Target
from mirror.upstream.base import Listing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListingAnswer:
    """A listing for the client, and where it came from."""

    listing: Listing
    source: str  # "upstream", or "cache" when the cache's tags stood in
    result: str = "miss"  # "stale" when it carries a Warning
    warning: str | None = None


class Listings:
    """Answers tags/list and referrers requests."""

    def __init__(self, records: TagRecords, policies: Mapping[str, FreshnessPolicy]) -> None:
        self._records = records
        self._policies = policies  # by upstream name

    async def tags(self, target: Target, query: dict[str, str]) -> ListingAnswer:
        """The upstream's tag list, or the tags the cache knows where they may stand in."""
        try:
            listing = await target.upstream.tags(target.repository, query)
        except MirrorError as error:
            known = await self._known_tags(target, query, error)
            if known is None:
                raise
            return known
        return ListingAnswer(listing, "upstream")

    async def referrers(
        self, target: Target, digest: Digest, query: dict[str, str]
    ) -> ListingAnswer:
        """The upstream's referrers index for ``digest``."""
        listing = await target.upstream.referrers(target.repository, str(digest), query)
        return ListingAnswer(listing, "upstream")

    async def _known_tags(
        self, target: Target, query: dict[str, str], error: MirrorError
    ) -> ListingAnswer | None:
        policy = self._policies[target.upstream.name]
        confirmed = await self._records.known_tags(target.upstream.name, target.repository)
        usable = {t: c for t, c in confirmed.items() if policy.stand_in(error, c) is not None}
        if not usable:
            return None
        newest = max(usable.values())
        listing = tag_listing(target.repository, sorted(usable), query)
        if policy.stand_in(error, newest) == "stale":
            log.warning("serving the %d cached tags of %s/%s: upstream failed: %s",
                        len(usable), target.upstream.name, target.repository, error)  # fmt: skip
            warning = stale_warning(error, "tag list", newest)
            return ListingAnswer(listing, "cache", "stale", warning)
        return ListingAnswer(listing, "cache")


def tag_listing(repository: str, tags: list[str], query: dict[str, str]) -> Listing:
    """A tags/list answer of ``tags`` (sorted), paged as ``n`` and ``last`` ask."""
    last = query.get("last")
    if last:
        tags = [t for t in tags if t > last]
    if "n" in query:
        tags = tags[: int(query["n"])]
    body = json.dumps({"name": repository, "tags": tags}).encode()
    return Listing(200, body, "application/json", None, {})
