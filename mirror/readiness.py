"""Whether the mirror is ready to serve pulls: the checks behind ``/readyz``.

Ready when the cache storage takes a small write, read and delete, and every
upstream answers ``/v2/`` (any status below 500; 401 counts) or the mirror is
offline. The result is kept for :data:`READY_TTL` seconds so that frequent
probes from several load balancers cost the upstreams one request per interval.
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


class ReadinessChecks:
    """Runs the checks, at most once per :data:`READY_TTL`.

    ``storage`` is the bare backend, so the probe key stays out of the cache index.
    """

    def __init__(
        self, storage: Storage, upstreams: Mapping[str, Upstream], *, offline: bool
    ) -> None:
        self._storage = storage
        self._upstreams = upstreams
        self._offline = offline
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
            self._check_storage(), *(_check_upstream(self._upstreams[n]) for n in names)
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


async def _check_upstream(upstream: Upstream) -> str:
    try:
        async with asyncio.timeout(PROBE_TIMEOUT):
            status = await upstream.ping()
    except MirrorError as exc:
        return f"unreachable: {exc.message}"
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:.0f}s"
    return OK if status < 500 else f"answered {status}"
