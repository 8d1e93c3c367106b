"""Per-upstream pull traffic since start: requests, cache hits, bytes served from the cache.

The Prometheus metrics count requests by kind and result, and bytes by
source, for the whole mirror (no upstream label on the request counters, to
keep their series few). The web UI shows each upstream's hit ratio and the
bytes its cache saved, so the pull path also counts them here, in memory:
one dictionary update per manifest or blob request, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

# Cache results that answered from the cache (mirror.metrics.RESULTS).
FROM_CACHE = frozenset({"hit", "stale", "revalidated"})


@dataclass(slots=True)
class UpstreamTally:
    """One upstream's manifest and blob requests since start."""

    requests: int = 0
    hits: int = 0  # answered from the cache
    bytes_saved: int = 0  # body bytes sent from the cache

    @property
    def hit_ratio(self) -> float | None:
        """Hits per request; None before the first request."""
        return self.hits / self.requests if self.requests else None


class Traffic:
    """The tallies of every upstream that was asked for something."""

    def __init__(self) -> None:
        self._tallies: dict[str, UpstreamTally] = {}

    def count(self, upstream: str, result: str, body_bytes: int) -> None:
        """Count one request of ``upstream`` answered with ``result``, and its body bytes."""
        tally = self._tallies.setdefault(upstream, UpstreamTally())
        tally.requests += 1
        if result in FROM_CACHE:
            tally.hits += 1
            tally.bytes_saved += body_bytes

    def of(self, upstream: str) -> UpstreamTally:
        """A copy of ``upstream``'s tally (zero when it was never asked)."""
        tally = self._tallies.get(upstream, UpstreamTally())
        return UpstreamTally(tally.requests, tally.hits, tally.bytes_saved)
