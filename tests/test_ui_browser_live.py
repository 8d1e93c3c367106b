"""The wired UI in a real browser: a mirror process, a real registry upstream, chromium.

Distribution's registry (seeded with the test images) is the mirror's only
upstream; a ``registry-mirror serve`` process pulls the images from it as a
client asks for them; Debian's chromium, driven by Playwright
(tests/support/browser.py), uses the UI as an operator would. Screenshots of
each step go to ``<pytest basetemp>/ui-screenshots/`` (and to
``$MIRROR_UI_SCREENSHOTS``, which is how docs/ui.md's are made).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from tests.support.browser import axe_violations, chromium, open_page, require_browser, screenshot
from tests.support.images import ImageSet
from tests.support.mirror_process import MirrorProcess, start_mirror_process
from tests.support.registry import UpstreamRegistry, running_registry

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.asyncio(loop_scope="module")

UPSTREAM = "registry.test"  # the upstream's name in the mirror (not resolved: only a name)
TOKEN = "browser-admin-token"
PULLED = ["library/tiny:oci", "library/tiny:docker", "library/multi:latest",
          "library/medium:latest"]  # fmt: skip
ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])  # fmt: skip


@pytest.fixture(scope="module")
def registry(image_set: ImageSet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        UpstreamRegistry]:  # fmt: skip
    require_browser()
    with running_registry(tmp_path_factory.mktemp("ui-registry"), image_set,
                          refs=PULLED) as running:  # fmt: skip
        yield running


@pytest.fixture(scope="module")
def mirror(
    registry: UpstreamRegistry, image_set: ImageSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MirrorProcess]:
    workdir = tmp_path_factory.mktemp("ui-mirror")
    settings = {
        "upstreams": [{"name": UPSTREAM, "url": registry.url, "retries": 1}],
        "storage": {"path": str(workdir / "cache")},
        "admin": {"token": TOKEN},
    }
    process = start_mirror_process(workdir, settings, name="ui-mirror")
    try:
        for ref in PULLED:
            pull_image(process.url, image_set, ref)
        yield process
    finally:
        process.process.stop()


def fetch(url: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def pull_image(base: str, image_set: ImageSet, ref: str) -> None:
    """Pull ``ref`` like a client: the tag, every manifest it leads to, every blob."""
    image = image_set.image(ref)
    root = f"{base}/v2/{image.repository}"
    fetch(f"{root}/manifests/{image.tag}", ACCEPT)
    for child in image_set.children(image):
        fetch(f"{root}/manifests/{child.digest}", ACCEPT)
    for blob in image_set.blobs_of(image.manifest):
        fetch(f"{root}/blobs/{blob.digest}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    async with chromium() as running:
        yield running


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "ui-screenshots"


def admin_listing(mirror: MirrorProcess) -> list[str]:
    request = urllib.request.Request(mirror.url + "/admin/cache",
                                     headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as response:
        return [r["repository"] for r in json.loads(response.read())["repositories"]]


async def test_search_finds_a_pulled_repository(
    browser: Browser, mirror: MirrorProcess, shots: Path
) -> None:
    page, traffic = await open_page(browser, [mirror.url])
    await page.goto(mirror.url + "/ui/")
    await screenshot(page, shots, "live-overview")
    await page.keyboard.press("/")
    await page.keyboard.type("multi")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/repositories?q=multi")
    results = page.locator("table.data tbody th a")
    assert await results.all_inner_texts() == ["library/multi"]
    await page.fill("#q", "library/*")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_url("**/ui/repositories?q=library%2F*")
    assert sorted(await results.all_inner_texts()) == ["library/medium", "library/multi",
                                                       "library/tiny"]  # fmt: skip
    await screenshot(page, shots, "live-search")
    assert traffic.problems() == []


async def test_a_repository_page_lists_the_tags_and_digests_pulled(
    browser: Browser, mirror: MirrorProcess, image_set: ImageSet, shots: Path
) -> None:
    page, traffic = await open_page(browser, [mirror.url])
    await page.goto(f"{mirror.url}/ui/repositories/{UPSTREAM}/library/multi")
    assert await page.locator("h1").inner_text() == f"{UPSTREAM}/library/multi"
    row = page.locator('tr[data-tag="latest"]')
    image = image_set.image("library/multi:latest")
    assert await row.locator("code.digest").inner_text() == image.digest
    platforms = await row.locator(".platforms li").all_inner_texts()
    assert sorted(p.split()[0] for p in platforms) == sorted(image.platforms)
    await screenshot(page, shots, "live-repository")
    await page.goto(f"{mirror.url}/ui/repositories/{UPSTREAM}/library/tiny")
    tags = page.locator("table.tags tbody tr")
    assert sorted(await tags.evaluate_all("rows => rows.map(r => r.dataset.tag)")) == [
        "docker", "oci"]  # fmt: skip
    for tag in ("oci", "docker"):
        digest = page.locator(f'tr[data-tag="{tag}"] code.digest')
        assert await digest.inner_text() == image_set.image(f"library/tiny:{tag}").digest
    assert traffic.problems() == []


async def test_a_pull_user_cannot_purge_and_an_admin_can(
    browser: Browser, mirror: MirrorProcess, shots: Path
) -> None:
    page, traffic = await open_page(browser, [mirror.url])  # no admin token: a pull user
    await page.goto(f"{mirror.url}/ui/repositories/{UPSTREAM}/library/medium")
    assert await page.get_by_role("button", name=re.compile("Purge")).count() == 0
    status = await page.evaluate("""async (upstream) => {
        const body = new URLSearchParams(
            {upstream, repository: "library/medium", confirm: "yes"});
        return (await fetch("/ui/actions/purge", {method: "POST", body})).status;
    }""", UPSTREAM)  # fmt: skip
    assert status == 403
    assert "library/medium" in admin_listing(mirror)

    page, traffic = await open_page(browser, [mirror.url], token=TOKEN)
    await page.goto(f"{mirror.url}/ui/repositories/{UPSTREAM}/library/medium")
    await page.get_by_label(re.compile("Remove every tag")).check()
    await page.locator("form.purge-repository button").click()
    await page.wait_for_url("**notice=purged**")
    await screenshot(page, shots, "live-purged")
    assert "library/medium" not in await page.locator("table.data").inner_text()
    assert "library/medium" not in admin_listing(mirror)
    assert traffic.problems() == []


async def test_the_live_pages_pass_axe_and_stay_on_the_mirror(
    browser: Browser, mirror: MirrorProcess
) -> None:
    page, traffic = await open_page(browser, [mirror.url], token=TOKEN)
    for path in ("/ui/", "/ui/repositories", f"/ui/repositories/{UPSTREAM}/library/multi"):
        await page.goto(mirror.url + path)
        assert await axe_violations(page) == [], path
    assert traffic.refused == []
    assert traffic.problems() == []
