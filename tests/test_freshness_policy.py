"""The tag freshness rules alone: when a cached record answers for the upstream."""

from __future__ import annotations

import pytest

from mirror.config import UpstreamConfig
from mirror.errors import (
    DigestMismatch,
    ManifestRejected,
    ManifestUnknown,
    MirrorError,
    NotCachedOffline,
    UpstreamBusy,
    UpstreamDenied,
    UpstreamRateLimited,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnauthorized,
    UpstreamUnavailable,
)
from mirror.proxy.freshness import FreshnessPolicy, stale_warning

NOW = 1_700_000_000.0
POLICY = FreshnessPolicy(ttl=300, max_stale=3600)
OFFLINE = FreshnessPolicy.offline()


def test_an_upstreams_settings_make_its_policy() -> None:
    config = UpstreamConfig("ghcr.io", "https://ghcr.io", tag_ttl=60, max_stale=120)
    assert FreshnessPolicy.of(config) == FreshnessPolicy(60, 120)


@pytest.mark.parametrize(
    ("policy", "age", "fresh"),
    [
        (POLICY, 0, True),
        (POLICY, 299.9, True),
        (POLICY, 300, False),
        (POLICY, -5, True),  # a clock that went back: still trusted within the TTL
        (FreshnessPolicy(0, 3600), 0, False),  # tag_ttl = 0: always ask
        (OFFLINE, 10 * 365 * 86400, True),
    ],
)
def test_a_record_is_trusted_within_the_ttl(
    policy: FreshnessPolicy, age: float, fresh: bool
) -> None:
    assert policy.is_fresh(NOW - age, now=NOW) is fresh


@pytest.mark.parametrize(
    ("known", "head", "head_first"),
    [(True, False, True), (True, True, True), (False, True, True), (False, False, False)],
)
def test_revalidation_asks_head_first_when_it_can_save_a_get(
    known: bool, head: bool, head_first: bool
) -> None:
    assert POLICY.head_first(known=known, head=head) is head_first


@pytest.mark.parametrize(
    ("error", "stand_in"),
    [
        (UpstreamUnavailable("502"), "stale"),
        (UpstreamBusy("503", "5"), "stale"),
        (UpstreamRateLimited("429", "60"), "stale"),
        (UpstreamTimeout("no answer"), "stale"),
        # An answer that is no manifest, or not the one asked for (a captive portal).
        (ManifestRejected("text/html"), "stale"),
        (DigestMismatch("wrong bytes"), "stale"),
        (NotCachedOffline("offline", "MANIFEST_UNKNOWN"), "hit"),
        # The upstream answered, or refused for a reason the operator must see.
        (ManifestUnknown("404"), None),
        (UpstreamDenied("403"), None),
        (UpstreamUnauthorized("401"), None),
        (UpstreamRefused("redirect refused"), None),
    ],
)
def test_what_a_record_may_stand_in_for(error: MirrorError, stand_in: str | None) -> None:
    assert POLICY.stand_in(error, NOW - 400, now=NOW) == stand_in


@pytest.mark.parametrize(
    ("policy", "age", "allowed"),
    [
        (POLICY, 300 + 3600, True),
        (POLICY, 300 + 3600.1, False),
        (OFFLINE, 10 * 365 * 86400, True),
    ],
)
def test_a_stand_in_is_bounded_by_max_stale(
    policy: FreshnessPolicy, age: float, allowed: bool
) -> None:
    error = UpstreamTimeout("no answer")
    assert (policy.stand_in(error, NOW - age, now=NOW) is not None) is allowed


def test_the_warning_names_the_failure_and_the_last_confirmation() -> None:
    warning = stale_warning(UpstreamTimeout("no answer"), "manifest", 0.0)
    assert warning == (
        '299 - "stale: upstream failed (UNAVAILABLE); manifest last confirmed '
        'Thu, 01 Jan 1970 00:00:00 GMT"'
    )
