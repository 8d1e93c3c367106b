"""Disk storage: the calls that can take long leave the event loop.

Unlinking a large file frees its extents (about 0.1 s for 200 MiB on ext4
here), and creating a file can wait on a busy disk; each runs in a worker
thread, so the loop serves other requests meanwhile. Measured without any
clock: while such a call is awaited, another task gets to run.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from mirror.storage.disk import PARTIAL_DIR, DiskStorage
from tests.support.processes import open_files_under

T = TypeVar("T")
KEY = "up/blobs/sha256/ab/" + "ab" * 32


async def others_ran_during(operation: Awaitable[T]) -> tuple[bool, T]:
    """Whether a task scheduled just before ``operation`` ran before it finished."""
    ran = asyncio.Event()

    async def other() -> None:
        ran.set()

    task = asyncio.create_task(other())
    result = await operation
    seen = ran.is_set()
    await task
    return seen, result


async def test_deleting_a_blob_does_not_hold_the_event_loop(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    await storage.put(KEY, os.urandom(4 * 1024 * 1024))
    ran, _ = await others_ran_during(storage.delete(KEY))
    assert ran
    assert await storage.stat(KEY) is None


async def test_creating_and_aborting_a_partial_do_not_hold_the_event_loop(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    ran, writer = await others_ran_during(storage.writer(KEY))
    assert ran
    await writer.write(os.urandom(1024 * 1024))
    ran, _ = await others_ran_during(writer.abort())
    assert ran
    assert os.listdir(tmp_path / PARTIAL_DIR) == []


async def test_an_abort_interrupted_by_a_cancellation_leaves_nothing(tmp_path: Path) -> None:
    storage = DiskStorage(tmp_path)
    writer = await storage.writer(KEY)
    await writer.write(os.urandom(1024 * 1024))
    aborting = asyncio.create_task(writer.abort())
    await asyncio.sleep(0)  # the abort is under way: descriptor closed, unlink in a thread
    aborting.cancel()
    await asyncio.gather(aborting, return_exceptions=True)
    for _ in range(200):  # the shielded unlink finishes in its thread
        if not os.listdir(tmp_path / PARTIAL_DIR):
            break
        await asyncio.sleep(0.01)
    assert os.listdir(tmp_path / PARTIAL_DIR) == []
    assert open_files_under(tmp_path) == []
