"""The verifier's decisions: the verdict cache, platform manifests of a signed index, allow."""

from __future__ import annotations

import json

from mirror.oci import OCI_INDEX
from mirror.trust import (
    Reason,
    Subject,
    TrustPolicy,
    TrustSettings,
    TrustVerifier,
    VerdictCache,
)
from mirror.trust.keys import parse_public_key
from tests.support.cosign import CosignKey, payload, sign_layer, signature_manifest
from tests.support.oci_content import Content, compact, small_image
from tests.support.trust_source import MemorySource

REPOSITORY = "acme/app"
KEY = CosignKey.generate()


def signed(source: MemorySource, image: Content, key: CosignKey = KEY) -> None:
    source.add(REPOSITORY, image)
    data = payload(f"registry.example/{REPOSITORY}", image.digest)
    tag = image.digest.replace(":", "-") + ".sig"
    source.add(REPOSITORY, signature_manifest([sign_layer(key, data)]), tag)


def settings(key: CosignKey = KEY, mode: str = "require") -> TrustSettings:
    policy = TrustPolicy("acme", mode, keys=(parse_public_key("acme", key.public_pem()),))
    return TrustSettings((policy,), refusal_ttl=30.0)


def subject(image: Content) -> Subject:
    return Subject("registry.example", REPOSITORY, image.digest)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_cached_verdict_costs_no_fetch_until_the_policy_changes() -> None:
    image = small_image("cached")
    source = MemorySource()
    signed(source, image)
    cache = VerdictCache(100, 30.0)
    first = await TrustVerifier(settings(), cache).check(subject(image), source)
    calls = sum(source.calls.values())
    again = await TrustVerifier(settings(), cache).check(subject(image), source)
    assert again is first
    assert sum(source.calls.values()) == calls
    rotated = await TrustVerifier(settings(CosignKey.generate()), cache).check(
        subject(image), source
    )
    assert sum(source.calls.values()) > calls
    assert (first.reason, rotated.reason) == (Reason.VERIFIED, Reason.SIGNATURE_INVALID)


async def test_a_refusal_is_remembered_for_refusal_ttl_then_rechecked() -> None:
    image = small_image("signed-later")
    source = MemorySource()
    source.add(REPOSITORY, image)
    clock = Clock()
    verifier = TrustVerifier(settings(), VerdictCache(100, 30.0, clock))
    assert (await verifier.check(subject(image), source)).reason is Reason.NO_SIGNATURE
    signed(source, image)  # the publisher signs it now
    clock.now += 29
    assert (await verifier.check(subject(image), source)).reason is Reason.NO_SIGNATURE
    clock.now += 2
    assert (await verifier.check(subject(image), source)).reason is Reason.VERIFIED
    clock.now += 10**9  # an admission does not expire
    source.unavailable = True
    assert (await verifier.check(subject(image), source)).reason is Reason.VERIFIED


async def test_allow_looks_at_nothing() -> None:
    source = MemorySource()
    source.unavailable = True
    verdict = await TrustVerifier(settings(mode="allow")).check(subject(small_image("x")), source)
    assert (verdict.admitted, verdict.reason, sum(source.calls.values())) == (
        True, Reason.NOT_REQUIRED, 0,
    )  # fmt: skip


def index_of(*children: Content) -> Content:
    entries = [
        {**child.descriptor, "platform": {"os": "linux", "architecture": arch}}
        for child, arch in zip(children, ("amd64", "arm64"), strict=False)
    ]
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return Content(OCI_INDEX, compact(doc))


async def test_a_platform_manifest_is_covered_by_the_signed_index_that_lists_it() -> None:
    amd64, arm64, stranger = small_image("amd64"), small_image("arm64"), small_image("other")
    index = index_of(amd64, arm64)
    source = MemorySource()
    signed(source, index)
    verifier = TrustVerifier(settings())
    child = await verifier.check_platform(subject(amd64), subject(index), index.body, source)
    assert (child.admitted, child.reason) == (True, Reason.COVERED_BY_INDEX)
    assert child.signers == ("acme",)
    # Not listed by that index, or a body that is not the index: on its own signatures.
    alone = await verifier.check_platform(subject(stranger), subject(index), index.body, source)
    assert (alone.admitted, alone.reason) == (False, Reason.NO_SIGNATURE)
    forged = json.loads(index.body)
    forged["manifests"].append(stranger.descriptor)
    fake = await verifier.check_platform(subject(stranger), subject(index), compact(forged), source)
    assert fake.reason is Reason.NO_SIGNATURE


async def test_a_platform_manifest_of_an_unsigned_index_needs_its_own_signature() -> None:
    amd64 = small_image("recursive-amd64")
    index = index_of(amd64)
    source = MemorySource()
    source.add(REPOSITORY, index)
    signed(source, amd64)  # cosign sign --recursive
    verdict = await TrustVerifier(settings()).check_platform(
        subject(amd64), subject(index), index.body, source
    )
    assert (verdict.admitted, verdict.reason) == (True, Reason.VERIFIED)
