"""Air gap: warm a mirror where there is network, carry its cache, serve it offline."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.support.fake_upstream import FakeUpstream
from tests.support.images import ImageSet
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.registry import UpstreamRegistry
from tests.support.skopeo import skopeo_copy

# Both mirrors know the upstream by this name, so the carried cache matches.
UPSTREAM_NAME = "registry.example.internal"
IMAGES = ["library/multi:latest", "library/tiny:docker"]


async def test_warm_carry_and_serve_offline(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    from mirror.warm import warm

    connected = tmp_path / "connected-cache"
    upstream = [{"name": UPSTREAM_NAME, "url": registry_none.url}]
    async with run_mirror(mirror_config(connected, registry_none.url, upstreams=upstream)) as m:
        results = await warm(m.url, [*IMAGES, "library/nosuch:tag"])
    ok, missing = results[:-1], results[-1]
    assert [r.error for r in ok] == [None, None]
    assert [r.digest for r in ok] == [image_set.image(ref).digest for ref in IMAGES]
    assert ok[0].manifests == 3  # the index and both platforms
    assert missing.error is not None
    assert "404" in missing.error

    carried = tmp_path / "carried-cache"
    shutil.copytree(connected, carried)  # stands for a tarball on a USB stick

    async with FakeUpstream() as unreachable:
        offline = [{"name": UPSTREAM_NAME, "url": unreachable.url}]
        config = mirror_config(carried, unreachable.url, upstreams=offline, offline=True)
        async with run_mirror(config) as mirror:
            host = mirror.url.removeprefix("http://")
            for ref in IMAGES:
                target = tmp_path / ref.replace("/", "_")
                await skopeo_copy(f"docker://{host}/{ref}", target)
                top = (target / "manifest.json").read_bytes()
                assert "sha256:" + hashlib.sha256(top).hexdigest() == image_set.image(ref).digest
            async with aiohttp.ClientSession() as session:
                url = f"{mirror.url}/v2/library/medium/manifests/latest"
                async with session.get(url) as resp:
                    assert resp.status == 404  # never warmed: not there, and not fetched
        assert unreachable.connections == 0


def test_warm_command_reports_failures(tmp_path: Path) -> None:
    listing = tmp_path / "images.txt"
    listing.write_text("# nothing reachable\nalpine:3.20\n")
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "warm", "--mirror", "http://127.0.0.1:9", "--file",
         str(listing)],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout.startswith("FAILED alpine:3.20")
