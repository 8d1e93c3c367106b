"""When what the cache knows about a tag may answer in the upstream's place.

Digests are immutable; tags are not. :class:`FreshnessPolicy` holds every
rule about how long a tag's cached record (and a repository's cached tags)
may stand for the upstream's answer:

* Within ``ttl`` (the upstream's ``tag_ttl``) a record is trusted: the
  upstream is not asked.
* After that the upstream is asked, with a ``HEAD`` first when there is a
  record to compare with, or the client itself only asks ``HEAD``: a HEAD is
  free against Docker Hub's pull limit, and an unchanged digest renews the
  record without a GET.
* When the upstream fails with a 5xx, a 429 or no answer, or answers with
  something that is not the manifest asked for, what the cache knows stands
  in for up to ``max_stale`` past ``ttl``, marked with a ``Warning`` header.
  A 404 or a refusal (401, 403, a refused redirect) is passed on: the
  upstream did answer, or the operator must see it.
* Offline, every record is trusted however old (:meth:`FreshnessPolicy.offline`),
  and the offline upstream's "not cached" (:class:`NotCachedOffline`) is no
  failure: what the cache knows answers without a ``Warning``.

Pure: no I/O, so every rule can be tested alone.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Literal

from mirror.config import UpstreamConfig
from mirror.errors import MirrorError, NotCachedOffline, is_retryable_upstream

StandIn = Literal["stale", "hit"]


@dataclass(frozen=True, slots=True)
class FreshnessPolicy:
    """How long a tag's cached record answers for the upstream (see the module doc)."""

    ttl: float  # seconds a record is trusted without asking the upstream
    max_stale: float  # seconds past ttl a record may stand in for a failed upstream

    @classmethod
    def of(cls, config: UpstreamConfig) -> FreshnessPolicy:
        """The policy an upstream's ``tag_ttl`` and ``max_stale`` set."""
        return cls(config.tag_ttl, config.max_stale)

    @classmethod
    def offline(cls) -> FreshnessPolicy:
        """Nobody to ask: every record is trusted, however old."""
        return cls(math.inf, math.inf)

    def is_fresh(self, checked: float, now: float | None = None) -> bool:
        """Whether a record confirmed at ``checked`` is trusted without asking."""
        return _age(checked, now) < self.ttl

    def head_first(self, *, known: bool, head: bool) -> bool:
        """Whether to revalidate with a ``HEAD`` before any ``GET``.

        ``known``: a record exists to compare the digest with; ``head``: the
        client asks ``HEAD`` only, so a ``HEAD`` may be all it needs.
        """
        return known or head

    def stand_in(
        self, error: MirrorError, checked: float, now: float | None = None
    ) -> StandIn | None:
        """How something confirmed at ``checked`` may answer for an upstream that raised ``error``.

        ``"stale"``: in its place, with a ``Warning``; ``"hit"``: in its place,
        as a plain answer (offline); None: not at all, ``error`` goes to the client.
        """
        if isinstance(error, NotCachedOffline):
            result: StandIn = "hit"
        elif is_retryable_upstream(error):
            result = "stale"
        else:
            return None
        return result if _age(checked, now) <= self.ttl + self.max_stale else None


def stale_warning(error: MirrorError, what: str, checked: float) -> str:
    """The ``Warning`` header of a stale answer: ``what`` was last confirmed at ``checked``."""
    return (
        f'299 - "stale: upstream failed ({error.code}); {what} last confirmed '
        f'{formatdate(checked, usegmt=True)}"'
    )


def _age(checked: float, now: float | None) -> float:
    return (time.time() if now is None else now) - checked
