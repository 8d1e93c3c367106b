"""Progress for long commands (export, import, warm, verify): one reporter they all share.

- On a terminal: a bar with bytes done and total, rate and time left
  (``rich``, which redraws in place and keeps finished lines above the bar).
- Not on a terminal (a log, CI, a pipe): plain lines, one at the start, one at
  most every ``interval`` seconds with the same figures, one at the end.
- ``--quiet``: nothing but problems.

Problems (an item whose status is in :data:`PROBLEMS`) are always shown.
Everything goes to standard error, so standard output stays free for a tar
stream or the ``--json`` summary (:func:`print_json`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TextIO

#: item statuses that are shown even with --quiet
PROBLEMS = frozenset({"refused", "skipped", "failed", "damaged"})
LINE_INTERVAL = 10.0


class Reporter(Protocol):
    """What a command tells about its progress."""

    def start(self, action: str, *, total_bytes: int, total_items: int) -> None:
        """A phase begins: ``total_bytes`` to move in ``total_items`` objects."""
        ...

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more were moved."""
        ...

    def item(self, name: str, status: str, detail: str = "") -> None:
        """One image or object is done (or failed: see :data:`PROBLEMS`)."""
        ...

    def close(self) -> None:
        """The command is done; the last line is written."""
        ...


def make_reporter(
    *, quiet: bool = False, stream: TextIO | None = None, terminal: bool | None = None
) -> Reporter:
    """Bars on a terminal, lines elsewhere, problems only with ``quiet``."""
    out = stream if stream is not None else sys.stderr
    if quiet:
        return QuietReporter(out)
    if terminal if terminal is not None else out.isatty():
        return BarReporter(out)
    return LineReporter(out)


def print_json(doc: Mapping[str, Any], stream: TextIO | None = None) -> None:
    """The ``--json`` summary: one JSON document, then a newline."""
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    out.flush()


class QuietReporter:
    """Problems only."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.action = ""

    def start(self, action: str, *, total_bytes: int, total_items: int) -> None:
        self.action = action

    def advance(self, nbytes: int) -> None:
        return None

    def item(self, name: str, status: str, detail: str = "") -> None:
        if status in PROBLEMS:
            self.stream.write(_item_line(self.action, name, status, detail) + "\n")
            self.stream.flush()

    def close(self) -> None:
        return None


class LineReporter(QuietReporter):
    """Plain lines for logs: start, a line per ``interval`` seconds, every item, the end."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = LINE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self.interval = interval
        self.clock = clock
        self.total = self.done = self.items = 0
        self.started = self.last = 0.0

    def start(self, action: str, *, total_bytes: int, total_items: int) -> None:
        self.action, self.total, self.done = action, total_bytes, 0
        self.started = self.last = self.clock()
        self._line(f"{total_items} objects, {human_bytes(total_bytes)} to move")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._line(progress_text(self.done, self.total, now - self.started))

    def item(self, name: str, status: str, detail: str = "") -> None:
        self.stream.write(_item_line(self.action, name, status, detail) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.action:
            elapsed = self.clock() - self.started
            self._line(f"done, {human_bytes(self.done)} in {elapsed:.1f} s "
                       f"({human_rate(self.done, elapsed)})")  # fmt: skip

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.action}: {text}\n")
        self.stream.flush()


class BarReporter:
    """A live bar on a terminal: bytes, rate, time left; items printed above it."""

    def __init__(self, stream: TextIO, *, clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            # make_reporter chose bars because the stream is a terminal; say so to rich.
            console=Console(file=stream, force_terminal=True),
            get_time=clock,
        )
        self.task: Any = None
        self.action = ""

    def start(self, action: str, *, total_bytes: int, total_items: int) -> None:
        self.action = action
        if self.task is None:
            self.progress.start()
        else:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(action, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=nbytes)

    def item(self, name: str, status: str, detail: str = "") -> None:
        line = _item_line(self.action, name, status, detail)
        self.progress.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def progress_text(done: int, total: int, elapsed: float) -> str:
    """``1.2 GB of 3.4 GB (35%), 110.0 MB/s, 20 s left``."""
    percent = f" ({100 * done // total}%)" if total else ""
    text = f"{human_bytes(done)} of {human_bytes(total)}{percent}, {human_rate(done, elapsed)}"
    if done and total > done and elapsed > 0:
        text += f", {(total - done) * elapsed / done:.0f} s left"
    return text


def human_bytes(count: int) -> str:
    """Decimal units, as ``rich`` and ``du --si`` print them."""
    value = float(count)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{count} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_rate(count: int, elapsed: float) -> str:
    """Bytes per second in MB/s."""
    return f"{count / elapsed / 1e6:.1f} MB/s" if elapsed > 0 else "- MB/s"


def _item_line(action: str, name: str, status: str, detail: str) -> str:
    return f"{action}: {status} {name}" + (f": {detail}" if detail else "")
