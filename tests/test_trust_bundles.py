"""Sigstore bundles (keyed, keyless offline) through the verifier, and @sigstore/verify's verdicts.

The bundles are made by ``@sigstore/sign`` against ``@sigstore/mock``'s CA,
CT log and transparency log (tests/support/sigstore_bundles.py), attached to
their image as OCI referrers.
"""

from __future__ import annotations

import socket

import pytest

from mirror.trust import Reason, Subject, TrustPolicy, TrustSettings, TrustVerifier, Verdict
from mirror.trust.keyless import KeylessIdentity, TrustedRootFile
from mirror.trust.keys import parse_public_key
from tests.support.oci_content import bundle_referrer, small_image
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
from tests.support.trust_source import MemorySource

pytestmark = pytest.mark.skipif(bool(missing_node()), reason=f"needs {missing_node()}")

REPOSITORY = "acme/app"
SUBJECTS = [small_image("bundle-subject-0"), small_image("bundle-subject-1")]


@pytest.fixture(scope="module")
def fixtures() -> BundleFixtures:
    return make_bundles(SUBJECTS)


def settings(fixtures: BundleFixtures, mode: str = "require") -> TrustSettings:
    root = TrustedRootFile("mock", fixtures.trusted_root_bytes)
    policy = TrustPolicy(
        "acme",
        mode,
        keys=(parse_public_key("a", fixtures.key_pem("a")),),
        keyless=(KeylessIdentity("mock", ISSUER, IDENTITY),),
        roots=(root,),
    )
    return TrustSettings(policies=(policy,))


def source_for(case: BundleCase) -> MemorySource:
    subject = SUBJECTS[case.subject]
    source = MemorySource()
    source.add(REPOSITORY, subject, tag="1.0")
    source.add(REPOSITORY, bundle_referrer(case.data, subject, case.content_kind))
    return source


async def verdict_for(fixtures: BundleFixtures, case: BundleCase) -> Verdict:
    subject = Subject("registry.example", REPOSITORY, SUBJECTS[case.subject].digest, "1.0")
    return await TrustVerifier(settings(fixtures)).check(subject, source_for(case))


def expected_reason(name: str) -> Reason:
    """What the mirror must say about each case, by how it was made or broken."""
    by_suffix = {
        "tampered-signature": Reason.SIGNATURE_INVALID,
        "tampered-payload": Reason.SIGNATURE_INVALID,
        "tampered-log": Reason.SIGNATURE_INVALID,
        "for-another-image": Reason.DIGEST_MISMATCH,
        "other-identity": Reason.IDENTITY_MISMATCH,
        "untrusted-ca": Reason.KEY_NOT_TRUSTED,
        "other-key": Reason.KEY_NOT_TRUSTED,
    }
    return next((r for suffix, r in by_suffix.items() if name.endswith(suffix)), Reason.VERIFIED)


async def test_every_bundle_gets_its_reason(fixtures: BundleFixtures) -> None:
    cases = bundle_cases(fixtures)
    got = {case.name: (await verdict_for(fixtures, case)).reason for case in cases}
    assert got == {case.name: expected_reason(case.name) for case in cases}
    assert {case.name for case in cases if case.valid} == {
        "keyless-dsse", "keyless-message", "keyed-dsse", "keyed-message",
    }  # fmt: skip


async def test_the_mirror_agrees_with_sigstore_verify_on_every_bundle(
    fixtures: BundleFixtures,
) -> None:
    cases = bundle_cases(fixtures)
    mirror = [(await verdict_for(fixtures, case)).admitted for case in cases]
    assert dict(zip([c.name for c in cases], mirror, strict=True)) == dict(
        zip([c.name for c in cases], oracle(fixtures, cases, SUBJECTS), strict=True)
    )
    assert mirror == [case.valid for case in cases]


async def test_keyless_verification_makes_no_connection(
    fixtures: BundleFixtures, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError(f"keyless verification tried to connect to {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    case = next(c for c in bundle_cases(fixtures) if c.name == "keyless-dsse")
    verdict = await verdict_for(fixtures, case)
    assert (verdict.reason, verdict.signers) == (Reason.VERIFIED, (f"{IDENTITY} ({ISSUER})",))


async def test_a_keyless_signer_needs_its_root_in_the_policy(fixtures: BundleFixtures) -> None:
    case = next(c for c in bundle_cases(fixtures) if c.name == "keyless-dsse")
    keyed_only = TrustPolicy("keyed", "require", keys=settings(fixtures).policies[0].keys)
    subject = Subject("registry.example", REPOSITORY, SUBJECTS[0].digest)
    verdict = await TrustVerifier(TrustSettings((keyed_only,))).check(subject, source_for(case))
    assert (verdict.reason, verdict.admitted) == (Reason.KEY_NOT_TRUSTED, False)


async def test_warn_admits_what_require_refuses_and_says_why(fixtures: BundleFixtures) -> None:
    case = next(c for c in bundle_cases(fixtures) if c.name == "keyed-other-key")
    subject = Subject("registry.example", REPOSITORY, SUBJECTS[0].digest)
    verdict = await TrustVerifier(settings(fixtures, "warn")).check(subject, source_for(case))
    assert (verdict.admitted, verdict.signed) == (True, False)
    assert verdict.reason is Reason.KEY_NOT_TRUSTED
    assert verdict.message() == "trust policy 'acme': key not trusted"
