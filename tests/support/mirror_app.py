"""Run the mirror app in-process on a real socket, for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
async def run_mirror(config: Config) -> AsyncIterator[RunningMirror]:
    """Start ``create_app(config)`` on a free loopback port; stop it on exit."""
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    assert server.sockets
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield RunningMirror(f"http://127.0.0.1:{port}", app, config)
    finally:
        await runner.cleanup()
