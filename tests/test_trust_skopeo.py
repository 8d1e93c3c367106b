"""skopeo, verifying through the mirror, finds the cosign signatures: online, warm, offline.

skopeo runs with a ``sigstoreSigned`` policy and a ``registries.d`` file
setting ``use-sigstore-attachments: true``, so it looks up the image's
``sha256-<hex>.sig`` manifest and payload through the mirror. Debian's
skopeo is built with sigstore verification disabled: when it finds a
signature it stops with "sigstore disabled"; when it finds none, with "no
signature exists". So the first error for the signed image and the second
for the unsigned one show that the mirror serves the signatures, from its
upstream, from its warm cache, and offline from a cache that only ``warm``
filled (where the mirror's own ``require`` policy refuses the unsigned one).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from mirror.warm import warm
from tests.support.cosign import CosignKey
from tests.support.mirror_app import run_mirror
from tests.support.oci_content import fallback_tag, push_to_registry, small_image
from tests.support.registry import start_registry
from tests.support.trust_mirror import signature_for, trust_config

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo")

REPOSITORY = "acme/app"
KEY = CosignKey.generate()
FOUND = "sigstore disabled"  # Debian's refusal, once a signature is found
NOT_FOUND = "no signature exists"


def skopeo_setup(work: Path) -> list[str]:
    """skopeo's global options: a sigstoreSigned policy, sigstore attachments on."""
    (work / "registries.d").mkdir(parents=True, exist_ok=True)
    (work / "registries.d" / "default.yaml").write_text(
        "default-docker:\n  use-sigstore-attachments: true\n"
    )
    (work / "cosign.pub").write_bytes(KEY.public_pem())
    policy = {"default": [{"type": "sigstoreSigned", "keyPath": str(work / "cosign.pub"),
                           "signedIdentity": {"type": "matchRepository"}}]}  # fmt: skip
    (work / "policy.json").write_text(json.dumps(policy))
    return ["--registries.d", str(work / "registries.d"), "--policy", str(work / "policy.json")]


async def skopeo_error(options: list[str], mirror_url: str, tag: str, work: Path) -> str:
    """skopeo copy of ``tag`` through the mirror; it must fail: its error output."""
    host = mirror_url.removeprefix("http://")
    (work / "copies").mkdir(exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "skopeo", *options, "copy", "--src-tls-verify=false",
        f"docker://{host}/{REPOSITORY}:{tag}", f"dir:{work / 'copies' / tag}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode != 0, "skopeo copied an image it cannot have verified"
    return output.decode()


async def test_skopeo_finds_the_signature_through_the_mirror_online_warm_and_offline(
    tmp_path: Path,
) -> None:
    signed, unsigned = small_image("skopeo-signed"), small_image("skopeo-unsigned")
    options = skopeo_setup(tmp_path / "skopeo")
    registry = start_registry(tmp_path / "registry")
    try:
        client = registry.client()
        push_to_registry(client, REPOSITORY, signed, "signed")
        push_to_registry(client, REPOSITORY, unsigned, "unsigned")
        signature = signature_for(KEY, REPOSITORY, signed.digest)
        push_to_registry(client, REPOSITORY, signature, fallback_tag(signed.digest) + ".sig")
        tags = ("signed", "unsigned")
        config = trust_config(tmp_path / "site", registry.url, KEY, mode="allow")
        async with run_mirror(config) as mirror:
            online = [await skopeo_error(options, mirror.url, t, tmp_path) for t in tags]
            warm_cache = [await skopeo_error(options, mirror.url, t, tmp_path) for t in tags]
        # A cache that only warm filled, carried to an offline mirror.
        carried = trust_config(tmp_path / "carried", registry.url, KEY, mode="allow")
        async with run_mirror(carried) as mirror:
            results = await warm(mirror.url, [f"{REPOSITORY}:{t}" for t in tags])
    finally:
        registry.stop()
    assert [r.error for r in results] == [None, None]
    offline_config = trust_config(tmp_path / "carried", registry.url, KEY, offline=True)
    async with run_mirror(offline_config) as mirror:
        offline = [await skopeo_error(options, mirror.url, t, tmp_path) for t in tags]
    for signed_error, unsigned_error in (online, warm_cache):
        assert FOUND in signed_error, signed_error
        assert NOT_FOUND in unsigned_error, unsigned_error
    # Offline, the mirror itself requires the signature: it refuses the unsigned image first.
    assert FOUND in offline[0], offline[0]
    assert "denied: trust policy 'acme': no signature found" in offline[1], offline[1]
