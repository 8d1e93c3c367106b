"""``--log-level debug`` logs each upstream request, never a credential (papercut 8).

A real ``registry-mirror serve`` process at debug level pulls an image from a
fake upstream that wants a token got with Basic credentials; its log has one
line per upstream request (method, host, path, status, milliseconds) and none
of the password, the Basic header or the tokens the upstream issued.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import aiohttp

from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_process import start_mirror_process
from tests.support.small_images import add_small_image, pull

PASSWORD = "debug-log-password-5e4d"


async def test_debug_log_has_upstream_requests_and_no_credentials(tmp_path: Path) -> None:
    async with FakeUpstream(auth="token", password=PASSWORD, anonymous_tokens=False) as up:
        image = add_small_image(up, "team/app", "v1", "app")
        settings = {
            "log": {"level": "debug"},
            "storage": {"path": str(tmp_path / "cache")},
            "upstreams": [{"name": "docker.io", "url": up.url, "username": up.username,
                           "password": PASSWORD}],
        }  # fmt: skip
        mirror = start_mirror_process(tmp_path, settings)
        try:
            async with aiohttp.ClientSession() as http:
                await pull(http, mirror.url, image)
            log = mirror.log()
        finally:
            mirror.process.stop()
        tokens = list(up._tokens)
    assert tokens
    lines = [ln for ln in log.splitlines() if "upstream docker.io: " in ln]
    manifest = f"GET {up.host}/v2/team/app/manifests/v1 -> 200 in "
    assert any(manifest in ln and re.search(r" in \d+ ms$", ln) for ln in lines), lines
    assert any(f"GET {up.host}/v2/team/app/manifests/v1 -> 401" in ln for ln in lines), lines
    for blob in image.blobs:
        assert any(f"GET {up.host}/v2/team/app/blobs/{blob} -> 200" in ln for ln in lines)
    basic = base64.b64encode(f"{up.username}:{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, basic, *tokens):
        assert secret not in log
    assert "Authorization" not in log
