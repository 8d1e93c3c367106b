"""Medians, ratios and targets; the text table, docs/benchmarks.md and its chart.

Every figure is the median over the repetitions of one run, and every ratio
compares medians from the same run (the machine is shared: absolute numbers
move, ratios much less).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.scenarios import Results

PEER_ORDER = ["mirror", "mirror-s3", "distribution", "nginx", "upstream"]
OURS = ["mirror", "mirror-s3"]  # our mirror on disk and on S3: the peers with targets

# metric -> (label, unit)
METRICS: dict[str, tuple[str, str]] = {
    "a1_mibs": ("(a) cached blob, 1 client", "MiB/s"),
    "a16_mibs": ("(a) cached blob, 16 clients", "MiB/s"),
    "b_ttfb_ms": ("(b) cold pull, first byte", "ms"),
    "b_total_s": ("(b) cold pull, total", "s"),
    "c_wall_s": ("(c) 50 cold pulls, wall time", "s"),
    "c_upstream_gets": ("(c) 50 cold pulls, upstream GETs", "GETs"),
    "c_upstream_mib": ("(c) 50 cold pulls, upstream bytes", "MiB"),
    "c_failures": ("(c) 50 cold pulls, failed clients", "clients"),
    "d_digest_rps": ("(d) manifest by digest", "req/s"),
    "d_digest_p99_ms": ("(d) manifest by digest, p99", "ms"),
    "d_tag_rps": ("(d) manifest by tag", "req/s"),
    "d_tag_p99_ms": ("(d) manifest by tag, p99", "ms"),
    "e_rss_mib": ("(e) peak RSS during (a)-(c)", "MiB"),
}


def median(results: Results, metric: str, peer: str) -> float | None:
    """The median of a metric for a peer, or None if it was not measured."""
    values = results.get(metric, {}).get(peer)
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Target:
    """One pass/fail line: what was compared, the figure, and whether it is met."""

    label: str
    figure: str
    met: bool | None  # None: could not be measured


def _ratio_target(
    results: Results, label: str, metric: str, peer: str, other: str, bound: float, higher: bool
) -> Target:
    ours, theirs = median(results, metric, peer), median(results, metric, other)
    if ours is None or theirs is None or theirs == 0:
        return Target(label, "not measured", None)
    ratio = ours / theirs
    met = ratio >= bound if higher else ratio <= bound
    return Target(label, f"{ratio:.2f}x ({ours:.4g} vs {theirs:.4g})", met)


def targets(results: Results, peer: str = "mirror") -> list[Target]:
    """The issue's targets for ``peer``, computed from medians of this run."""
    r: Callable[..., Target] = _ratio_target
    found = [
        r(results, "(a) 1 client >= 0.9x nginx", "a1_mibs", peer, "nginx", 0.9, True),
        r(results, "(a) 16 clients >= 0.9x nginx", "a16_mibs", peer, "nginx", 0.9, True),
        r(results, "(a) 1 client >= 1.0x distribution", "a1_mibs", peer, "distribution", 1.0,
          True),
        r(results, "(a) 16 clients >= 1.0x distribution", "a16_mibs", peer, "distribution", 1.0,
          True),
        r(results, "(b) total <= 1.1x direct", "b_total_s", peer, "upstream", 1.1, False),
        _first_byte_target(results, peer),
        _one_get_target(results, peer),
        _herd_time_target(results, peer),
        r(results, "(d) by digest >= 1.0x distribution", "d_digest_rps", peer, "distribution",
          1.0, True),
        r(results, "(d) by tag >= 1.0x distribution", "d_tag_rps", peer, "distribution", 1.0,
          True),
    ]  # fmt: skip
    rss = results.get("e_rss_mib", {}).get(peer)
    if rss:
        found.append(Target("(e) peak RSS <= 150 MiB", f"{max(rss):.0f} MiB", max(rss) <= 150))
    return found


def _first_byte_target(results: Results, peer: str) -> Target:
    ours, direct = median(results, "b_ttfb_ms", peer), median(results, "b_ttfb_ms", "upstream")
    if ours is None or direct is None:
        return Target("(b) first byte <= direct + 20 ms", "not measured", None)
    return Target(
        "(b) first byte <= direct + 20 ms",
        f"+{ours - direct:.1f} ms ({ours:.1f} vs {direct:.1f} ms)",
        ours <= direct + 20,
    )


def _one_get_target(results: Results, peer: str) -> Target:
    gets = results.get("c_upstream_gets", {}).get(peer)
    if not gets:
        return Target("(c) exactly 1 upstream GET", "not measured", None)
    shown = ", ".join(f"{g:.0f}" for g in gets)
    return Target("(c) exactly 1 upstream GET", f"{shown} (per repetition)", set(gets) == {1})


def _herd_time_target(results: Results, peer: str) -> Target:
    herd, one = median(results, "c_wall_s", peer), median(results, "b_total_s", peer)
    if herd is None or one is None:
        return Target("(c) wall <= 1.3x one cold pull", "not measured", None)
    ratio = herd / one
    return Target(
        "(c) wall <= 1.3x one cold pull", f"{ratio:.2f}x ({herd:.2f} vs {one:.2f} s)", ratio <= 1.3
    )


def peers_in(results: Results) -> list[str]:
    """Peers that have any figure, in display order."""
    seen = {peer for per_peer in results.values() for peer in per_peer}
    return [p for p in PEER_ORDER if p in seen] + sorted(seen - set(PEER_ORDER))


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per metric, one column per peer (medians)."""
    peers = peers_in(results)
    header = ["scenario", "unit", *peers]
    rows = [
        [label, unit, *(_cell(median(results, metric, p)) for p in peers)]
        for metric, (label, unit) in METRICS.items()
        if metric in results
    ]
    return header, rows


def text_report(results: Results, reps: int) -> str:
    """The table and the target lines, for the terminal."""
    header, rows = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [f"medians of {reps} repetition(s)", ""]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    for peer in ours_in(results):
        lines += ["", f"targets ({peer}):"]
        for target in targets(results, peer):
            verdict = {True: "met", False: "MISSED", None: "n/a"}[target.met]
            lines.append(f"  [{verdict:>6}] {target.label}: {target.figure}")
    return "\n".join(lines)


def ours_in(results: Results) -> list[str]:
    """Our mirror's peers (disk, S3) that were measured in this run."""
    return [p for p in OURS if p in peers_in(results)]


def markdown_table(results: Results) -> str:
    """The medians as a Markdown table."""
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_targets(results: Results) -> str:
    """The targets as a Markdown table: a figure and a verdict per peer of ours."""
    ours = ours_in(results) or ["mirror"]
    header = ["target"] + [f"{peer}: {what}" for peer in ours for what in ("figure", "result")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    per_peer = [targets(results, peer) for peer in ours]
    for row in zip(*per_peer, strict=True):
        cells = [row[0].label]
        for target in row:
            verdict = {True: "met", False: "**missed**", None: "n/a"}[target.met]
            cells += [target.figure, verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
