"""Run the mirror app in-process on a real socket, for tests."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from mirror.app import create_app
from mirror.config import Config, build_config


@dataclass
class RunningMirror:
    """A mirror listening on 127.0.0.1; ``url`` has no trailing slash."""

    url: str
    app: web.Application
    config: Config


def mirror_config(cache_dir: Path, upstream_url: str, **settings: Any) -> Config:
    """A config for one upstream and a disk cache; ``settings`` are raw TOML-shaped overrides."""
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "storage": {"path": str(cache_dir)},
        "upstreams": [
            {"url": upstream_url, "retries": 1, "connect_timeout": 2, "read_timeout": 10}
        ],
    }
    raw.update(settings)
    return build_config(raw)


@asynccontextmanager
async def run_mirror(
    config: Config, *, send_buffer: int | None = None,
    adjust: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[RunningMirror]:  # fmt: skip
    """Start ``create_app(config)`` on a free loopback port; stop it on exit.

    ``send_buffer`` fixes the kernel send buffer of client connections (the
    listening socket passes it on). Loopback otherwise lets the kernel take
    megabytes a slow client has not read yet, so only a small one makes such a
    client fall behind inside the mirror with blobs of a test's size.
    ``adjust`` may change the app before it starts.
    """
    app = create_app(config)
    if adjust is not None:
        adjust(app)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield RunningMirror(f"http://127.0.0.1:{port}", app, config)
    finally:
        await runner.cleanup()
