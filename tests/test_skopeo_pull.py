"""skopeo (a real client) pulls through the mirror; digests match the upstream's."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.support.images import ImageSet
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.registry import UpstreamRegistry
from tests.support.skopeo import skopeo_copy

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


@pytest.mark.parametrize(
    "ref", ["library/multi:latest", "library/multi:docker", "library/tiny:docker"]
)
async def test_skopeo_pulls_through_the_mirror(
    registry_token: UpstreamRegistry, image_set: ImageSet, tmp_path: Path, ref: str
) -> None:
    settings = [{"url": registry_token.url, "username": "testuser", "password": "testpass"}]
    config = mirror_config(tmp_path / "cache", registry_token.url, upstreams=settings)
    image = image_set.image(ref)
    async with run_mirror(config) as mirror:
        host = mirror.url.removeprefix("http://")
        await skopeo_copy(f"docker://{host}/{ref}", tmp_path / "pulled")
    top = (tmp_path / "pulled" / "manifest.json").read_bytes()
    assert "sha256:" + hashlib.sha256(top).hexdigest() == image.digest
    for child in image_set.children(image):
        # skopeo --all keeps every platform manifest, named by its digest.
        copied = tmp_path / "pulled" / f"{child.digest[7:]}.manifest.json"
        assert copied.read_bytes() == child.data
