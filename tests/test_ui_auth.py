"""The web UI behind the front door: any login may look, admins of the rules may act.

The mirror of tests/test_auth_mirror.py (token auth, an htpasswd file, olga
the rules' admin, default deny). Browsers answer only a ``Basic``
challenge, so the UI asks for one even where clients get ``Bearer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import RunningMirror, run_mirror
from tests.support.small_images import add_small_image
from tests.test_auth_mirror import basic, guarded_config

SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


@pytest.fixture
async def mirror(tmp_path: Path) -> AsyncIterator[RunningMirror]:
    async with FakeUpstream() as up:
        add_small_image(up, "public/app", "1", "public", layer_size=10_000)
        async with run_mirror(guarded_config(tmp_path, up)) as running:
            yield running


async def get(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("WWW-Authenticate", "") + await resp.text()


async def test_no_login_gets_a_basic_challenge_a_browser_can_answer(
    mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    for path in ("/ui/", "/ui/repositories", "/ui"):
        async with http.get(mirror.url + path, allow_redirects=False) as resp:
            assert resp.status == 401, path
            assert resp.headers["WWW-Authenticate"].startswith("Basic realm="), path
    async with http.get(mirror.url + "/ui/", headers=basic("alice", "wrong")) as resp:
        assert resp.status == 401


async def test_a_pull_user_looks_and_cannot_purge_an_admin_of_the_rules_can(
    mirror: RunningMirror, http: aiohttp.ClientSession
) -> None:
    async with http.get(mirror.url + "/v2/public/app/manifests/1", headers=basic("alice")) as resp:
        assert resp.status == 200  # now cached
    status, page = await get(http, mirror.url + "/ui/", basic("alice"))
    assert status == 200, page
    assert "Read-only: alice" in page
    status, page = await get(http, mirror.url + "/ui/", basic("olga"))
    assert "Admin: olga" in page
    form = {"repository": "public/app", "upstream": "ghcr.io", "confirm": "yes"}
    async with http.post(mirror.url + "/ui/actions/purge", data=form,
                         headers={**basic("alice"), **SAME_ORIGIN}) as resp:  # fmt: skip
        assert resp.status == 403
    olga = {**basic("olga"), **SAME_ORIGIN}
    async with http.post(
        mirror.url + "/ui/actions/purge", data=form, headers=olga, allow_redirects=False
    ) as resp:
        assert resp.status == 303, await resp.text()
    status, page = await get(http, mirror.url + "/ui/repositories", basic("alice"))
    assert "public/app" not in page
