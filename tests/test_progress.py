"""The progress reporter shared by export, import, warm and verify."""

from __future__ import annotations

import io

from mirror.progress import (
    BarReporter,
    LineReporter,
    QuietReporter,
    human_bytes,
    make_reporter,
    print_json,
    progress_text,
)

MB = 1_000_000


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_give_bytes_rate_and_time_left_at_most_every_interval() -> None:
    out, clock = io.StringIO(), Clock()
    reporter = LineReporter(out, interval=10, clock=clock)
    reporter.start("import", total_bytes=400 * MB, total_items=3)
    clock.now += 5
    reporter.advance(50 * MB)  # within the interval: no line
    clock.now += 5
    reporter.advance(50 * MB)
    reporter.item("docker.io/library/alpine:3.20", "imported")
    reporter.item("docker.io/library/busybox:1", "refused", "blob sha256:ab: truncated")
    clock.now += 30
    reporter.advance(300 * MB)
    reporter.close()
    assert out.getvalue().splitlines() == [
        "import: 3 objects, 400.0 MB to move",
        "import: 100.0 MB of 400.0 MB (25%), 10.0 MB/s, 30 s left",
        "import: imported docker.io/library/alpine:3.20",
        "import: refused docker.io/library/busybox:1: blob sha256:ab: truncated",
        "import: 400.0 MB of 400.0 MB (100%), 10.0 MB/s",
        "import: done, 400.0 MB in 40.0 s (10.0 MB/s)",
    ]


def test_quiet_shows_problems_only() -> None:
    out = io.StringIO()
    reporter = make_reporter(quiet=True, stream=out)
    assert isinstance(reporter, QuietReporter)
    reporter.start("export", total_bytes=10, total_items=1)
    reporter.advance(10)
    reporter.item("a", "exported")
    reporter.item("b", "skipped", "manifest sha256:cd is not cached")
    reporter.close()
    assert out.getvalue() == "export: skipped b: manifest sha256:cd is not cached\n"


def test_a_terminal_gets_a_bar_with_bytes_rate_and_time_left() -> None:
    assert isinstance(make_reporter(stream=io.StringIO(), terminal=True), BarReporter)
    out, clock = io.StringIO(), Clock()
    reporter = BarReporter(out, clock=clock)
    reporter.start("export", total_bytes=200 * MB, total_items=2)
    for _ in range(4):
        clock.now += 1
        reporter.advance(30 * MB)
    reporter.item("docker.io/library/alpine:3.20", "exported")
    reporter.close()
    screen = out.getvalue()
    assert "export: exported docker.io/library/alpine:3.20" in screen
    assert "120.0/200.0 MB" in screen  # bytes done and total
    assert "30.0 MB/s" in screen  # the rate
    assert "0:00:03" in screen  # time left: 80 MB at 30 MB/s


def test_not_a_terminal_gets_lines() -> None:
    assert isinstance(make_reporter(stream=io.StringIO()), LineReporter)


def test_figures_and_json() -> None:
    assert human_bytes(999) == "999 bytes"
    assert human_bytes(1_500_000) == "1.5 MB"
    assert human_bytes(2 * 10**13) == "20.0 TB"
    assert progress_text(0, 0, 0) == "0 bytes of 0 bytes, - MB/s"
    out = io.StringIO()
    print_json({"ok": True, "images": []}, out)
    assert out.getvalue() == '{\n "images": [],\n "ok": true\n}\n'
