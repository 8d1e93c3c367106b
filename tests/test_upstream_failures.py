"""An unreachable upstream: the 504 says which host and what failed (issue 17, papercut 3).

Each row is a real fault on a real socket: a closed port, a name that cannot
resolve (``.invalid`` never does, RFC 2606), a TLS handshake against a plain
HTTP port, and a server that takes the connection and never answers. The
message names the host and the failure in words, never a Python class name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_app import mirror_config, run_mirror
from tests.support.processes import free_port

CLASS_NAME = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)+(?:Error|Exception)?")


@asynccontextmanager
async def closed_port() -> AsyncIterator[str]:
    """An http URL on a loopback port nothing listens on."""
    yield f"http://127.0.0.1:{free_port()}"


@asynccontextmanager
async def unresolvable() -> AsyncIterator[str]:
    """An http URL whose host name cannot resolve."""
    yield "http://registry.mirror-test.invalid"


@asynccontextmanager
async def tls_to_plain_port() -> AsyncIterator[str]:
    """An https URL on a port that speaks plain HTTP."""
    async with FakeUpstream() as upstream:
        yield upstream.url.replace("http://", "https://")


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """An http URL on a server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        for writer in held:
            writer.close()
        server.close()


Fault = Callable[[], AbstractAsyncContextManager[str]]
# (id, the fault, what the message must say given the upstream's URL)
CASES: list[tuple[str, Fault, Callable[[str], str]]] = [
    ("refused", closed_port, lambda url: f"connection to {url[7:]} refused"),
    ("dns", unresolvable, lambda _: "DNS lookup of registry.mirror-test.invalid failed"),
    ("tls", tls_to_plain_port, lambda url: f"TLS handshake with {url[8:]} failed"),
    ("timeout", silent_server, lambda url: f"{url[7:]} sent nothing for 1s (read_timeout)"),
]


async def manifest_error(
    http: aiohttp.ClientSession, cache: Path, upstream_url: str
) -> dict[str, Any]:
    """The status and first OCI error a client gets for a tag through a mirror of the URL."""
    upstreams = [{"url": upstream_url, "retries": 0, "connect_timeout": 2, "read_timeout": 1}]
    config = mirror_config(cache, upstream_url, upstreams=upstreams)
    async with run_mirror(config) as mirror:
        async with http.get(mirror.url + "/v2/team/app/manifests/latest") as resp:
            document = await resp.json()
            return {"status": resp.status, **document["errors"][0]}


@pytest.mark.parametrize(("fault", "expected"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
async def test_the_504_names_the_host_and_what_failed(
    fault: Fault,
    expected: Callable[[str], str],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    async with fault() as url:
        error = await manifest_error(http, tmp_path, url)
    assert error["status"] == 504
    assert error["code"] == "UNAVAILABLE"
    message = error["message"]
    assert expected(url) in message, message
    assert CLASS_NAME.search(message) is None, message
