"""Signed content in real registries: well-formed for real tools, and verified over HTTP.

The fixtures are pushed to a real distribution registry (2.8: no referrers
API, so bundles go under the referrers fallback tag) and to a
:class:`FakeUpstream`, and read back with :class:`HttpSource` the way the
mirror's core will read them. skopeo, with sigstore attachments switched
on, must find the cosign signatures there.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from mirror.trust import Reason, Subject, TrustPolicy, TrustSettings, TrustVerifier, Verdict
from mirror.trust.keys import parse_public_key
from tests.support.cosign import CosignKey
from tests.support.cosign_cases import REGISTRY, TAG, SignedCase, cosign_cases
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.oci_content import (
    Content,
    bundle_referrer,
    fallback_tag,
    push_to_fake,
    push_to_registry,
    referrers_index,
    small_image,
)
from tests.support.registry import UpstreamRegistry, start_registry
from tests.support.sigstore_bundles import make_bundles, missing_node, run_script
from tests.support.trust_source import HttpSource

REPOSITORY = "acme/app"
KEYS = (CosignKey.generate(), CosignKey.generate())
CASES = cosign_cases(*KEYS, REPOSITORY)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamRegistry]:
    """An empty distribution registry with every cosign case pushed (one blob then deleted)."""
    started = start_registry(tmp_path_factory.mktemp("trust-registry"))
    try:
        client = started.client()
        for case in CASES:
            if case.altered_blob is None:  # distribution checks digests: it cannot serve one
                push_case(case, partial(push_to_registry, client, REPOSITORY))
            if case.missing_blob is not None:
                path = f"blobs/{case.missing_blob}"
                gone = client.request("DELETE", REPOSITORY, path, actions=("*",))
                assert gone.status == 202, gone.body
        yield started
    finally:
        started.stop()


def push_case(case: SignedCase, push: Callable[[Content, str], str]) -> None:
    """The image (tag ``1.0`` for the valid one, else the case's name) and its signature."""
    push(case.image, TAG if case.name == "valid" else case.name)
    if case.signature is not None:
        push(case.signature, case.signature_tag)


def settings() -> TrustSettings:
    key = parse_public_key("acme", KEYS[0].public_pem())
    return TrustSettings((TrustPolicy("acme", "require", keys=(key,)),))


async def verdict_over_http(url: str, digest: str, trust: TrustSettings | None = None) -> Verdict:
    async with aiohttp.ClientSession() as session:
        subject = Subject(REGISTRY, REPOSITORY, digest, TAG)
        return await TrustVerifier(trust or settings()).check(subject, HttpSource(session, url))


async def test_cosign_cases_in_a_real_registry_get_their_reasons(
    registry: UpstreamRegistry,
) -> None:
    pushed = [case for case in CASES if case.altered_blob is None]
    got = {c.name: (await verdict_over_http(registry.url, c.image.digest)).reason for c in pushed}
    assert got == {case.name: case.expected for case in pushed}


async def test_cosign_cases_in_a_fake_upstream_get_their_reasons() -> None:
    async with FakeUpstream() as up:
        for case in CASES:
            push_case(case, partial(push_to_fake, up, REPOSITORY))
            if case.missing_blob is not None:
                up.add_fault(Fault(case.missing_blob, method="GET", status=404))
            if case.altered_blob is not None:
                up.add_fault(Fault(case.altered_blob, method="GET", corrupt=True))
        got = {c.name: (await verdict_over_http(up.url, c.image.digest)).reason for c in CASES}
    assert got == {case.name: case.expected for case in CASES}


async def test_an_upstream_that_fails_leaves_the_verdict_open_and_unremembered() -> None:
    valid = next(case for case in CASES if case.name == "valid")
    async with FakeUpstream() as up:
        push_case(valid, partial(push_to_fake, up, REPOSITORY))
        fault = up.add_fault(Fault(valid.signature_tag, status=503, times=1))
        verifier = TrustVerifier(settings())
        async with aiohttp.ClientSession() as session:
            subject = Subject(REGISTRY, REPOSITORY, valid.image.digest, TAG)
            first = await verifier.check(subject, HttpSource(session, up.url))
            second = await verifier.check(subject, HttpSource(session, up.url))
    assert fault.hits == 1
    assert (first.reason, first.admitted) == (Reason.UNAVAILABLE, False)
    assert (second.reason, second.admitted) == (Reason.VERIFIED, True)


def skopeo_copy(registry: UpstreamRegistry, tag: str, work: Path) -> str:
    """skopeo with a sigstoreSigned policy and sigstore attachments on; its error line."""
    (work / "registries.d").mkdir(exist_ok=True)
    (work / "registries.d" / "default.yaml").write_text(
        "default-docker:\n  use-sigstore-attachments: true\n"
    )
    (work / "cosign.pub").write_bytes(KEYS[0].public_pem())
    policy = {"default": [{"type": "sigstoreSigned", "keyPath": str(work / "cosign.pub"),
                           "signedIdentity": {"type": "matchRepository"}}]}  # fmt: skip
    (work / "policy.json").write_text(json.dumps(policy))
    done = subprocess.run(
        ["skopeo", "--registries.d", str(work / "registries.d"),
         "--policy", str(work / "policy.json"), "copy", "--src-tls-verify=false",
         f"docker://{registry.host}/{REPOSITORY}:{tag}", f"dir:{work / tag}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode != 0, "skopeo copied an image it cannot have verified"
    return done.stderr


def test_skopeo_finds_the_cosign_signature_in_the_registry(
    registry: UpstreamRegistry, tmp_path: Path
) -> None:
    # Debian's skopeo looks up the .sig attachment, then refuses to verify it.
    assert "sigstore disabled" in skopeo_copy(registry, TAG, tmp_path)
    assert "no signature exists" in skopeo_copy(registry, "unsigned", tmp_path)


needs_node = pytest.mark.skipif(bool(missing_node()), reason=f"needs {missing_node()}")


@needs_node
async def test_bundles_under_the_referrers_fallback_tag_verify(registry: UpstreamRegistry) -> None:
    subjects = [small_image("bundle-subject-0"), small_image("bundle-subject-1")]
    fixtures = make_bundles(subjects)
    client = registry.client()
    referrers: list[Content] = []
    for kind in ("keyed-dsse", "keyed-message"):
        data = json.dumps(fixtures.bundles[0][kind]).encode()
        content_kind = "dsse-envelope" if kind.endswith("dsse") else "message-signature"
        referrers.append(bundle_referrer(data, subjects[0], content_kind))
    push_to_registry(client, REPOSITORY, subjects[0], "bundled")
    for referrer in referrers:
        push_to_registry(client, REPOSITORY, referrer)
    push_to_registry(
        client, REPOSITORY, referrers_index(referrers), fallback_tag(subjects[0].digest)
    )
    key = parse_public_key("a", fixtures.key_pem("a"))
    trust = TrustSettings((TrustPolicy("acme", "require", threshold=1, keys=(key,)),))
    verdict = await verdict_over_http(registry.url, subjects[0].digest, trust)
    assert (verdict.reason, verdict.signers) == (Reason.VERIFIED, ("a",))
    assert [check.reason for check in verdict.checks] == [Reason.VERIFIED, Reason.VERIFIED]


@needs_node
async def test_a_bundle_attached_by_sigstore_oci_verifies(registry: UpstreamRegistry) -> None:
    subjects = [small_image("bundle-subject-0"), small_image("bundle-subject-1")]
    fixtures = make_bundles(subjects)
    image = subjects[0]
    push_to_registry(registry.client(), "acme/attached", image, "1.0")
    request = {"registry": registry.host, "repository": "acme/attached", "digest": image.digest,
               "bundle": fixtures.bundles[0]["keyed-dsse"]}  # fmt: skip
    descriptor = await asyncio.to_thread(run_script, "attach", request)
    assert descriptor["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    key = parse_public_key("a", fixtures.key_pem("a"))
    trust = TrustSettings((TrustPolicy("acme", "require", keys=(key,)),))
    async with aiohttp.ClientSession() as session:
        subject = Subject(REGISTRY, "acme/attached", image.digest, "1.0")
        verdict = await TrustVerifier(trust).check(subject, HttpSource(session, registry.url))
    assert (verdict.reason, verdict.signers) == (Reason.VERIFIED, ("a",))
