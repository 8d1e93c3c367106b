"""Client-side helpers for tests that pull through the mirror with real aiohttp clients."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from mirror.app import FILLS, STORAGE
from mirror.oci import parse_digest
from mirror.proxy.download import Download
from mirror.storage import layout

# Every helper loop is bounded by this many seconds.
WAIT_LIMIT = 20.0


@dataclass
class Pulled:
    """What one client got: status and headers, the body (or its hash), or the error."""

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    sha256: str = ""
    size: int = 0
    error: BaseException | None = None
    first_byte: float | None = None  # time.monotonic() of the first body byte
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of what arrived."""
        return "sha256:" + self.sha256


OnChunk = Callable[[Pulled, bytes], Awaitable[bool]]


async def pull(
    session: aiohttp.ClientSession,
    url: str,
    headers: Mapping[str, str] | None = None,
    *,
    keep_body: bool = True,
    on_chunk: OnChunk | None = None,
) -> Pulled:
    """GET ``url`` and read the whole body; a broken transfer is recorded, not raised.

    ``on_chunk`` sees every chunk and returns False to hang up early.
    """
    hasher = hashlib.sha256()
    parts: list[bytes] = []
    async with session.get(url, headers=headers) as resp:
        pulled = Pulled(resp.status, dict(resp.headers))
        try:
            async for chunk in resp.content.iter_any():
                if pulled.first_byte is None:
                    pulled.first_byte = time.monotonic()
                hasher.update(chunk)
                pulled.size += len(chunk)
                if keep_body:
                    parts.append(chunk)
                if on_chunk is not None and not await on_chunk(pulled, chunk):
                    resp.close()
                    break
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            pulled.error = exc
    pulled.body = b"".join(parts)
    pulled.sha256 = hasher.hexdigest()
    return pulled


def blob_url(base: str, repository: str, digest: str) -> str:
    """The mirror URL of a blob."""
    return f"{base}/v2/{repository}/blobs/{digest}"


def manifest_url(base: str, repository: str, reference: str) -> str:
    """The mirror URL of a manifest."""
    return f"{base}/v2/{repository}/manifests/{reference}"


def running_fill(app: web.Application, upstream: str, digest: str) -> Download | None:
    """The mirror's download of ``digest`` in progress, if any."""
    return app[FILLS].running(layout.blob_key(upstream, parse_digest(digest)))


async def is_cached(app: web.Application, upstream: str, digest: str) -> bool:
    """Whether the mirror's storage holds the committed blob."""
    key = layout.blob_key(upstream, parse_digest(digest))
    return await app[STORAGE].stat(key) is not None


async def wait_for(condition: Callable[[], bool], what: str, limit: float = WAIT_LIMIT) -> None:
    """Poll ``condition`` every 10 ms for at most ``limit`` seconds."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_idle(app: web.Application) -> None:
    """Wait until the mirror has no download running (fills finish after their clients)."""
    await wait_for(lambda: len(app[FILLS]) == 0, "fills to finish")
