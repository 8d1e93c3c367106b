"""Both ends of a real loopback TCP connection, and a hasher that falls behind on demand,
for tests of :class:`mirror.storage.splice.SplicePump`.

::

    with Peer() as peer:                      # peer.receiver: non-blocking, for the pump
        peer.send(data, then="hold")          # a thread sends, then stays silent
        ...
        peer.release.set()                    # now it closes
"""

from __future__ import annotations

import hashlib
import socket
import threading
from types import TracebackType
from typing import Literal

# Every wait in here ends by itself: a failing test must not hang the run.
_LIMIT = 30.0


class Peer:
    """A connected pair of TCP sockets on 127.0.0.1: ``sender`` (ours) and ``receiver``."""

    def __init__(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as server:
            self.sender = socket.create_connection(server.getsockname())
            self.receiver, _ = server.accept()
        self.receiver.setblocking(False)
        #: set to let a sender that holds the connection open close it
        self.release = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release.set()
        self.receiver.close()  # a sender blocked on a full window fails and ends
        if self._thread is not None:
            self._thread.join(_LIMIT)
        self.sender.close()

    def send(self, data: bytes, then: Literal["close", "hold"] = "close") -> None:
        """Send ``data`` from a thread, then close, or ``hold`` the connection until released."""
        self._thread = threading.Thread(target=self._send, args=(data, then), name="peer")
        self._thread.start()

    def _send(self, data: bytes, then: str) -> None:
        try:
            # Uneven pieces: the receiving side sees whatever the kernel groups.
            view, size = memoryview(data), 100_003
            while view:
                self.sender.sendall(view[:size])
                view = view[size:]
            if then == "hold":
                self.release.wait(_LIMIT)
            self.sender.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the test closed the receiving end: it wants no more

    def join(self) -> None:
        """Wait for the sending thread (it has sent everything, and closed unless holding)."""
        if self._thread is not None:
            self._thread.join(_LIMIT)
            assert not self._thread.is_alive(), "the sender is stuck"

    def rest(self) -> bytes:
        """Everything still to be read from the receiving end, up to the sender's close."""
        self.receiver.setblocking(True)
        self.receiver.settimeout(_LIMIT)
        pieces = []
        while piece := self.receiver.recv(1 << 20):
            pieces.append(piece)
        return b"".join(pieces)


class GatedHasher:
    """sha256 whose ``update`` waits until :attr:`gate` is set: the hashing thread falls behind.

    Only for a pump's hashing thread: ``update`` blocks that thread, never the loop.
    """

    def __init__(self) -> None:
        self.gate = threading.Event()
        #: set once ``update`` was first called (the hashing thread is inside it)
        self.entered = threading.Event()
        self._inner = hashlib.sha256()

    def update(self, data: bytes | memoryview) -> None:
        """Add ``data`` once the gate is open."""
        self.entered.set()
        self.gate.wait(_LIMIT)
        self._inner.update(data)

    def hexdigest(self) -> str:
        """The digest of everything added."""
        return self._inner.hexdigest()
