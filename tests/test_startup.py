"""Start-up of ``registry-mirror serve`` as a real process: --version, and failures
that print one line naming the setting, with exit status 2 (configuration) or 1
(runtime), never a traceback, and never "listening on" before the bind."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mirror_process import ROOT, start_mirror_process

PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def run(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``python -m mirror ARGS`` (optionally under ``prefix``), output captured."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "mirror", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
    )  # fmt: skip


def assert_one_error_line(done: subprocess.CompletedProcess[str], status: int, text: str) -> None:
    """Exit ``status``; exactly one ``registry-mirror:`` line, containing ``text``."""
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("registry-mirror:")]
    assert len(errors) == 1, done.stderr
    assert text in errors[0]
    assert "listening on" not in done.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port held by another socket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_version_is_the_package_version() -> None:
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"registry-mirror {PYPROJECT_VERSION}"


@pytest.mark.skipif(shutil.which("registry-mirror") is None, reason="console script not installed")
def test_console_script_version() -> None:
    script = shutil.which("registry-mirror")
    assert script is not None
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == f"registry-mirror {PYPROJECT_VERSION}"


def test_port_in_use_is_a_runtime_failure(taken_port: int, tmp_path: Path) -> None:
    done = run("serve", "--listen", f"127.0.0.1:{taken_port}", "--cache-dir", str(tmp_path))
    assert_one_error_line(
        done, 1, f"cannot start: listen: cannot listen on 127.0.0.1:{taken_port}: "
        "the address is already in use"
    )  # fmt: skip
    assert not (tmp_path / ".partial").exists()  # failed before the cache was touched


def test_metrics_port_in_use_names_metrics_listen(taken_port: int, tmp_path: Path) -> None:
    done = run(
        "serve", "--listen", "127.0.0.1:0", "--metrics-listen", f"127.0.0.1:{taken_port}",
        "--cache-dir", str(tmp_path),
    )  # fmt: skip
    assert_one_error_line(done, 1, f"metrics.listen: cannot listen on 127.0.0.1:{taken_port}")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_privileged_port_without_the_capability_is_a_configuration_error(tmp_path: Path) -> None:
    # As root, drop the capability that allows ports below 1024 (as a container's user lacks it).
    prefix = ("setpriv", "--bounding-set=-net_bind_service") if os.geteuid() == 0 else ()
    done = run("serve", "--listen", "127.0.0.1:80", "--cache-dir", str(tmp_path), prefix=prefix)
    assert_one_error_line(
        done, 2, "configuration error: listen: cannot listen on 127.0.0.1:80: permission denied"
    )


def test_address_the_host_does_not_have(tmp_path: Path) -> None:
    # 192.0.2.0/24 is reserved for documentation: no host has it, nothing is sent.
    done = run("serve", "--listen", "192.0.2.1:5000", "--cache-dir", str(tmp_path))
    assert_one_error_line(done, 2, "listen: cannot listen on 192.0.2.1:5000: this host has no")


def test_cache_directory_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run("serve", "--listen", "127.0.0.1:0", "--cache-dir", str(blocker / "cache"))
    assert_one_error_line(
        done, 2, f"storage.path: cannot create the cache directory '{blocker / 'cache'}'"
    )


def test_s3_region_botocore_refuses(tmp_path: Path) -> None:
    done = run(
        "serve", "--listen", "127.0.0.1:0", "--cache-dir", str(tmp_path), "--storage", "s3",
        "--s3-bucket", "b", "--s3-region", "not a region",
    )  # fmt: skip
    assert_one_error_line(done, 2, "configuration error: storage.s3.region:")


def test_s3_endpoint_that_is_not_a_url() -> None:
    done = run("check-config", "--storage", "s3", "--s3-bucket", "b", "--s3-endpoint-url", "x")
    assert_one_error_line(done, 2, "storage.s3.endpoint_url: expected an http(s) URL, got 'x'")


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (("--shutdown-grace", "soon"), {}, "shutdown_grace: expected a duration"),
        ((), {"MIRROR_SHUTDOWN_GRACE": "-1"}, "shutdown_grace: expected a duration"),
    ],
)
def test_bad_shutdown_grace(args: tuple[str, ...], env: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mirror", "check-config", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT, check=False,
        env={**os.environ, **env},
    )  # fmt: skip
    assert_one_error_line(done, 2, message)


def test_healthcheck_command(tmp_path: Path) -> None:
    mirror = start_mirror_process(tmp_path, {"storage": {"path": str(tmp_path / "cache")}})
    listen = mirror.url.removeprefix("http://")
    try:
        assert run("healthcheck", "--listen", listen).returncode == 0
    finally:
        assert mirror.process.stop() == 0
    done = run("healthcheck", "--listen", listen)
    assert done.returncode == 1
    assert f"registry-mirror healthcheck: http://{listen}/healthz:" in done.stderr
