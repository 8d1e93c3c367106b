"""``python -m bench`` / ``python bench/run.py``: start everything, run, report.

Starts the upstream registry, our mirror (over a disk cache, and over S3 on
a moto server when moto is installed), distribution in proxy mode and nginx
on loopback, runs scenarios (a)-(e) ``--reps`` times, prints medians,
ratios and targets, and writes ``docs/benchmarks.md`` with a PNG chart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as servers
from bench import scenarios
from bench.load import fetch_one
from bench.report import text_report
from bench.seed import push_blob, push_small_image

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3

log = logging.getLogger("bench")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_NOTES = REPO_ROOT / "bench" / "analysis.md"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke mode: 8 MiB blob, 1 repetition, 1 s wrk")
    add("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    add("--blob-mib", type=float, help="blob size in MiB (default 200; 8 with --quick)")
    add("--wrk-seconds", type=float, help="duration of each wrk run (default 5; 1 with --quick)")
    add("--workdir", type=Path, help="where servers keep data (default: a temp dir)")
    add("--docs", type=Path, help="write the Markdown report here (default docs/benchmarks.md; "
        "none with --quick)")  # fmt: skip
    add("--notes", type=Path, default=DEFAULT_NOTES, help="Markdown appended under Notes")
    add("--json", type=Path, help="also write the raw per-repetition figures as JSON")
    add("--from-json", type=Path, help="report on figures saved with --json instead of running")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit status 0 even when targets are missed (they are reported)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    reps = args.reps or (1 if args.quick else 3)
    size = int((args.blob_mib or (8 if args.quick else 200)) * 1024 * 1024)
    wrk_seconds = args.wrk_seconds or (1.0 if args.quick else 5.0)
    docs = args.docs or (None if args.quick else DEFAULT_DOCS)
    if not servers.distribution_available():
        print("bench: needs /usr/bin/docker-registry and /usr/sbin/nginx", file=sys.stderr)
        return 2
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        reps = max(len(values) for per_peer in results.values() for values in per_peer.values())
    else:
        with _workdir(args.workdir) as workdir:
            started = time.monotonic()
            results = run(workdir, size, reps, wrk_seconds)
            log.info("finished in %.0f s", time.monotonic() - started)
    report = text_report(results, reps)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if docs is not None:
        from bench.docs import write_markdown

        notes = args.notes.read_text().splitlines() if args.notes.exists() else []
        flags = _run_flags(sys.argv[1:] if argv is None else argv)
        command = "python -m bench " + shlex.join(flags)
        write_markdown(results, docs, command=command.strip(), reps=reps,
                       size_mib=size / 1024**2, notes=notes)  # fmt: skip
        print(f"wrote {docs} and {docs.with_suffix('.png')}")
    return 0


def _run_flags(argv: Sequence[str]) -> list[str]:
    """The flags that shaped the measurement (not where the report went)."""
    reporting = {"--from-json", "--docs", "--notes", "--json", "--workdir"}
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg.split("=", 1)[0] in reporting:
            skip = "=" not in arg
        else:
            kept.append(arg)
    return kept


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="mirror-bench-") as tmp:
        yield Path(tmp)


def run(workdir: Path, size: int, reps: int, wrk_seconds: float) -> scenarios.Results:
    """Start the servers, run every scenario ``reps`` times, stop the servers."""
    with contextlib.ExitStack() as stack:
        s3 = None
        if servers.s3_available():
            from tests.support.s3 import running_moto

            s3 = stack.enter_context(running_moto(workdir))
        else:
            log.info("moto/boto3 not installed: no mirror-s3 peer (pip install -e '.[test]')")
        return _run_with(workdir, size, reps, wrk_seconds, s3)


def _run_with(
    workdir: Path, size: int, reps: int, wrk_seconds: float, s3: MotoS3 | None
) -> scenarios.Results:
    upstream = servers.start_upstream(workdir)
    running: list[servers.Peer] = []
    try:
        warm_blob = push_blob(upstream, workdir / "blobs", size)
        image = push_small_image(upstream, workdir / "blobs")
        mirror = servers.start_mirror(workdir, upstream.url)
        running.append(mirror)
        if s3 is not None:
            running.append(servers.start_mirror_s3(workdir, upstream.url, s3))
        distribution = servers.start_distribution_proxy(workdir, upstream.url)
        running.append(distribution)
        for proxy in running:
            fetch_one(proxy.url + warm_blob.url_path(), size)  # fill the caches
            proxy.wait_cached(warm_blob.digest[7:], size)
        cached = next((mirror.workdir / "cache").rglob(warm_blob.digest[7:]))
        nginx = servers.start_nginx(workdir, cached, "/blob")
        running.append(nginx)
        proxies = [p.name for p in running if p.name != "nginx"]
        setup = scenarios.Setup(
            upstream=upstream,
            peers={p.name: p for p in [*running, servers.upstream_peer(upstream)]},
            proxies=proxies,
            workdir=workdir,
            size=size,
            warm_blob=warm_blob,
            image=image,
            wrk_seconds=wrk_seconds,
        )
        return _repeat(setup, reps)
    finally:
        for peer in reversed(running):
            peer.stop()
        upstream.stop()


def _repeat(setup: scenarios.Setup, reps: int) -> scenarios.Results:
    order = ["nginx", *setup.proxies, "upstream"]
    for rep in range(reps):
        log.info("repetition %d of %d: blobs", rep + 1, reps)
        # Rotate who goes first, so no peer always meets a cold page cache or a busy neighbour.
        shift = rep % len(order)
        scenarios.cached_throughput(setup, order[shift:] + order[:shift])
        scenarios.cold_pull(setup)
        scenarios.thundering_herd(setup)
    scenarios.peak_memory(setup)
    scenarios.warm_manifests(setup)
    loaded = [*setup.proxies, "upstream"]
    for rep in range(reps):
        log.info("repetition %d of %d: manifests", rep + 1, reps)
        shift = rep % len(loaded)
        scenarios.manifests(setup, loaded[shift:] + loaded[:shift])
    return {metric: dict(per_peer) for metric, per_peer in setup.results.items()}


if __name__ == "__main__":
    sys.exit(main())
