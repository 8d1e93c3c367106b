"""Per-repository pull counts in the cache's storage (mirror/stats), on disk and on S3 (moto).

Several PullStats on one storage stand for replicas sharing a bucket, or for
one mirror before and after a restart. A settable clock moves days, months
and years along, so that compaction runs as it would after midnight.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mirror.stats import records
from mirror.stats.pulls import PullStats
from mirror.storage.base import Storage
from mirror.storage.disk import DiskStorage
from mirror.storage.s3 import S3Storage
from tests.support.s3 import MotoS3

GRACE = 3600.0
DAY = 86400.0


class Clock:
    """A wall clock the test sets."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(year: int, month: int, day: int, hour: int = 12) -> float:
    return float(calendar.timegm((year, month, day, hour, 0, 0)))


@pytest.fixture(params=["disk", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "disk":
        yield DiskStorage(tmp_path / "cache")
        return
    server: MotoS3 = request.getfixturevalue("s3_server")
    s3 = await S3Storage.open(server.s3_config(server.create_bucket(), "mirror"))
    try:
        yield s3
    finally:
        await s3.close()


def stats(storage: Storage, clock: Clock, writer: str, **options: int) -> PullStats:
    return PullStats(storage, writer=writer, clock=clock, grace=GRACE, **options)


async def stat_keys(storage: Storage) -> list[str]:
    return sorted([info.key async for info in storage.walk(records.PREFIX)])


async def totals(storage: Storage, clock: Clock) -> dict[tuple[str, str], tuple[int, float]]:
    """What a freshly started mirror reads."""
    reader = stats(storage, clock, "reader")
    await reader.load()
    return {(u, r): (p.count, p.last) for u, r, p in reader.items()}


async def test_counts_and_last_pull_survive_a_restart(storage: Storage) -> None:
    clock = Clock(utc(2025, 6, 17))
    before = stats(storage, clock, "a")
    for _ in range(3):
        before.record("docker.io", "library/alpine")
    before.record("ghcr.io", "org/app", when=clock.now - 60)
    await before.close()

    after = stats(storage, clock, "b")
    assert after.get("docker.io", "library/alpine") is None  # nothing before load
    await after.load()
    alpine = after.get("docker.io", "library/alpine")
    assert alpine is not None
    assert (alpine.count, alpine.last) == (3, clock.now)
    app = after.get("ghcr.io", "org/app")
    assert app is not None
    assert (app.count, app.last) == (1, clock.now - 60)


async def test_replicas_sharing_a_storage_add_up_and_never_overwrite(storage: Storage) -> None:
    clock = Clock(utc(2025, 6, 17))
    a, b = stats(storage, clock, "a"), stats(storage, clock, "b")
    for _ in range(5):
        a.record("docker.io", "library/alpine")
        await a.flush()  # each flush rewrites a's own record, and only that
    clock.now += 30
    b.record("docker.io", "library/alpine")
    b.record("docker.io", "library/nginx")
    await asyncio.gather(a.flush(), b.flush())
    assert await stat_keys(storage) == [
        records.writer_key(("2025", "06", "17"), "a"), records.writer_key(("2025", "06", "17"), "b")
    ]  # fmt: skip
    assert await totals(storage, clock) == {
        ("docker.io", "library/alpine"): (6, clock.now),
        ("docker.io", "library/nginx"): (1, clock.now),
    }
    await a.load()  # a sees b's pulls, and counts its own once
    assert a.get("docker.io", "library/alpine") == records.Pulls(6, clock.now)


async def test_closed_days_months_and_years_are_summed_and_their_records_removed(
    storage: Storage,
) -> None:
    clock = Clock(utc(2024, 12, 30))
    a, b = stats(storage, clock, "a"), stats(storage, clock, "b")
    expected = 0
    while clock.now < utc(2025, 2, 3):  # five weeks over a new year, both replicas pulling
        a.record("docker.io", "library/alpine")
        b.record("docker.io", "library/alpine")
        expected += 2
        await asyncio.gather(a.flush(), b.flush())
        await a.compact()
        clock.now += DAY
    keys = await stat_keys(storage)
    # 2024 is one record; January 2025 one; the February days and today's writers remain.
    assert records.sum_key(("2024",)) in keys
    january = records.sum_key(("2025", "01"))
    assert [k for k in keys if k.startswith(records.PREFIX + "2025/01/")] == [january]
    assert len(keys) <= 2 + 3 + 2 * 2  # years, months, days, two writers x (today, yesterday)
    last = clock.now - DAY
    assert await totals(storage, clock) == {("docker.io", "library/alpine"): (expected, last)}


async def test_racing_compactions_and_readers_count_each_pull_once(storage: Storage) -> None:
    clock = Clock(utc(2025, 3, 1))
    writers = [stats(storage, clock, f"w{n}") for n in range(4)]
    for day in range(3):
        for number, writer in enumerate(writers):
            for _ in range(number + 1):
                writer.record("docker.io", f"team/app{day}")
        await asyncio.gather(*(w.flush() for w in writers))
        clock.now += DAY
    clock.now += GRACE
    readers = [stats(storage, clock, f"r{n}") for n in range(3)]
    # Three compactors of the same closed days, and readers loading meanwhile.
    await asyncio.gather(*(w.compact() for w in writers[:3]), *(r.load() for r in readers))
    expected = {("docker.io", f"team/app{day}"): 10 for day in range(3)}
    for reader in [*readers, stats(storage, clock, "late")]:
        await reader.load()
        assert {(u, r): p.count for u, r, p in reader.items()} == expected
    assert all(k.endswith("/all") for k in await stat_keys(storage))


async def test_a_compaction_cut_short_after_its_sum_counts_each_pull_once(
    storage: Storage,
) -> None:
    clock = Clock(utc(2025, 6, 17))
    for writer in ("a", "b"):
        replica = stats(storage, clock, writer)
        replica.record("docker.io", "library/alpine")
        await replica.flush()
    summed = {key: await storage.get(key) for key in await stat_keys(storage)}
    clock.now += DAY + GRACE
    await stats(storage, clock, "compactor").compact()
    for key, data in summed.items():  # as if it died before deleting what it summed
        assert data is not None
        await storage.put(key, data)
    assert (await totals(storage, clock))[("docker.io", "library/alpine")][0] == 2
    await stats(storage, clock, "next").compact()  # the next compaction removes the rest
    assert await stat_keys(storage) == [records.sum_key(("2025", "06", "17"))]
    assert (await totals(storage, clock))[("docker.io", "library/alpine")][0] == 2


async def test_counts_a_flush_missed_before_the_day_closed_go_to_the_current_day(
    storage: Storage,
) -> None:
    clock = Clock(utc(2025, 6, 17, hour=23))
    a = stats(storage, clock, "a")
    a.record("docker.io", "library/alpine")
    await a.flush()
    a.record("docker.io", "library/alpine")  # not flushed before the day is over...
    clock.now = utc(2025, 6, 18, hour=0) + GRACE  # ...and not before others may compact it
    await a.compact()
    await a.flush()
    assert records.writer_key(("2025", "06", "18"), "a") in await stat_keys(storage)
    assert (await totals(storage, clock))[("docker.io", "library/alpine")][0] == 2


async def test_records_keep_the_repositories_pulled_last_up_to_the_limit(storage: Storage) -> None:
    clock = Clock(utc(2025, 6, 17))
    a = stats(storage, clock, "a", max_repositories=50)
    for number in range(200):
        a.record("docker.io", f"team/app{number:03d}", when=clock.now + number)
    await a.flush()
    [key] = await stat_keys(storage)
    data = await storage.get(key)
    assert data is not None
    assert len(data) < 50 * 330
    kept = records.decode(data)
    assert sorted(kept) == [f"docker.io/team/app{n:03d}" for n in range(150, 200)]
    assert len(list(a.items())) <= 2 * 50


async def test_a_damaged_record_is_ignored_then_compacted_away(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock(utc(2025, 6, 17))
    day = ("2025", "06", "17")
    await storage.put(records.writer_key(day, "broken"), b"\x00 not json")
    negative = b'{"version":1,"repositories":{"x":[-1,0]}}'
    await storage.put(records.writer_key(day, "wrong"), negative)
    a = stats(storage, clock, "a")
    a.record("docker.io", "library/alpine")
    await a.flush()
    assert await totals(storage, clock) == {("docker.io", "library/alpine"): (1, clock.now)}
    assert "ignoring pull record" in caplog.text
    clock.now += DAY + GRACE
    await a.compact()
    assert await stat_keys(storage) == [records.sum_key(day)]
    assert (await totals(storage, clock))[("docker.io", "library/alpine")][0] == 1


def test_periods_and_keys() -> None:
    assert records.day_of(utc(2024, 2, 29, hour=23)) == ("2024", "02", "29")
    assert records.period_end(("2024", "02", "29")) == utc(2024, 3, 1, hour=0)
    assert records.period_end(("2024", "12")) == utc(2025, 1, 1, hour=0)
    assert records.period_end(("2024",)) == utc(2025, 1, 1, hour=0)
    assert records.parse_key(records.writer_key(("2024", "02", "29"), "x")) == (
        ("2024", "02", "29"), "w-x")  # fmt: skip
    for key in ("_stats/pulls/2024/w-x", "_stats/pulls/2024/02/29/other", "docker.io/tags/a/b/any",
                "_stats/pulls/2024/02/29/w-", "_stats/pulls/all"):  # fmt: skip
        assert records.parse_key(key) is None
    sums: set[records.Period] = {("2024", "02")}
    assert records.covered(records.writer_key(("2024", "02", "29"), "x"), sums)
    assert records.covered(records.sum_key(("2024", "02", "29")), sums)
    assert not records.covered(records.sum_key(("2024", "02")), sums)
    assert not records.covered(records.writer_key(("2024", "03", "01"), "x"), sums)
