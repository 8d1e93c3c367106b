"""Prometheus metrics: the only module that imports prometheus_client.

Everything is registered on an app-owned :class:`CollectorRegistry` (so two
apps in one test process do not collide) and updated through named methods.
Label values come from small closed sets: request kind, cache result, byte
source, upstream name (from the config), HTTP status class, storage backend
and action. Never repository names, tags or digests.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

KINDS = ("manifest", "blob", "tags", "referrers", "other")
RESULTS = ("hit", "miss", "stale", "revalidated", "error")
SOURCES = ("cache", "upstream")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
EVICTED_KINDS = ("blob", "manifest", "tag")
REFUSED_VIA = ("redirect", "realm")
REFUSED_REASONS = ("mode", "address", "url")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)


def status_class(status: int) -> str:
    """``200`` -> ``2xx``; 0 stands for "no answer" (connection error or timeout)."""
    return f"{status // 100}xx" if status else "error"


class Metrics:
    """Every metric the mirror exports, behind named methods."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "mirror_requests", "Client requests by kind and cache result.",
            ["kind", "result"], registry=r,
        )  # fmt: skip
        self._served = Counter(
            "mirror_served_bytes", "Body bytes sent to clients by where they came from.",
            ["source"], registry=r,
        )  # fmt: skip
        self._fetched = Counter(
            "mirror_upstream_fetched_bytes", "Body bytes received from upstreams.",
            ["upstream"], registry=r,
        )  # fmt: skip
        self._upstream_requests = Counter(
            "mirror_upstream_requests", "Requests sent to upstreams by method and status class.",
            ["upstream", "method", "status"], registry=r,
        )  # fmt: skip
        self._upstream_latency = Histogram(
            "mirror_upstream_request_duration_seconds",
            "Time to the upstream's response headers, by status class.",
            ["upstream", "status"], buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self._rate_limited = Counter(
            "mirror_upstream_rate_limited", "429 answers from upstreams.", ["upstream"], registry=r
        )
        self._ratelimit_remaining = Gauge(
            "mirror_upstream_ratelimit_remaining",
            "Pulls left in the upstream's window (Docker Hub ratelimit-remaining).",
            ["upstream"], registry=r,
        )  # fmt: skip
        self._ratelimit_limit = Gauge(
            "mirror_upstream_ratelimit_limit",
            "Pull limit of the upstream's window (Docker Hub ratelimit-limit).",
            ["upstream"], registry=r,
        )  # fmt: skip
        self._refused = Counter(
            "mirror_upstream_refused_destinations",
            "Redirects and token realms the mirror refused to follow, by why.",
            ["upstream", "via", "reason"], registry=r,
        )  # fmt: skip
        self._upstream_up = Gauge(
            "mirror_upstream_up",
            "1 when the last request to the upstream got an HTTP answer below 500.",
            ["upstream"], registry=r,
        )  # fmt: skip
        self._fills = Gauge(
            "mirror_fills_in_flight", "Upstream blob downloads in progress.", registry=r
        )
        self._followers = Counter(
            "mirror_fill_followers", "Clients that joined a download already in progress.",
            registry=r,
        )  # fmt: skip
        self._resumes = Counter(
            "mirror_upstream_resumes", "Broken upstream downloads resumed with Range.",
            ["upstream"], registry=r,
        )  # fmt: skip
        self._mismatches = Counter(
            "mirror_digest_mismatches", "Upstream content whose digest or size did not match.",
            ["kind"], registry=r,
        )  # fmt: skip
        self._storage_latency = Histogram(
            "mirror_storage_operation_duration_seconds", "Storage operation latency.",
            ["backend", "action"], buckets=_STORAGE_BUCKETS, registry=r,
        )  # fmt: skip
        self._storage_errors = Counter(
            "mirror_storage_errors", "Failed storage operations (the pull is served through).",
            ["backend", "action"], registry=r,
        )  # fmt: skip
        self._cache_bytes = Gauge("mirror_cache_size_bytes", "Bytes held in the cache.", registry=r)
        self._cache_entries = Gauge(
            "mirror_cache_entries", "Objects held in the cache.", registry=r
        )
        self._cache_max = Gauge(
            "mirror_cache_max_size_bytes", "Configured cache budget (0: unbounded).", registry=r
        )
        self._evictions = Counter(
            "mirror_cache_evictions", "Objects evicted to stay within the budget.",
            ["kind"], registry=r,
        )  # fmt: skip
        self._evicted_bytes = Counter(
            "mirror_cache_evicted_bytes", "Bytes evicted to stay within the budget.", registry=r
        )
        self._init_closed_sets()

    def _init_closed_sets(self) -> None:
        """Export every series of the closed label sets from the start, at zero.

        A series that appears only on its first increment breaks ``rate()``
        and ``absent()``-style alerts and leaves dashboards blank.
        """
        for kind in KINDS:
            for result in RESULTS:
                self._requests.labels(kind, result)
        for source in SOURCES:
            self._served.labels(source)
        for kind in ("blob", "manifest"):
            self._mismatches.labels(kind)
        for kind in EVICTED_KINDS:
            self._evictions.labels(kind)

    def upstreams_configured(self, names: Iterable[str]) -> None:
        """Export the per-upstream counters of the configured upstreams at zero."""
        for name in names:
            self._fetched.labels(name)
            self._rate_limited.labels(name)
            self._resumes.labels(name)
            for via in REFUSED_VIA:
                for reason in REFUSED_REASONS:
                    self._refused.labels(name, via, reason)

    # -- client side
    def request(self, kind: str, result: str) -> None:
        """Count one client request by kind and cache result."""
        self._requests.labels(kind, result).inc()

    def served(self, source: str, size: int) -> None:
        """Count body bytes sent to a client; source is ``cache`` or ``upstream``."""
        if size:
            self._served.labels(source).inc(size)

    # -- upstream side
    def upstream_response(self, upstream: str, method: str, status: int, seconds: float) -> None:
        """Record one upstream request: status 0 means no HTTP answer."""
        self._upstream_requests.labels(upstream, method, status_class(status)).inc()
        self._upstream_latency.labels(upstream, status_class(status)).observe(seconds)
        self._upstream_up.labels(upstream).set(1 if 0 < status < 500 else 0)
        if status == 429:
            self._rate_limited.labels(upstream).inc()

    def upstream_ratelimit(self, upstream: str, limit: int | None, remaining: int | None) -> None:
        """Docker Hub's ``ratelimit-limit`` / ``ratelimit-remaining`` values."""
        if limit is not None:
            self._ratelimit_limit.labels(upstream).set(limit)
        if remaining is not None:
            self._ratelimit_remaining.labels(upstream).set(remaining)

    def upstream_refused(self, upstream: str, via: str, reason: str) -> None:
        """Count one refused destination: ``via`` in REFUSED_VIA, ``reason`` in REFUSED_REASONS."""
        self._refused.labels(upstream, via, reason).inc()

    def fetched(self, upstream: str, size: int) -> None:
        """Count body bytes received from an upstream."""
        if size:
            self._fetched.labels(upstream).inc(size)

    def resumed(self, upstream: str) -> None:
        """Count one broken download resumed with Range."""
        self._resumes.labels(upstream).inc()

    # -- fills
    def fill_started(self) -> None:
        """A new upstream blob download started."""
        self._fills.inc()

    def fill_finished(self) -> None:
        """An upstream blob download ended (either way)."""
        self._fills.dec()

    def follower_joined(self) -> None:
        """A client joined a download already in progress."""
        self._followers.inc()

    def digest_mismatch(self, kind: str) -> None:
        """Upstream content failed verification; kind is ``blob`` or ``manifest``."""
        self._mismatches.labels(kind).inc()

    # -- storage and cache
    def storage_operation(self, backend: str, action: str, seconds: float) -> None:
        """Record a storage operation's latency."""
        self._storage_latency.labels(backend, action).observe(seconds)

    def storage_error(self, backend: str, action: str) -> None:
        """Count a failed storage operation."""
        self._storage_errors.labels(backend, action).inc()

    def cache_usage(self, size: int, entries: int, max_size: int) -> None:
        """Current cache size, object count and budget."""
        self._cache_bytes.set(size)
        self._cache_entries.set(entries)
        self._cache_max.set(max_size)

    def evicted(self, kind: str, size: int) -> None:
        """Count one evicted object of ``kind`` (blob, manifest, tag)."""
        self._evictions.labels(kind).inc()
        self._evicted_bytes.inc(size)

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
