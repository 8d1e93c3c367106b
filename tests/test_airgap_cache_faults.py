"""Damaged layouts, a kill -9 and a full disk during ``registry-mirror import``.

Each case runs the command on a real disk cache and ends with
``registry-mirror verify`` finding nothing wrong: whatever went wrong, no
partial or wrong object is ever visible. The large image here has a 32 MiB
layer (built once, beside the suite's 200 MiB set).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mirror.oci import parse_digest
from mirror.storage import layout
from mirror.storage.disk import PARTIAL_DIR
from tests.support.airgap_cli import Site, airgap, disk, make_site, summary, wait_for_partial
from tests.support.airgap_content import SMALL_REFS, UPSTREAM, ImageSetSource, export_images
from tests.support.cli import PROJECT_ROOT, run_cli
from tests.support.images import ImageSet, build_images, default_image_dir
from tests.support.tmpfs import small_disk

LARGE = "library/large:latest"
LARGE_MB = 32
MIB = 1024 * 1024
NOWHERE = "http://127.0.0.1:9"  # never dialled: import makes no request


@pytest.fixture(scope="module")
def large_set() -> ImageSet:
    """The test images with a 32 MiB layer in ``library/large``."""
    return build_images(default_image_dir(large_mb=LARGE_MB), large_mb=LARGE_MB)


def site(tmp_path: Path, cache: Path) -> Site:
    return make_site(tmp_path, "far", disk(cache), NOWHERE)


def verify_clean(far: Site) -> None:
    done = run_cli("verify", "--config", str(far.path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 damaged" in done.stdout


def committed(cache: Path, digest: str) -> bool:
    return (cache / layout.blob_key(UPSTREAM, parse_digest(digest))).exists()


async def test_damaged_objects_are_refused_by_name_and_the_rest_imports(
    image_set: ImageSet, tmp_path: Path
) -> None:
    dest = tmp_path / "layout"
    await export_images(ImageSetSource(image_set, SMALL_REFS), dest)
    # Blobs of one image each: a config, a layer, another config.
    corrupt = image_set.blobs_of(image_set.image("library/tiny:oci").manifest)[0]
    truncated = max(image_set.blobs_of(image_set.image("library/medium:latest").manifest),
                    key=lambda b: b.size)  # fmt: skip
    dropped = image_set.blobs_of(image_set.image("library/tiny:docker").manifest)[0]
    blob_file = dest / "blobs" / "sha256"
    path = blob_file / corrupt.digest.removeprefix("sha256:")
    path.write_bytes(b"X" + path.read_bytes()[1:])
    path = blob_file / truncated.digest.removeprefix("sha256:")
    path.write_bytes(path.read_bytes()[: truncated.size // 2])
    (blob_file / dropped.digest.removeprefix("sha256:")).unlink()

    cache = tmp_path / "cache"
    far = site(tmp_path, cache)
    done = airgap("import", far, str(dest))
    assert done.returncode == 1, done.stderr
    report = summary(done)
    assert report["damaged"] == {
        corrupt.digest: "does not match its digest",
        truncated.digest: f"truncated: {truncated.size // 2} of {truncated.size} bytes",
        dropped.digest: "missing from the layout",
    }
    status = {i["reference"].split("/", 1)[1]: i["status"] for i in report["images"]}
    assert status == {
        "library/tiny:oci": "refused", "library/medium:latest": "refused",
        "library/tiny:docker": "refused", "library/multi:latest": "imported",
        "library/multi:docker": "imported",
    }  # fmt: skip
    for name in (corrupt.digest, truncated.digest, dropped.digest):
        assert name in done.stderr  # named to the operator, even with --quiet
        assert not committed(cache, name)
    assert not list((cache / UPSTREAM / "tags" / "library" / "tiny").rglob("*"))
    verify_clean(far)


async def test_kill_9_during_an_import_then_rerun_completes(
    large_set: ImageSet, tmp_path: Path
) -> None:
    tar = tmp_path / "large.tar"
    await export_images(ImageSetSource(large_set, [LARGE]), tar)
    data = tar.read_bytes()
    # The large layer comes last in our tar: the import gets all but its second
    # half, so it is certainly in the middle of it when it is killed.
    cache = tmp_path / "cache"
    far = site(tmp_path, cache)
    partial = kill_mid_import(far, data[: len(data) - 16 * MIB], cache / PARTIAL_DIR)
    layer = large_set.large_layer()
    assert partial.exists()
    assert not committed(cache, layer.digest)
    assert not list((cache / UPSTREAM / "manifests").rglob("*"))  # manifests come after blobs

    rerun = airgap("import", far, str(tar))
    assert rerun.returncode == 0, rerun.stderr
    assert [i["status"] for i in summary(rerun)["images"]] == ["imported"]
    assert committed(cache, layer.digest)
    assert not partial.exists()  # swept at the start of the rerun
    verify_clean(far)


def kill_mid_import(far: Site, head: bytes, partials: Path) -> Path:
    """``import -`` fed ``head`` only, killed with SIGKILL once its partial object has 8 MiB."""
    command = [sys.executable, "-m", "mirror", "import", "-", "--config", str(far.path)]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, cwd=PROJECT_ROOT,
                               env={"PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    assert process.stdin is not None
    try:
        process.stdin.write(head)
        process.stdin.flush()
        partial = wait_for_partial(partials, 8 * MIB, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        process.stdin.close()
    assert process.returncode == -signal.SIGKILL
    return partial


async def test_a_full_disk_during_an_import_leaves_nothing_partial(
    large_set: ImageSet, tmp_path: Path
) -> None:
    dest = tmp_path / "layout"
    await export_images(ImageSetSource(large_set, [LARGE, "library/tiny:oci"]), dest)
    with small_disk(tmp_path / "cache", "16m") as cache:
        far = site(tmp_path, cache)
        done = airgap("import", far, str(dest))
        assert done.returncode == 1, done.stderr
        report = summary(done)
        layer = large_set.large_layer()
        assert report["damaged"][layer.digest].startswith("cannot be written to the cache")
        status = {i["reference"].split("/", 1)[1]: i["status"] for i in report["images"]}
        assert status == {LARGE: "refused", "library/tiny:oci": "imported"}
        assert not committed(cache, layer.digest)
        assert not list((cache / PARTIAL_DIR).iterdir())
        verify_clean(far)
