"""Where the time of a cold pull goes in the mirror: per thread, and per stage of the data path.

Starts the upstream (distribution, no auth), pushes fresh blobs, and for
each pull starts a fresh mirror (disk cache, or S3 on a moto server with
``--s3``), pulls one blob with curl and waits until it is published. For
every thread of the mirror it reads, around the pull, the CPU time and the
time spent runnable but waiting for a core (``/proc/PID/task/TID/schedstat``).
With py-spy installed (the ``bench`` extra) it also samples the mirror
during the pull and files every sample under a stage of the data path, by
the source line the thread was executing (a C call such as
``hasher.update(chunk)`` shows as the Python line that made it):

    python bench/profile_cold.py --blob-mib 200 --pulls 3
    python bench/profile_cold.py --blob-mib 1024 --pulls 3 --s3

A stage's CPU is estimated as its share of the thread's busy samples times
the thread's CPU time. py-spy reads the mirror without stopping it
(``--nonblocking``), but takes a core's share of its own on a small machine.

For each pull it also adds up the CPU every process spent until the
client's last byte (mirror, upstream, moto, curl): spread over every core,
that is the shortest the pull could have been on this machine. With
``--distribution`` the same account is made for distribution's proxy:

    python bench/profile_cold.py --blob-mib 200 --pulls 5 --no-py-spy
    python bench/profile_cold.py --blob-mib 200 --pulls 5 --distribution
"""

from __future__ import annotations

import argparse
import contextlib
import linecache
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench.load import fetch_one, repeated
from bench.memory import settle
from bench.seed import push_blob
from tests.support.registry import UpstreamRegistry

if TYPE_CHECKING:  # boto3, which the module needs, is only there with the s3 extra
    from tests.support.s3 import MotoS3

TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024
SAMPLE_RATE = 1000  # per second and thread (py-spy reads without stopping the mirror)
IDLE = "idle"
# (stage, pattern): the first pattern found, from the innermost frame outwards, names the stage.
# Patterns are matched against "function (path:line) | source line".
STAGES: list[tuple[str, str]] = [
    (IDLE, r"\.select \(.*selectors\.py"),  # the event loop waits for its sockets
    (IDLE, r"^_worker \(.*concurrent/futures/thread\.py.*work_queue\.get"),  # an idle worker
    (IDLE, r"^\S*wait \(.*threading\.py"),
    ("S3: payload sha256 for SigV4 (botocore)", r"SigV4Auth\.payload"),
    ("sha256", r"^_hash \(|hasher\.update|hashlib|_hashlib|_hash_range|_hash_read"),
    ("splice: socket to spool (kernel)", r"os\.splice\(|_SpliceLoop\._(take|flush)"),
    # By the function running in a worker thread, not the line handing the job to it.
    (
        "page-cache write (spool, partial)",
        r"^(write_all|_write_all|pwrite_all) \(|os\.pwritev?\(|os\.writev?\(",
    ),
    ("commit: fsync + rename", r"^_publish \(|os\.fsync\("),
    ("socket receive (recv syscall)", r"_sock\.recv|recv_into"),
    (
        "HTTP parser + StreamReader (aiohttp)",
        r"data_received|feed_data|_http_parser|readany|readchunk",
    ),
    (
        "socket send (to client or S3)",
        r"_sock\.send|sendmsg|loop\.sendfile|os\.sendfile|_sock_sendfile|_write_ready",
    ),
    ("copies: join a batch or an S3 part", r"b\"\"\.join\("),
    ("S3 client (aiobotocore, botocore)", r"botocore"),
    ("hand-off to followers (download)", r"proxy/download\.py"),
    ("send path: aiohttp writer", r"http_writer\.py|web_response\.py"),
]
OTHER = "event loop, coroutines, other Python"


@dataclass
class ThreadTimes:
    """CPU and run-queue wait of one thread, in seconds."""

    name: str = ""
    cpu: float = 0.0
    waiting: float = 0.0  # runnable, but no core was free


@dataclass
class Pull:
    """What one cold pull cost."""

    total: float
    first_byte: float
    published_after: float
    threads: dict[int, ThreadTimes]  # by thread id
    samples: dict[int, Counter[str]] = field(default_factory=dict)  # thread id -> stage -> count
    # process (the server first) -> CPU seconds until the client's last byte
    spent: dict[str, float] = field(default_factory=dict)


def thread_times(pid: int) -> dict[int, ThreadTimes]:
    """Per thread id: name, CPU and run-queue wait so far."""
    found: dict[int, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a worker thread that just ended
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
            schedstat = (task / "schedstat").read_text().split()
            cpu = (int(fields[11]) + int(fields[12])) / TICKS
            found[int(task.name)] = ThreadTimes(name, cpu, int(schedstat[1]) / 1e9)
    return found


def classify(stack: str) -> str:
    """The stage of one sampled stack (``frame;frame;...``, outermost first)."""
    for frame in reversed(stack.split(";")):
        match = re.match(r"(.*) \((.*):(\d+)\)$", frame)
        text = frame
        if match is not None:
            source = linecache.getline(match[2], int(match[3])).strip()
            text = f"{frame} | {source}"
        for stage, pattern in STAGES:
            if re.search(pattern, text):
                return stage
    return OTHER


def read_samples(path: Path) -> dict[int, Counter[str]]:
    """py-spy's raw output (one ``stack count`` per line), filed by thread id and stage."""
    per_thread: dict[int, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, _, frames = stack.partition(";")
        tid = re.match(r"thread \((\d+)\)", thread)  # "thread (4011): MainThread"
        if tid is not None:
            per_thread.setdefault(int(tid[1]), Counter())[classify(frames)] += int(count)
    return per_thread


@contextlib.contextmanager
def sampled(pid: int, into: Path, enabled: bool) -> Iterator[None]:
    """py-spy records ``pid`` while the block runs (nothing if disabled)."""
    if not enabled:
        yield
        return
    argv = ["py-spy", "record", "--pid", str(pid), "--rate", str(SAMPLE_RATE), "--format",
            "raw", "--threads", "--idle", "--nonblocking", "--full-filenames",
            "-o", str(into)]  # fmt: skip
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached before the pull starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


@contextlib.contextmanager
def watched_threads(pid: int) -> Iterator[dict[int, ThreadTimes]]:
    """Every thread's times as last seen, read every 20 ms until the block ends.

    A download's splice threads end with it: read only at the end, their CPU
    (less what they did in their last 20 ms) would be missing.
    """
    seen: dict[int, ThreadTimes] = {}

    def read() -> None:
        with contextlib.suppress(OSError):  # the process is gone
            seen.update(thread_times(pid))

    with repeated(read, 0.02, "thread-watch"):
        yield seen


def process_cpu(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process, and of this one's reaped children.

    A process's figure includes its threads that have ended (a download's
    splice threads end with it).
    """
    times = {name: sum(servers.cpu_times(pid)[:2]) for name, pid in pids.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    times["curl"] = children.ru_utime + children.ru_stime
    return times


def one_pull(
    workdir: Path, upstream: UpstreamRegistry, blob_path: str, size: int, s3: MotoS3 | None,
    spy: bool, peer: str = "mirror",
) -> Pull:  # fmt: skip
    """A fresh ``peer`` (our mirror, or distribution's proxy), one cold pull, until it is stored.

    Besides the peer's threads, the pull's cost to the upstream, to moto
    and to curl is read: on one machine they all share its cores.
    """
    if peer == "distribution":
        mirror = servers.start_distribution_proxy(workdir, upstream.url)
    elif s3 is None:
        mirror = servers.start_mirror(workdir, upstream.url)
    else:
        mirror = servers.start_mirror_s3(workdir, upstream.url, s3)
    pid = mirror.process.pid
    processes = {mirror.name: pid, "upstream": upstream.process.pid}
    if s3 is not None:
        processes["moto"] = s3.process.pid
    spied = workdir / "py-spy.txt"
    try:
        with sampled(pid, spied, spy):
            settle(1.0, size)
            before = thread_times(pid)
            cpu_before = process_cpu(processes)
            with watched_threads(pid) as after:
                transfer = fetch_one(mirror.url + blob_path, size)
                cpu_after = process_cpu(processes)
                started = time.monotonic()
                mirror.wait_cached([blob_path.rpartition(":")[2]], size)
                published = time.monotonic() - started
    finally:
        mirror.stop()
        if mirror.forget is not None:  # as bench/cold.py does: see there why
            mirror.forget(blob_path.rpartition(":")[2])
    threads = {
        tid: ThreadTimes(t.name, t.cpu - before.get(tid, ThreadTimes()).cpu,
                         t.waiting - before.get(tid, ThreadTimes()).waiting)
        for tid, t in after.items()
    }  # fmt: skip
    samples = read_samples(spied) if spied.exists() else {}
    spent = {name: cpu_after[name] - cpu_before[name] for name in cpu_after}
    return Pull(transfer.total, transfer.first_byte, published, threads, samples, spent)


def _has_py_spy() -> bool:
    return subprocess.run(["which", "py-spy"], capture_output=True).returncode == 0


def print_pull(number: int, pull: Pull) -> None:
    """Times of the pull, then each busy thread and its stages."""
    print(f"pull {number}: total {pull.total:.3f} s, first byte {pull.first_byte * 1000:.1f} ms,"
          f" published {pull.published_after:.2f} s after the last byte", flush=True)  # fmt: skip
    for tid, times in sorted(pull.threads.items(), key=lambda kv: -kv[1].cpu):
        if times.cpu < 0.01:
            continue
        print(f"  thread {times.name}/{tid:<10} CPU {times.cpu:6.2f} s, waiting for a core "
              f"{times.waiting:6.2f} s")  # fmt: skip
        stages = pull.samples.get(tid, Counter())
        busy = sum(n for stage, n in stages.items() if stage != IDLE)
        for stage, count in stages.most_common():
            if stage != IDLE and busy:
                share = count / busy
                print(f"      {stage:<42} {share:6.1%} of busy samples "
                      f"~ {share * times.cpu:5.2f} s CPU")  # fmt: skip
    print_machine(pull)


def print_machine(pull: Pull) -> None:
    """Every process's CPU until the client's last byte, and the wall time that needs at least.

    On one machine the upstream, moto and curl share the mirror's cores: the
    pull cannot be shorter than all their CPU spread evenly over every core.
    (The threads above are counted until the blob is published.)
    """
    total = sum(pull.spent.values())
    cores = os.cpu_count() or 1
    shares = ", ".join(f"{name} {cpu:.2f} s" for name, cpu in pull.spent.items())
    print(f"  until the last byte: {shares}; {total:.2f} s of CPU, so at least "
          f"{total / cores:.3f} s of wall time on {cores} cores")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pulls", type=int, default=3)
    parser.add_argument("--blob-mib", type=float, default=200)
    parser.add_argument("--s3", action="store_true", help="S3 storage on a moto server")
    parser.add_argument("--distribution", action="store_true",
                        help="distribution's proxy instead of the mirror")  # fmt: skip
    parser.add_argument("--no-py-spy", action="store_true",
                        help="no sampling (py-spy takes CPU from the pull)")  # fmt: skip
    args = parser.parse_args()
    spy = _has_py_spy() and not args.no_py_spy and not args.distribution
    peer = "distribution" if args.distribution else "mirror"
    size = int(args.blob_mib * MIB)
    print(f"load average {os.getloadavg()[0]:.2f}; py-spy {'on' if spy else 'off'}")
    with (
        tempfile.TemporaryDirectory(prefix="profile-cold-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        s3 = None
        if args.s3:
            from tests.support.s3 import running_moto

            s3 = stack.enter_context(running_moto(workdir))
        upstream = servers.start_upstream(workdir)
        stack.callback(upstream.stop)
        totals = []
        for number in range(1, args.pulls + 1):
            blob = push_blob(upstream, workdir / "blobs", size, keep=False)
            pull = one_pull(workdir / f"pull-{number}", upstream, blob.url_path(), size, s3, spy,
                            peer)  # fmt: skip
            print_pull(number, pull)
            totals.append(pull.total)
    print(f"median total {statistics.median(totals):.3f} s over {args.pulls} cold "
          f"{args.blob_mib:g} MiB pulls; load average {os.getloadavg()[0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
