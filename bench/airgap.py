"""Air-gap throughput: export and import of the 200 MiB test image against ``skopeo copy``.

``python -m bench.airgap [--reps N]`` prints one Markdown table: wall time,
the transfer's own time (ours without the Python interpreter's start), MB/s
over that time (decimal, over the image's bytes) and peak RSS (GNU time's
``%M``: needs ``/usr/bin/time``), median of N runs, for

- export, cache -> layout: our export (phase 1: from the test image set's
  files, as the disk cache would read them) to a directory, a tar and a
  tar.zst, against ``skopeo copy dir:SRC oci:DST`` / ``oci-archive:DST``;
- import, layout -> cache: our import (hash, write, fsync, commit into the
  mirror's disk storage) from a directory and a tar.zst, against
  ``skopeo copy oci:SRC dir:DST`` (which also checks digests).

Everything runs on one disk, with the files in the page cache (each
transfer is run once before it is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.airgap_process import STATS_ENV
from tests.support.images import build_default_images
from tests.support.skopeo import POLICY

DRIVER = [sys.executable, "-m", "tests.support.airgap_process"]
LARGE = "library/large:latest"
SKOPEO = ["skopeo", "copy", "--policy", str(POLICY)]


def measure(command: list[str], work: Path) -> tuple[float, float, float]:
    """Wall seconds, seconds of the transfer itself, peak RSS (MiB) of one run of ``command``.

    The peak is the command's own: GNU time forks it from a small process
    (a parent's ``wait4`` would count the memory the child had before
    ``exec``, the parent's). Our driver also reports its transfer time
    without the interpreter's start; skopeo (a Go binary) starts in a few
    milliseconds, so its wall time stands for both.
    """
    stats, rss = work / "stats.json", work / "rss"
    stats.unlink(missing_ok=True)
    env = {**os.environ, STATS_ENV: str(stats)}
    started = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *command], env=env,
                   stdout=subprocess.DEVNULL, check=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    transfer = json.loads(stats.read_text())["seconds"] if stats.exists() else elapsed
    return elapsed, transfer, int(rss.read_text().split()[-1]) / 1024


def row(name: str, build: Callable[[Path], list[str]], work: Path, reps: int, size: int) -> str:
    """Run ``build(dest)`` once to warm up, then ``reps`` times; one table row of medians."""
    runs = []
    for n in range(reps + 1):
        dest = work / f"out-{n}"
        runs.append(measure(build(dest), work))
        _remove(dest)
        for sidecar in work.glob(f"out-{n}.*"):
            _remove(sidecar)
    wall = statistics.median(r[0] for r in runs[1:])
    transfer = statistics.median(r[1] for r in runs[1:])
    rss = max(r[2] for r in runs[1:])
    return (f"| {name} | {wall:.2f} | {transfer:.2f} | {size / transfer / 1e6:.0f} | "
            f"{rss:.0f} |")  # fmt: skip


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.airgap")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    images = build_default_images()
    image = images.image(LARGE)
    size = image.manifest.size + sum(b.size for b in images.blobs_of(image.manifest))
    with tempfile.TemporaryDirectory(prefix="bench-airgap-") as tmp:
        work = Path(tmp)
        layout, packed = work / "layout", work / "layout.tar.zst"
        subprocess.run([*DRIVER, "export", str(layout), LARGE], check=True)
        subprocess.run([*DRIVER, "export", str(packed), LARGE], check=True)
        source_dir = work / "skopeo-dir"
        subprocess.run([*SKOPEO, "--preserve-digests", f"oci:{layout}", f"dir:{source_dir}"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        rows = [
            row("export -> directory (ours)", lambda d: [*DRIVER, "export", str(d), LARGE],
                work, args.reps, size),
            row("export -> tar (ours)", lambda d: [*DRIVER, "export", f"{d}.tar", LARGE],
                work, args.reps, size),
            row("export -> tar.zst (ours)", lambda d: [*DRIVER, "export", f"{d}.tar.zst", LARGE],
                work, args.reps, size),
            row("skopeo copy dir: -> oci:", lambda d: [*SKOPEO, f"dir:{source_dir}", f"oci:{d}:x"],
                work, args.reps, size),
            row("skopeo copy dir: -> oci-archive:",
                lambda d: [*SKOPEO, f"dir:{source_dir}", f"oci-archive:{d}.tar:x"],
                work, args.reps, size),
            row("import <- directory (ours)",
                lambda d: [*DRIVER, "import", str(layout), str(d)], work, args.reps, size),
            row("import <- tar.zst (ours)",
                lambda d: [*DRIVER, "import", str(packed), str(d)], work, args.reps, size),
            row("skopeo copy oci: -> dir:",
                lambda d: [*SKOPEO, "--preserve-digests", f"oci:{layout}", f"dir:{d}"],
                work, args.reps, size),
        ]  # fmt: skip
    print(f"200 MiB image ({size} bytes), median of {args.reps} runs, warm page cache\n")
    print("| transfer | wall s | transfer s | MB/s | peak RSS MiB |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
