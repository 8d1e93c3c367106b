"""The in-memory copy of small objects: served from memory, forgotten on every write."""

from __future__ import annotations

from pathlib import Path

from mirror.storage.disk import DiskStorage
from mirror.storage.memo import MemoStorage

KEY = "docker.io/tags/library/alpine/3/abcd"


async def test_get_is_served_from_memory_after_the_first_read(tmp_path: Path) -> None:
    disk = DiskStorage(tmp_path)
    memo = MemoStorage(disk, 1024 * 1024)
    await disk.put(KEY, b"first")
    assert await memo.get(KEY) == b"first"
    # Changed behind the memo's back: the memo still answers from memory.
    disk.path_of(KEY).write_bytes(b"changed")
    assert await memo.get(KEY) == b"first"


async def test_writes_and_deletes_through_it_are_never_stale(tmp_path: Path) -> None:
    memo = MemoStorage(DiskStorage(tmp_path), 1024 * 1024)
    await memo.put(KEY, b"one")
    assert await memo.get(KEY) == b"one"
    await memo.put(KEY, b"two")
    assert await memo.get(KEY) == b"two"
    writer = await memo.writer(KEY)
    await writer.write(b"three")
    await writer.commit()
    assert await memo.get(KEY) == b"three"
    await memo.delete(KEY)
    assert await memo.get(KEY) is None


async def test_bounded_by_bytes(tmp_path: Path) -> None:
    disk = DiskStorage(tmp_path)
    memo = MemoStorage(disk, 1000)
    await memo.put("a/tags/x/1/k", b"x" * 2000)  # larger than the whole memo: not kept
    await memo.put("a/tags/x/2/k", b"y" * 600)
    await memo.put("a/tags/x/3/k", b"z" * 600)  # pushes the older one out
    disk.path_of("a/tags/x/1/k").write_bytes(b"new1")
    disk.path_of("a/tags/x/2/k").write_bytes(b"new2")
    disk.path_of("a/tags/x/3/k").write_bytes(b"new3")
    assert await memo.get("a/tags/x/1/k") == b"new1"
    assert await memo.get("a/tags/x/2/k") == b"new2"
    assert await memo.get("a/tags/x/3/k") == b"z" * 600
