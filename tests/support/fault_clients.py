"""Client behaviours for the fault matrix, and how one client's pull ended.

Each behaviour pulls one URL with real aiohttp clients and reports an
:class:`Outcome` per client: the exact bytes, a cut (the status line went out,
then the transfer broke), a hang-up of its own, or an error status.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp

SLOW_RATE = 1_000_000  # bytes per second of a slow client
HANG_UP_AFTER = 256 * 1024  # bytes a hanging-up client reads first
_READ = 64 * 1024
_RECEIVE_BUFFER = 16 * 1024  # a slow client's kernel buffer: it must not hide the lag

Running = Callable[[], bool]  # whether the mirror is still downloading


@dataclass(frozen=True)
class Outcome:
    """How one client's pull ended."""

    client: str
    status: int
    size: int
    sha256: str
    broken: bool  # the transfer ended without a clean end of body
    hung_up: bool
    elapsed: float
    retry_after: str | None

    def kind(self, expected_sha256: str) -> str:
        """``exact``, ``cut``, ``hangup``, the status, or ``WRONG or SHORT`` (never allowed)."""
        if self.status != 200:
            return str(self.status)
        if self.hung_up:
            return "hangup"
        if self.broken:
            return "cut"
        return "exact" if self.sha256 == expected_sha256 else "WRONG or SHORT"


def _small_socket(addr_info: tuple[object, ...]) -> socket.socket:
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)  # type: ignore[arg-type]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
    return sock


def session(small_buffer: bool = False, tls: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """One connection per request, as separate pulling hosts would have.

    ``tls``: how to trust an https server (default: the system's trust store).
    """
    connector = aiohttp.TCPConnector(
        limit=0, force_close=True, socket_factory=_small_socket if small_buffer else None,
        ssl=tls if tls is not None else True,
    )  # fmt: skip
    return aiohttp.ClientSession(connector=connector)


async def _pull(
    name: str, url: str, *, slow: Running | None, hang_up: bool, tls: ssl.SSLContext | None = None
) -> Outcome:
    """One client: read ``url`` to the end, slowly while ``slow()`` holds, or hang up early."""
    started = time.monotonic()
    hasher, size, broken, hung_up = hashlib.sha256(), 0, False, False
    async with session(small_buffer=slow is not None, tls=tls) as client:
        async with client.get(url) as resp:
            try:
                while chunk := await resp.content.read(_READ):
                    hasher.update(chunk)
                    size += len(chunk)
                    if hang_up and size >= HANG_UP_AFTER:
                        hung_up = True
                        resp.close()
                        break
                    if slow is not None and slow():
                        await asyncio.sleep(len(chunk) / SLOW_RATE)
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError):
                broken = True
            return Outcome(
                name, resp.status, size, hasher.hexdigest(), broken, hung_up,
                time.monotonic() - started, resp.headers.get("Retry-After"),
            )  # fmt: skip


async def fast(url: str, running: Running) -> list[Outcome]:
    """Reads as fast as it can."""
    return [await _pull("fast", url, slow=None, hang_up=False)]


async def slow(url: str, running: Running) -> list[Outcome]:
    """About 1 MB/s while the download runs, so it is behind when the download ends."""
    return [await _pull("slow", url, slow=running, hang_up=False)]


async def hang_up(url: str, running: Running) -> list[Outcome]:
    """Reads the first 256 KiB, then closes the connection."""
    return [await _pull("hang-up", url, slow=None, hang_up=True)]


async def followers(url: str, running: Running) -> list[Outcome]:
    """Three clients at once on one download: two fast, one slow."""
    pulls = [
        _pull("fast-1", url, slow=None, hang_up=False),
        _pull("slow", url, slow=running, hang_up=False),
        _pull("fast-2", url, slow=None, hang_up=False),
    ]
    return list(await asyncio.gather(*pulls))


async def slow_tls(url: str, tls: ssl.SSLContext) -> Outcome:
    """One client reading an https ``url`` at about 1 MB/s to its end, trusting ``tls``."""
    return await _pull("slow-tls", url, slow=lambda: True, hang_up=False, tls=tls)


Behaviour = Callable[[str, Running], Awaitable[list[Outcome]]]

BEHAVIOURS: dict[str, Behaviour] = {
    "fast": fast,
    "slow": slow,
    "hang-up": hang_up,
    "followers": followers,
}
