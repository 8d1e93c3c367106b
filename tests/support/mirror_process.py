"""``registry-mirror serve`` as a child process, configured by a TOML file.

For tests that need what only a real process has: signals, exit statuses,
start-up output, several replicas. ``settings`` are TOML-shaped dicts, as
for :func:`tests.support.mirror_app.mirror_config`.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.processes import ManagedProcess, free_port, start_process, wait_for_http

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class MirrorProcess:
    """A running mirror process and its base URL (no trailing slash)."""

    process: ManagedProcess
    url: str
    #: how a client trusts the mirror when it serves https (from ``tls_client``)
    tls_client: ssl.SSLContext | None = None

    @property
    def port(self) -> int:
        """The port the mirror listens on."""
        return int(self.url.rsplit(":", 1)[1])

    def wait_ready(self) -> None:
        """Block until ``/healthz`` answers (the process may not exit first)."""
        wait_for_http(self.url + "/healthz", self.process, timeout=30, context=self.tls_client)

    def log(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        return self.process.log_path.read_text(errors="replace")


def toml_text(settings: Mapping[str, Any]) -> str:
    """``settings`` as TOML: scalars first, then tables, then arrays of tables."""
    return "\n".join(_table_lines(settings, ())) + "\n"


def _table_lines(table: Mapping[str, Any], path: tuple[str, ...]) -> list[str]:
    lines = [f"[{'.'.join(path)}]"] if path else []
    nested: list[str] = []
    for key, value in table.items():
        if isinstance(value, Mapping):
            nested += _table_lines(value, (*path, key))
        elif isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            for item in value:
                header = ".".join((*path, key))
                nested += [f"[[{header}]]", *_table_lines(item, ())]
        else:
            # JSON strings, numbers, booleans and lists of them are valid TOML.
            lines.append(f"{key} = {json.dumps(value)}")
    return lines + nested


def start_mirror_process(
    workdir: Path,
    settings: Mapping[str, Any],
    *,
    name: str = "mirror",
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    port: int | None = None,
    tls_client: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
) -> MirrorProcess:
    """Write ``<workdir>/<name>.toml`` and serve it on ``port`` (default: a free one).

    With a ``tls`` table in ``settings`` the URL is https, and ``tls_client`` is how
    a client trusts it (its CA, and a client certificate for mutual TLS). ``host``:
    the address to listen on (``::1`` for clients that must not see 127.0.0.0/8).

    Call it from a thread that outlives the process (the main one): the child
    gets SIGTERM when the thread that started it ends.
    """
    port = port or free_port()
    config = workdir / f"{name}.toml"
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    config.write_text(toml_text({"listen": address, **settings}))
    process = start_process(
        name,
        [sys.executable, "-m", "mirror", "serve", "--config", str(config)],
        log_path=workdir / f"{name}.log",
        cwd=ROOT,
        env=env,
    )
    scheme = "https" if "tls" in settings else "http"
    mirror = MirrorProcess(process, f"{scheme}://{address}", tls_client)
    if wait:
        mirror.wait_ready()
    return mirror
