"""Operations endpoints: ``/metrics``, ``/healthz`` and ``/readyz``.

``/healthz`` answers 200 while the event loop runs. ``/readyz`` answers 200
when the cache storage takes a small write, read and delete, and every
upstream answers ``/v2/`` (any status below 500; 401 counts) or the mirror is
offline; otherwise 503 with a JSON body saying which check failed. Its result
is kept for :data:`READY_TTL` seconds so that frequent probes from several
load balancers cost the upstreams one request per interval.

``/metrics`` is served on the main port and, when ``metrics.listen`` is set,
on a listener of its own (for a port that only the monitoring network reaches).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from mirror.errors import MirrorError
from mirror.lifecycle import bind_listener
from mirror.metrics import CONTENT_TYPE, Metrics
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError
from mirror.upstream.client import UpstreamClient

READY_TTL = 5.0
PROBE_TIMEOUT = 5.0
OK = "ok"
OFFLINE = "offline: no upstream is contacted"
_PASSED = (OK, OFFLINE)


@dataclass(frozen=True, slots=True)
class Readiness:
    """The outcome of one round of readiness checks."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when every check passed."""
        return all(value in _PASSED for value in self.checks.values())

    def body(self) -> dict[str, object]:
        """The JSON document ``/readyz`` answers with."""
        if self.ready:
            return {"status": "ready", "checks": self.checks}
        failed = [f"{name}: {value}" for name, value in self.checks.items() if value not in _PASSED]
        return {"status": "not ready", "reason": "; ".join(failed), "checks": self.checks}


class OpsHandlers:
    """The operations routes; storage and upstream clients are bound at start-up."""

    _storage: Storage
    _clients: Mapping[str, UpstreamClient]

    def __init__(self, metrics: Metrics, *, offline: bool) -> None:
        self._metrics = metrics
        self._offline = offline
        self._last: Readiness | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    def bind(self, storage: Storage, clients: Mapping[str, UpstreamClient]) -> None:
        """Give the readiness checks the app's running resources."""
        self._storage = storage
        self._clients = clients

    def register(self, app: web.Application) -> None:
        """Add ``/metrics``, ``/healthz`` and ``/readyz`` to ``app``."""
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)

    def separate_listener(
        self, host: str, port: int
    ) -> Callable[[web.Application], AsyncIterator[None]]:
        """A cleanup context serving ``/metrics`` alone on ``host:port``."""

        async def listener(app: web.Application) -> AsyncIterator[None]:
            side = web.Application()
            side.router.add_get("/metrics", self.metrics)
            runner = web.AppRunner(side, access_log=None, handle_signals=False)
            await runner.setup()
            try:
                sock = bind_listener(host, port, "metrics.listen")
                await web.SockSite(runner, sock).start()
                yield
            finally:
                await runner.cleanup()

        return listener

    async def metrics(self, request: web.Request) -> web.Response:
        """The Prometheus text exposition of the app's registry."""
        body = await asyncio.to_thread(self._metrics.render)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(self, request: web.Request) -> web.Response:
        """Alive: the process answers HTTP."""
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.Response:
        """Ready to serve pulls, or 503 with the failed checks."""
        readiness = await self.readiness()
        return web.json_response(readiness.body(), status=200 if readiness.ready else 503)

    async def readiness(self) -> Readiness:
        """The last checks if fresh, else a new round (one at a time)."""
        async with self._lock:
            if self._last is None or time.monotonic() - self._checked_at > READY_TTL:
                self._last = await self._check()
                self._checked_at = time.monotonic()
            return self._last

    async def _check(self) -> Readiness:
        names = sorted(self._clients) if not self._offline else []
        results = await asyncio.gather(
            self._check_storage(), *(self._check_upstream(self._clients[n]) for n in names)
        )
        checks = {"storage": results[0]}
        if self._offline:
            checks["upstreams"] = OFFLINE
        for name, result in zip(names, results[1:], strict=True):
            checks[f"upstream {name}"] = result
        return Readiness(checks)

    async def _check_storage(self) -> str:
        token = secrets.token_bytes(16)
        key = layout.PROBE_KEY
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._storage.put(key, token)
                read = await self._storage.get(key)
                await self._storage.delete(key)
        except StorageError as exc:
            return f"storage not writable: {exc}"
        except TimeoutError:
            return f"storage did not answer within {PROBE_TIMEOUT:.0f}s"
        return OK if read == token else "storage returned other bytes than written"

    async def _check_upstream(self, client: UpstreamClient) -> str:
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                status = await client.ping()
        except MirrorError as exc:
            return f"unreachable: {exc.message}"
        except TimeoutError:
            return f"no answer within {PROBE_TIMEOUT:.0f}s"
        return OK if status < 500 else f"answered {status}"
