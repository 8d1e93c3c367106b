"""The ``registry-mirror`` command: sub-commands, wiring only."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import sys
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mirror import __version__
from mirror.cache.pins import parse_pins
from mirror.config import Config, ConfigError, UpstreamConfig, load_config, parse_upstream_flag
from mirror.config_security import SecurityConfig, describe_security
from mirror.config_trust import describe_trust
from mirror.config_values import redact_url
from mirror.lifecycle import StartupError
from mirror.storage.factory import BACKENDS

log = logging.getLogger("mirror")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, help="TOML configuration file (default: $MIRROR_CONFIG)")
    add("--listen", help="HOST:PORT to serve on (default 0.0.0.0:5000)")
    add("--cache-dir", help="cache directory (disk) or spool directory (s3); default ./data")
    add(
        "--upstream",
        action="append",
        metavar="[NAME=]URL",
        help="upstream registry, repeatable (default docker.io=https://registry-1.docker.io)",
    )
    add("--upstream-username", help="username for the default upstream")
    add("--upstream-password", help="password or token for the default upstream")
    add("--tag-ttl", help="how long a tag is trusted before it is revalidated (default 5m)")
    add(
        "--offline",
        action="store_true",
        default=None,
        help="never contact an upstream; serve only what is cached",
    )
    add("--storage", choices=sorted(BACKENDS), help="cache backend (default disk)")
    add("--s3-bucket", help="S3 bucket (storage s3)")
    add("--s3-prefix", help="key prefix inside the bucket")
    add("--s3-region", help="S3 region")
    add("--s3-endpoint-url", help="S3 endpoint for MinIO, Ceph RGW, R2, ...")
    add("--max-size", help="cache budget such as 50GiB (default: unbounded)")
    add("--log-format", choices=["text", "json"], help="log format (default text)")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
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
    if args.upstream:
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
    _add_config_flags(serve)
    check = commands.add_parser("check-config", help="validate the configuration and print it")
    _add_config_flags(check)
    gc = commands.add_parser("gc", help="enforce the cache budget now and report what went")
    _add_config_flags(gc)
    verify = commands.add_parser(
        "verify", help="re-hash every cached blob and manifest; remove the damaged ones"
    )
    _add_config_flags(verify)
    verify.add_argument(
        "--quarantine", action="store_true",
        help="keep damaged objects under _quarantine/ instead of deleting them",
    )  # fmt: skip
    health = commands.add_parser(
        "healthcheck", help="exit 0 when the mirror on the configured listen address is alive"
    )
    _add_config_flags(health)
    warm = commands.add_parser(
        "warm", help="pull whole images (every platform) through a running mirror to cache them"
    )
    warm.add_argument("references", nargs="*", metavar="IMAGE",
                      help="e.g. alpine:3.20, ghcr.io/org/app@sha256:...")  # fmt: skip
    warm.add_argument("--mirror", default="http://127.0.0.1:5000", help="the mirror's URL")
    warm.add_argument("--file", type=Path, help="read image references from a file, one a line")
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
    lines = [
        f"cache: {config.storage.backend} at {where}"
        + (f", budget {config.cache.max_size} bytes" if config.cache.max_size else ""),
    ]
    if config.offline:
        lines.append("offline: no upstream will be contacted")
    for upstream in config.upstreams:
        mark = " (default)" if upstream is config.default_upstream else ""
        auth = " as " + upstream.username if upstream.username else ""
        lines.append(f"upstream {upstream.name}{mark}: {upstream.url}{auth}")
        lines.append(f"upstream {upstream.name} {_redirects(upstream)}")
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
        return warm(args.mirror, args.references, args.file)
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
        return 0
    if args.command == "healthcheck":
        return healthcheck(config)
    if args.command == "serve" and config.security != SecurityConfig():
        # Checked, not yet served: never listen in the clear, or without the
        # authentication the operator asked for, as if they were in force.
        print(
            "registry-mirror: configuration error: [tls], [auth] and [rate_limit] are "
            "validated by check-config but not served by this version",
            file=sys.stderr,
        )
        return 2
    if args.command == "gc":
        return gc(config)
    if args.command == "verify":
        return verify(config, quarantine=args.quarantine)
    if config.trust.enforcing:
        # Fail closed: a mirror that seemed to enforce a policy it ignores is worse than none.
        print(
            "registry-mirror: configuration error: trust: 'require' and 'warn' policies are "
            "validated by check-config but not enforced by this version; use mode 'allow'",
            file=sys.stderr,
        )
        return 2
    return serve(config)


def healthcheck(config: Config) -> int:
    """``registry-mirror healthcheck``: GET ``/healthz`` on ``listen`` (a container's probe)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.listen_host, config.listen_host)
    url = f"http://{f'[{host}]' if ':' in host else host}:{config.listen_port}/healthz"
    # No proxy: HTTP_PROXY in a container's environment is for the upstreams, not for this.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            resp.read()
    except (OSError, ValueError) as exc:
        print(f"registry-mirror healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0


def warm(mirror_url: str, references: list[str], listing: Path | None) -> int:
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
    for result in asyncio.run(warm_images(mirror_url, refs)):
        if result.error is not None:
            failed += 1
            print(f"FAILED {result.reference}: {result.error}")
            continue
        print(
            f"ok {result.reference} {result.digest}: {result.manifests} manifests, "
            f"{result.blobs} blobs, {result.blob_bytes} bytes"
        )
    return 1 if failed else 0


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


def verify(config: Config, *, quarantine: bool) -> int:
    """``registry-mirror verify``: 1 when anything was damaged or unreadable."""
    from mirror.cache.commands import run_verify

    setup_logging(config)
    report = asyncio.run(run_verify(config, quarantine=quarantine))
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
