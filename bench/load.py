"""Load generators: curl processes for blobs, wrk for manifests.

Blob clients are separate ``curl`` processes writing to ``/dev/null`` (C, one
process per client, no Python in the data path), so the client side is not
the bottleneck. Manifest load is plain ``wrk`` (no Lua script): a fixed URL
and ``Accept`` header, ``-t2`` threads, 64 connections.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

CURL_FORMAT = "%{http_code} %{size_download} %{time_starttransfer} %{time_total}\\n"
ACCEPT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


class LoadError(RuntimeError):
    """A client got a wrong status or a short body."""


@dataclass(frozen=True)
class Transfer:
    """What one curl client saw."""

    status: int
    size: int
    first_byte: float  # seconds from start to the first body byte
    total: float  # seconds from start to the last byte


@dataclass(frozen=True)
class Batch:
    """A set of concurrent transfers and the wall time around all of them."""

    transfers: list[Transfer]
    wall: float

    @property
    def bytes(self) -> int:
        """Bytes received by all clients together."""
        return sum(t.size for t in self.transfers)

    @property
    def mib_per_s(self) -> float:
        """Aggregate throughput over the wall time."""
        return self.bytes / (1024 * 1024) / self.wall

    def failures(self, expected_size: int) -> int:
        """Clients that did not get a 200 with the whole blob."""
        return sum(1 for t in self.transfers if t.status != 200 or t.size != expected_size)


def curl_argv(url: str, headers: tuple[str, ...] = ()) -> list[str]:
    """One GET, body to /dev/null, timings on stdout."""
    extra = [arg for header in headers for arg in ("-H", header)]
    return ["curl", "-s", "-o", "/dev/null", "--max-time", "600", "-w", CURL_FORMAT, *extra, url]


def fetch_concurrently(
    url: str, clients: int, expected_size: int | None = None, headers: tuple[str, ...] = ()
) -> Batch:
    """Start ``clients`` curl processes at once; wait for all of them."""
    started = time.perf_counter()
    argv = curl_argv(url, headers)
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(clients)
    ]
    outputs = [proc.communicate()[0].decode() for proc in procs]
    wall = time.perf_counter() - started
    transfers = [_parse_curl(out) for out in outputs]
    batch = Batch(transfers, wall)
    if expected_size is not None and batch.failures(expected_size) == clients:
        raise LoadError(f"every client failed on {url}: {transfers[0]}")
    return batch


def fetch_many(urls: Sequence[str], clients: int, headers: tuple[str, ...] = ()) -> Batch:
    """``clients`` curl processes share ``urls`` (dealt round robin); wait for all of them.

    Each process fetches its share one after the other on one kept-alive
    connection, as a registry client pulls the layers of an image; the wall
    time runs from the first spawn to the last exit.
    """
    shares = [urls[index::clients] for index in range(clients)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(_curl_many_argv(share, headers), stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
        for share in shares
        if share
    ]  # fmt: skip
    outputs = [proc.communicate()[0].decode() for proc in procs]
    wall = time.perf_counter() - started
    transfers = [_parse_curl(line) for out in outputs for line in out.splitlines()]
    missing = len(urls) - len(transfers)  # a curl that died before reporting some URLs
    return Batch(transfers + [Transfer(0, 0, 0.0, 0.0)] * max(0, missing), wall)


def _curl_many_argv(urls: Sequence[str], headers: tuple[str, ...]) -> list[str]:
    argv = curl_argv(urls[0], headers)
    for url in urls[1:]:
        argv += ["-o", "/dev/null", url]
    return argv


def fetch_one(url: str, expected_size: int | None = None) -> Transfer:
    """One client, one transfer; its timings come from curl itself."""
    transfer = fetch_concurrently(url, 1, expected_size).transfers[0]
    if expected_size is not None and (transfer.status != 200 or transfer.size != expected_size):
        raise LoadError(f"GET {url}: {transfer}")
    return transfer


def _parse_curl(output: str) -> Transfer:
    parts = output.split()
    if len(parts) != 4:
        return Transfer(0, 0, 0.0, 0.0)
    return Transfer(int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]))


@dataclass(frozen=True)
class WrkResult:
    """Requests per second, p99 latency and non-2xx answers from one wrk run."""

    rps: float
    p99_ms: float
    errors: int


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def run_wrk(
    url: str, seconds: float, connections: int = 64, threads: int = 2,
    headers: Sequence[str] = (),
) -> WrkResult:  # fmt: skip
    """``wrk --latency`` against ``url`` with a manifest Accept header (and ``headers``)."""
    extra = [arg for header in headers for arg in ("-H", header)]
    argv = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--latency", "-H", f"Accept: {ACCEPT_MANIFEST}", *extra, url,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    if rps is None or p99 is None:
        raise LoadError(f"cannot parse wrk output:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    failed = int(errors.group(1)) if errors else 0
    if socket_errors:
        failed += sum(int(g) for g in socket_errors.groups())
    return WrkResult(float(rps.group(1)), float(p99.group(1)) * _UNITS_MS[p99.group(2)], failed)


@contextlib.contextmanager
def repeated(action: Callable[[], None], every: float, name: str) -> Iterator[None]:
    """Call ``action`` in a thread every ``every`` seconds while the block runs, and once after."""
    done = threading.Event()

    def loop() -> None:
        while True:
            action()
            if done.is_set():
                return
            done.wait(every)

    worker = threading.Thread(target=loop, name=name)
    worker.start()
    try:
        yield
    finally:
        done.set()
        worker.join()
