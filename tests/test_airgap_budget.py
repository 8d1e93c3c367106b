"""The cache budget and pins on import, and the commands' exit statuses for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.airgap_cli import Site, airgap, disk, make_site, summary
from tests.support.airgap_content import UPSTREAM, ImageSetSource, export_images
from tests.support.cli import run_cli
from tests.support.images import ImageSet, build_images, default_image_dir

NOWHERE = "http://127.0.0.1:9"
PINNED = "library/tiny:oci"
BUDGET = {"max_size": "6MiB", "pins": [f"{UPSTREAM}/{PINNED}"]}


def blob_keys(cache: Path) -> set[str]:
    return {p.name for p in (cache / UPSTREAM / "blobs").rglob("*") if p.is_file()}


def layer_of(image_set: ImageSet, ref: str) -> str:
    blobs = image_set.blobs_of(image_set.image(ref).manifest)
    return max(blobs, key=lambda b: b.size).digest.removeprefix("sha256:")


async def test_an_import_larger_than_the_budget_fails_up_front(
    image_set: ImageSet, tmp_path: Path
) -> None:
    await export_images(ImageSetSource(image_set, ["library/medium:latest"]), tmp_path / "l")
    far = make_site(tmp_path, "far", disk(tmp_path / "cache"), NOWHERE,
                    cache={"max_size": "2MiB"})  # fmt: skip
    for flags in ([], ["--allow-evict"]):  # evicting everything would not make it fit
        done = airgap("import", far, str(tmp_path / "l"), *flags)
        assert done.returncode == 3
        assert "more than the cache budget" in done.stderr
        assert blob_keys(tmp_path / "cache") == set()


async def test_an_import_past_the_budget_evicts_only_with_allow_evict_and_never_pins(
    image_set: ImageSet, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    far: Site = make_site(tmp_path, "far", disk(cache), NOWHERE, cache=BUDGET)
    first = tmp_path / "first"
    await export_images(ImageSetSource(image_set, ["library/medium:latest", PINNED]), first)
    quiet = airgap("import", far, str(first))  # 4.3 MB of 6 MiB
    assert (quiet.returncode, quiet.stderr) == (0, "")  # --quiet: no progress, no info logs
    bigger = build_images(default_image_dir(large_mb=3), large_mb=3)
    second = tmp_path / "second"
    await export_images(ImageSetSource(bigger, ["library/large:latest"]), second)
    before = blob_keys(cache)

    refused = airgap("import", far, str(second))
    assert refused.returncode == 3
    assert "--allow-evict" in refused.stderr
    assert blob_keys(cache) == before

    done = airgap("import", far, str(second), "--allow-evict")
    assert done.returncode == 0, done.stderr
    assert [i["status"] for i in summary(done)["images"]] == ["imported"]
    after = blob_keys(cache)
    assert layer_of(bigger, "library/large:latest") in after
    assert layer_of(image_set, "library/medium:latest") not in after  # evicted, oldest
    pinned = {b.digest.removeprefix("sha256:") for b in
              image_set.blobs_of(image_set.image(PINNED).manifest)}  # fmt: skip
    assert pinned <= after


def test_bad_input_exit_statuses(tmp_path: Path) -> None:
    site = make_site(tmp_path, "site", disk(tmp_path / "cache"), NOWHERE)
    out = str(tmp_path / "out")
    bad = airgap("export", site, out, "--image", "Not A Reference")
    assert bad.returncode == 2
    assert "--image" in bad.stderr
    unknown = airgap("export", site, out, "--upstream", "nosuch.example")
    assert unknown.returncode == 2
    assert "not configured" in unknown.stderr
    unmatched = airgap("export", site, out, "--image", "library/alpine:3.20")
    assert unmatched.returncode == 1
    assert summary(unmatched)["unmatched"] == [f"{UPSTREAM}/library/alpine:3.20"]
    assert "no such tag in the cache" in unmatched.stderr
    from_env = run_cli("export", f"{out}-2", "--json", "--image", f"{UPSTREAM}/library/alpine:3.20",
                       env={"MIRROR_CONFIG": str(site.path)})  # fmt: skip
    assert json.loads(from_env.stdout)["unmatched"] == [f"{UPSTREAM}/library/alpine:3.20"]
    (tmp_path / "empty").mkdir()
    not_layout = airgap("import", site, str(tmp_path / "empty"))
    assert not_layout.returncode == 3
    assert "oci-layout" in not_layout.stderr
    naming = airgap("import", site, str(tmp_path / "empty"), "--upstream", "nosuch.example")
    assert naming.returncode == 2
    for done in (bad, unknown, unmatched, not_layout, naming):
        assert "Traceback" not in done.stderr
