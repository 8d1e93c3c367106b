"""Sigstore bundle referrers through the mirror: its admissions agree with @sigstore/verify.

Each bundle case (keyed and keyless, valid and broken, made by
``@sigstore/sign`` against ``@sigstore/mock``) is attached as a referrer to
the same image in a repository of its own of a :class:`FakeUpstream` with
the referrers API; the mirror, with a ``require`` policy trusting key ``a``
and the mock CA's identity, must serve exactly the images
``@sigstore/verify`` accepts, online and then offline from its cache.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from mirror.config import Config
from tests.support.cosign_cases import REGISTRY
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.oci_content import (
    bundle_referrer,
    fallback_tag,
    push_to_fake,
    push_to_registry,
    referrers_index,
    small_image,
)
from tests.support.registry import start_registry
from tests.support.sigstore_bundles import (
    IDENTITY,
    ISSUER,
    BundleCase,
    BundleFixtures,
    bundle_cases,
    make_bundles,
    missing_node,
    oracle,
)
from tests.support.trust_mirror import fetch

pytestmark = pytest.mark.skipif(bool(missing_node()), reason=f"needs {missing_node()}")

SUBJECTS = [small_image("bundle-subject-0"), small_image("bundle-subject-1")]


@pytest.fixture(scope="module")
def fixtures() -> BundleFixtures:
    return make_bundles(SUBJECTS)


def config(work: Path, url: str, fixtures: BundleFixtures, **settings: object) -> Config:
    (work / "a.pub").write_bytes(fixtures.key_pem("a"))
    (work / "root.json").write_bytes(fixtures.trusted_root_bytes)
    policy = {
        "name": "acme", "repositories": ["acme/**"], "mode": "require", "keys": ["a"],
        "keyless": [{"root": "mock", "issuer": ISSUER, "identity": IDENTITY}],
    }  # fmt: skip
    trust = {"keys": {"a": str(work / "a.pub")}, "roots": {"mock": str(work / "root.json")},
             "policies": [policy]}  # fmt: skip
    upstream = {"url": url, "name": REGISTRY, "retries": 1, "read_timeout": 10}
    return mirror_config(work / "cache", url, upstreams=[upstream], trust=trust, **settings)


def repository(index: int) -> str:
    return f"acme/bundle{index}"


async def admitted(http: aiohttp.ClientSession, url: str, cases: list[BundleCase]) -> list[bool]:
    found = []
    for index in range(len(cases)):
        status, _ = await fetch(http, url, f"/v2/{repository(index)}/manifests/1.0")
        assert status in (200, 403)
        found.append(status == 200)
    return found


async def test_the_mirror_admits_what_sigstore_verify_accepts_online_and_offline(
    fixtures: BundleFixtures, up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    up.referrers_api = True
    cases = bundle_cases(fixtures)
    for index, case in enumerate(cases):
        subject = SUBJECTS[case.subject]
        push_to_fake(up, repository(index), subject, "1.0")
        push_to_fake(up, repository(index), bundle_referrer(case.data, subject, case.content_kind))
    expected = oracle(fixtures, cases, SUBJECTS)
    async with run_mirror(config(tmp_path, up.url, fixtures)) as mirror:
        online = await admitted(http, mirror.url, cases)
    asked = len(up.requests)
    async with run_mirror(config(tmp_path, up.url, fixtures, offline=True)) as mirror:
        offline = await admitted(http, mirror.url, cases)
    assert len(up.requests) == asked
    names = [case.name for case in cases]
    assert dict(zip(names, online, strict=True)) == dict(zip(names, expected, strict=True))
    assert offline == online
    assert online == [case.valid for case in cases]


async def test_bundles_under_the_fallback_tag_of_a_real_registry_decide_too(
    fixtures: BundleFixtures, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """distribution 2.8 has no referrers API: the mirror finds the bundles by the tag schema."""
    cases = {case.name: case for case in bundle_cases(fixtures)}
    chosen = ("keyed-dsse", "keyless-message", "keyed-dsse-tampered-signature")
    registry = start_registry(tmp_path / "registry")
    try:
        client = registry.client()
        for index, name in enumerate(chosen):
            case, subject = cases[name], SUBJECTS[cases[name].subject]
            referrer = bundle_referrer(case.data, subject, case.content_kind)
            push_to_registry(client, repository(index), subject, "1.0")
            push_to_registry(client, repository(index), referrer)
            fallback = referrers_index([referrer])
            push_to_registry(client, repository(index), fallback, fallback_tag(subject.digest))
        async with run_mirror(config(tmp_path, registry.url, fixtures)) as mirror:
            got = await admitted(http, mirror.url, [cases[name] for name in chosen])
    finally:
        registry.stop()
    assert got == [True, True, False]
