"""Prometheus metrics: the only module that imports prometheus_client.

Everything is registered on an app-owned :class:`CollectorRegistry` (so two
apps in one test process do not collide) and updated through named methods.
Label values come from small closed sets: request kind, cache result, byte
source, upstream name (from the config), HTTP status class, storage backend
and action. Never repository names, tags or digests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mirror.security.events import (
    ClientKind,
    Credential,
    FailureReason,
    Grant,
    RefusalAnswer,
    ThrottleOutcome,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

KINDS = ("manifest", "blob", "tags", "referrers", "other")
RESULTS = ("hit", "miss", "stale", "revalidated", "error")
SOURCES = ("cache", "upstream")
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")
UPSTREAM_METHODS = ("GET", "HEAD")
EVICTED_KINDS = ("blob", "manifest", "tag")
REFUSED_VIA = ("redirect", "realm")
REFUSED_REASONS = ("mode", "address", "url")
PULL_STATS_STEPS = ("flush", "load", "compact")
# Content trust: what became of a manifest under a require or warn policy, and why
# one was refused (the reasons of mirror.trust.verdict that refuse).
SIGNATURE_RESULTS = ("verified", "refused", "warned")
SIGNATURE_REFUSALS = (
    "no_signature", "signature_invalid", "key_not_trusted", "digest_mismatch",
    "identity_mismatch", "blob_missing", "unsupported", "too_few_signatures", "unavailable",
)  # fmt: skip
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)


@dataclass(frozen=True, slots=True)
class UpstreamState:
    """An upstream's health and rate limit as last seen; None: not seen since start."""

    up: bool | None
    rate_limit: int | None
    rate_limit_remaining: int | None


def _by_upstream(gauge: Gauge) -> dict[str, float]:
    """A per-upstream gauge's values (one collect of that gauge only, not the registry)."""
    return {s.labels["upstream"]: s.value for family in gauge.collect() for s in family.samples}


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
        # Registered by tls_serving() only: without [tls] an expiry of 0 would read as
        # a certificate that expired in 1970 to an alert on it.
        self._tls_reloads = Counter(
            "mirror_tls_reloads", "Certificate reloads after the files changed, by result.",
            ["result"], registry=None,
        )  # fmt: skip
        self._tls_expiry = Gauge(
            "mirror_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate the TLS listener serves (Unix time).", registry=None,
        )  # fmt: skip
        self._tls_on = False

        self._pull_stats_errors = Counter(
            "mirror_pull_stats_errors",
            "Pull-count writes, reads and compactions the cache storage refused (retried).",
            ["step"], registry=r,
        )  # fmt: skip
        self._answered: set[str] = set()  # upstreams with a recorded request
        self._init_trust()
        self._init_client_auth()
        self._init_closed_sets()

    def _init_trust(self) -> None:
        r = self.registry
        self._signature_checks = Counter(
            "mirror_signature_verifications",
            "Manifests served or refused under a require or warn trust policy, by outcome.",
            ["result"], registry=r,
        )  # fmt: skip
        self._signature_refusals = Counter(
            "mirror_signature_refusals", "Manifests refused by a require policy, by reason.",
            ["reason"], registry=r,
        )  # fmt: skip
        for result in SIGNATURE_RESULTS:
            self._signature_checks.labels(result)
        for reason in SIGNATURE_REFUSALS:
            self._signature_refusals.labels(reason)

    def _init_client_auth(self) -> None:
        """The front door's counters (mirror.security.events), every series at zero."""
        r = self.registry
        self._auth_failures = Counter(
            "mirror_client_auth_failures", "Client credentials refused, by kind and reason.",
            ["credential", "reason"], registry=r,
        )  # fmt: skip
        self._login_throttled = Counter(
            "mirror_client_login_throttled",
            "Credential checks delayed or refused after failed logins from the address.",
            ["outcome"], registry=r,
        )  # fmt: skip
        self._access_refused = Counter(
            "mirror_client_access_refused",
            "Requests refused by the access rules: challenge (401) or denied (403).",
            ["answer"], registry=r,
        )  # fmt: skip
        self._client_rate_limited = Counter(
            "mirror_client_rate_limited", "Requests answered 429 by the per-client rate limit.",
            ["client"], registry=r,
        )  # fmt: skip
        self._tokens_issued = Counter(
            "mirror_tokens_issued", "Access tokens issued by the token endpoint, by grant.",
            ["grant"], registry=r,
        )  # fmt: skip
        for credential in get_args(Credential):
            for reason in get_args(FailureReason):
                self._auth_failures.labels(credential, reason)
        for counter, labels in (
            (self._login_throttled, ThrottleOutcome), (self._access_refused, RefusalAnswer),
            (self._client_rate_limited, ClientKind), (self._tokens_issued, Grant),
        ):  # fmt: skip
            for label in get_args(labels):
                counter.labels(label)

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
        for step in PULL_STATS_STEPS:
            self._pull_stats_errors.labels(step)

    def upstreams_configured(self, names: Iterable[str]) -> None:
        """Export the per-upstream series of the configured upstreams at zero.

        ``mirror_upstream_up`` starts at 0 too: nothing has answered yet.
        """
        for name in names:
            self._upstream_up.labels(name)
            for method in UPSTREAM_METHODS:
                for status in STATUS_CLASSES:
                    self._upstream_requests.labels(name, method, status)
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
        self._answered.add(upstream)
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

    # -- TLS listener
    def tls_serving(self, not_after: float) -> None:
        """The listener serves TLS: export its metrics, the certificate's expiry set."""
        if not self._tls_on:
            self._tls_on = True
            self.registry.register(self._tls_reloads)
            self.registry.register(self._tls_expiry)
            for result in ("ok", "error"):
                self._tls_reloads.labels(result)
        self._tls_expiry.set(not_after)

    def tls_reloaded(self, ok: bool, not_after: float) -> None:
        """A certificate reload was tried; ``not_after``: the certificate served now."""
        self._tls_reloads.labels("ok" if ok else "error").inc()
        self._tls_expiry.set(not_after)

    def pull_stats_error(self, step: str) -> None:
        """Count one refused pull-count ``step`` (in PULL_STATS_STEPS)."""
        self._pull_stats_errors.labels(step).inc()

    def upstream_states(self) -> dict[str, UpstreamState]:
        """What the gauges last recorded of each upstream seen since start (for the web UI)."""
        up, limit = _by_upstream(self._upstream_up), _by_upstream(self._ratelimit_limit)
        # mirror_upstream_up starts at 0 for every configured upstream: 0 before the
        # first request means "not asked yet", not "down".
        up = {name: value for name, value in up.items() if name in self._answered}
        remaining = _by_upstream(self._ratelimit_remaining)
        return {
            name: UpstreamState(
                up[name] == 1 if name in up else None,
                int(limit[name]) if name in limit else None,
                int(remaining[name]) if name in remaining else None,
            )
            for name in up.keys() | limit.keys() | remaining.keys()
        }

    def signature_verdict(self, result: str, reason: str | None = None) -> None:
        """A manifest under a require or warn policy: verified, refused (with why) or warned."""
        if result in SIGNATURE_RESULTS:
            self._signature_checks.labels(result).inc()
        if result == "refused" and reason in SIGNATURE_REFUSALS:
            self._signature_refusals.labels(reason).inc()

    # -- client authentication (mirror.security.events.SecurityEvents)
    def auth_failed(self, credential: Credential, reason: FailureReason) -> None:
        """Client credentials were refused."""
        self._auth_failures.labels(credential, reason).inc()

    def login_throttled(self, outcome: ThrottleOutcome) -> None:
        """A credential check was delayed, or refused, after failed logins."""
        self._login_throttled.labels(outcome).inc()

    def access_refused(self, answer: RefusalAnswer) -> None:
        """The access rules answered 401 (challenge) or 403 (denied)."""
        self._access_refused.labels(answer).inc()

    def rate_limited(self, client: ClientKind) -> None:
        """The per-client rate limit answered 429."""
        self._client_rate_limited.labels(client).inc()

    def token_issued(self, grant: Grant) -> None:
        """The token endpoint issued an access token."""
        self._tokens_issued.labels(grant).inc()

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
