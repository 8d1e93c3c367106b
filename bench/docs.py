"""Writes the Markdown report and its PNG chart (matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from bench.report import (
    METRICS,
    markdown_ratios,
    markdown_table,
    markdown_targets,
    median,
    peers_in,
)
from bench.scenarios import Knobs, Results

CHART_METRICS = [
    "a1_mibs", "a16_mibs", "b_total_s", "b_ttfb_ms",
    "f_total_s", "f_cpu_s_per_gib", "c_wall_s", "c_upstream_gets",
    "g_blobs_per_s", "h_tags_per_s", "d_digest_rps", "d_tag_rps",
    "c_rss_mib", "f_rss_mib", "e_rss_mib",
]  # fmt: skip
MIB = 1024 * 1024
COLORS = {
    "mirror": "#1f77b4", "mirror-s3": "#17becf", "distribution": "#ff7f0e",
    "nginx": "#2ca02c", "upstream": "#7f7f7f",
}  # fmt: skip


def write_chart(results: Results, path: Path) -> None:
    """One small bar chart per metric, a bar per peer (medians)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [m for m in CHART_METRICS if m in results]
    peers = peers_in(results)
    cols = 4
    rows = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.flat, shown, strict=False):
        label, unit = METRICS[metric]
        names = [p for p in peers if median(results, metric, p) is not None]
        values = [median(results, metric, p) or 0.0 for p in names]
        ax.bar(names, values, color=[COLORS.get(p, "#9467bd") for p in names])
        ax.set_title(label, fontsize=9)
        ax.set_ylabel(unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def machine() -> str:
    """CPU model, core count, memory and kernel, in one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = 0
    return (
        f"{model}, {os.cpu_count()} cores, {mem_kib / 1024**2:.0f} GiB RAM, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0] if done.stdout + done.stderr else ""


def write_markdown(
    results: Results,
    path: Path,
    *,
    command: str,
    reps: int,
    knobs: Knobs,
    notes: list[str],
    taken: datetime | None = None,
) -> None:
    """docs/benchmarks.md: when, where, how, the tables, the chart and notes.

    ``taken``: when the figures were measured (default: now).
    """
    chart = path.with_suffix(".png")
    write_chart(results, chart)
    when = (taken or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"- Date: {when}",
        f"- Machine: {machine()}",
        "- Peers: our mirror with a disk cache (`mirror`) and with S3 storage on a moto "
        "server (`mirror-s3`, when moto is installed; moto runs on the same two cores), "
        "distribution "
        f"({_version(['docker-registry', '--version'])}) in proxy mode, "
        f"nginx ({_version(['nginx', '-v'])}, sendfile) serving the cached blob "
        "file, and the upstream registry (distribution, no auth) directly.",
        f"- Command: `{command}`",
        f"- Blob {knobs.size / MIB:g} MiB for (a)-(c), big blob {knobs.big_size / MIB:g} MiB "
        f"for (f), {knobs.small_count} blobs of 4 KiB for (g), {knobs.tag_count} fresh tags "
        f"for (h); every figure is the median of {reps} repetition(s); "
        "ratios compare medians of this one run.",
        "- Blob clients: separate `curl` processes writing to `/dev/null`; in (g) and (h) "
        f"{knobs.small_clients} of them, each fetching its share on one connection. "
        "Manifest load (d): plain `wrk -t2 -c64 --latency` with an `Accept` header, no Lua "
        "script.",
        f"- Before each cold measurement: `sync`, then a pause of {knobs.settle_seconds:g} s, "
        "so the writeback of the previous download does not run into it, then as much free "
        "memory as the pull will store (and a quarter more) is touched and freed: on this VM, "
        "writing into memory not used for a while cost ten times the CPU, 2.5 s per GiB "
        "(`bench/memory.py`). After it, in (b), (c) and (f), the server's stored copy of the "
        "blob is deleted, and after all servers the upstream's, so the repetitions do not "
        "fill the memory.",
        "- Peak RSS is `VmHWM` from `/proc/PID/status`, summed over a server's processes "
        "(reset through `/proc/PID/clear_refs` before (c) and (f)); server CPU is "
        "utime + stime from `/proc/PID/stat`, from the request until the blob is published.",
        "",
        "## Targets (our mirror, disk and S3)",
        "",
        markdown_targets(results),
        "",
        "## Medians",
        "",
        markdown_table(results),
        "",
        "## Ratios (ours / theirs, medians)",
        "",
        markdown_ratios(results),
        "",
        f"![benchmark chart]({chart.name})",
        "",
    ]
    if notes:
        parts += ["## Notes", "", *notes, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
