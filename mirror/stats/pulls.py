"""Per-repository pull counts and last-pulled times that survive restarts.

A pull is counted in memory (:meth:`PullStats.record`, no I/O), and flushed
in batches to the cache's storage through the plain :class:`Storage`
protocol (``get``, ``put``, ``walk``, ``delete``), in the records of
:mod:`mirror.stats.records`:

- **Several replicas on one bucket.** Each process writes only its own
  record per day, under a writer id drawn at start, and rewrites it whole on
  each flush; nobody else ever writes that key, so nothing is overwritten.
  A reader adds up every record.
- **Bounded.** Once a day is over (plus ``grace``, longer than any clock
  skew between replicas and any flush in flight), any process sums its
  writer records into the day's ``all`` record, then deletes them; closed
  months and years are summed the same way. Storage holds at most: the
  writer records of the last day or two, 31 days, 12 months, one record per
  year. Every record keeps at most ``max_repositories`` repositories (those
  pulled last), so each stays under about 330 bytes times that.
- **Safe when compactions race.** A sum is written before what it sums is
  deleted, and readers ignore a record covered by a sum above it, so a
  reader never counts a pull twice. Two processes compacting the same
  period compute the same sum from the same records and write the same key.
  A pull counted after the day closed (its process's clock behind by more
  than ``grace``) is lost; counts that a process could not flush before the
  day closed are carried into its current day instead.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator

from mirror.stats import records
from mirror.stats.records import Period, Pulls, Tally
from mirror.storage.base import Storage, StorageError

log = logging.getLogger(__name__)

DEFAULT_MAX_REPOSITORIES = 20_000
DEFAULT_GRACE = 6 * 3600.0
_READ_TRIES = 3


class PullStats:
    """Pull counts of every repository: this process's and, as last loaded, everyone's."""

    def __init__(
        self, storage: Storage, *, writer: str | None = None,
        clock: Callable[[], float] = time.time,
        max_repositories: int = DEFAULT_MAX_REPOSITORIES, grace: float = DEFAULT_GRACE,
    ) -> None:  # fmt: skip
        self._storage = storage
        self.writer = writer or uuid.uuid4().hex[:16]
        self._clock = clock
        self._limit = max_repositories
        self._grace = grace
        self._loaded: Tally = {}  # every record but this writer's open days
        self._written: dict[Period, Tally] = {}  # this writer's days, as last flushed
        self._pending: dict[Period, Tally] = {}  # counted since the last flush, per day
        self._merged: Tally = {}  # _loaded + _written + _pending

    # -- counting and reading (no I/O) ---------------------------------------

    def record(self, upstream: str, repository: str, when: float | None = None) -> None:
        """Count one pull of ``repository`` of ``upstream``."""
        now = self._clock() if when is None else when
        key = f"{upstream}/{repository}"
        pending = self._pending.setdefault(records.day_of(now), {})
        records.add_into(pending, {key: Pulls(1, now)})
        records.add_into(self._merged, {key: Pulls(1, now)})
        if len(self._merged) > 2 * self._limit:  # amortised: a cut only every `limit` new names
            self._merged = records.capped(self._merged, self._limit)

    def get(self, upstream: str, repository: str) -> Pulls | None:
        """Pulls of one repository: this process's, and everyone's as of the last load."""
        return self._merged.get(f"{upstream}/{repository}")

    def items(self) -> Iterator[tuple[str, str, Pulls]]:
        """Every repository with pulls: ``(upstream, repository, pulls)``."""
        for key, pulls in self._merged.items():
            upstream, _, repository = key.partition("/")
            yield upstream, repository, pulls

    # -- storage ---------------------------------------------------------------

    async def load(self) -> None:
        """Read every record (other replicas' included) and rebuild the totals."""
        mine = {records.writer_key(day, self.writer) for day in self._written}
        for _ in range(_READ_TRIES):
            found = await self._read_all(skip=mine)
            if found is not None:
                break
        else:
            log.warning("pull counts changed while being read %d times; kept the last read",
                        _READ_TRIES)  # fmt: skip
            return
        self._loaded = records.capped(found, self._limit)
        self._rebuild()

    async def flush(self) -> bool:
        """Write this process's days that changed; False if the storage refused (retried later)."""
        self._carry_over_closed_days()
        ok = True
        for day in sorted(self._pending):
            tally = records.total_of([self._written.get(day, {}), self._pending[day]], self._limit)
            try:
                await self._storage.put(records.writer_key(day, self.writer), records.encode(tally))
            except StorageError as exc:
                log.warning("cannot write pull counts: %s", exc)
                ok = False
                continue
            self._written[day] = tally
            del self._pending[day]
        self._retire_closed_days()
        return ok

    async def compact(self) -> int:
        """Sum every closed period into its ``all`` record; the records it removed."""
        now = self._clock()
        removed = 0
        for depth in (3, 2, 1):  # days, then months, then years
            keys = await self._keys()
            sums = _sums(keys)
            periods = {p[:depth] for p, _ in filter(None, map(records.parse_key, keys))
                       if len(p) >= depth}  # fmt: skip
            for period in sorted(periods):
                if records.period_end(period) + self._grace <= now:
                    removed += await self._compact_period(period, keys, sums)
        return removed

    async def close(self) -> None:
        """Flush what is left (at shutdown)."""
        await self.flush()

    # -- internals -------------------------------------------------------------

    async def _keys(self) -> list[str]:
        return [info.key async for info in self._storage.walk(records.PREFIX)]

    async def _read_all(self, skip: set[str]) -> Tally | None:
        """The sum of every uncovered record; None if one vanished while reading (retry)."""
        keys = await self._keys()
        sums = _sums(keys)
        tallies = []
        for key in keys:
            if key in skip or records.parse_key(key) is None or records.covered(key, sums):
                continue
            tally = await self._read(key)
            if tally is None:
                return None  # compacted under us: its sum exists now
            tallies.append(tally)
        total: Tally = {}
        for tally in tallies:
            records.add_into(total, tally)
        return total

    async def _read(self, key: str) -> Tally | None:
        data = await self._storage.get(key)
        if data is None:
            return None
        try:
            return records.decode(data)
        except ValueError as exc:
            log.warning("ignoring pull record %s: %s", key, exc)
            return {}

    async def _compact_period(self, period: Period, keys: list[str], sums: set[Period]) -> int:
        """Sum the uncovered records of a closed period, then delete all it holds.

        Records of sub-periods not summed yet are added as they are: the sum
        is the same, and so is the record another process makes at once.
        """
        own = records.sum_key(period)
        inside = [k for k in keys if k != own and k.startswith(own[: -len(records.SUM)])]
        if not inside:
            return 0
        if own not in keys:
            summed = [k for k in inside if not records.covered(k, sums)]
            tallies = [await self._read(k) for k in summed]
            if any(t is None for t in tallies):
                return 0  # another process is compacting this period; its sum will do
            total = records.total_of([t for t in tallies if t is not None], self._limit)
            await self._storage.put(own, records.encode(total))
        for key in inside:  # every one of them is covered by `own` now
            await self._storage.delete(key)
        return len(inside)

    def _carry_over_closed_days(self) -> None:
        """Counts of a day that may be compacted by now go to today (never to a lost record)."""
        now = self._clock()
        today = records.day_of(now)
        for day in [d for d in self._pending if d != today]:
            if records.period_end(day) + self._grace / 2 <= now:
                records.add_into(self._pending.setdefault(today, {}), self._pending.pop(day))

    def _retire_closed_days(self) -> None:
        """A closed, flushed day is just a record now: count it with the loaded ones."""
        today = records.day_of(self._clock())
        for day in [d for d in self._written if d != today and d not in self._pending]:
            records.add_into(self._loaded, self._written.pop(day))

    def _rebuild(self) -> None:
        merged: Tally = {}
        for tally in (self._loaded, *self._written.values(), *self._pending.values()):
            records.add_into(merged, tally)
        self._merged = records.capped(merged, self._limit)


def _sums(keys: list[str]) -> set[Period]:
    parsed = (records.parse_key(k) for k in keys)
    return {p for p, name in filter(None, parsed) if name == records.SUM}
