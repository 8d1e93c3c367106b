"""A TCP proxy on a real loopback socket that a test can cut: an S3 endpoint going down.

::

    async with TcpProxy("127.0.0.1", moto_port) as proxy:
        settings["s3"]["endpoint_url"] = proxy.url
        ...
        proxy.cut()       # live connections reset, new ones reset on accept
        proxy.restore()   # connections pass again
"""

from __future__ import annotations

import asyncio
import contextlib

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards every connection to ``host:port`` until :meth:`cut`."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._live: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.down = False
        self.refused = 0  # connections reset while down

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._reset_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` of the proxy."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def cut(self) -> None:
        """Reset every live connection; reset new ones as soon as they are accepted."""
        self.down = True
        self._reset_all()

    def restore(self) -> None:
        """Let connections through again."""
        self.down = False

    def _reset_all(self) -> None:
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        if self.down:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._live.update((writer, up_writer))
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._live.discard(end)
                end.transport.abort()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
