"""``python -m bench`` / ``python bench/run.py``: start everything, run, report.

Starts the upstream registry, our mirror (over a disk cache, and over S3 on
a moto server when moto is installed), distribution in proxy mode and nginx
on loopback, runs scenarios (a)-(h) ``--reps`` times, prints medians,
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cold, scenarios
from bench import peers as servers
from bench.load import fetch_one
from bench.report import text_report
from bench.seed import push_blob, push_small_image

if TYPE_CHECKING:
    from tests.support.s3 import MotoS3

log = logging.getLogger("bench")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DOCS = REPO_ROOT / "docs" / "benchmarks.md"
DEFAULT_NOTES = REPO_ROOT / "bench" / "analysis.md"
ALL_SCENARIOS = "abcdefgh"
MIB = 1024 * 1024


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke mode: small sizes, 1 repetition, 1 s wrk")
    add("--reps", type=int, help="repetitions (default 3; 1 with --quick)")
    add("--blob-mib", type=float, help="blob size in MiB (default 200; 8 with --quick)")
    add("--big-mib", type=float, help="(f) big blob size in MiB (default 1024; 16 with --quick)")
    add("--small-count", type=int, help="(g) 4 KiB blobs per repetition (default 500; 40 "
        "with --quick)")  # fmt: skip
    add("--tag-count", type=int, help="(h) fresh tags per repetition (default 500; 40 with "
        "--quick)")  # fmt: skip
    add("--settle", type=float, help="seconds of pause after sync before each cold "
        "measurement (default 1; 0.1 with --quick)")  # fmt: skip
    add("--scenarios", default=ALL_SCENARIOS, help=f"which to run (default {ALL_SCENARIOS})")
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
    knobs = _knobs(args)
    docs = args.docs or (None if args.quick else DEFAULT_DOCS)
    if not servers.distribution_available():
        print("bench: needs /usr/bin/docker-registry and /usr/sbin/nginx", file=sys.stderr)
        return 2
    taken = None  # now
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        reps = max(len(values) for per_peer in results.values() for values in per_peer.values())
        # The file is written as the run ends: the report dates the figures, not itself.
        taken = datetime.fromtimestamp(args.from_json.stat().st_mtime, UTC)
    else:
        with _workdir(args.workdir) as workdir:
            started = time.monotonic()
            results = run(workdir, knobs, reps)
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
        write_markdown(results, docs, command=command.strip(), reps=reps, knobs=knobs,
                       notes=notes, taken=taken)  # fmt: skip
        print(f"wrote {docs} and {docs.with_suffix('.png')}")
    return 0


def _knobs(args: argparse.Namespace) -> scenarios.Knobs:
    """Sizes and counts from the options, with the defaults of a full or a quick run."""
    quick = args.quick

    def pick(given: float | None, full: float, smoke: float) -> float:
        return given if given is not None else (smoke if quick else full)

    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        raise SystemExit(f"bench: unknown scenarios {sorted(unknown)} (known: {ALL_SCENARIOS})")
    return scenarios.Knobs(
        size=int(pick(args.blob_mib, 200, 8) * MIB),
        big_size=int(pick(args.big_mib, 1024, 16) * MIB),
        small_count=int(pick(args.small_count, 500, 40)),
        tag_count=int(pick(args.tag_count, 500, 40)),
        settle_seconds=pick(args.settle, 1.0, 0.1),
        wrk_seconds=pick(args.wrk_seconds, 5.0, 1.0),
        scenarios=args.scenarios,
    )


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


def run(workdir: Path, knobs: scenarios.Knobs, reps: int) -> scenarios.Results:
    """Start the servers, run every scenario ``reps`` times, stop the servers."""
    with contextlib.ExitStack() as stack:
        s3 = None
        if servers.s3_available():
            from tests.support.s3 import running_moto

            s3 = stack.enter_context(running_moto(workdir))
        else:
            log.info("moto/boto3 not installed: no mirror-s3 peer (pip install -e '.[test]')")
        return _run_with(workdir, knobs, reps, s3)


def _run_with(
    workdir: Path, knobs: scenarios.Knobs, reps: int, s3: MotoS3 | None
) -> scenarios.Results:
    size = knobs.size
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
            proxy.wait_cached([warm_blob.digest[7:]], size)
        cached = next((mirror.workdir / "cache").rglob(warm_blob.digest[7:]))
        nginx = servers.start_nginx(workdir, cached, "/blob")
        running.append(nginx)
        proxies = [p.name for p in running if p.name != "nginx"]
        setup = scenarios.Setup(
            upstream=upstream,
            peers={p.name: p for p in [*running, servers.upstream_peer(upstream)]},
            proxies=proxies,
            workdir=workdir,
            warm_blob=warm_blob,
            image=image,
            knobs=knobs,
        )
        return _repeat(setup, reps)
    finally:
        for peer in reversed(running):
            peer.stop()
        upstream.stop()


def _repeat(setup: scenarios.Setup, reps: int) -> scenarios.Results:
    wanted = setup.knobs.scenarios
    for rep in range(reps):
        log.info("repetition %d of %d: blobs", rep + 1, reps)
        # Rotate who goes first, so no peer always meets a cold page cache or a busy neighbour.
        cached = _rotated(["nginx", *setup.proxies, "upstream"], rep)
        pulled = _rotated(["upstream", *setup.proxies], rep)
        if "a" in wanted:
            scenarios.cached_throughput(setup, cached)
        if "b" in wanted:
            cold.cold_pull(setup, pulled, setup.size, "b")
        if "f" in wanted:
            cold.cold_pull(setup, pulled, setup.knobs.big_size, "f")
        if "c" in wanted:
            scenarios.thundering_herd(setup)
        if "g" in wanted:
            cold.small_blobs(setup, pulled)
    scenarios.peak_memory(setup)
    if "d" in wanted:
        scenarios.warm_manifests(setup)
    for rep in range(reps):
        log.info("repetition %d of %d: manifests", rep + 1, reps)
        loaded = _rotated([*setup.proxies, "upstream"], rep)
        if "d" in wanted:
            scenarios.manifests(setup, loaded)
        if "h" in wanted:
            cold.cold_tags(setup, loaded)
    return {metric: dict(per_peer) for metric, per_peer in setup.results.items()}


def _rotated(order: list[str], rep: int) -> list[str]:
    shift = rep % len(order)
    return order[shift:] + order[:shift]


if __name__ == "__main__":
    sys.exit(main())
