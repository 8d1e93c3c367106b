"""Whether the mirror is ready to serve pulls: the checks behind ``/readyz``.

Ready when the cache storage takes a small write, read and delete: a mirror
whose upstream is down still serves everything it has cached, so by default an
upstream outage does not take it (and with it every replica of a fleet) out of
rotation. Each upstream is still checked, ``GET /v2/`` (any status below 500;
401 counts), and reported in the body with what the mirror last learned of it
(:class:`mirror.upstream.health.UpstreamHealth`: reachable, credentials
refused, last error); a failed one is a warning. With
``readiness.require_upstream`` every upstream must also answer and take the
mirror's credentials, the stricter behaviour of earlier versions. Offline, no
upstream is contacted.

The result is kept for :data:`READY_TTL` seconds so that frequent probes from
several load balancers cost the upstreams one request per interval.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from mirror.errors import MirrorError
from mirror.storage import layout
from mirror.storage.base import Storage, StorageError
from mirror.upstream.base import Upstream
from mirror.upstream.health import UpstreamHealth

READY_TTL = 5.0
PROBE_TIMEOUT = 5.0
OK = "ok"
OFFLINE = "offline: no upstream is contacted"
_PASSED = (OK, OFFLINE)
STORAGE = "storage"


@dataclass(frozen=True, slots=True)
class Readiness:
    """The outcome of one round of readiness checks.

    ``required`` names the checks that decide readiness; the others only warn.
    """

    checks: dict[str, str] = field(default_factory=dict)
    required: frozenset[str] = frozenset({STORAGE})
    upstreams: dict[str, dict[str, object]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """True when every required check passed."""
        return all(self.checks.get(name, OK) in _PASSED for name in self.required)

    def body(self) -> dict[str, object]:
        """The JSON document ``/readyz`` answers with."""
        body: dict[str, object] = {"status": "ready" if self.ready else "not ready"}
        reasons = self._failed(required=True)
        warnings = self._failed(required=False)
        if reasons:
            body["reason"] = "; ".join(reasons)
        if warnings:
            body["warnings"] = "; ".join(warnings)
        body["checks"] = self.checks
        if self.upstreams:
            body["upstreams"] = self.upstreams
        return body

    def _failed(self, *, required: bool) -> list[str]:
        return [
            f"{name}: {value}"
            for name, value in self.checks.items()
            if value not in _PASSED and (name in self.required) == required
        ]


class ReadinessChecks:
    """Runs the checks, at most once per :data:`READY_TTL`.

    ``storage`` is the bare backend, so the probe key stays out of the cache index.
    ``health`` is what each online upstream's client records; with
    ``require_upstream`` the upstreams' checks decide readiness too.
    """

    def __init__(
        self,
        storage: Storage,
        upstreams: Mapping[str, Upstream],
        health: Mapping[str, UpstreamHealth],
        *,
        offline: bool,
        require_upstream: bool = False,
    ) -> None:
        self._storage = storage
        self._upstreams = upstreams
        self._health = health
        self._offline = offline
        self._require_upstream = require_upstream
        self._last: Readiness | None = None
        self._checked_at = 0.0
        self._lock = asyncio.Lock()

    async def readiness(self) -> Readiness:
        """The last checks if fresh, else a new round (one at a time)."""
        async with self._lock:
            if self._last is None or time.monotonic() - self._checked_at > READY_TTL:
                self._last = await self._check()
                self._checked_at = time.monotonic()
            return self._last

    async def _check(self) -> Readiness:
        names = sorted(self._upstreams) if not self._offline else []
        results = await asyncio.gather(
            self._check_storage(), *(self._check_upstream(name) for name in names)
        )
        checks = {STORAGE: results[0]}
        if self._offline:
            checks["upstreams"] = OFFLINE
        for name, result in zip(names, results[1:], strict=True):
            checks[f"upstream {name}"] = result
        required = frozenset(checks) if self._require_upstream else frozenset({STORAGE})
        health = {name: self._health[name].as_dict() for name in names if name in self._health}
        return Readiness(checks, required, health)

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

    async def _check_upstream(self, name: str) -> str:
        health = self._health.get(name)
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                status = await self._upstreams[name].ping()
        except MirrorError as exc:
            # The client's message starts with the upstream's name; the check's key has it already.
            return "unreachable: " + exc.message.removeprefix(f"{name} unreachable: ")
        except TimeoutError:
            if health is not None:
                health.failed(f"{name} unreachable: no answer within {PROBE_TIMEOUT:.0f}s")
            return f"no answer within {PROBE_TIMEOUT:.0f}s"
        if status >= 500:
            return f"answered {status}"
        if health is not None and health.credentials_refused:
            return f"credentials refused: {health.last_error}"
        return OK
