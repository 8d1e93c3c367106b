"""Scenario (d), the cached manifest under wrk, for several source trees in turns.

One upstream (distribution, no auth) with the small image; one mirror per
source tree, each over its own disk cache; then, round after round, wrk on
the manifest by digest and by tag against each mirror in turn (the order
rotates), with the mirror's CPU time (utime + stime from ``/proc/PID/stat``)
read around each run. Interleaving puts the load of a shared machine on
every tree alike, and CPU per request is the figure least moved by it.

    python bench/manifest_ab.py --rounds 10 --seconds 5 main=/work/main mine=.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import ACCEPT_MANIFEST, LoadError, fetch_concurrently, run_wrk
from bench.peers import cpu_times
from bench.seed import SmallImage, push_small_image

Figures = dict[str, list[float]]


def measure(peer: servers.Peer, url: str, seconds: float) -> tuple[float, float, float]:
    """Requests per second, p99 in ms and the mirror's CPU µs per request of one wrk run."""
    user, system, _ = cpu_times(peer.process.pid)
    result = run_wrk(url, seconds)
    user_after, system_after, _ = cpu_times(peer.process.pid)
    if result.errors:
        raise LoadError(f"{result.errors} failed requests on {url}")
    requests = result.rps * max(1, round(seconds))
    cpu = user_after + system_after - user - system
    return result.rps, result.p99_ms, cpu / requests * 1e6


def warm(peer: servers.Peer, path: str) -> None:
    """Pull a manifest once, so that every measured request is a hit."""
    batch = fetch_concurrently(peer.url + path, 1, headers=(f"Accept: {ACCEPT_MANIFEST}",))
    if batch.transfers[0].status != 200:
        raise LoadError(f"{peer.name} cannot serve {path}: {batch.transfers[0]}")


def run_rounds(
    mirrors: list[servers.Peer], image: SmallImage, rounds: int, seconds: float
) -> dict[str, Figures]:
    """Every mirror's figures per round, by ``digest_rps``, ``tag_p99``, ``tag_cpu_us``, ..."""
    figures: dict[str, Figures] = {peer.name: defaultdict(list) for peer in mirrors}
    for number in range(rounds):
        shift = number % len(mirrors)
        for peer in mirrors[shift:] + mirrors[:shift]:
            for kind, reference in (("digest", image.manifest.digest), ("tag", image.tag)):
                rps, p99, cpu = measure(peer, peer.url + image.url_path(reference), seconds)
                found = figures[peer.name]
                found[f"{kind}_rps"].append(rps)
                found[f"{kind}_p99"].append(p99)
                found[f"{kind}_cpu_us"].append(cpu)
        print(f"round {number + 1}: " + "  ".join(
            f"{name} {found['digest_rps'][-1]:.0f}/{found['tag_rps'][-1]:.0f} req/s"
            for name, found in figures.items()
        ), flush=True)  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", metavar="NAME=TREE", help="a source tree to run")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    args = parser.parse_args()
    trees = [tree.partition("=") for tree in args.trees]
    with tempfile.TemporaryDirectory(prefix="manifest-ab-") as tmp:
        workdir = Path(tmp)
        upstream = servers.start_upstream(workdir)
        mirrors: list[servers.Peer] = []
        try:
            image = push_small_image(upstream, workdir / "blobs")
            for name, _, source in trees:
                peer = servers.start_mirror(
                    workdir, upstream.url, name=name, source=Path(source).resolve()
                )
                mirrors.append(peer)
                for reference in (image.tag, image.manifest.digest):  # cache both
                    warm(peer, image.url_path(reference))
            figures = run_rounds(mirrors, image, args.rounds, args.seconds)
        finally:
            for peer in mirrors:
                peer.stop()
            upstream.stop()
    print(f"medians of {args.rounds} rounds of {args.seconds:g} s:")
    for name, found in figures.items():
        median = {key: statistics.median(values) for key, values in found.items()}
        print(f"  {name}: by digest {median['digest_rps']:.0f} req/s, p99 "
              f"{median['digest_p99']:.1f} ms, {median['digest_cpu_us']:.0f} us CPU/request; "
              f"by tag {median['tag_rps']:.0f} req/s, p99 {median['tag_p99']:.1f} ms, "
              f"{median['tag_cpu_us']:.0f} us CPU/request")  # fmt: skip


if __name__ == "__main__":
    main()
