"""Cold pulls (scenarios (b), (f), (c)) for several source trees in turns.

One upstream (distribution, no auth). Each round pushes a fresh random blob
and pulls it, cold, through a fresh mirror per source tree (disk cache, or
S3 on one moto server with ``--s3``), in an order that rotates from round to
round, after ``sync`` and a pause. For each pull: total and first byte (the
slowest client's with ``--clients``), the mirror's CPU seconds until the blob
is published, and its peak RSS (``VmHWM``, the process is fresh). A direct
pull from the upstream opens every round. Interleaving puts the load of a
shared machine on every tree alike; CPU is the figure it moves least.

    python bench/cold_ab.py --rounds 5 before=/tmp/before after=.
    python bench/cold_ab.py --rounds 3 --s3 --clients 50 before=/tmp/before after=.

With ``--probe``, a thread asks each mirror's ``/healthz`` every 10 ms during
the pull and reports the slowest answer: how long the event loop was held
(a herd must not keep it from a liveness probe).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import LoadError, fetch_concurrently, fetch_one, repeated
from bench.memory import settle
from bench.seed import push_blob

MIB = 1024 * 1024
Figures = dict[str, list[float]]


@contextlib.contextmanager
def moto_server(workdir: Path, enabled: bool) -> Iterator[object]:
    """A moto S3 server for the run, or None."""
    if not enabled:
        yield None
        return
    from tests.support.s3 import running_moto

    with running_moto(workdir) as s3:
        yield s3


@contextlib.contextmanager
def probed(url: str, enabled: bool) -> Iterator[list[float]]:
    """Seconds each ``/healthz`` took, asked every 10 ms while the block runs (if ``enabled``)."""
    answers: list[float] = []

    def probe() -> None:
        started = time.perf_counter()
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=30) as reply:
            reply.read()
        answers.append(time.perf_counter() - started)

    if not enabled:
        yield answers
        return
    with repeated(probe, 0.01, "healthz-probe"):
        yield answers


def pull(tree: Path, workdir: Path, upstream_url: str, blob_path: str, size: int,
         clients: int, s3: object, probe: bool = False) -> dict[str, float]:  # fmt: skip
    """One cold pull (or herd) through a fresh mirror run from ``tree``."""
    if s3 is None:
        mirror = servers.start_mirror(workdir, upstream_url, source=tree)
    else:
        mirror = servers.start_mirror_s3(workdir, upstream_url, s3, source=tree)  # type: ignore[arg-type]
    try:
        settle(1.0, size)
        cpu = mirror.cpu_seconds()
        with probed(mirror.url + "/healthz", probe) as answers:
            batch = fetch_concurrently(mirror.url + blob_path, clients, size)
        if batch.failures(size):
            raise LoadError(f"{batch.failures(size)} of {clients} clients failed")
        mirror.wait_cached([blob_path.rpartition(":")[2]], size)
        figures = {
            "total s": max(t.total for t in batch.transfers),
            "first byte ms": 1000 * max(t.first_byte for t in batch.transfers),
            "CPU s": mirror.cpu_seconds() - cpu,
            "peak RSS MiB": mirror.peak_rss_mib(),
        }
        if answers:
            figures["healthz max ms"] = 1000 * max(answers)
        return figures
    finally:
        mirror.stop()
        # Its cache goes at once: kept, every round would leave a blob's worth
        # more in the page cache, and later pulls would pay for reclaiming it.
        shutil.rmtree(workdir, ignore_errors=True)


def run(trees: dict[str, Path], rounds: int, size: int, clients: int, s3_on: bool,
        probe: bool = False) -> None:  # fmt: skip
    """Every round: a fresh blob, a direct pull, then each tree in a rotated order."""
    figures: dict[str, Figures] = defaultdict(lambda: defaultdict(list))
    names = list(trees)
    with tempfile.TemporaryDirectory(prefix="cold-ab-") as tmp:
        workdir = Path(tmp)
        upstream = servers.start_upstream(workdir)
        try:
            with moto_server(workdir, s3_on) as s3:
                for number in range(rounds):
                    blob = push_blob(upstream, workdir / "blobs", size, keep=False)
                    direct = fetch_one(upstream.url + blob.url_path(), size)
                    figures["direct"]["total s"].append(direct.total)
                    order = names[number % len(names) :] + names[: number % len(names)]
                    for name in order:
                        where = workdir / f"{name}-{number}"
                        got = pull(trees[name], where, upstream.url, blob.url_path(), size,
                                   clients, s3, probe)  # fmt: skip
                        for figure, value in got.items():
                            figures[name][figure].append(value)
                        print(
                            f"round {number + 1} {name:<10} "
                            + "  ".join(f"{k} {v:.3f}" for k, v in got.items()),
                            flush=True,
                        )
        finally:
            upstream.stop()
    report(figures, size, clients, rounds)


def report(figures: dict[str, Figures], size: int, clients: int, rounds: int) -> None:
    """Medians per tree, and the direct pull's."""
    print(f"\nmedian of {rounds} rounds, {size / MIB:g} MiB, {clients} client(s):")
    for name, values in figures.items():
        print(
            f"  {name:<10} "
            + "  ".join(f"{figure} {statistics.median(v):.3f}" for figure, v in values.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="NAME=PATH of a source tree")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blob-mib", type=float, default=200)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--s3", action="store_true", help="S3 storage on a moto server")
    parser.add_argument("--probe", action="store_true", help="time /healthz during each pull")
    args = parser.parse_args()
    trees = {}
    for spec in args.trees:
        name, _, path = spec.partition("=")
        trees[name] = Path(path).resolve()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    run(trees, args.rounds, int(args.blob_mib * MIB), args.clients, args.s3, args.probe)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
