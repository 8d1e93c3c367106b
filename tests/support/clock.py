"""A clock that tests move by hand, for code that takes ``clock`` and ``sleep`` callables."""

from __future__ import annotations

import asyncio


class ManualClock:
    """``now`` moves only when the test moves it, or when :meth:`sleep` is awaited
    (unless ``frozen``: then sleeps are only recorded, as for callers arriving at once)."""

    def __init__(self, now: float = 1_700_000_000.0, *, frozen: bool = False) -> None:
        self.now = now
        self.frozen = frozen
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Record the sleep and move the clock past it."""
        self.slept.append(seconds)
        if not self.frozen:
            self.now += seconds
        await asyncio.sleep(0)
