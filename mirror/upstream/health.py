"""What the mirror last learned about one upstream: reachable, credentials refused, last error.

Every request the client sends and every readiness ping update it; ``/readyz``
reports it per upstream. A refused set of credentials is also a WARNING log
line, since every pull of that upstream fails until an operator acts; the
lines are rate-limited (as :mod:`mirror.request_log` does for malformed
requests) so a busy mirror does not flood its log with one mistake.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mirror.request_log import LineBudget

log = logging.getLogger(__name__)

WARNINGS_PER_WINDOW = 5
WINDOW = 60.0  # seconds


class UpstreamHealth:
    """The last known state of one upstream (see the module doc)."""

    def __init__(self, name: str, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.reachable: bool | None = None  # None: not contacted yet
        self.credentials_refused = False
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # Unix time
        self._clock = clock
        self._warnings = LineBudget(WARNINGS_PER_WINDOW, WINDOW, time.monotonic)

    def answered(self, status: int) -> None:
        """The upstream sent an HTTP answer: reachable unless it is a 5xx."""
        self.reachable = status < 500
        if status >= 500:
            self._error(f"answered {status}")

    def accepted(self) -> None:
        """A request succeeded (2xx): whatever credentials it needed were taken."""
        self.credentials_refused = False

    def failed(self, message: str) -> None:
        """The upstream could not be reached; ``message`` says what failed."""
        self.reachable = False
        self._error(message)

    def refused_credentials(self, message: str) -> None:
        """The upstream or its token service refused the mirror's credentials."""
        self.reachable = True
        self.credentials_refused = True
        self._error(message)
        if self._warnings.take():
            held = self._warnings.take_held_back()
            log.warning("%s%s", message, f" ({held} more held back)" if held else "")

    def as_dict(self) -> dict[str, object]:
        """The JSON ``/readyz`` reports for this upstream."""
        return {
            "reachable": self.reachable,
            "credentials_refused": self.credentials_refused,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
        }

    def _error(self, message: str) -> None:
        self.last_error = message
        self.last_error_at = round(self._clock(), 3)
