"""Access-log records of real requests, and what ``serve`` says when it starts."""

from __future__ import annotations

import io
import json
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import aiohttp
from aiohttp import web

from mirror.app import create_app
from mirror.logs import JsonFormatter
from mirror.routes.access import AccessLogger
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config
from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http
from tests.support.small_images import add_small_image, pull

SECRET = "c2VjcmV0LXVzZXI6aHVudGVyMg=="  # base64 of secret-user:hunter2


@contextmanager
def captured_json_log(name: str) -> Iterator[io.StringIO]:
    """A logger writing JSON lines into a buffer, detached from the root logger."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield buffer
    finally:
        logger.removeHandler(handler)


@asynccontextmanager
async def mirror_with_access_log(cache: Path, upstream: str, logger: str) -> AsyncIterator[str]:
    """The mirror app on a loopback port, logging access with :class:`AccessLogger`."""
    runner = web.AppRunner(
        create_app(mirror_config(cache, upstream)),
        handle_signals=False,
        access_log=logging.getLogger(logger),
        access_log_class=AccessLogger,
    )
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_access_log_json_fields(tmp_path: Path) -> None:
    async with FakeUpstream() as up, aiohttp.ClientSession() as http:
        image = add_small_image(up, "library/app", "1", "seed", layer_size=100_000)
        layer = next(d for d, b in image.blobs.items() if len(b) == 100_000)
        with captured_json_log("test.access.json") as buffer:
            async with mirror_with_access_log(tmp_path, up.url, "test.access.json") as base:
                await pull(http, base, image)  # misses
                await pull(http, base, image)  # hits: the layer goes out with sendfile
                headers = {"Authorization": f"Basic {SECRET}", "Cookie": "session=hunter2"}
                async with http.get(f"{base}/v2/library/app/manifests/nope", headers=headers):
                    pass
    records = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert any(r["path"] == "/metrics" for r in records)  # pull() waits on it
    records = [r for r in records if r["path"].startswith("/v2/")]
    assert len(records) == 7  # 3 + 3 pull requests, 1 not found
    for record in records:
        assert record["logger"] == "test.access.json"
        assert {"method", "path", "status", "bytes", "duration_ms", "kind", "cache_result"} <= set(
            record
        )
        assert record["method"] == "GET"
        assert record["duration_ms"] >= 0
    layer_records = [r for r in records if r["path"] == f"/v2/library/app/blobs/{layer}"]
    assert [(r["status"], r["bytes"], r["kind"], r["cache_result"]) for r in layer_records] == [
        (200, 100_000, "blob", "miss"),
        (200, 100_000, "blob", "hit"),
    ]
    manifests = [r for r in records if r["kind"] == "manifest"]
    assert [r["cache_result"] for r in manifests] == ["miss", "hit", "error"]
    assert manifests[-1]["status"] == 404
    text = buffer.getvalue()
    assert SECRET not in text
    assert "hunter2" not in text


def start_serve(tmp_path: Path, *flags: str) -> tuple[ManagedProcess, str]:
    """``python -m mirror serve`` on a free port, offline, with its stderr in a file."""
    port = free_port()
    argv = [
        sys.executable, "-m", "mirror", "serve", "--listen", f"127.0.0.1:{port}",
        "--cache-dir", str(tmp_path / "cache"), "--offline",
        "--upstream", "ghcr.io=https://ghcr.io", *flags,
    ]  # fmt: skip
    process = start_process("mirror", argv, log_path=tmp_path / "mirror.log")
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/healthz", process)
    return process, base


def get(url: str, headers: dict[str, str] | None = None) -> int:
    """GET ``url`` and return the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code


def test_serve_json_logs_startup_and_access(tmp_path: Path) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    process, base = start_serve(tmp_path, "--log-format", "json", "--metrics-listen", metrics)
    try:
        blob = "/v2/library/app/blobs/sha256:" + "ab" * 32
        assert get(base + blob, {"Authorization": f"Bearer {SECRET}"}) == 404
        assert get(f"http://{metrics}/metrics") == 200
    finally:
        assert process.stop() == 0
    lines = process.log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    messages = [r["message"] for r in records if r["logger"] == "mirror.startup"]
    assert f"listening on {base}" in messages
    assert f"cache: disk at {tmp_path / 'cache'}" in messages
    assert "upstream ghcr.io (default): https://ghcr.io" in messages
    assert any(m.startswith("offline") for m in messages)
    assert f"metrics also on http://{metrics}/metrics" in messages
    access = [r for r in records if r["logger"] == "mirror.access" and r["path"] == blob]
    assert len(access) == 1
    assert access[0]["status"] == 404
    assert access[0]["kind"] == "blob"
    assert access[0]["cache_result"] == "error"
    assert SECRET not in process.log_path.read_text()


def test_serve_text_startup_lines_survive_warning_level(tmp_path: Path) -> None:
    process, base = start_serve(tmp_path, "--log-level", "warning")
    try:
        assert get(base + "/v2/") == 200
    finally:
        assert process.stop() == 0
    text = process.log_path.read_text()
    assert f"listening on {base}" in text
    assert "upstream ghcr.io (default): https://ghcr.io" in text
    assert "mirror.access" not in text  # info records are below the chosen level
