"""The UI's pages over HTTP: headers, escaping, HTML errors, admin actions and who may use them.

The UI runs on a real socket inside an app with the mirror's own OCI error
middleware (tests/support/ui_server.py), over the in-memory cache of
tests/support/ui_data.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mirror.ui.site import CSP, IMMUTABLE
from tests.support.ui_cache import MemoryCache
from tests.support.ui_data import (
    XSS_ANNOTATION,
    XSS_HEALTH,
    XSS_PLATFORM,
    XSS_REPOSITORY,
    XSS_URL,
    add_image,
    digest_of,
    sample_cache,
)
from tests.support.ui_html import fetched_urls, parse, script_risks
from tests.support.ui_server import ADMIN_TOKEN, PULL_TOKEN, serve_ui

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PULL = {"Authorization": f"Bearer {PULL_TOKEN}"}
PAGES = [
    "/ui/", "/ui/repositories", "/ui/repositories?q=alp&sort=pulls",
    "/ui/repositories/docker.io/library/alpine", "/ui/repositories/ghcr.io/acme/web-app",
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache() -> MemoryCache:
    return sample_cache()


@pytest.fixture
async def ui(cache: MemoryCache) -> AsyncIterator[str]:
    async with serve_ui(cache, cache) as base:
        yield base


async def get_page(
    http: aiohttp.ClientSession, url: str, *, headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[int, str]:  # fmt: skip
    async with http.get(url, allow_redirects=False, headers=headers, params=params) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("path", PAGES)
async def test_pages_are_html_with_a_strict_policy_and_no_caching(
    ui: str, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(ui + path, headers=ADMIN) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == CSP
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Cache-Control"] == "no-store"
        assert re.fullmatch(r"app;dur=[0-9.]+", response.headers["Server-Timing"])
        page = parse(await response.text())
    assert script_risks(page) == []
    # Everything the browser fetches by itself comes from the mirror's own /ui/static/.
    assert fetched_urls(page)
    assert all(url.startswith("/ui/static/") for url in fetched_urls(page))


async def test_static_assets_are_immutable_under_their_hash(
    ui: str, http: aiohttp.ClientSession
) -> None:
    _, html = await get_page(http, ui + "/ui/")
    for url in fetched_urls(parse(html)):
        async with http.get(ui + url) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == IMMUTABLE
            assert response.headers["Content-Security-Policy"] == CSP
            assert response.content_type in ("text/css", "text/javascript", "image/svg+xml")
        stale = re.sub(r"/static/[0-9a-f]+/", "/static/0123456789abcdef/", url)
        async with http.get(ui + stale) as response:
            assert response.status == 404
            assert response.content_type == "text/html"


async def test_text_from_upstreams_and_clients_is_shown_as_text(
    ui: str, http: aiohttp.ClientSession
) -> None:
    pages = {path: parse((await get_page(http, ui + path, headers=ADMIN))[1]) for path in (
        "/ui/", "/ui/repositories?q=evil", "/ui/repositories/ghcr.io/acme/web-app")}  # fmt: skip
    for page in pages.values():
        assert script_risks(page) == []
    assert XSS_HEALTH in pages["/ui/"].all_text
    assert XSS_REPOSITORY in pages["/ui/repositories?q=evil"].all_text
    web_app = pages["/ui/repositories/ghcr.io/acme/web-app"]
    assert XSS_PLATFORM in web_app.all_text
    assert XSS_ANNOTATION in web_app.all_text
    assert XSS_URL in web_app.all_text
    # An annotation becomes a link only when it is an http(s) URL.
    links = {e.attrs["href"] for e in web_app.find("a")}
    assert "https://github.com/acme/web-app" in links
    assert XSS_URL not in links


async def test_what_a_client_sends_is_escaped_where_a_page_repeats_it(
    ui: str, http: aiohttp.ClientSession
) -> None:
    hostile = "\"><script>alert('q')</script>"
    status, html = await get_page(http, ui + "/ui/repositories", params={"q": hostile})
    assert status == 200
    page = parse(html)
    assert script_risks(page) == []
    assert [e.attrs["value"] for e in page.find("input", id="q")] == [hostile]
    # A Host header that is not a host never reaches the pull commands.
    status, html = await get_page(http, ui + "/ui/repositories/docker.io/library/alpine",
                                  headers={"Host": "x\"><img src=x onerror=alert(1)>"})  # fmt: skip
    assert status == 200
    assert script_risks(parse(html)) == []
    assert "docker pull MIRROR-HOST:5000/docker.io/library/alpine:latest" in html
    # A notice repeats only a subject that looks like an image reference.
    url = ui + "/ui/repositories/docker.io/library/alpine?notice=pinned&subject="
    _, html = await get_page(http, url + "library/alpine:3.20")
    assert "Pinned library/alpine:3.20" in parse(html).all_text
    _, html = await get_page(http, url + "<b>owned</b>")
    assert "owned" not in html


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/ui/nothing-here", 404), ("GET", "/ui/repositories/docker.io/NOT/valid", 404),
     ("GET", "/ui/repositories/docker.io/library/absent", 404),
     ("GET", "/ui/repositories/nowhere.io/library/alpine", 404),
     ("GET", "/ui/static/0123456789abcdef/missing.css", 404),
     ("POST", "/ui/", 405), ("GET", "/ui/actions/purge", 405)],
)  # fmt: skip
async def test_errors_inside_the_ui_are_html_pages(
    ui: str, http: aiohttp.ClientSession, method: str, path: str, status: int
) -> None:
    async with http.request(method, ui + path) as response:
        assert response.status == status
        assert response.content_type == "text/html"
        assert response.headers["Content-Security-Policy"] == CSP
        page = parse(await response.text())
    assert [e.tag for e in page.elements if e.tag == "h1"] == ["h1"]
    assert page.find("main")
    if status == 405:
        assert response.headers["Allow"]


async def test_the_registry_api_keeps_its_json_errors_and_ui_redirects(
    ui: str, http: aiohttp.ClientSession
) -> None:
    async with http.get(ui + "/v2/nothing") as response:
        assert response.status == 404
        assert (await response.json())["errors"][0]["code"] == "NAME_UNKNOWN"
    async with http.get(ui + "/ui", allow_redirects=False) as response:
        assert response.status == 308
        assert response.headers["Location"] == "/ui/"


async def test_only_an_admin_sees_purge_and_pin_controls(
    ui: str, http: aiohttp.ClientSession
) -> None:
    path = ui + "/ui/repositories/docker.io/library/alpine"
    admin = parse((await get_page(http, path, headers=ADMIN))[1])
    assert admin.find("form", action="/ui/actions/purge")
    assert admin.find("form", action="/ui/actions/pin")
    for headers in (PULL, {}):
        page = parse((await get_page(http, path, headers=headers))[1])
        assert not page.find("form", method="post")
        assert "Purge" not in page.all_text


async def purge(http: aiohttp.ClientSession, ui: str, headers: dict[str, str],
                **fields: str) -> tuple[int, str]:  # fmt: skip
    form = {"upstream": "docker.io", "repository": "library/alpine", **fields}
    async with http.post(ui + "/ui/actions/purge", data=form, headers=headers,
                         allow_redirects=False) as response:  # fmt: skip
        return response.status, response.headers.get("Location", "")


async def test_a_pull_user_and_another_site_cannot_purge(
    ui: str, http: aiohttp.ClientSession, cache: MemoryCache
) -> None:
    before = (len(cache.objects), cache.size)
    assert (await purge(http, ui, PULL, tag="3.19"))[0] == 403
    assert (await purge(http, ui, {}, tag="3.19"))[0] == 403
    for cross_site in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"},
                       {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):  # fmt: skip
        assert (await purge(http, ui, {**ADMIN, **cross_site}, tag="3.19"))[0] == 403
    assert (len(cache.objects), cache.size) == before
    assert "3.19" in cache.repos[("docker.io", "library/alpine")].tags


async def test_an_admin_purges_a_tag_then_the_repository(
    ui: str, http: aiohttp.ClientSession, cache: MemoryCache
) -> None:
    same_origin = {**ADMIN, "Sec-Fetch-Site": "same-origin", "Origin": ui}
    status, location = await purge(http, ui, same_origin, tag="3.19")
    assert status == 303
    assert location.startswith("/ui/repositories/docker.io/library/alpine?notice=purged")
    assert "3.19" not in cache.repos[("docker.io", "library/alpine")].tags
    _, html = await get_page(http, ui + location)
    assert "Removed docker.io/library/alpine:3.19 from the cache." in parse(html).all_text
    # The whole repository needs its confirmation box.
    assert (await purge(http, ui, ADMIN))[0] == 400
    status, location = await purge(http, ui, ADMIN, confirm="yes")
    assert status == 303
    assert location.startswith("/ui/repositories?notice=purged")
    assert ("docker.io", "library/alpine") not in cache.repos
    assert (await purge(http, ui, ADMIN, confirm="yes"))[0] == 404  # nothing left to purge
    # nginx shares the alpine base layer, which therefore stayed.
    assert cache.objects[f"docker.io/blob/{digest_of('alpine base layer')}"].users


async def test_bad_action_fields_are_refused(ui: str, http: aiohttp.ClientSession) -> None:
    for fields in ({"tag": "bad tag!"}, {"repository": "UPPER/case"}, {"upstream": "nowhere.io"}):
        form = {"upstream": "docker.io", "repository": "library/alpine", "tag": "3.20", **fields}
        async with http.post(ui + "/ui/actions/purge", data=form, headers=ADMIN) as response:
            assert response.status == 400
            assert response.content_type == "text/html"
    async with http.post(ui + "/ui/actions/pin", headers=ADMIN, data={
            "upstream": "docker.io", "repository": "library/alpine", "tag": "3.20",
            "pinned": "maybe"}) as response:  # fmt: skip
        assert response.status == 400


async def test_an_admin_pins_and_unpins_a_tag(
    ui: str, http: aiohttp.ClientSession, cache: MemoryCache
) -> None:
    form = {"upstream": "docker.io", "repository": "library/alpine", "tag": "3.20"}
    async with http.post(ui + "/ui/actions/pin", data={**form, "pinned": "true"}, headers=ADMIN,
                         allow_redirects=False) as response:  # fmt: skip
        assert response.status == 303
    page = parse((await get_page(http, ui + response.headers["Location"], headers=ADMIN))[1])
    assert "Pinned library/alpine:3.20: eviction skips it." in page.all_text
    unpin = page.find("button", form="unpin-tag")
    assert [e.attrs["value"] for e in unpin] == ["3.20"]  # the one Unpin button
    budget = await cache.budget(1000)
    pinned_digest = cache.repos[("docker.io", "library/alpine")].tags["3.20"].detail.digest
    assert pinned_digest not in {c.name for c in budget.evicted_next}
    # A pin from the configuration has no button: only the configuration changes it.
    nginx = parse((await get_page(http, ui + "/ui/repositories/docker.io/library/nginx",
                                  headers=ADMIN))[1])  # fmt: skip
    assert not nginx.find("button", form="pin-tag")
    assert not nginx.find("button", form="unpin-tag")
    assert nginx.find("button", form="purge-tag")
    assert "pinned in the configuration" in nginx.all_text


async def test_a_ui_without_actions_shows_and_allows_none(
    cache: MemoryCache, http: aiohttp.ClientSession
) -> None:
    async with serve_ui(cache, None) as ui:
        page = parse((await get_page(http, ui + "/ui/repositories/docker.io/library/alpine",
                                     headers=ADMIN))[1])  # fmt: skip
        assert not page.find("form", method="post")
        assert (await purge(http, ui, ADMIN, tag="3.19"))[0] == 403


async def test_search_sort_and_pages(ui: str, http: aiohttp.ClientSession) -> None:
    async def names(**params: str) -> list[str]:
        _, html = await get_page(http, ui + "/ui/repositories", params=params)
        page = parse(html)
        return [e.attrs["href"].removeprefix("/ui/repositories/") for e in page.find("a")
                if e.attrs.get("href", "").startswith("/ui/repositories/")]  # fmt: skip

    assert await names(q="alp") == ["docker.io/library/alpine"]
    assert await names(q="library/*", sort="name") == ["docker.io/library/alpine",
                                                        "docker.io/library/nginx"]  # fmt: skip
    assert await names(q="ghcr.io/*") == ["ghcr.io/acme/web-app"]
    assert await names(q="zzz") == []
    assert (await names(sort="pulls"))[:3] == [
        "docker.io/library/alpine",
        "docker.io/library/nginx",
        "ghcr.io/acme/web-app",
    ]
    assert await names(sort="nonsense", page="x") == await names()


async def test_fills_json_follows_downloads_as_they_grow(
    ui: str, http: aiohttp.ClientSession
) -> None:
    async def received() -> int:
        async with http.get(ui + "/ui/fills.json") as response:
            assert response.headers["Cache-Control"] == "no-store"
            [fill] = (await response.json())["fills"]
            assert fill["repository"] == "library/postgres"
            assert fill["progress"].endswith(" of 2 GiB")
            return int(fill["received"])

    first = await received()
    await asyncio.sleep(0.3)
    assert await received() > first


def test_the_package_ships_templates_and_assets(tmp_path: Path) -> None:
    """setuptools' build_py (what a wheel holds) copies the UI's files: package-data."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "mirror", source / "mirror",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    # No wheel build: that needs the `wheel` package or a download of setuptools.
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py",
         "--build-lib", str(tmp_path / "lib")],
        cwd=source, check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    built = {p.relative_to(tmp_path / "lib").as_posix() for p in (tmp_path / "lib").rglob("*")}
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "mirror/ui").rglob("*")
               if p.suffix in (".html", ".css", ".js", ".svg")}  # fmt: skip
    assert len(shipped) >= 8
    assert shipped <= built


async def test_a_repository_with_many_tags_shows_them_a_page_at_a_time(
    cache: MemoryCache, http: aiohttp.ClientSession
) -> None:
    for number in range(250):
        add_image(cache, "docker.io", "ci/builds", f"commit-{number:03d}", seed=str(number),
                  platforms=[("linux/amd64", [(digest_of(f"build {number}"), 1000)], True)],
                  last_pulled=1_000_000.0 + number)  # fmt: skip
    async with serve_ui(cache, cache) as ui:
        url = ui + "/ui/repositories/docker.io/ci/builds"
        first = parse((await get_page(http, url))[1])
        rows = [e.attrs["data-tag"] for e in first.elements if "data-tag" in e.attrs]
        assert rows == [f"commit-{n:03d}" for n in range(249, 149, -1)]  # last pulled first
        assert [e.attrs["href"] for e in first.find("a", rel="next")] == [
            "/ui/repositories/docker.io/ci/builds?tag_page=2"]  # fmt: skip
        # The pull commands are for a tag of the page shown; tag links keep the page.
        assert "ci/builds:commit-249" in first.all_text
        last = parse((await get_page(http, url, params={"tag_page": "99"}))[1])
        rows = [e.attrs["data-tag"] for e in last.elements if "data-tag" in e.attrs]
        assert rows == [f"commit-{n:03d}" for n in range(49, -1, -1)]
        assert not last.find("a", rel="next")
        links = [e.attrs["href"] for e in last.find("a") if "tag=commit-049" in e.attrs["href"]]
        assert links == ["/ui/repositories/docker.io/ci/builds?tag_page=3&tag=commit-049#pull"]


async def test_an_upstream_cannot_make_a_page_grow_without_bound(
    cache: MemoryCache, http: aiohttp.ClientSession
) -> None:
    flood = tuple((f"org.example.key{n:02d}", "v" * 10_000) for n in range(50))
    add_image(cache, "docker.io", "big/annotations", "1", seed="flood", last_pulled=None,
              platforms=[("linux/" + "x" * 10_000, [(digest_of("flood"), 10)], True)],
              annotations=flood)  # fmt: skip
    async with serve_ui(cache, cache) as ui:
        status, html = await get_page(http, ui + "/ui/repositories/docker.io/big/annotations")
    assert status == 200
    assert len(html) < 40_000
    page = parse(html)
    assert [e.tag for e in page.elements].count("dt") == 5 + 20  # the facts, 20 annotations
    assert "and 30 more" in page.all_text
