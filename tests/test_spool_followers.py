"""Followers of a download whose body went straight into its spool (a spliced body).

Drives :class:`Download` as a splicing transfer does (the bytes are written to
a real spool file, then announced with :meth:`Download.receive_spooled`;
nothing is held in memory) and checks what its followers are given: a TLS
client's follower reads spool blocks, and followers at the same place share
each block (one ``pread`` for a herd, not one per client) while only the last
few are kept; a plain client's follower is given spans of at most 1 MiB to
send with ``sendfile``. Either way the last byte waits for the digest.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Any

import pytest

from mirror.proxy.download import _BLOCK, _MAX_SPAN, _SHARED_BLOCKS, Download, SpoolSpan
from tests.support.spooled_fill import new_fill


def spliced(tmp_path: Path, blob: bytes) -> Download:
    """A download of ``blob`` whose every byte is already in its spool, not yet verified."""
    fill, fd = new_fill(tmp_path, blob)
    os.pwrite(fd, blob, 0)
    os.close(fd)
    fill.receive_spooled(len(blob))
    return fill


async def held_back(step: asyncio.Future[Any]) -> None:
    """``step`` is still waiting a while later: the follower was given nothing."""
    await asyncio.sleep(0.05)
    assert not step.done()


async def test_followers_at_one_place_share_each_whole_block_and_the_tail_is_exact(
    tmp_path: Path,
) -> None:
    blob = random.Random(1).randbytes(3 * _BLOCK + 100)
    fill = spliced(tmp_path, blob)
    first, second = fill.follow(0, None), fill.follow(0, None)
    for index in range(3):
        mine, theirs = await first.__anext__(), await second.__anext__()
        assert mine == blob[index * _BLOCK : (index + 1) * _BLOCK]
        assert theirs is mine  # read from the spool once for both
    # The tail is no whole block: each reads it, short of the last byte.
    for follower in (first, second):
        assert await follower.__anext__() == blob[3 * _BLOCK : -1]
    steps = [asyncio.ensure_future(f.__anext__()) for f in (first, second)]
    await held_back(steps[0])
    fill.succeed()
    assert [await step for step in steps] == [blob[-1:]] * 2
    for follower in (first, second):
        with pytest.raises(StopAsyncIteration):
            await follower.__anext__()
    fill.finish()
    assert fill.spool_fd is None  # the last follower left: the spool is closed


async def test_only_the_last_blocks_are_kept_for_a_follower_that_comes_later(
    tmp_path: Path,
) -> None:
    blob = random.Random(2).randbytes((_SHARED_BLOCKS + 2) * _BLOCK + 100)
    fill = spliced(tmp_path, blob)
    leader = fill.follow(0, None)
    taken = [await leader.__anext__() for _ in range(_SHARED_BLOCKS + 2)]
    late = fill.follow(0, None)
    again = await late.__anext__()
    assert again == taken[0] == blob[:_BLOCK]
    assert again is not taken[0]  # dropped: more than _SHARED_BLOCKS blocks came after it
    # Read after the late follower's block 0 pushed out block 2: the newest are still shared.
    near = fill.follow(17 * _BLOCK, None)
    assert await near.__anext__() is taken[17]
    for follower in (leader, late, near):
        await follower.aclose()
    fill.finish()
    assert fill.spool_fd is None


async def collect(fill: Download, start: int, end: int | None) -> bytes:
    return b"".join([chunk async for chunk in fill.follow(start, end)])


async def test_followers_keeping_up_with_a_splice_get_exact_bytes(tmp_path: Path) -> None:
    # The splice announces what landed in uneven steps, mostly parts of a block:
    # a follower reads the part, then a slice of the block once it is whole.
    blob = random.Random(4).randbytes(3 * _BLOCK + 100)
    fill, fd = new_fill(tmp_path, blob)
    ranges = [(0, None), (0, None), (1000, 700_000), (_BLOCK - 1, None), (len(blob) - 1, None)]
    readers = [asyncio.ensure_future(collect(fill, s, e)) for s, e in ranges]
    steps = random.Random(5)
    while fill.written < len(blob):
        count = min(steps.randrange(1, 300_000), len(blob) - fill.written)
        os.pwrite(fd, blob[fill.written : fill.written + count], fill.written)
        fill.receive_spooled(count)
        for _ in range(3):
            await asyncio.sleep(0)  # each follower takes what it may
    os.close(fd)
    fill.succeed()
    fill.finish()
    for (start, end), reader in zip(ranges, readers, strict=True):
        assert await reader == blob[start : None if end is None else end + 1], (start, end)
    assert fill.spool_fd is None


async def spans_of(fill: Download, start: int, end: int | None) -> list[SpoolSpan]:
    """Every piece a plain client's follower of ``start``..``end`` is given."""
    found: list[SpoolSpan] = []
    async for piece in fill.follow(start, end).pieces():
        assert isinstance(piece, SpoolSpan), "a spliced body is never in memory"
        found.append(piece)
    return found


async def test_a_plain_client_follows_a_spliced_body_in_spans_of_at_most_a_mebibyte(
    tmp_path: Path,
) -> None:
    blob = random.Random(3).randbytes(2 * _MAX_SPAN + _MAX_SPAN // 2 + 3)
    fill = spliced(tmp_path, blob)
    whole = asyncio.ensure_future(spans_of(fill, 0, None))
    ranged = asyncio.ensure_future(spans_of(fill, 1000, 1_999_999))
    await held_back(whole)
    await held_back(ranged)  # its last byte is byte 1999999: that one waits too
    fill.succeed()
    last = len(blob) - 1
    assert [(s.offset, s.count) for s in await whole] == [
        (0, _MAX_SPAN), (_MAX_SPAN, _MAX_SPAN), (2 * _MAX_SPAN, last - 2 * _MAX_SPAN), (last, 1)
    ]  # fmt: skip
    assert [(s.offset, s.count) for s in await ranged] == [
        (1000, _MAX_SPAN), (1000 + _MAX_SPAN, 1_999_999 - 1000 - _MAX_SPAN), (1_999_999, 1)
    ]  # fmt: skip
    assert b"".join(os.pread(s.fd, s.count, s.offset) for s in await whole) == blob
    fill.finish()
    assert fill.spool_fd is None
