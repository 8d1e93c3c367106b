"""Progress of ``warm`` and ``verify`` on standard error: lines off a terminal, none if --quiet.

The bars themselves (on a terminal) are :mod:`mirror.progress`'s, tested in
``tests/test_progress.py``; here the commands feed them real figures.
"""

from __future__ import annotations

from pathlib import Path

from mirror.oci import parse_digest
from mirror.storage import layout
from tests.support.airgap_cli import airgap, disk, make_site, run_cli_async
from tests.support.airgap_content import UPSTREAM, ImageSetSource, export_images
from tests.support.cli import run_cli
from tests.support.images import ImageSet
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.registry import UpstreamRegistry

MEDIUM = "library/medium:latest"


async def test_warm_reports_each_images_bytes(
    registry_none: UpstreamRegistry, image_set: ImageSet, tmp_path: Path
) -> None:
    layers = image_set.blobs_of(image_set.image(MEDIUM).manifest)
    total = sum(blob.size for blob in layers)
    async with run_mirror(mirror_config(tmp_path / "cache", registry_none.url)) as mirror:
        status, out, err = await run_cli_async("warm", MEDIUM, "--mirror", mirror.url)
        assert status == 0, err
        assert out.startswith(f"ok {MEDIUM}")
        assert f"warm {MEDIUM}: {len(layers)} objects, {total / 1e6:.1f} MB to move" in err
        assert f"warm {MEDIUM}: done, {total / 1e6:.1f} MB in" in err
        status, _, err = await run_cli_async("warm", MEDIUM, "--mirror", mirror.url, "--quiet")
        assert (status, err) == (0, "")


async def test_verify_reports_its_bytes_and_names_damage(
    image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(ImageSetSource(image_set, [MEDIUM]), tmp_path / "layout")
    cache = tmp_path / "cache"
    site = make_site(tmp_path, "site", disk(cache), "http://127.0.0.1:9")
    assert airgap("import", site, str(tmp_path / "layout")).returncode == 0
    layer = max(image_set.blobs_of(image_set.image(MEDIUM).manifest), key=lambda b: b.size)
    key = layout.blob_key(UPSTREAM, parse_digest(layer.digest))
    (cache / key).write_bytes(b"bit rot")
    done = run_cli("verify", "--config", str(site.path))
    assert done.returncode == 1
    assert "verify: 4 objects" in done.stderr  # a config, 2 layers, the manifest
    assert f"verify: damaged {key}: does not match its digest" in done.stderr
    assert "verify: done" in done.stderr
    quiet = run_cli("verify", "--config", str(site.path), "--quiet")
    assert quiet.returncode == 0  # removed by the first pass
    assert "verify:" not in quiet.stderr
