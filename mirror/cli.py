"""The ``registry-mirror`` command: sub-commands, wiring only."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.cache.pins import parse_pins
from mirror.cli_airgap import COMMANDS as AIRGAP_COMMANDS
from mirror.cli_airgap import add_parsers as add_airgap_parsers
from mirror.cli_airgap import run as run_airgap
from mirror.cli_flags import add_storage_flags
from mirror.config import Config, ConfigError, UpstreamConfig, load_config, parse_upstream_flag
from mirror.config_report import settings_lines, upstream_warnings
from mirror.config_security import describe_security
from mirror.config_trust import describe_trust
from mirror.config_values import redact_url
from mirror.healthcheck import healthcheck
from mirror.lifecycle import StartupError
from mirror.progress import make_reporter

log = logging.getLogger("mirror")


def _add_config_flags(parser: argparse.ArgumentParser, *groups: str) -> None:
    """``--config``, the log flags, and the flag ``groups`` that mean something to the command.

    ``cache``: where the cache is, its budget, and the upstreams it holds objects of;
    ``listen``: where the mirror serves; ``serve``: everything else about serving.
    """
    add = parser.add_argument
    add("--config", type=Path, help="TOML configuration file (default: $MIRROR_CONFIG)")
    add("--log-format", choices=["text", "json"], help="log format (default text)")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    if "listen" in groups:
        add("--listen", help="HOST:PORT to serve on (default 0.0.0.0:5000)")
    if "cache" in groups:
        _add_cache_flags(parser.add_argument_group("cache").add_argument)
    if "serve" in groups:
        _add_serve_flags(parser.add_argument_group("serving").add_argument)


def _add_mirror_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mirror", action="append", default=[], metavar="URL",
        help="a mirror serving this cache, repeatable: afterwards it re-reads the cache "
        "(POST /admin/cache/reindex with the configured admin token)",
    )  # fmt: skip


def _add_cache_flags(add: Callable[..., argparse.Action]) -> None:
    add("--cache-dir", help="cache directory (disk) or spool directory (s3); default ./data")
    add(
        "--upstream",
        action="append",
        metavar="[NAME=]URL",
        help="upstream registry, repeatable (default docker.io=https://registry-1.docker.io)",
    )
    add_storage_flags(add)
    add("--max-size", help="cache budget such as 50GiB (default: unbounded)")


def _add_serve_flags(add: Callable[..., argparse.Action]) -> None:
    add("--upstream-username", help="username for the default upstream")
    add("--upstream-password", help="password or token for the default upstream "
        "(visible in ps: prefer MIRROR_UPSTREAM_PASSWORD or password_file)")  # fmt: skip
    add("--tag-ttl", help="how long a tag is trusted before it is revalidated (default 5m)")
    add(
        "--offline",
        action="store_true",
        default=None,
        help="never contact an upstream; serve only what is cached",
    )
    add("--metrics-listen", help="HOST:PORT for a separate /metrics listener")  # fmt: skip
    add("--shutdown-grace", help="time SIGTERM leaves requests and downloads to finish (8s)")


_FLAG_SETTINGS = {
    "listen": "listen",
    "cache_dir": "storage.path",
    "upstream_username": "upstream_username",
    "upstream_password": "upstream_password",
    "tag_ttl": "tag_ttl",
    "offline": "offline",
    "storage": "storage.backend",
    "s3_bucket": "storage.s3.bucket",
    "s3_prefix": "storage.s3.prefix",
    "s3_region": "storage.s3.region",
    "s3_endpoint_url": "storage.s3.endpoint_url",
    "max_size": "cache.max_size",
    "log_format": "log.format",
    "log_level": "log.level",
    "metrics_listen": "metrics.listen",
    "shutdown_grace": "shutdown_grace",
}


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the configuration with the command line's flags on top."""
    overrides: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for attr, dotted in _FLAG_SETTINGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides[dotted] = value
            spelled[dotted] = "--" + attr.replace("_", "-")
    if getattr(args, "upstream", None):
        overrides["upstreams"] = [parse_upstream_flag(v) for v in args.upstream]
    return load_config(args.config, overrides, spelled=spelled)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="registry-mirror", description="Pull-through caching mirror for OCI registries."
    )
    parser.add_argument("--version", action="version", version=f"registry-mirror {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the mirror")
    _add_config_flags(serve, "listen", "cache", "serve")
    check = commands.add_parser("check-config", help="validate the configuration and print it")
    _add_config_flags(check, "listen", "cache", "serve")
    gc = commands.add_parser("gc", help="enforce the cache budget now and report what went")
    _add_config_flags(gc, "cache")
    _add_mirror_flag(gc)
    verify = commands.add_parser(
        "verify", help="re-hash every cached blob and manifest; remove the damaged ones"
    )
    _add_config_flags(verify, "cache")
    _add_mirror_flag(verify)
    verify.add_argument(
        "--quarantine", action="store_true",
        help="keep damaged objects under _quarantine/ instead of deleting them",
    )  # fmt: skip
    verify.add_argument("--quiet", action="store_true", help="no progress on standard error")
    health = commands.add_parser(
        "healthcheck", help="exit 0 when the mirror on the configured listen address is alive"
    )
    _add_config_flags(health, "listen")
    warm = commands.add_parser(
        "warm", help="pull whole images (every platform) through a running mirror to cache them"
    )
    warm.add_argument("references", nargs="*", metavar="IMAGE",
                      help="e.g. alpine:3.20, ghcr.io/org/app@sha256:...")  # fmt: skip
    warm.add_argument("--mirror", default="http://127.0.0.1:5000",
                      help="the mirror's URL (default: %(default)s)")  # fmt: skip
    warm.add_argument("--file", type=Path, help="read image references from a file, one a line")
    warm.add_argument("--quiet", action="store_true", help="no progress on standard error")
    add_airgap_parsers(commands)
    return parser


def setup_logging(config: Config) -> None:
    """Plain text or one JSON object per line, on stderr."""
    from mirror.logs import configure

    configure(config.log.format, config.log.level)


def describe(config: Config) -> list[str]:
    """Human-readable lines saying what the mirror will do."""
    scheme = "https" if config.security.tls is not None else "http"
    lines = [f"listening on {scheme}://{config.listen_host}:{config.listen_port}"]
    if config.metrics_listen is not None:
        host, port = config.metrics_listen
        lines.append(f"metrics also on http://{host}:{port}/metrics")
    now = datetime.datetime.now(datetime.UTC)
    return (
        lines
        + describe_storage_and_upstreams(config)
        + describe_trust(config.trust)
        + describe_security(config.security, now)
    )


def describe_storage_and_upstreams(config: Config) -> list[str]:
    """The lines of :func:`describe` that need no socket: cache, offline, upstreams."""
    where = (
        f"s3://{config.storage.s3.bucket}/{config.storage.s3.prefix}"
        if config.storage.backend == "s3"
        else str(config.storage.path.resolve())
    )
    lines = [f"cache: {config.storage.backend} at {where}"]
    if config.offline:
        lines.append("offline: no upstream will be contacted")
    for upstream in config.upstreams:
        mark = " (default)" if upstream is config.default_upstream else ""
        auth = " as " + upstream.username if upstream.username else ""
        lines.append(f"upstream {upstream.name}{mark}: {upstream.url}{auth}")
        lines.append(f"upstream {upstream.name} {_redirects(upstream)}")
    lines += settings_lines(config)
    # No credential in a URL may reach a terminal or a log, whatever slipped through.
    return [redact_url(line) for line in lines]


def _redirects(upstream: UpstreamConfig) -> str:
    """Which redirects the upstream may make the mirror follow, and to where."""
    if upstream.redirects == "none":
        return "follows no redirects"
    which = "every request" if upstream.redirects == "all" else "blob requests"
    allowed = ", ".join(("public addresses", *upstream.redirect_allow))
    return f"follows redirects of {which} to {allowed}"


def serve(config: Config) -> int:
    """Run the mirror until SIGTERM or SIGINT; the exit status."""
    from mirror.server import serve as run_server

    setup_logging(config)
    for name in ("mirror.startup", "mirror.shutdown"):
        logging.getLogger(name).setLevel(logging.INFO)  # shown even with --log-level warning
    for line in describe_storage_and_upstreams(config):
        logging.getLogger("mirror.startup").info("%s", line)
    for line in upstream_warnings(config):
        logging.getLogger("mirror.startup").warning("%s", line)
    try:
        asyncio.run(run_server(config))
    except StartupError as exc:
        print(exc.line(), file=sys.stderr)
        return exc.status
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``registry-mirror`` and ``python -m mirror``."""
    args = build_parser().parse_args(argv)
    if args.command == "warm":
        return warm(args.mirror, args.references, args.file, quiet=args.quiet)
    try:
        config = config_from_args(args)
        parse_pins(config)
    except ConfigError as exc:
        print(f"registry-mirror: configuration error: {redact_url(str(exc))}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print("configuration is valid")
        for line in describe(config):
            print("  " + line)
        for line in upstream_warnings(config):
            print("  warning: " + line)
        return 0
    if args.command == "healthcheck":
        return healthcheck(config)
    if args.command in AIRGAP_COMMANDS:
        setup_logging(config)
        return run_airgap(args, config)
    if args.command in ("gc", "verify"):
        if args.command == "gc":
            status = gc(config)
        else:
            status = verify(config, quarantine=args.quarantine, quiet=args.quiet)
        return max(status, tell_mirrors(args.mirror, config.admin_token))
    return serve(config)


def warm(mirror_url: str, references: list[str], listing: Path | None, *, quiet: bool) -> int:
    """``registry-mirror warm``: 1 when some image could not be pulled."""
    from mirror.warm import warm as warm_images

    refs = list(references)
    if listing is not None:
        lines = listing.read_text().splitlines()
        refs += [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not refs:
        print("registry-mirror warm: no image references given", file=sys.stderr)
        return 2
    failed = 0
    reporter = make_reporter(quiet=quiet)
    try:
        results = asyncio.run(warm_images(mirror_url, refs, reporter))
    finally:
        reporter.close()
    for result in results:
        if result.error is not None:
            failed += 1
            print(f"FAILED {result.reference}: {result.error}")
            continue
        print(
            f"ok {result.reference} {result.digest}: {result.manifests} manifests, "
            f"{result.blobs} blobs, {result.blob_bytes} bytes, {result.referrers} referrers"
        )
    return 1 if failed else 0


def tell_mirrors(urls: list[str], token: str | None) -> int:
    """Have each running mirror re-read the cache; 1 when one could not be told."""
    from mirror.admin_client import reindex

    failed = 0
    for url in urls:
        answer = reindex(url, token)
        if answer.error is not None:
            failed = 1
            print(f"mirror {redact_url(answer.url)}: not reindexed: {answer.error}")
            continue
        print(f"mirror {redact_url(answer.url)}: index reconciled ({answer.removed} dropped, "
              f"{answer.added} added): {answer.size} bytes in {answer.entries} "
              "objects")  # fmt: skip
    return failed


def gc(config: Config) -> int:
    """``registry-mirror gc``: 1 when some deletion failed."""
    from mirror.cache.commands import run_gc

    setup_logging(config)
    result = asyncio.run(run_gc(config))
    report = result.eviction
    if not result.max_size:
        print("no cache budget configured (cache.max_size / --max-size): nothing to evict")
    print(f"removed {len(report.removed)} objects ({report.removed_bytes} bytes); "
          f"kept {report.kept} pinned or in use; {report.failed} failed")  # fmt: skip
    for entry in report.removed:
        print(f"  evicted {entry.key} ({entry.size} bytes)")
    for upstream, usage in result.unconfigured.items():
        print(f"  upstream {upstream} is not in the configuration: its {usage.objects} "
              f"objects ({usage.bytes} bytes) count toward the budget and age out")  # fmt: skip
    print(f"cache: {report.size_after} bytes in {result.entries} objects, budget "
          f"{result.max_size}; {result.partials} partial objects swept")  # fmt: skip
    return 1 if report.failed else 0


def verify(config: Config, *, quarantine: bool, quiet: bool) -> int:
    """``registry-mirror verify``: 1 when anything was damaged or unreadable."""
    from mirror.cache.commands import run_verify

    setup_logging(config)
    reporter = make_reporter(quiet=quiet)
    try:
        report = asyncio.run(run_verify(config, quarantine=quarantine, reporter=reporter))
    finally:
        reporter.close()
    print(f"checked {report.blobs} blobs and {report.manifests} manifests ({report.bytes} bytes)")
    for key in report.damaged:
        print(f"  damaged: {key}")
    for key in report.unreadable:
        print(f"  unreadable: {key}")
    for upstream, objects in report.unconfigured.items():
        print(f"  upstream {upstream} is not in the configuration: its {objects} blobs "
              "and manifests were checked as well")  # fmt: skip
    print(f"{len(report.damaged)} damaged ({report.deleted} removed, {report.quarantined} "
          f"quarantined), {len(report.unreadable)} unreadable")  # fmt: skip
    return 0 if report.ok else 1
