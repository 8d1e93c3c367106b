"""Air-gap throughput: ``export`` and ``import`` of the 200 MiB image against ``skopeo copy``.

``python -m bench.airgap [--reps N]`` prints one Markdown table: wall time,
MB/s over it (decimal, over the image's bytes) and peak RSS (GNU time's
``%M``: needs ``/usr/bin/time``), median of N rounds (a round runs every
transfer once, in turn), for

- export, cache -> layout: ``registry-mirror export`` from a disk cache
  holding the image (read through the storage protocol, every blob hashed)
  to a directory, a tar and a tar.zst, against ``skopeo copy dir:SRC
  oci:DST`` / ``oci-archive:DST`` from the same bytes as a ``dir:`` copy;
- import, layout -> cache: ``registry-mirror import`` (hash, write, fsync,
  commit into a fresh disk cache, index rebuilt, budget checked) from a
  directory and a tar.zst, against ``skopeo copy oci:SRC dir:DST``.

Both sides run as an operator runs them, as processes: our wall time
includes the Python interpreter's start (about 0.3 s), skopeo's (a Go
binary) a few milliseconds. Everything runs on one disk, with the files in
the page cache (each transfer is run once before it is measured).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.airgap_content import UPSTREAM
from tests.support.images import build_default_images
from tests.support.skopeo import POLICY

DRIVER = [sys.executable, "-m", "tests.support.airgap_process"]
MIRROR = [sys.executable, "-m", "mirror"]
LARGE = "library/large:latest"
SKOPEO = ["skopeo", "copy", "--policy", str(POLICY)]


def measure(command: list[str], work: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of ``command``.

    The peak is the command's own: GNU time forks it from a small process
    (a parent's ``wait4`` would count the memory the child had before
    ``exec``, the parent's).
    """
    rss = work / "rss"
    started = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss), *command],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # fmt: skip
    elapsed = time.perf_counter() - started
    return elapsed, int(rss.read_text().split()[-1]) / 1024


Build = Callable[[Path], list[str]]


def table(rows: list[tuple[str, Build]], work: Path, reps: int, size: int) -> list[str]:
    """Each row once to warm up, then ``reps`` rounds of every row in turn; rows of medians.

    Rounds interleave ours and skopeo's transfers, so a change of the machine's
    load during the run falls on both alike.
    """
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in rows}
    for n in range(reps + 1):
        for name, build in rows:
            dest = work / f"out-{n}"
            measured = measure(build(dest), work)
            if n:
                runs[name].append(measured)
            for leftover in work.glob(f"out-{n}*"):
                _remove(leftover)
    lines = []
    for name, found in runs.items():
        wall = statistics.median(r[0] for r in found)
        rss = max(r[1] for r in found)
        lines.append(f"| {name} | {wall:.2f} | {size / wall / 1e6:.0f} | {rss:.0f} |")
    return lines


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _site(work: Path) -> Path:
    """A configuration naming the test upstream (never contacted) and a disk cache."""
    config = work / "site.toml"
    upstream = f'[[upstreams]]\nname = "{UPSTREAM}"\nurl = "http://127.0.0.1:9"\n'
    config.write_text(f'[storage]\npath = "{work / "cache"}"\n{upstream}')
    return config


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
        site = ["--config", str(_site(work)), "--quiet"]
        subprocess.run([*MIRROR, "import", str(layout), *site], check=True)  # the cache to export
        export = [*MIRROR, "export", "--image", f"{UPSTREAM}/{LARGE}", *site]
        source_dir = work / "skopeo-dir"
        subprocess.run([*SKOPEO, "--preserve-digests", f"oci:{layout}", f"dir:{source_dir}"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        rows: list[tuple[str, Build]] = [
            ("export cache -> directory (ours)", lambda d: [*export, str(d)]),
            ("export cache -> tar (ours)", lambda d: [*export, f"{d}.tar"]),
            ("export cache -> tar.zst (ours)", lambda d: [*export, f"{d}.tar.zst"]),
            ("skopeo copy dir: -> oci:", lambda d: [*SKOPEO, f"dir:{source_dir}", f"oci:{d}:x"]),
            ("skopeo copy dir: -> oci-archive:",
             lambda d: [*SKOPEO, f"dir:{source_dir}", f"oci-archive:{d}.tar:x"]),
            ("import directory -> cache (ours)",
             lambda d: [*MIRROR, "import", str(layout), *site, "--cache-dir", str(d)]),
            ("import tar.zst -> cache (ours)",
             lambda d: [*MIRROR, "import", str(packed), *site, "--cache-dir", str(d)]),
            ("skopeo copy oci: -> dir:",
             lambda d: [*SKOPEO, "--preserve-digests", f"oci:{layout}", f"dir:{d}"]),
        ]  # fmt: skip
        lines = table(rows, work, args.reps, size)
    rounds = f"median of {args.reps} interleaved rounds"
    print(f"200 MiB image ({size} bytes), {rounds}, warm page cache\n")
    print("| transfer | wall s | MB/s | peak RSS MiB |\n|---|---|---|---|")
    print("\n".join(lines))
    print("\n" + json.dumps({"load_average": list(_load())}))
    return 0


def _load() -> tuple[float, float, float]:
    fields = Path("/proc/loadavg").read_text().split()
    return float(fields[0]), float(fields[1]), float(fields[2])


if __name__ == "__main__":
    sys.exit(main())
