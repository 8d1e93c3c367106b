"""Process lifecycle: start-up failures, listening sockets, the shutdown deadline.

A start-up failure is one line naming the setting, with an exit status:

- ``2``: the configuration cannot work as written: a malformed value, a port
  below 1024 without the right to bind it, an address this host does not have,
  a cache directory that cannot be created, an S3 endpoint or region that is
  not valid. Starting again will fail the same way, so a supervisor should not
  retry (systemd: ``RestartPreventExitStatus=2``).
- ``1``: a failure of the moment: the port is in use by another process, or
  the mirror failed while running. A retry may succeed.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass

CONFIG_ERROR = 2
RUNTIME_ERROR = 1

# errno -> (what it means for a listener, whether it is the configuration's fault)
_BIND_ERRORS = {
    errno.EADDRINUSE: ("the address is already in use by another process", False),
    errno.EACCES: ("permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)", True),
    errno.EADDRNOTAVAIL: ("this host has no such address", True),
}


class StartupError(Exception):
    """The mirror cannot start; ``status`` is the exit status (2 or 1)."""

    def __init__(self, message: str, status: int = RUNTIME_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def line(self) -> str:
        """The one line printed on stderr."""
        kind = "configuration error" if self.status == CONFIG_ERROR else "cannot start"
        return f"registry-mirror: {kind}: {self.message}"


def bind_error(setting: str, host: str, port: int, exc: OSError) -> StartupError:
    """``exc`` from binding ``setting`` (``listen``, ``metrics.listen``) as a StartupError."""
    if isinstance(exc, socket.gaierror):
        reason, config = f"cannot resolve {host!r}", True
    else:
        reason, config = _BIND_ERRORS.get(exc.errno or 0, (exc.strerror or str(exc), False))
    return StartupError(
        f"{setting}: cannot listen on {host}:{port}: {reason}",
        CONFIG_ERROR if config else RUNTIME_ERROR,
    )


def bind_listener(host: str, port: int, setting: str) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, or :class:`StartupError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise bind_error(setting, host, port, exc) from None
    try:
        # As asyncio's create_server does: a restarted mirror may bind while the
        # previous process's connections are still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise bind_error(setting, host, port, exc) from None
    sock.setblocking(False)
    return sock


@dataclass
class ShutdownClock:
    """How long stopping may take; the deadline is set when a stop signal arrives."""

    grace: float
    deadline: float | None = None  # time.monotonic()

    def start(self) -> None:
        """A stop signal arrived: the grace period runs from now."""
        self.deadline = time.monotonic() + self.grace

    def hurry(self) -> None:
        """A second signal: no more waiting."""
        self.deadline = time.monotonic()

    def remaining(self) -> float:
        """Seconds left of the grace period (all of it before a signal)."""
        if self.deadline is None:
            return self.grace
        return max(0.0, self.deadline - time.monotonic())
