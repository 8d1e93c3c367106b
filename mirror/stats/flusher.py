"""The background task that keeps pull counts in storage: flush, load, compact.

Counting a pull is an in-memory increment (:meth:`PullStats.record`); this
task writes the counts every ``flush_every`` seconds, reads the other
replicas' every ``load_every`` and sums closed periods every
``compact_every``. A storage that refuses is logged (by :class:`PullStats`
or here), counted in ``mirror_pull_stats_errors_total``, and simply tried
again at the next turn: pulls never wait for it, and the counts wait in
memory (bounded, see :mod:`mirror.stats.pulls`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mirror.metrics import Metrics
from mirror.stats.pulls import PullStats
from mirror.storage.base import StorageError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Intervals:
    """Seconds between flushes, loads and compactions."""

    flush_every: float = 60.0
    load_every: float = 300.0
    compact_every: float = 3600.0


async def keep_pull_stats(stats: PullStats, metrics: Metrics, every: Intervals) -> None:
    """Run until cancelled; the caller flushes a last time (:meth:`PullStats.close`)."""
    last_load = last_compact = time.monotonic()
    while True:
        await asyncio.sleep(every.flush_every)
        if not await stats.flush():
            metrics.pull_stats_error("flush")
        now = time.monotonic()
        if now - last_load >= every.load_every:
            last_load = now
            await _attempt("load", stats.load, metrics)
        if now - last_compact >= every.compact_every:
            last_compact = now
            await _attempt("compact", stats.compact, metrics)


async def _attempt(action: str, call: Callable[[], Awaitable[object]], metrics: Metrics) -> None:
    try:
        await call()
    except StorageError as exc:
        log.warning("cannot %s pull counts: %s; trying again later", action, exc)
        metrics.pull_stats_error(action)
