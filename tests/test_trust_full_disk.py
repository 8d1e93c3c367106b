"""A full cache disk: signatures are still read and checked, referrers still answered.

Nothing can be kept (the signature manifest, its payload blob, the
referrers index): every read goes through to the upstream, and the verdict
is the same as with room to spare.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cosign import CosignKey
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import run_mirror
from tests.support.oci_content import fallback_tag, push_to_fake, small_image
from tests.support.tmpfs import fill_up, small_disk
from tests.support.trust_mirror import fetch, signature_for, trust_config

REPOSITORY = "acme/app"
KEY = CosignKey.generate()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system."""
    with small_disk(tmp_path / "small", "1m") as path:
        yield path


async def test_a_full_disk_costs_the_cache_not_the_verdict(
    up: FakeUpstream, http: aiohttp.ClientSession, tmp_path: Path, disk: Path
) -> None:
    signed, unsigned = small_image("disk-signed"), small_image("disk-unsigned")
    push_to_fake(up, REPOSITORY, signed, "signed")
    push_to_fake(up, REPOSITORY, unsigned, "unsigned")
    signature = signature_for(KEY, REPOSITORY, signed.digest)
    push_to_fake(up, REPOSITORY, signature, fallback_tag(signed.digest) + ".sig")
    config = trust_config(tmp_path / "site", up.url, KEY, storage={"path": str(disk)})
    async with run_mirror(config) as mirror:
        fill_up(disk)
        first = [await fetch(http, mirror.url, f"/v2/{REPOSITORY}/manifests/{t}") for t in
                 ("signed", "unsigned")]  # fmt: skip
        async with http.get(f"{mirror.url}/v2/{REPOSITORY}/referrers/{signed.digest}") as resp:
            referrers = (resp.status, await resp.json())
        async with http.get(f"{mirror.url}/healthz") as resp:
            assert resp.status == 200
    assert first[0][0] == 200
    assert (first[1][0], first[1][1]["detail"]["reason"]) == (403, "no_signature")
    assert referrers[0] == 200
    assert [entry["digest"] for entry in referrers[1]["manifests"]] == [signature.digest]
