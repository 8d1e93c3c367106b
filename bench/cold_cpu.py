"""CPU and wall time of the mirror per cold blob pull (scenario (b), isolated).

Starts the upstream (distribution, no auth), pushes one random blob, then for
each pull starts a fresh mirror over an empty cache, pulls the blob once with
curl, waits until the fill has been published, and reads the mirror's CPU
time (utime + stime from ``/proc/PID/stat``) before and after. CPU seconds are
the robust figure on a shared machine; wall times are printed next to a
direct pull from the upstream made just before each mirror pull.

    python bench/cold_cpu.py --pulls 5 --blob-mib 200
    python bench/cold_cpu.py --pulls 3 --clients 50    # scenario (c): one herd per pull
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import LoadError, fetch_concurrently, fetch_one
from bench.peers import cpu_times
from bench.seed import push_blob


def wait_published(cache: Path, hex_digest: str, timeout: float = 60.0) -> None:
    """Until the blob file exists in the cache (the fill committed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(cache.rglob(hex_digest)):
            return
        time.sleep(0.05)
    raise RuntimeError("the fill was never published")


def one_pull(
    workdir: Path, upstream_url: str, url_path: str, size: int, hex_digest: str, clients: int = 1
) -> tuple[float, float, float]:
    """User CPU, system CPU and wall seconds of one cold pull through a fresh mirror."""
    mirror = servers.start_mirror(workdir, upstream_url)
    try:
        user, system, faults = cpu_times(mirror.process.pid)
        batch = fetch_concurrently(mirror.url + url_path, clients, size)
        if batch.failures(size):
            raise LoadError(f"{batch.failures(size)} of {clients} clients failed")
        wait_published(mirror.workdir / "cache", hex_digest)
        user_after, system_after, faults_after = cpu_times(mirror.process.pid)
        print(f"  minor page faults {faults_after - faults}", flush=True)
        return user_after - user, system_after - system, batch.wall
    finally:
        mirror.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=5)
    parser.add_argument("--blob-mib", type=float, default=200)
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients per pull")
    args = parser.parse_args()
    size = int(args.blob_mib * 1024 * 1024)
    with tempfile.TemporaryDirectory(prefix="cold-cpu-") as tmp:
        workdir = Path(tmp)
        upstream = servers.start_upstream(workdir)
        try:
            blob = push_blob(upstream, workdir / "blobs", size)
            cpus, users, walls, directs = [], [], [], []
            for number in range(args.pulls):
                directs.append(fetch_one(upstream.url + blob.url_path(), size).total)
                user, system, wall = one_pull(
                    workdir / f"pull-{number}", upstream.url, blob.url_path(), size,
                    blob.digest[7:], args.clients,
                )  # fmt: skip
                cpu = user + system
                cpus.append(cpu)
                users.append(user)
                walls.append(wall)
                print(f"pull {number + 1}: mirror CPU {cpu:.2f} s (user {user:.2f} s), "
                      f"wall {wall:.2f} s (direct {directs[-1]:.2f} s)", flush=True)  # fmt: skip
        finally:
            upstream.stop()
    print(f"median over {args.pulls} cold {args.blob_mib:g} MiB pulls by {args.clients} "
          "client(s): "
          f"mirror CPU {statistics.median(cpus):.2f} s (user {statistics.median(users):.2f} s), "
          f"wall {statistics.median(walls):.2f} s, "
          f"direct {statistics.median(directs):.2f} s, "
          f"ratio {statistics.median(walls) / statistics.median(directs):.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
