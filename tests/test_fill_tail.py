"""A fill's followers read fresh bytes from memory and older ones from the spool.

Drives :class:`Download` the way the fill runner does (receive, then persist in
batches into a real spool file) and checks that every follower, wherever it
starts and whatever range it asks for, gets exactly the right bytes, with the
last byte held back until the digest is verified.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest

from mirror.errors import DigestMismatch
from mirror.proxy.download import Download
from tests.support.spooled_fill import new_fill

CHUNKS = [random.Random(n).randbytes(1000 + 37 * n) for n in range(12)]
BLOB = b"".join(CHUNKS)


async def collect(fill: Download, start: int, end: int | None) -> bytes:
    return b"".join([chunk async for chunk in fill.follow(start, end)])


async def run_fill(fill: Download, fd: int, batch: int) -> None:
    """Receive every chunk; persist them ``batch`` chunks at a time, like the runner."""
    pending: list[bytes] = []
    for chunk in CHUNKS:
        fill.receive(chunk)
        pending.append(chunk)
        await asyncio.sleep(0)
        if len(pending) >= batch:
            data = b"".join(pending)
            os.pwrite(fd, data, fill.persisted)
            fill.persist(len(data))
            pending = []
            await asyncio.sleep(0)
    if pending:
        data = b"".join(pending)
        os.pwrite(fd, data, fill.persisted)
        fill.persist(len(data))
    await asyncio.sleep(0)
    assert fill.written == fill.persisted == len(BLOB)
    fill.succeed()
    fill.finish()


async def test_followers_get_exact_bytes_from_memory_and_spool(tmp_path: Path) -> None:
    for batch in (1, 3, 5):
        fill, fd = new_fill(tmp_path, BLOB)
        ranges = [(0, None), (1, None), (1000, 5000), (len(BLOB) - 1, None), (2500, 2500)]
        readers = [asyncio.create_task(collect(fill, s, e)) for s, e in ranges]
        await run_fill(fill, fd, batch)
        late = await collect(fill, 777, None)  # joins after everything was persisted
        os.close(fd)
        for (start, end), reader in zip(ranges, readers, strict=True):
            assert await reader == BLOB[start : None if end is None else end + 1], (batch, start)
        assert late == BLOB[777:]


async def test_last_byte_waits_for_the_digest(tmp_path: Path) -> None:
    fill, fd = new_fill(tmp_path, BLOB)
    reader = asyncio.create_task(collect(fill, 0, None))
    for chunk in CHUNKS:
        fill.receive(chunk)
    await asyncio.sleep(0.05)
    assert fill.written == len(BLOB)
    assert not reader.done()  # everything but the last byte has been handed out
    fill.fail(DigestMismatch("bytes do not match"))
    fill.finish()
    os.close(fd)
    with pytest.raises(DigestMismatch):
        await reader
