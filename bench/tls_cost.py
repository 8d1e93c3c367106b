"""What TLS costs: a cached blob and a cached manifest, plain HTTP against ``[tls]``, in turns.

One upstream (distribution, no auth) with a blob (200 MiB by default) and the
small image; two mirrors from this tree over their own disk caches, one plain,
one serving https with a certificate from a private CA made here (EC P-256,
TLS 1.3 as curl and wrk negotiate it). Round after round, alternating which
goes first: the cached blob to 1 curl client and to ``--clients`` at once
(MiB/s, and the mirror's CPU seconds per GiB sent), then wrk on the manifest
by digest (requests/s over kept-alive connections, p99, CPU µs per request).
Interleaving puts the load of a shared machine on both alike; CPU per unit
of work is the figure least moved by it.

    python bench/tls_cost.py --rounds 5 --blob-mib 200 --clients 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import LoadError, fetch_concurrently
from bench.manifest_ab import measure, warm
from bench.peers import cpu_times
from bench.seed import BlobFile, push_blob, push_small_image
from tests.support.pki import PrivateCA

Figures = dict[str, list[float]]
MIB = 1024 * 1024


def blob_round(peer: servers.Peer, blob: BlobFile, clients: int) -> tuple[float, float]:
    """Aggregate MiB/s of ``clients`` curl processes, and the mirror's CPU s per GiB sent."""
    user, system, _ = cpu_times(peer.process.pid)
    batch = fetch_concurrently(peer.url + blob.url_path(), clients, blob.size)
    user_after, system_after, _ = cpu_times(peer.process.pid)
    if batch.failures(blob.size):
        raise LoadError(f"{batch.failures(blob.size)} failed pulls from {peer.name}")
    cpu = user_after + system_after - user - system
    return batch.mib_per_s, cpu / (batch.bytes / (1024 * MIB))


def run_rounds(
    mirrors: list[servers.Peer], blob: BlobFile, manifest: str, args: argparse.Namespace
) -> dict[str, Figures]:
    """Every mirror's figures per round."""
    figures: dict[str, Figures] = {peer.name: defaultdict(list) for peer in mirrors}
    for number in range(args.rounds):
        order = mirrors if number % 2 == 0 else mirrors[::-1]
        for peer in order:
            found = figures[peer.name]
            for clients in (1, args.clients):
                mib_s, cpu = blob_round(peer, blob, clients)
                found[f"blob{clients}_mib_s"].append(mib_s)
                found[f"blob{clients}_cpu_s_per_gib"].append(cpu)
            rps, p99, cpu_us = measure(peer, peer.url + manifest, args.seconds)
            found["manifest_rps"].append(rps)
            found["manifest_p99"].append(p99)
            found["manifest_cpu_us"].append(cpu_us)
        print(f"round {number + 1}: " + "  ".join(
            f"{name} {found['blob1_mib_s'][-1]:.0f} MiB/s, {found['manifest_rps'][-1]:.0f} req/s"
            for name, found in figures.items()
        ), flush=True)  # fmt: skip
    return figures


def report(figures: dict[str, Figures], args: argparse.Namespace) -> None:
    """Medians per mirror, and TLS against plain."""
    medians = {
        name: {key: statistics.median(values) for key, values in found.items()}
        for name, found in figures.items()
    }
    load = os.getloadavg()[0]
    print(f"medians of {args.rounds} rounds ({args.blob_mib} MiB blob, manifest wrk "
          f"{args.seconds:g} s at 64 connections); load average {load:.1f}:")  # fmt: skip
    for name, median in medians.items():
        print(
            f"  {name}: blob 1 client {median['blob1_mib_s']:.0f} MiB/s "
            f"({median['blob1_cpu_s_per_gib']:.2f} CPU s/GiB); {args.clients} clients "
            f"{median[f'blob{args.clients}_mib_s']:.0f} MiB/s "
            f"({median[f'blob{args.clients}_cpu_s_per_gib']:.2f} CPU s/GiB); manifest "
            f"{median['manifest_rps']:.0f} req/s, p99 {median['manifest_p99']:.1f} ms, "
            f"{median['manifest_cpu_us']:.0f} us CPU/request"
        )
    plain, tls = medians["plain"], medians["tls"]
    print("  tls/plain: " + ", ".join(
        f"{key} {tls[key] / plain[key]:.2f}x" for key in sorted(plain) if plain[key]
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--blob-mib", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8, help="concurrent blob clients")
    parser.add_argument("--seconds", type=float, default=5, help="duration of each wrk run")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="tls-cost-") as tmp:
        workdir = Path(tmp)
        ca = PrivateCA.create(workdir / "pki")
        ca.issue_server("127.0.0.1").write(workdir / "pki" / "tls.crt", workdir / "pki" / "tls.key")
        os.environ["CURL_CA_BUNDLE"] = str(ca.root_path)  # the curl clients trust the CA
        upstream = servers.start_upstream(workdir)
        mirrors: list[servers.Peer] = []
        try:
            blob = push_blob(upstream, workdir / "blobs", args.blob_mib * MIB)
            image = push_small_image(upstream, workdir / "blobs")
            tls = (workdir / "pki" / "tls.crt", workdir / "pki" / "tls.key", ca.root_path)
            mirrors.append(servers.start_mirror(workdir, upstream.url, name="plain"))
            mirrors.append(servers.start_mirror(workdir, upstream.url, name="tls", tls=tls))
            manifest = image.url_path(image.manifest.digest)
            for peer in mirrors:  # cache everything: every measured request is a hit
                blob_round(peer, blob, 1)
                peer.wait_cached([blob.digest.removeprefix("sha256:")], blob.size)
                warm(peer, manifest)
            figures = run_rounds(mirrors, blob, manifest, args)
        finally:
            for peer in mirrors:
                peer.stop()
            upstream.stop()
    report(figures, args)


if __name__ == "__main__":
    main()
