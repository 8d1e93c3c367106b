"""cosign simple-signing signatures (``sha256-<hex>.sig``) through the verifier, from memory."""

from __future__ import annotations

import pytest

from mirror.trust import (
    Reason,
    Subject,
    TrustPolicy,
    TrustSettings,
    TrustVerifier,
)
from mirror.trust.identity import IdentityRule
from mirror.trust.keys import PublicKey, parse_public_key
from tests.support.cosign import CosignKey, payload, sign_layer, signature_manifest
from tests.support.cosign_cases import REGISTRY, TAG, SignedCase, cosign_cases
from tests.support.oci_content import small_image
from tests.support.trust_source import MemorySource

REPOSITORY = "acme/app"


@pytest.fixture(scope="module")
def keys() -> tuple[CosignKey, CosignKey]:
    return CosignKey.generate(), CosignKey.generate()


def trusted(key: CosignKey, name: str = "acme") -> PublicKey:
    return parse_public_key(name, key.public_pem())


def require(
    *keys: PublicKey, threshold: int = 1, identity: IdentityRule | None = None
) -> TrustSettings:
    policy = TrustPolicy(
        "acme", "require", keys=keys, threshold=threshold, identity=identity or IdentityRule()
    )
    return TrustSettings(policies=(policy,))


def memory_with(case: SignedCase) -> MemorySource:
    source = MemorySource()
    source.add(REPOSITORY, case.image, tag=TAG)
    if case.signature is not None:
        source.add(REPOSITORY, case.signature, tag=case.signature_tag)
    if case.missing_blob:
        del source.blobs[case.missing_blob]
    if case.altered_blob:
        source.blobs[case.altered_blob] = source.blobs[case.altered_blob] + b" "
    return source


def subject(image_digest: str, reference: str | None = TAG) -> Subject:
    return Subject(REGISTRY, REPOSITORY, image_digest, reference)


REMAP = IdentityRule("repository", prefix=REGISTRY, signed_prefix="internal.example")
CASES = [c.name for c in cosign_cases(CosignKey.generate(), CosignKey.generate(), REPOSITORY)]


@pytest.mark.parametrize("name", CASES)
async def test_each_cosign_case_gets_its_reason(
    name: str, keys: tuple[CosignKey, CosignKey]
) -> None:
    case = next(c for c in cosign_cases(*keys, REPOSITORY) if c.name == name)
    verifier = TrustVerifier(require(trusted(keys[0])))
    verdict = await verifier.check(subject(case.image.digest), memory_with(case))
    assert verdict.reason is case.expected, verdict.checks
    assert verdict.admitted is (case.expected is Reason.VERIFIED)
    assert verdict.signers == (("acme",) if verdict.admitted else ())


@pytest.mark.parametrize("kind", ["ecdsa", "ed25519", "rsa"])
async def test_every_cosign_key_type_verifies(kind: str) -> None:
    key = CosignKey.generate(kind)
    image = small_image(f"key-{kind}")
    source = MemorySource()
    source.add(REPOSITORY, image, tag=TAG)
    sig = signature_manifest([sign_layer(key, payload(f"{REGISTRY}/{REPOSITORY}", image.digest))])
    source.add(REPOSITORY, sig, tag=image.digest.replace(":", "-") + ".sig")
    verdict = await TrustVerifier(require(trusted(key, kind))).check(subject(image.digest), source)
    assert (verdict.reason, verdict.signers) == (Reason.VERIFIED, (kind,))


async def test_a_threshold_counts_distinct_trusted_keys(keys: tuple[CosignKey, CosignKey]) -> None:
    first, second = keys
    image = small_image("two-signers")
    data = payload(f"{REGISTRY}/{REPOSITORY}:{TAG}", image.digest)
    tag = image.digest.replace(":", "-") + ".sig"
    settings = require(trusted(first, "a"), trusted(second, "b"), threshold=2)
    once = MemorySource()
    twice_by_one = [sign_layer(first, data), sign_layer(first, data)]
    once.add(REPOSITORY, signature_manifest(twice_by_one), tag)
    verdict = await TrustVerifier(settings).check(subject(image.digest), once)
    assert (verdict.reason, verdict.admitted) == (Reason.TOO_FEW_SIGNATURES, False)
    both = MemorySource()
    by_both = [sign_layer(first, data), sign_layer(second, data)]
    both.add(REPOSITORY, signature_manifest(by_both), tag)
    verdict = await TrustVerifier(settings).check(subject(image.digest), both)
    assert (verdict.reason, verdict.signers) == (Reason.VERIFIED, ("a", "b"))


@pytest.mark.parametrize(
    ("rule", "signed_as", "pulled", "accepted"),
    [
        (IdentityRule("repository"), f"{REGISTRY}/{REPOSITORY}:other", TAG, True),
        (IdentityRule("exact"), f"{REGISTRY}/{REPOSITORY}:{TAG}", TAG, True),
        (IdentityRule("exact"), f"{REGISTRY}/{REPOSITORY}:other", TAG, False),
        (IdentityRule("exact"), f"{REGISTRY}/{REPOSITORY}:{TAG}", None, False),
        (IdentityRule("any"), "elsewhere.example/x/y", TAG, True),
        (IdentityRule("repository"), f"internal.example/{REPOSITORY}", TAG, False),
        (REMAP, f"internal.example/{REPOSITORY}", TAG, True),
    ],
)
async def test_docker_reference_is_checked_as_the_policy_says(
    keys: tuple[CosignKey, CosignKey],
    rule: IdentityRule,
    signed_as: str,
    pulled: str | None,
    accepted: bool,
) -> None:
    image = small_image("identity")
    source = MemorySource()
    sig = signature_manifest([sign_layer(keys[0], payload(signed_as, image.digest))])
    source.add(REPOSITORY, sig, tag=image.digest.replace(":", "-") + ".sig")
    verifier = TrustVerifier(require(trusted(keys[0]), identity=rule))
    verdict = await verifier.check(subject(image.digest, pulled), source)
    assert verdict.reason is (Reason.VERIFIED if accepted else Reason.IDENTITY_MISMATCH)
