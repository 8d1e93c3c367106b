"""Pull-count records: their keys, their JSON, and how they add up.

A record maps ``<upstream>/<repository>`` to ``[pulls, last pulled]`` for
one period of UTC time. Records live in the cache's storage under
:data:`PREFIX`, in one folder per period::

    _stats/pulls/2025/06/17/w-<writer>   one process's pulls on that day (it rewrites it)
    _stats/pulls/2025/06/17/all          the closed day: the sum of its writer records
    _stats/pulls/2025/06/all             the closed month: the sum of its days
    _stats/pulls/2025/all                the closed year: the sum of its months

The one rule every reader and compactor keeps: **a record is covered, and
ignored, when an ``all`` record of a period above it exists**. So a
compactor may write a period's sum and only then delete what it summed,
and a reader that sees both counts each pull once. ``_`` never starts an
upstream name, so these keys never meet the cache's own.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mirror.storage import layout

PREFIX = f"{layout.STATS}/pulls/"
SUM = "all"
WRITER = "w-"
VERSION = 1

Period = tuple[str, ...]  # ("2025",), ("2025", "06") or ("2025", "06", "17")


@dataclass(slots=True)
class Pulls:
    """Pulls of one repository: how many, and the last one (seconds since the epoch)."""

    count: int
    last: float

    def add(self, other: Pulls) -> None:
        """Add another tally of the same repository."""
        self.count += other.count
        self.last = max(self.last, other.last)


Tally = dict[str, Pulls]  # "<upstream>/<repository>" -> Pulls


def day_of(timestamp: float) -> Period:
    """The UTC day a time falls in."""
    t = time.gmtime(timestamp)
    return (f"{t.tm_year:04d}", f"{t.tm_mon:02d}", f"{t.tm_mday:02d}")


def period_end(period: Period) -> float:
    """The first second after ``period`` (UTC)."""
    year = int(period[0])
    if len(period) == 1:
        return _epoch(year + 1, 1, 1)
    month = int(period[1])
    if len(period) == 2:
        return _epoch(year + month // 12, month % 12 + 1, 1)
    return _epoch(year, month, int(period[2])) + 86400


def _epoch(year: int, month: int, day: int) -> float:
    return float(calendar.timegm((year, month, day, 0, 0, 0)))


def sum_key(period: Period) -> str:
    """The key of a closed period's sum."""
    return PREFIX + "/".join(period) + "/" + SUM


def writer_key(day: Period, writer: str) -> str:
    """The key of one writer's record of one day."""
    return PREFIX + "/".join(day) + "/" + WRITER + writer


def parse_key(key: str) -> tuple[Period, str] | None:
    """``(period, name)`` of a record key (name is ``all`` or ``w-<writer>``); else None."""
    if not key.startswith(PREFIX):
        return None
    *period, name = key[len(PREFIX) :].split("/")
    if not 1 <= len(period) <= 3 or not all(p.isascii() and p.isdigit() for p in period):
        return None
    if name == SUM or (name.startswith(WRITER) and len(period) == 3 and len(name) > 2):
        return tuple(period), name
    return None


def covered(key: str, sums: set[Period]) -> bool:
    """Whether the sum of a period above ``key`` exists (then ``key`` is counted there)."""
    parsed = parse_key(key)
    if parsed is None:
        return False
    period, name = parsed
    depth = len(period) if name != SUM else len(period) - 1
    return any(period[:n] in sums for n in range(1, depth + 1))


def add_into(total: Tally, tally: Mapping[str, Pulls]) -> None:
    """Add ``tally`` into ``total``."""
    for repository, pulls in tally.items():
        mine = total.get(repository)
        if mine is None:
            total[repository] = Pulls(pulls.count, pulls.last)
        else:
            mine.add(pulls)


def capped(tally: Tally, limit: int) -> Tally:
    """At most ``limit`` repositories: those pulled last (then most), a deterministic choice."""
    if len(tally) <= limit:
        return tally
    keep = sorted(tally.items(), key=lambda kv: (-kv[1].last, -kv[1].count, kv[0]))[:limit]
    return dict(keep)


def encode(tally: Mapping[str, Pulls]) -> bytes:
    """A record's bytes: sorted, so equal tallies make equal records."""
    body = {k: [v.count, v.last] for k, v in sorted(tally.items())}
    return json.dumps({"version": VERSION, "repositories": body}, separators=(",", ":")).encode()


def decode(data: bytes) -> Tally:
    """A record's tally; ValueError when it is not one."""
    document = json.loads(data)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError("not a version 1 pull record")
    entries = document.get("repositories")
    if not isinstance(entries, dict):
        raise ValueError("no repositories")
    return {key: _pulls(value) for key, value in entries.items()}


def _pulls(value: object) -> Pulls:
    if (
        isinstance(value, list) and len(value) == 2
        and isinstance(value[0], int) and not isinstance(value[0], bool) and value[0] >= 0
        and isinstance(value[1], int | float) and not isinstance(value[1], bool)
    ):  # fmt: skip
        return Pulls(value[0], float(value[1]))
    raise ValueError(f"bad entry {value!r:.80}")


def total_of(tallies: Iterable[Mapping[str, Pulls]], limit: int) -> Tally:
    """The capped sum of several tallies."""
    total: Tally = {}
    for tally in tallies:
        add_into(total, tally)
    return capped(total, limit)
