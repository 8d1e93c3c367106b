"""``registry-mirror import SRC --mirror URL``: stream a layout's tar to a running mirror.

The mirror's ``PUT /admin/import`` (:mod:`mirror.routes.admin_import`) checks
and publishes every object into its own cache, so its index and metrics see
them at once. The source is a tar file (plain, gzip or zstd) or ``-``; a
layout directory is sent as ``tar -C DIR -c . | registry-mirror import -
--mirror URL``. The token is the admin API's (``admin.token``, e.g.
``$MIRROR_ADMIN_TOKEN``), never a command-line argument.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

import aiohttp

from mirror.airgap.errors import AirgapError, BudgetExceeded, LayoutError
from mirror.airgap.names import Defaults
from mirror.progress import Reporter

CHUNK = 1024 * 1024


async def import_remote(
    mirror_url: str,
    token: str,
    source: str,
    reporter: Reporter,
    *,
    defaults: Defaults,
    allow_evict: bool,
) -> dict[str, Any]:
    """Send the layout at ``source``; the mirror's import report (``ok``, images, damaged)."""
    handle, size = await asyncio.to_thread(_open_source, source)
    query = {"allow_evict": "1"} if allow_evict else {}
    if defaults.upstream is not None:
        query["upstream"] = defaults.upstream
    if defaults.repository is not None:
        query["repository"] = defaults.repository
    reporter.start("import", total_bytes=size, total_items=1)
    url = mirror_url.rstrip("/") + "/admin/import"
    headers = {"Authorization": f"Bearer {token}"}
    # No time limit on the whole transfer: the mirror answers once it checked everything.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.put(url, params=query, headers=headers, data=_chunks(handle, reporter)) as resp,
        ):
            body = await resp.read()
    except (aiohttp.ClientError, OSError) as exc:
        raise AirgapError(f"{url}: {exc}") from None
    finally:
        if handle is not sys.stdin.buffer:
            await asyncio.to_thread(handle.close)
    return _answer(resp.status, body, url)


def _open_source(source: str) -> tuple[IO[bytes], int]:
    """The tar stream to send, and its size (0 when unknown: standard input)."""
    if source == "-":
        return sys.stdin.buffer, 0
    if Path(source).is_dir():
        raise LayoutError(
            f"{source}: --mirror takes a tar stream; send a directory as "
            f"tar -C {source} -c . | registry-mirror import - --mirror URL"
        )
    try:
        handle = Path(source).open("rb")  # noqa: SIM115 (closed by import_remote)
        return handle, Path(source).stat().st_size
    except OSError as exc:
        raise LayoutError(f"{source}: {exc.strerror or exc}") from None


async def _chunks(handle: IO[bytes], reporter: Reporter) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, CHUNK):
        reporter.advance(len(chunk))
        yield chunk


def _answer(status: int, body: bytes, url: str) -> dict[str, Any]:
    """The report of a 200; an :class:`AirgapError` with the mirror's message otherwise."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status == 200 and isinstance(doc, dict):
        return doc
    message = _message(doc) or body[:200].decode(errors="replace")
    if status == 413:
        raise BudgetExceeded(f"{url}: {message}")
    raise AirgapError(f"{url}: {status} {message}")


def _message(doc: object) -> str | None:
    try:
        return str(doc["errors"][0]["message"])  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
