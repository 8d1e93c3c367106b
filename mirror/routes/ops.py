"""Operations endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the event loop runs. ``/readyz`` answers 200
when :mod:`mirror.readiness` finds the cache storage writable and every
upstream reachable (or the mirror offline); otherwise 503 with a JSON body
saying which check failed.

``/metrics`` is served on the main port and, when ``metrics.listen`` is set,
on a listener of its own (for a port that only the monitoring network reaches).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from mirror.lifecycle import bind_listener
from mirror.metrics import CONTENT_TYPE
from mirror.routes.keys import METRICS, READINESS


def add_routes(app: web.Application) -> None:
    """Add ``/metrics``, ``/healthz`` and ``/readyz`` to ``app``."""
    app.router.add_get("/metrics", metrics, name="metrics")
    app.router.add_get("/healthz", healthz, name="healthz")
    app.router.add_get("/readyz", readyz, name="readyz")


def separate_listener(host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving the app's ``/metrics`` alone on ``host:port``."""

    async def listener(app: web.Application) -> AsyncIterator[None]:
        side = web.Application()
        side[METRICS] = app[METRICS]
        side.router.add_get("/metrics", metrics, name="metrics")
        runner = web.AppRunner(side, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            sock = bind_listener(host, port, "metrics.listen")
            await web.SockSite(runner, sock).start()
            yield
        finally:
            await runner.cleanup()

    return listener


async def metrics(request: web.Request) -> web.Response:
    """The Prometheus text exposition of the app's registry."""
    body = await asyncio.to_thread(request.app[METRICS].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers HTTP."""
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    """Ready to serve pulls, or 503 with the failed checks (:mod:`mirror.readiness`)."""
    readiness = await request.app[READINESS].readiness()
    return web.json_response(readiness.body(), status=200 if readiness.ready else 503)
