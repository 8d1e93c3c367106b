"""The UI in a real browser: Debian's chromium driven by Playwright (tests/support/browser.py).

The UI is served on 127.0.0.1 over the in-memory cache of tests/support/ui_data.py.
Screenshots of every step go to ``<pytest basetemp>/ui-screenshots/`` (also to
``$MIRROR_UI_SCREENSHOTS`` when set: that is how docs/ui.md's are made).
"""

from __future__ import annotations

import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from aiohttp import web

from mirror.ui.model import RepositoryQuery, TagQuery
from tests.support.browser import (
    axe_violations,
    chromium,
    open_page,
    require_browser,
    screenshot,
)
from tests.support.ui_cache import MemoryCache
from tests.support.ui_data import sample_cache, synthetic_cache
from tests.support.ui_server import ADMIN_TOKEN, PULL_TOKEN, serve_ui

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page


# One browser for the module (a start costs a second or two); each test has its own context.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    async with chromium() as running:
        yield running


@pytest.fixture
def cache() -> MemoryCache:
    return sample_cache()


@pytest_asyncio.fixture(loop_scope="module")
async def ui(cache: MemoryCache) -> AsyncIterator[str]:
    async with serve_ui(cache, cache) as base:
        yield base


@pytest.fixture
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "ui-screenshots"


async def focused(page: Page) -> str:
    """What has the keyboard focus: ``tag#id.class "text"``."""
    return str(
        await page.evaluate("""() => {
        const e = document.activeElement;
        return `${e.tagName.toLowerCase()}#${e.id}.${e.className} "${e.textContent.trim()}"`;
    }""")
    )


async def tab_until(page: Page, pattern: str, limit: int = 25) -> list[str]:
    """Press Tab until the focused element matches ``pattern``; the elements passed."""
    path = []
    for _ in range(limit):
        await page.keyboard.press("Tab")
        path.append(await focused(page))
        if re.search(pattern, path[-1]):
            return path
    raise AssertionError(f"Tab never reached {pattern!r}: {path}")


async def test_search_finds_a_repository(browser: Browser, ui: str, shots: Path) -> None:
    page, traffic = await open_page(browser, [ui])
    await page.goto(ui + "/ui/")
    await page.keyboard.press("/")  # the search shortcut
    assert (await focused(page)).startswith("input#header-q")
    await page.keyboard.type("web-app")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/repositories?q=web-app")
    results = page.locator("table.data tbody th a")
    assert await results.all_inner_texts() == ["acme/web-app"]
    await page.fill("#q", "library/*")
    await page.select_option("#sort", "pulls")
    await page.get_by_role("button", name="Search").click()
    await page.wait_for_url("**/ui/repositories?q=library%2F*&sort=pulls")
    assert await results.all_inner_texts() == ["library/alpine", "library/nginx"]
    await screenshot(page, shots, "search")
    await results.first.click()
    assert await page.locator("h1").inner_text() == "docker.io/library/alpine"
    assert traffic.problems() == []


async def test_a_repository_page_lists_its_tags_digests_and_platforms(
    browser: Browser, ui: str, cache: MemoryCache, shots: Path
) -> None:
    detail = await cache.repository("docker.io", "library/alpine", TagQuery())
    assert detail is not None
    page, traffic = await open_page(browser, [ui])
    await page.goto(ui + "/ui/repositories/docker.io/library/alpine")
    rows = page.locator("table.tags tbody tr")
    assert await rows.count() == len(detail.tags) == 3
    for tag in detail.tags:
        row = page.locator(f'tr[data-tag="{tag.tag}"]')
        assert await row.locator("th").inner_text() == tag.tag
        assert await row.locator("code.digest").inner_text() == tag.digest
        platforms = await row.locator(".platforms li").all_inner_texts()
        assert [p.split()[0] for p in platforms] == [p.platform for p in tag.platforms]
    host = ui.removeprefix("http://")
    docker = await page.locator("#command-docker").inner_text()
    assert docker == f"docker pull {host}/docker.io/library/alpine:latest"
    await page.get_by_role("link", name="3.19").click()  # the pull commands follow the tag
    await page.wait_for_url("**?tag=3.19#pull")
    assert (await page.locator("#command-podman").inner_text()).endswith("library/alpine:3.19")
    await screenshot(page, shots, "repository")
    assert traffic.problems() == []


async def test_an_admin_purges_and_a_pull_user_cannot(
    browser: Browser, ui: str, cache: MemoryCache, shots: Path
) -> None:
    page, traffic = await open_page(browser, [ui], token=PULL_TOKEN)
    await page.goto(ui + "/ui/repositories/docker.io/library/alpine")
    assert await page.get_by_role("button", name=re.compile("Purge")).count() == 0
    # Forging the admin's form from the page itself: the server refuses it too.
    status = await page.evaluate("""async () => {
        const body = new URLSearchParams(
            {upstream: "docker.io", repository: "library/alpine", tag: "3.19"});
        return (await fetch("/ui/actions/purge", {method: "POST", body})).status;
    }""")
    assert status == 403
    assert "3.19" in cache.repos[("docker.io", "library/alpine")].tags
    assert traffic.problems() == []

    page, traffic = await open_page(browser, [ui], token=ADMIN_TOKEN)
    await page.goto(ui + "/ui/repositories/docker.io/library/alpine")
    await page.get_by_role("button", name="Purge 3.19").click()
    await page.wait_for_url("**notice=purged**")
    notice = await page.get_by_role("status").filter(has_text="Removed").inner_text()
    assert notice == "Removed docker.io/library/alpine:3.19 from the cache."
    assert await page.locator('tr[data-tag="3.19"]').count() == 0
    assert "3.19" not in cache.repos[("docker.io", "library/alpine")].tags
    await screenshot(page, shots, "purged")
    assert traffic.problems() == []


async def test_another_site_cannot_make_an_admins_browser_purge(
    browser: Browser, ui: str, cache: MemoryCache
) -> None:
    attacker = web.Application()
    form = (f'<!doctype html><form method="post" action="{ui}/ui/actions/purge">'
            '<input type="hidden" name="upstream" value="docker.io">'
            '<input type="hidden" name="repository" value="library/alpine">'
            '<input type="hidden" name="confirm" value="yes">'
            '<button>Win a prize</button></form>')  # fmt: skip

    async def prize(_: web.Request) -> web.Response:
        return web.Response(text=form, content_type="text/html")

    attacker.router.add_get("/", prize)
    runner = web.AppRunner(attacker)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))  # another loopback address: another site
    await web.SockSite(runner, sock).start()
    evil = f"http://127.0.0.2:{sock.getsockname()[1]}"
    try:
        # The admin's credentials go with every request, as a browser's cached ones would.
        page, _ = await open_page(browser, [ui, evil], token=ADMIN_TOKEN)
        await page.goto(evil + "/")
        await page.get_by_role("button", name="Win a prize").click()
        await page.wait_for_url(ui + "/ui/actions/purge")
        assert await page.locator("h1").inner_text() == "Not allowed"
    finally:
        await runner.cleanup()
    assert ("docker.io", "library/alpine") in cache.repos


async def test_the_keyboard_reaches_the_search_box_and_the_results(
    browser: Browser, ui: str, shots: Path
) -> None:
    page, traffic = await open_page(browser, [ui])
    await page.goto(ui + "/ui/")
    await page.keyboard.press("Tab")
    assert (await focused(page)).startswith("a#.skip-link")
    box = await page.locator(".skip-link").bounding_box()
    assert box is not None
    assert box["y"] >= 0  # shown when focused
    await page.keyboard.press("Enter")
    assert (await focused(page)).startswith("main#main")
    await page.goto(ui + "/ui/")
    path = await tab_until(page, "^input#header-q")
    assert len(path) <= 6  # skip link, home, two navigation links, then the search box
    outline = await page.evaluate("""() => {
        const s = getComputedStyle(document.activeElement);
        return [s.outlineStyle, parseFloat(s.outlineWidth)];
    }""")
    assert outline[0] != "none"  # a visible focus ring
    assert outline[1] >= 2
    await page.keyboard.type("nginx")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/repositories?q=nginx")
    await tab_until(page, '^a#\\.? "library/nginx"')
    await screenshot(page, shots, "keyboard")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/repositories/docker.io/library/nginx")
    assert traffic.problems() == []


async def test_no_request_leaves_the_mirror_and_downloads_count_live(
    browser: Browser, ui: str
) -> None:
    page, traffic = await open_page(browser, [ui], token=ADMIN_TOKEN)
    for path in ("/ui/repositories", "/ui/repositories/ghcr.io/acme/web-app", "/ui/missing",
                 "/ui/"):  # fmt: skip
        await page.goto(ui + path)
    progress = page.locator("#fills .progress-text")
    before = await progress.inner_text()
    # The script polls fills.json every 2 s and rewrites the row.
    await page.wait_for_function(
        "(before) => document.querySelector('#fills .progress-text').textContent.trim() !== before",
        arg=before.strip(), timeout=15_000,
    )  # fmt: skip
    assert (await progress.inner_text()).endswith("of 2 GiB")
    assert any(url.endswith("/ui/fills.json") for url in traffic.requests)
    assert all(url.startswith(ui + "/") for url in traffic.requests)
    # The hostile annotations and platform of web-app ran nothing; no CSP violation either.
    assert traffic.problems() == []


async def test_pages_pass_the_axe_accessibility_checks(browser: Browser, ui: str) -> None:
    page, traffic = await open_page(browser, [ui], token=ADMIN_TOKEN)
    found = {}
    for path in ("/ui/", "/ui/repositories?q=a", "/ui/repositories/docker.io/library/alpine",
                 "/ui/repositories/ghcr.io/acme/web-app", "/ui/missing"):  # fmt: skip
        await page.goto(ui + path)
        await page.locator("details").evaluate_all("ds => ds.forEach(d => d.open = true)")
        found[path] = await axe_violations(page)
    assert found == {path: [] for path in found}
    assert traffic.problems() == []


async def test_copy_buttons_copy_the_command(browser: Browser, ui: str) -> None:
    page, traffic = await open_page(
        browser, [ui], permissions=["clipboard-read", "clipboard-write"]
    )
    await page.goto(ui + "/ui/repositories/docker.io/library/alpine")
    await page.get_by_role("button", name="Copy the containerd (hosts.toml) command").click()
    await page.wait_for_function("() => document.getElementById('announcer').textContent !== ''")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied == await page.locator("#command-ctr-hosts").inner_text()
    assert copied.startswith("# /etc/containerd/certs.d/docker.io/hosts.toml")
    assert traffic.problems() == []


async def test_screenshots_of_a_cache_of_100000_objects(browser: Browser, shots: Path) -> None:
    cache = synthetic_cache(objects=100_000, repositories=3_000)
    largest = await cache.repositories(RepositoryQuery())  # by size, largest first
    async with serve_ui(cache, cache) as ui:
        page, traffic = await open_page(browser, [ui], token=ADMIN_TOKEN)
        await page.goto(ui + "/ui/")
        await screenshot(page, shots, "ui-overview")
        await page.goto(ui + "/ui/repositories")
        assert "3,000 repositories" in await page.locator("#result-count").inner_text()
        await screenshot(page, shots, "ui-repositories", full_page=False)
        top = largest.items[0]
        await page.goto(f"{ui}/ui/repositories/{top.upstream}/{top.name}")
        assert await page.locator("h1").inner_text() == f"{top.upstream}/{top.name}"
        await screenshot(page, shots, "ui-repository", full_page=False)
        assert traffic.problems() == []
    for name in ("ui-overview", "ui-repositories", "ui-repository"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
