"""Single flight: one running coroutine per key, shared by every caller.

Callers that arrive while a call for the same key runs wait for its result
instead of starting their own. The shared call runs in its own task, so a
caller that is cancelled (its client hung up) never cancels it for the
others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Deduplicates concurrent calls by key."""

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    async def run(self, key: K, call: Callable[[], Awaitable[V]]) -> V:
        """Run ``call`` unless a call for ``key`` already runs; return its result."""
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(call())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        # Mark the exception as seen: every waiter may have gone away.
        if not task.cancelled():
            task.exception()

    async def close(self) -> None:
        """Cancel every running call (at shutdown)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
