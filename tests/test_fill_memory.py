"""A fill's followers after a failure, and a fill whose spool refused writes.

Drives :class:`Download` the way the fill runner does (receive, persist into a
real spool file, fail or go on from memory) and checks that a follower
stops at a failure at once, never gets an empty chunk, and that a fill held
in memory keeps its bound: it waits for its followers, drops one that takes
nothing, and gives up when nobody follows it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mirror.errors import UpstreamUnavailable
from mirror.proxy.download import Download, FollowersGone
from tests.support.spooled_fill import new_fill

CHUNK = 64 * 1024
BLOB = os.urandom(16 * CHUNK)
CHUNKS = [BLOB[i : i + CHUNK] for i in range(0, len(BLOB), CHUNK)]
LIMIT = 4 * CHUNK
PATIENCE = 0.2


def receive_and_persist(fill: Download, fd: int, received: int, persisted: int) -> None:
    """Receive ``received`` chunks; persist only the first ``persisted`` of them."""
    for chunk in CHUNKS[:received]:
        fill.receive(chunk)
    data = b"".join(CHUNKS[:persisted])
    os.pwrite(fd, data, 0)
    fill.persist(len(data))


async def test_a_follower_stops_at_a_failure_and_never_gets_an_empty_chunk(
    tmp_path: Path,
) -> None:
    fill, fd = new_fill(tmp_path, BLOB)
    # Bytes persisted lag bytes received, as when a batch is still being written.
    receive_and_persist(fill, fd, received=12, persisted=8)
    behind, caught_up = fill.follow(0, None), fill.follow(0, None)
    first = await anext(behind)  # from the spool, which holds more
    assert first == BLOB[: len(first)]
    assert len(first) < fill.persisted
    got = b""
    while len(got) < fill.persisted:  # up to where the spool ends
        got += await anext(caught_up)
    assert got == BLOB[: fill.persisted]

    fill.fail(UpstreamUnavailable("upstream cut for good"))
    fill.finish()  # the bytes only in memory are gone now
    os.close(fd)

    # Checked before every read: neither the spool nor an empty chunk after a failure.
    for follower in (behind, caught_up):
        with pytest.raises(UpstreamUnavailable, match="cut for good"):
            await asyncio.wait_for(anext(follower), 1)
    assert fill.spool_fd is None, "the last follower closed the spool"


async def test_without_a_spool_the_fill_goes_at_its_slowest_followers_pace(
    tmp_path: Path,
) -> None:
    fill, fd = new_fill(tmp_path, BLOB)
    receive_and_persist(fill, fd, received=2, persisted=2)
    fill.stop_spooling()  # the disk is full from here on
    follower = fill.follow(0, None)
    received: list[bytes] = []

    async def read_slowly() -> None:
        async for chunk in follower:
            received.append(chunk)
            await asyncio.sleep(0.005)

    reader = asyncio.create_task(read_slowly())
    for chunk in CHUNKS[2:]:
        fill.receive(chunk)
        await fill.make_room(LIMIT, patience=5)
        assert fill.held <= LIMIT + CHUNK  # the bound, plus the chunk the follower is in
    fill.succeed()
    fill.finish()
    await asyncio.wait_for(reader, 5)
    os.close(fd)
    assert b"".join(received) == BLOB  # the first two chunks came from the spool
    assert fill.held == 0, "memory is freed when the last follower leaves"


async def test_a_follower_that_takes_nothing_is_dropped_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    fill, fd = new_fill(tmp_path, BLOB)
    fill.stop_spooling()
    stuck = fill.follow(0, None)  # a client that stopped reading
    moving = fill.follow(0, None)
    arrived = CHUNKS[: LIMIT // CHUNK + 1]  # more than the limit
    for chunk in arrived:
        fill.receive(chunk)
    for chunk in arrived:  # `moving` keeps up; `stuck` holds the memory
        assert await anext(moving) == chunk

    await asyncio.wait_for(fill.make_room(LIMIT, PATIENCE), 5)

    assert fill.held <= CHUNK
    with pytest.raises(UpstreamUnavailable, match="behind"):
        await anext(stuck)
    fill.fail(UpstreamUnavailable("the end of this test"))
    fill.finish()
    await moving.aclose()
    os.close(fd)


async def test_an_uncached_fill_nobody_follows_gives_up(tmp_path: Path) -> None:
    fill, fd = new_fill(tmp_path, BLOB)
    fill.stop_spooling()
    for chunk in CHUNKS[: LIMIT // CHUNK + 1]:
        fill.receive(chunk)
    with pytest.raises(FollowersGone):
        await asyncio.wait_for(fill.make_room(LIMIT, PATIENCE), 5)
    fill.fail(UpstreamUnavailable("given up"))
    fill.finish()
    os.close(fd)
    assert fill.spool_fd is None
