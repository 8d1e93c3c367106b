"""What aiohttp logs about requests it cannot parse: one short line each, rate-limited.

aiohttp's request handler reports every malformed HTTP message (a bad
request line, a header too long, broken chunked encoding, a bad
``Content-Length``) with ``logger.exception``: an ERROR with a full
traceback, per request. Anyone who can reach the port can flood the log
that way, and hide real errors in it. :func:`request_error_logger` gives
the handler (through ``web.Application(handler_args=...)``) a logger that
turns each of those into one INFO line without a traceback, at most
:data:`LINES_PER_WINDOW` per :data:`WINDOW` seconds, and counts the lines it
held back in the next one it writes. Anything else the handler reports
(a bug, not a bad request) still goes out as an ERROR with its traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

LINES_PER_WINDOW = 20
WINDOW = 60.0  # seconds
_MAX_DETAIL = 200  # characters of aiohttp's message kept in the line


class LineBudget:
    """At most ``limit`` lines per ``window`` seconds; counts the ones refused."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._started = -window
        self._used = 0
        self.held_back = 0

    def take(self) -> bool:
        """Whether one more line may be written now."""
        now = self._clock()
        if now - self._started >= self._window:
            self._started, self._used = now, 0
        if self._used < self._limit:
            self._used += 1
            return True
        self.held_back += 1
        return False

    def take_held_back(self) -> int:
        """Lines refused since the last call."""
        count, self.held_back = self.held_back, 0
        return count


class RequestErrorLogger(logging.LoggerAdapter[logging.Logger]):
    """The logger aiohttp's request handler writes to (it calls ``debug`` and ``exception``)."""

    def __init__(self, logger: logging.Logger, budget: LineBudget) -> None:
        super().__init__(logger, {})
        self._budget = budget

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        """A malformed request becomes one INFO line; any other exception stays an ERROR."""
        if not isinstance(exc_info, HttpProcessingError):
            self.logger.error(msg, *args, exc_info=exc_info, **kwargs)
            return
        self._bad_request(args, exc_info)

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        """aiohttp logs non-HTTP bytes on a fresh connection at DEBUG: also without a traceback."""
        exc_info = kwargs.pop("exc_info", None)
        if isinstance(exc_info, HttpProcessingError):
            self._bad_request(args, exc_info)
            return
        self.logger.debug(msg, *args, exc_info=exc_info, **kwargs)

    def _bad_request(self, args: tuple[object, ...], error: HttpProcessingError) -> None:
        if not self.logger.isEnabledFor(logging.INFO) or not self._budget.take():
            return
        held_back = self._budget.take_held_back()
        suffix = f" ({held_back} more held back)" if held_back else ""
        # aiohttp's arguments are ("Error handling request from %s", peer address).
        peer = args[0] if args else "-"
        self.logger.info(
            "malformed HTTP request from %s, answered %d: %s%s",
            peer, error.code, _one_line(error.message), suffix,
        )  # fmt: skip


def _one_line(text: str) -> str:
    """The first line of aiohttp's message, with control and non-ASCII characters escaped.

    The message may quote the client's bytes; escaped, they cannot forge log lines.
    """
    first = text.strip().split("\n", 1)[0][:_MAX_DETAIL].rstrip(":")
    return ascii(first)[1:-1]


def request_error_logger(name: str = "mirror.http") -> RequestErrorLogger:
    """A fresh logger for one application's request handlers, with its own budget."""
    return RequestErrorLogger(logging.getLogger(name), LineBudget(LINES_PER_WINDOW, WINDOW))
