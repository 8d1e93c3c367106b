"""The ``export`` and ``import`` sub-commands: flags, exit statuses, output. Wiring only.

Exit status, for both: ``0`` everything exported or imported (or already
there); ``1`` some images skipped or refused, the others done (each named on
standard error and in ``--json``); ``2`` a usage or configuration error,
nothing done; ``3`` nothing done for another reason (not a layout, a delta
whose base is missing, the budget, a damaged cache blob, a storage failure).

The configuration comes from the same sources as ``serve`` (``--config`` or
``$MIRROR_CONFIG``, ``MIRROR_*``, the cache flags). ``--upstream`` here
selects (export) or names (import) images among the configured upstreams.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from mirror.airgap.errors import AirgapError, SelectionError
from mirror.airgap.names import Defaults
from mirror.airgap.selection import parse_selection
from mirror.cli_flags import add_storage_flags
from mirror.config import Config
from mirror.config_values import redact_url
from mirror.lifecycle import StartupError
from mirror.progress import make_reporter, print_json
from mirror.storage.base import StorageError

COMMANDS = ("export", "import")
DONE, PARTLY, USAGE, FAILED = 0, 1, 2, 3


def add_parsers(commands: Any) -> None:
    """Add ``export`` and ``import`` to the sub-command parsers."""
    export = commands.add_parser("export", help="write cached images as an OCI image layout")
    export.add_argument("dest", metavar="DEST", help="a new directory, a .tar / .tar.zst, or -")
    _add_cache_flags(export)
    add = export.add_argument
    add("--image", action="append", default=[], metavar="REF",
        help="[upstream/]repository(:tag|@digest), repeatable (the syntax of pins)")  # fmt: skip
    add("--file", type=Path, help="image references, one a line, # comments")
    add("--upstream", dest="select_upstreams", action="append", default=[], metavar="NAME",
        help="images of this configured upstream, repeatable")  # fmt: skip
    add("--repository", dest="repositories", action="append", default=[], metavar="PATTERN",
        help="repositories matching this shell pattern, repeatable")  # fmt: skip
    add("--since", metavar="PREVIOUS", help="incremental: a previous export or its summary")
    add("--no-referrers", action="store_true", help="leave signatures, SBOMs, attestations out")
    add("--format", dest="form", choices=["dir", "tar", "tar.zst"], help="instead of from DEST")
    imp = commands.add_parser("import", help="import an OCI image layout into the cache")
    imp.add_argument("source", metavar="SRC", help="a layout directory, a .tar[.gz|.zst], or -")
    _add_cache_flags(imp)
    add = imp.add_argument
    add("--upstream", dest="name_upstream", metavar="NAME",
        help="upstream of images named by a bare tag or without a configured registry")  # fmt: skip
    add("--repository", dest="name_repository", metavar="REPO",
        help="repository of images named by a bare tag (skopeo's oci:DIR:TAG)")  # fmt: skip
    add("--allow-evict", action="store_true",
        help="let an import past the budget evict cached images (never pinned ones)")  # fmt: skip
    add("--spool-dir", type=Path, help="for tar members that come before their manifests")
    add("--mirror", metavar="URL", help="import into this running mirror (its admin API)")
    add("--admin-token-file", type=Path,
        help="the mirror's admin token (default: admin.token, $MIRROR_ADMIN_TOKEN)")  # fmt: skip


def _add_cache_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--config", type=Path, help="TOML configuration file (default: $MIRROR_CONFIG)")
    add("--cache-dir", help="cache directory (disk) or spool directory (s3)")
    add_storage_flags(add)
    add("--max-size", help="cache budget such as 50GiB")
    add("--log-level", choices=["debug", "info", "warning", "error"], help="default info")
    add("--quiet", action="store_true", help="report problems only")
    add("--json", action="store_true", help="a JSON summary on standard output")
    # The serve flag of this name takes URLs; here --upstream is a selection.
    parser.set_defaults(upstream=None)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run ``export`` or ``import``; the exit status."""
    if args.quiet:  # problems only: the cache's informational log lines too
        logging.getLogger("mirror").setLevel(logging.WARNING)
    try:
        if args.command == "export":
            return _export(args, config)
        return _import(args, config)
    except SelectionError as exc:
        return _fail(args.command, str(exc), USAGE)
    except (AirgapError, StorageError) as exc:
        return _fail(args.command, str(exc), FAILED)
    except StartupError as exc:
        return _fail(args.command, exc.line(), exc.status)


def _export(args: argparse.Namespace, config: Config) -> int:
    # Imported when used: every command (serve, the healthcheck probe) parses this module.
    from mirror.airgap.commands import ExportRequest, run_export

    selection = parse_selection(
        config, images=args.image, listing=args.file, upstreams=args.select_upstreams,
        repositories=args.repositories,
    )  # fmt: skip
    request = ExportRequest(args.dest, selection, args.since, not args.no_referrers, args.form)
    reporter = make_reporter(quiet=args.quiet)
    try:
        done = asyncio.run(run_export(config, request, reporter))
    finally:
        reporter.close()
    if args.json:
        doc = {**done.result.to_json(), "unmatched": done.unmatched}
        print_json(doc, sys.stderr if args.dest == "-" else sys.stdout)
    return DONE if done.complete else PARTLY


def _import(args: argparse.Namespace, config: Config) -> int:
    from mirror.airgap.commands import ImportRequest, run_import

    for name in filter(None, [args.name_upstream]):
        if config.upstream(name) is None:
            known = ", ".join(u.name for u in config.upstreams)
            raise SelectionError(f"--upstream {name!r} is not configured (configured: {known})")
    defaults = Defaults(args.name_upstream, args.name_repository)
    if args.mirror is not None:
        return _import_remote(args, _admin_token(args, config), defaults)
    request = ImportRequest(args.source, defaults, args.allow_evict, args.spool_dir)
    reporter = make_reporter(quiet=args.quiet)
    try:
        report = asyncio.run(run_import(config, request, reporter))
        for digest, problem in report.damaged.items():
            reporter.item(digest, "damaged", problem)
        for problem in report.problems:
            reporter.item(args.source, "damaged", problem)
    finally:
        reporter.close()
    if args.json:
        print_json(report.to_json())
    return DONE if report.ok else PARTLY


def _import_remote(args: argparse.Namespace, token: str, defaults: Defaults) -> int:
    from mirror.airgap.remote import import_remote

    reporter = make_reporter(quiet=args.quiet)
    try:
        sending = import_remote(
            args.mirror, token, args.source, reporter,
            defaults=defaults, allow_evict=args.allow_evict,
        )  # fmt: skip
        report = asyncio.run(sending)
        for image in report.get("images", []):
            reporter.item(image["reference"], image["status"], image["reason"])
        for digest, problem in report.get("damaged", {}).items():
            reporter.item(digest, "damaged", problem)
    finally:
        reporter.close()
    if args.json:
        print_json(report)
    return DONE if report.get("ok") else PARTLY


def _admin_token(args: argparse.Namespace, config: Config) -> str:
    """From --admin-token-file, else the configuration: never from the command line itself."""
    if args.admin_token_file is None:
        if config.admin_token is None:
            raise SelectionError("--mirror needs the admin token: admin.token, "
                                 "$MIRROR_ADMIN_TOKEN or --admin-token-file")  # fmt: skip
        return config.admin_token
    path: Path = args.admin_token_file
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SelectionError(f"--admin-token-file {path}: {exc}") from None
    if not token:
        raise SelectionError(f"--admin-token-file {path} is empty")
    return token


def _fail(command: str, message: str, status: int) -> int:
    print(f"registry-mirror {command}: {redact_url(message)}", file=sys.stderr)
    return status
