"""A require policy on the pull path: signed images pass, every other one gets 403 DENIED.

The images and their cosign signatures (:mod:`tests.support.cosign_cases`)
are in a real distribution registry (no referrers API: the tag schema);
the mirror reads the signatures through its own stores, so a warm cache
and an offline one give the same verdicts.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from mirror.trust.verdict import REASON_TEXT, Reason
from tests.support.cosign import CosignKey
from tests.support.cosign_cases import TAG, SignedCase, cosign_cases
from tests.support.fake_upstream import FakeUpstream, Fault
from tests.support.mirror_app import run_mirror
from tests.support.oci_content import (
    bundle_referrer,
    fallback_tag,
    push_to_fake,
    push_to_registry,
    referrers_index,
    small_image,
)
from tests.support.registry import UpstreamRegistry, start_registry
from tests.support.trust_mirror import (
    POLICY,
    fetch,
    metric_values,
    platform_index,
    signature_for,
    trust_config,
)

REPOSITORY = "acme/app"
KEYS = (CosignKey.generate(), CosignKey.generate())
CASES = cosign_cases(*KEYS, REPOSITORY)
# distribution checks digests: it cannot serve an altered blob (the fake upstream does)
PUSHED = [case for case in CASES if case.altered_blob is None]
CHILDREN = [small_image("platform-amd64"), small_image("platform-arm64")]
INDEX = platform_index(CHILDREN)
LOOSE = small_image("loose")


def tag_of(case: SignedCase) -> str:
    return TAG if case.name == "valid" else case.name


@pytest.fixture(scope="module")
def signed_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpstreamRegistry]:
    """Every cosign case, a signed index of two platforms, and an unsigned loose image."""
    started = start_registry(tmp_path_factory.mktemp("trust-pull"))
    try:
        client = started.client()
        push = partial(push_to_registry, client, REPOSITORY)
        for case in PUSHED:
            push(case.image, tag_of(case))
            if case.signature is not None:
                push(case.signature, case.signature_tag)
            if case.missing_blob is not None:
                gone = client.request("DELETE", REPOSITORY, f"blobs/{case.missing_blob}",
                                      actions=("*",))  # fmt: skip
                assert gone.status == 202, gone.body
        for child in (*CHILDREN, LOOSE):
            push(child)
        push(INDEX, "multi")
        signature = signature_for(KEYS[0], REPOSITORY, INDEX.digest)
        push(signature, INDEX.digest.replace(":", "-") + ".sig")
        yield started
    finally:
        started.stop()


async def verdicts(http: aiohttp.ClientSession, url: str) -> dict[str, tuple[int, str]]:
    """Each case's status and error message, by tag."""
    found = {}
    for case in PUSHED:
        status, error = await fetch(http, url, f"/v2/{REPOSITORY}/manifests/{tag_of(case)}")
        found[case.name] = (status, error.get("message", ""))
    return found


def expected_verdicts() -> dict[str, tuple[int, str]]:
    return {
        case.name: (200, "")
        if case.expected is Reason.VERIFIED
        else (403, f"trust policy {POLICY!r}: {REASON_TEXT[case.expected]}")
        for case in PUSHED
    }


async def test_require_admits_the_signed_image_and_refuses_every_other(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = trust_config(tmp_path, signed_registry.url, KEYS[0])
    async with run_mirror(config) as mirror:
        got = await verdicts(http, mirror.url)
        unsigned = next(case for case in PUSHED if case.name == "unsigned")
        by_digest = f"/v2/{REPOSITORY}/manifests/{unsigned.image.digest}"
        digest_get = await fetch(http, mirror.url, by_digest)
        digest_head = await fetch(http, mirror.url, by_digest, method="HEAD")
        tag_head = await fetch(
            http, mirror.url, f"/v2/{REPOSITORY}/manifests/unsigned", method="HEAD"
        )
        valid_head = await fetch(
            http, mirror.url, f"/v2/{REPOSITORY}/manifests/{TAG}", method="HEAD"
        )
        refusals = await metric_values(http, mirror.url, "mirror_signature_refusals_total")
        results = await metric_values(http, mirror.url, "mirror_signature_verifications_total")
    assert got == expected_verdicts()
    assert digest_get[0] == 403
    assert digest_get[1]["code"] == "DENIED"
    assert digest_get[1]["detail"] == {"policy": POLICY, "reason": "no_signature"}
    assert (digest_head[0], tag_head[0], valid_head[0]) == (403, 403, 200)
    assert refusals["no_signature"] == 4  # the tag (GET, HEAD) and the digest (GET, HEAD)
    assert refusals["blob_missing"] == 1
    assert refusals["unavailable"] == 0
    assert results["verified"] == 2
    assert results["warned"] == 0


async def test_a_warm_cache_and_an_offline_mirror_give_the_same_verdicts(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with run_mirror(trust_config(tmp_path, signed_registry.url, KEYS[0])) as mirror:
        await verdicts(http, mirror.url)
    offline = trust_config(tmp_path, signed_registry.url, KEYS[0], offline=True)
    async with run_mirror(offline) as mirror:
        assert await verdicts(http, mirror.url) == expected_verdicts()
    # A new process (no verdict in memory) against the warm cache: same again.
    async with run_mirror(trust_config(tmp_path, signed_registry.url, KEYS[0])) as mirror:
        assert await verdicts(http, mirror.url) == expected_verdicts()


async def test_another_key_is_no_signature_of_the_trusted_publisher(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with run_mirror(trust_config(tmp_path, signed_registry.url, KEYS[1])) as mirror:
        status, error = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/{TAG}")
        other = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/other-key")
    assert (status, error["detail"]["reason"]) == (403, "signature_invalid")
    assert other[0] == 200


async def test_warn_serves_what_require_refuses_and_counts_it(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = trust_config(tmp_path, signed_registry.url, KEYS[0], mode="warn")
    async with run_mirror(config) as mirror:
        got = await verdicts(http, mirror.url)
        results = await metric_values(http, mirror.url, "mirror_signature_verifications_total")
        refusals = await metric_values(http, mirror.url, "mirror_signature_refusals_total")
    assert got == {case.name: (200, "") for case in PUSHED}
    assert results == {"verified": 1, "refused": 0, "warned": len(PUSHED) - 1}
    assert set(refusals.values()) == {0}


async def test_an_admitted_index_admits_the_platform_manifests_it_lists(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    children = [f"/v2/{REPOSITORY}/manifests/{child.digest}" for child in CHILDREN]
    loose = f"/v2/{REPOSITORY}/manifests/{LOOSE.digest}"
    async with run_mirror(trust_config(tmp_path, signed_registry.url, KEYS[0])) as mirror:
        before = [(await fetch(http, mirror.url, path))[0] for path in children]
        index = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/multi")
        after = [(await fetch(http, mirror.url, path))[0] for path in children]
        heads = [(await fetch(http, mirror.url, path, method="HEAD"))[0] for path in children]
        unlisted = await fetch(http, mirror.url, loose)
    assert before == [403, 403]  # not (yet) covered by an admitted index: no signature
    assert index[0] == 200
    assert after == heads == [200, 200]
    assert unlisted[0] == 403


async def test_signatures_themselves_pass_so_clients_can_verify_through_the_mirror(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    valid = next(case for case in PUSHED if case.name == "valid")
    assert valid.signature is not None
    async with run_mirror(trust_config(tmp_path, signed_registry.url, KEYS[0])) as mirror:
        by_tag = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/{valid.signature_tag}")
        path = f"/v2/{REPOSITORY}/manifests/{valid.signature.digest}"
        by_digest = await fetch(http, mirror.url, path)
    assert (by_tag[0], by_digest[0]) == (200, 200)


async def test_an_altered_signature_blob_is_refused_and_never_served(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    case = next(case for case in CASES if case.altered_blob is not None)
    assert case.signature is not None
    assert case.altered_blob is not None
    push_to_fake(up, REPOSITORY, case.image, "altered")
    push_to_fake(up, REPOSITORY, case.signature, case.signature_tag)
    up.add_fault(Fault(case.altered_blob, method="GET", corrupt=True))
    async with run_mirror(trust_config(tmp_path, up.url, KEYS[0])) as mirror:
        status, error = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/altered")
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200
    assert status == 403
    # The mirror never reads bytes that do not match their digest: an outage, not a verdict.
    assert error["detail"]["reason"] == "unavailable"
    assert not list((tmp_path / "cache").rglob(case.altered_blob.split(":")[1]))


async def test_an_upstream_that_fails_while_verifying_refuses_without_remembering(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = small_image("flaky")
    push_to_fake(up, REPOSITORY, image, "flaky")
    signature = signature_for(KEYS[0], REPOSITORY, image.digest)
    push_to_fake(up, REPOSITORY, signature, image.digest.replace(":", "-") + ".sig")
    fault = up.add_fault(Fault(".sig", status=503, times=2))  # the retry fails too
    async with run_mirror(trust_config(tmp_path, up.url, KEYS[0])) as mirror:
        first = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/flaky")
        second = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/flaky")
    assert fault.hits == 2
    assert (first[0], first[1]["detail"]["reason"]) == (403, "unavailable")
    assert second[0] == 200


@pytest.mark.parametrize(
    ("bundle", "reason"),
    [
        (b"[" * 100_000, "unsupported"),
        (b"\xff\xfe not json", "unsupported"),
        (b"{}" * 3_000_000, "blob_missing"),  # past the 4 MiB a signature blob may have
    ],
    ids=["deep", "not-json", "huge"],
)
async def test_a_hostile_bundle_referrer_is_refused_cleanly(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, bundle: bytes, reason: str
) -> None:
    up.referrers_api = True
    image = small_image("hostile-bundle")
    push_to_fake(up, REPOSITORY, image, "hostile")
    push_to_fake(up, REPOSITORY, bundle_referrer(bundle, image, "message-signature"))
    async with run_mirror(trust_config(tmp_path, up.url, KEYS[0])) as mirror:
        status, error = await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/hostile")
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200
    assert status == 403
    assert error["detail"]["reason"] == reason


async def test_the_admin_listing_says_which_images_are_signed_and_by_which_key(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    valid = next(case for case in PUSHED if case.name == "valid")
    config = trust_config(tmp_path, signed_registry.url, KEYS[0], admin={"token": "t"})
    async with run_mirror(config) as mirror:
        for tag in (TAG, "unsigned", valid.signature_tag):
            await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/{tag}")
        headers = {"Authorization": "Bearer t"}
        async with http.get(f"{mirror.url}/admin/cache", headers=headers) as resp:
            assert resp.status == 200
            listing = await resp.json()
    (repository,) = listing["repositories"]
    trust = {tag["tag"]: tag.get("trust") for tag in repository["tags"]}
    assert trust[TAG] == [{"digest": valid.image.digest, "policy": POLICY, "mode": "require",
                           "signed": True, "signers": ["acme"], "reason": "verified"}]  # fmt: skip
    (unsigned,) = trust["unsigned"]
    assert (unsigned["signed"], unsigned["reason"]) == (False, "no_signature")
    assert trust[valid.signature_tag] is None  # an artifact: no verdict


async def test_the_referrers_fallback_index_passes_but_covers_nothing(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    image = small_image("listed")
    bundle = bundle_referrer(b"{}", image, "message-signature")
    push_to_fake(up, REPOSITORY, image, "listed")
    push_to_fake(up, REPOSITORY, bundle)
    fallback = referrers_index([bundle])
    push_to_fake(up, REPOSITORY, fallback, fallback_tag(image.digest))
    # An image index dressed up under a fallback tag: its platform is still judged.
    disguised = platform_index([small_image("disguised")])
    push_to_fake(up, REPOSITORY, small_image("disguised"))
    push_to_fake(up, REPOSITORY, disguised, fallback_tag(small_image("other").digest))
    async with run_mirror(trust_config(tmp_path, up.url, KEYS[0])) as mirror:
        listing = await fetch(
            http, mirror.url, f"/v2/{REPOSITORY}/manifests/{fallback_tag(image.digest)}"
        )
        dressed = await fetch(
            http,
            mirror.url,
            f"/v2/{REPOSITORY}/manifests/{fallback_tag(small_image('other').digest)}",
        )
        platform = await fetch(
            http, mirror.url, f"/v2/{REPOSITORY}/manifests/{small_image('disguised').digest}"
        )
    assert (listing[0], dressed[0]) == (200, 200)
    assert platform[0] == 403


async def test_the_ui_shows_what_pulls_decided_and_waits_on_no_signature(
    signed_registry: UpstreamRegistry, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    config = trust_config(tmp_path, signed_registry.url, KEYS[0])
    async with run_mirror(config) as mirror:
        for tag in (TAG, "unsigned"):
            await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/{tag}")
        upstream = mirror.config.upstreams[0].name
        async with http.get(f"{mirror.url}/ui/repositories/{upstream}/{REPOSITORY}") as resp:
            assert resp.status == 200
            html = await resp.text()
    assert f'signature-verified">verified</span><span class="sub">acme (policy {POLICY})' in html
    assert 'signature-unsigned">unsigned</span>' in html
    assert "no signature" in html
