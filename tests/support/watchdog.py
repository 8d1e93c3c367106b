"""A watchdog for tests: is the mirror still answering ``/healthz``, and quickly?

A thread GETs ``/healthz`` every :data:`PERIOD` seconds over a real socket and
times each answer. An answer slower than :data:`BUDGET` is asked again at
once: one late answer alone is the machine being busy (two cores shared with
other test runs), two in a row are the mirror being slow.

For a mirror running in the test's own event loop, a frozen loop would
freeze the test as well, so after :data:`FROZEN` seconds without an answer
(and once a callback scheduled on the loop has not run either) the watchdog
raises :class:`LoopBlocked` in the main thread: the traceback then shows the
code that held the loop, and the test fails instead of hanging.

::

    async with HealthWatch(mirror.url, asyncio.get_running_loop()) as watch:
        ...  # the faulty pulls
    watch.check()  # fails the test on a blocked loop or a slow /healthz

It is an async context manager so that the loop keeps serving while the
watchdog starts (its first ping is answered before the body runs) and stops.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from urllib.parse import urlsplit

PERIOD = 0.05
BUDGET = 0.1  # the slowest acceptable /healthz answer
FROZEN = 1.0  # no answer for this long: the loop is blocked


class LoopBlocked(AssertionError):
    """Raised in the main thread by the watchdog when the event loop stopped answering."""


@dataclass
class HealthWatch:
    """Times ``/healthz`` from a thread; breaks a freeze of ``loop`` (see module doc)."""

    url: str
    loop: asyncio.AbstractEventLoop | None = None
    latencies: list[float] = field(default_factory=list)
    slow: list[str] = field(default_factory=list)  # over budget twice in a row
    blocked: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pinged: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _previous: object = None

    async def __aenter__(self) -> HealthWatch:
        if self.loop is not None:
            self._previous = signal.signal(signal.SIGUSR1, _raise_blocked)
        self._thread = threading.Thread(target=self._watch, name="healthz-watchdog", daemon=True)
        self._thread.start()
        await asyncio.to_thread(self._pinged.wait, 2 * FROZEN)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2 * FROZEN + 1)
        if self.loop is not None:
            signal.signal(signal.SIGUSR1, self._previous)  # type: ignore[arg-type]

    @property
    def slowest(self) -> float:
        """The slowest answer so far, in seconds."""
        return max(self.latencies, default=0.0)

    def check(self) -> None:
        """Fail on a blocked loop, or on /healthz over budget twice in a row."""
        assert not self.blocked, f"the mirror stopped answering /healthz: {self.blocked}"
        assert self.latencies, "the watchdog never got to ping /healthz"
        assert not self.slow, f"/healthz took longer than {BUDGET * 1000:.0f} ms: {self.slow}"

    def _watch(self) -> None:
        parts = urlsplit(self.url)
        assert parts.hostname is not None
        started = time.monotonic()
        late = 0.0  # the previous answer's time when it was over budget
        while not self._stop.is_set():
            sent = time.monotonic()
            answered = self._ping(parts.hostname, parts.port or 80)
            self._pinged.set()
            if answered:
                took = time.monotonic() - sent
                self.latencies.append(took)
                if took > BUDGET and late:
                    self.slow.append(f"{late * 1000:.0f} then {took * 1000:.0f} ms")
                late = took if took > BUDGET and not late else 0.0
                self._stop.wait(0 if late else PERIOD)
                continue
            if self._stop.is_set():
                return
            self.blocked.append(f"no answer within {FROZEN:g}s at t={sent - started:.1f}s")
            if self.loop is not None and not self._loop_answers():
                # The loop runs Python code that never yields: interrupt it there.
                signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGUSR1)
                self._stop.wait(FROZEN)

    @staticmethod
    def _ping(host: str, port: int) -> bool:
        connection = http.client.HTTPConnection(host, port, timeout=FROZEN)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def _loop_answers(self) -> bool:
        assert self.loop is not None
        ran = threading.Event()
        try:
            self.loop.call_soon_threadsafe(ran.set)
        except RuntimeError:
            return True  # the loop is closed: nothing to break
        return ran.wait(FROZEN / 2)


def _raise_blocked(signum: int, frame: FrameType | None) -> None:
    raise LoopBlocked(f"the event loop was blocked for more than {FROZEN:g}s (watchdog)")
