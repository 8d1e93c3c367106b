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

# metric -> (label, unit), in the order of the tables
METRICS: dict[str, tuple[str, str]] = {
    "a1_mibs": ("(a) cached blob, 1 client", "MiB/s"),
    "a16_mibs": ("(a) cached blob, 16 clients", "MiB/s"),
    "b_ttfb_ms": ("(b) cold blob, first byte", "ms"),
    "b_total_s": ("(b) cold blob, total", "s"),
    "b_cpu_s_per_gib": ("(b) cold blob, server CPU per GiB", "s"),
    "b_rss_mib": ("(b) cold blob, peak RSS", "MiB"),
    "f_ttfb_ms": ("(f) cold big blob, first byte", "ms"),
    "f_total_s": ("(f) cold big blob, total", "s"),
    "f_cpu_s_per_gib": ("(f) cold big blob, server CPU per GiB", "s"),
    "f_rss_mib": ("(f) cold big blob, peak RSS", "MiB"),
    "c_wall_s": ("(c) 50 cold pulls, wall time", "s"),
    "c_upstream_gets": ("(c) 50 cold pulls, upstream GETs", "GETs"),
    "c_upstream_mib": ("(c) 50 cold pulls, upstream bytes", "MiB"),
    "c_failures": ("(c) 50 cold pulls, failed clients", "clients"),
    "c_rss_mib": ("(c) 50 cold pulls, peak RSS", "MiB"),
    "g_blobs_per_s": ("(g) cold 4 KiB blobs, 8 clients", "blobs/s"),
    "g_cpu_ms_per_blob": ("(g) cold 4 KiB blobs, server CPU per blob", "ms"),
    "g_failures": ("(g) cold 4 KiB blobs, failed", "blobs"),
    "d_digest_rps": ("(d) manifest by digest", "req/s"),
    "d_digest_p99_ms": ("(d) manifest by digest, p99", "ms"),
    "d_tag_rps": ("(d) manifest by tag", "req/s"),
    "d_tag_p99_ms": ("(d) manifest by tag, p99", "ms"),
    "h_tags_per_s": ("(h) cold manifests by fresh tag, 8 clients", "req/s"),
    "h_failures": ("(h) cold manifests by fresh tag, failed", "requests"),
    "e_rss_mib": ("(e) peak RSS over the blob scenarios", "MiB"),
}
# Compared with distribution and the direct upstream in the ratio table (counts are not).
RATIO_METRICS = [
    metric for metric, (_, unit) in METRICS.items() if unit not in ("GETs", "clients", "blobs",
                                                                    "requests")
]  # fmt: skip
HIGHER_IS_BETTER = {"MiB/s", "req/s", "blobs/s"}
RATIO_BASES = ["distribution", "upstream"]
RSS_LIMIT_MIB = 150


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
    """The issues' targets for ``peer``, computed from medians of this run."""
    r: Callable[..., Target] = _ratio_target
    found = [
        r(results, "(a) 1 client >= 0.9x nginx", "a1_mibs", peer, "nginx", 0.9, True),
        r(results, "(a) 16 clients >= 0.9x nginx", "a16_mibs", peer, "nginx", 0.9, True),
        r(results, "(a) 1 client >= 1.0x distribution", "a1_mibs", peer, "distribution", 1.0,
          True),
        r(results, "(a) 16 clients >= 1.0x distribution", "a16_mibs", peer, "distribution", 1.0,
          True),
    ]  # fmt: skip
    for scenario, what in (("b", "blob"), ("f", "big blob")):
        found += [
            r(results, f"({scenario}) cold {what}: total <= 1.0x distribution",
              f"{scenario}_total_s", peer, "distribution", 1.0, False),
            r(results, f"({scenario}) cold {what}: total <= 2x direct",
              f"{scenario}_total_s", peer, "upstream", 2.0, False),
            r(results, f"({scenario}) cold {what}: first byte <= distribution",
              f"{scenario}_ttfb_ms", peer, "distribution", 1.0, False),
        ]  # fmt: skip
    found += [
        _one_get_target(results, peer),
        _herd_time_target(results, peer),
        r(results, "(g) cold small blobs/s >= 1.0x distribution", "g_blobs_per_s", peer,
          "distribution", 1.0, True),
        r(results, "(d) by digest >= 1.0x distribution", "d_digest_rps", peer, "distribution",
          1.0, True),
        r(results, "(d) by tag >= 1.0x distribution", "d_tag_rps", peer, "distribution", 1.0,
          True),
    ]  # fmt: skip
    for metric, label in (("c_rss_mib", "(c) peak RSS during the herd"),
                          ("f_rss_mib", "(f) peak RSS filling the big blob"),
                          ("e_rss_mib", "(e) peak RSS over the blob scenarios")):  # fmt: skip
        found.append(_rss_target(results, peer, metric, f"{label} <= {RSS_LIMIT_MIB} MiB"))
    return found


def _rss_target(results: Results, peer: str, metric: str, label: str) -> Target:
    """The highest of the repetitions, not the median: a limit must hold every time."""
    values = results.get(metric, {}).get(peer)
    if not values:
        return Target(label, "not measured", None)
    return Target(label, f"{max(values):.0f} MiB", max(values) <= RSS_LIMIT_MIB)


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


def ratio_rows(results: Results) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each of our figures divided by distribution's and the upstream's."""
    ours = ours_in(results)
    header = ["scenario", "better", *(f"{p} / {b}" for p in ours for b in RATIO_BASES)]
    rows = []
    for metric in RATIO_METRICS:
        if metric not in results:
            continue
        label, unit = METRICS[metric]
        cells = [_ratio_cell(results, metric, peer, base) for peer in ours for base in RATIO_BASES]
        if any(cell != "-" for cell in cells):
            rows.append([label, "higher" if unit in HIGHER_IS_BETTER else "lower", *cells])
    return header, rows


def _ratio_cell(results: Results, metric: str, peer: str, base: str) -> str:
    ours, theirs = median(results, metric, peer), median(results, metric, base)
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
            for row in [header, *rows]]  # fmt: skip


def text_report(results: Results, reps: int) -> str:
    """The tables and the target lines, for the terminal."""
    lines = [f"medians of {reps} repetition(s)", "", *_aligned(*table_rows(results))]
    header, rows = ratio_rows(results)
    if rows:
        lines += ["", "ratios of medians (ours / theirs):", *_aligned(header, rows)]
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
    return _markdown(*table_rows(results))


def markdown_ratios(results: Results) -> str:
    """Our medians over distribution's and the upstream's, as a Markdown table."""
    return _markdown(*ratio_rows(results))


def _markdown(header: list[str], rows: list[list[str]]) -> str:
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
