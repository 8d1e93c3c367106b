"""What ``check-config`` and ``serve`` tell a new operator (issue 17, papercuts 1 and 7).

Run as an operator runs them: ``python -m mirror`` in a fresh process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mirror.config_report import binary_size, duration
from tests.support.cli import run_cli
from tests.support.mirror_process import start_mirror_process
from tests.support.processes import free_port

SECRETS = ("hub-password-1f2e", "admin-token-9c8b", "s3-secret-key-7a6d")


def check_config(*args: str, env: dict[str, str] | None = None) -> str:
    """The standard output of a successful ``check-config ARGS``."""
    done = run_cli("check-config", *args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_unnamed_upstream_that_is_not_docker_hub_gets_a_warning() -> None:
    out = check_config("--upstream", f"http://127.0.0.1:{free_port()}")
    (warning,) = [ln for ln in out.splitlines() if ln.strip().startswith("warning:")]
    assert "?ns=docker.io" in warning
    assert "403" in warning
    assert "library/" in warning
    assert "docker.io=http://127.0.0.1:" in warning  # says how to fix it


@pytest.mark.parametrize(
    "flag",
    [
        "https://registry-1.docker.io",  # Docker Hub's URL: named docker.io by itself
        "https://index.docker.io",
        "docker.io=http://127.0.0.1:5999",  # a local Hub mirror, named as such
    ],
)
def test_docker_hub_as_default_upstream_gets_no_warning(flag: str) -> None:
    out = check_config("--upstream", flag)
    assert "warning" not in out
    assert "upstream docker.io (default)" in out


def test_a_second_upstream_next_to_docker_hub_gets_no_warning() -> None:
    out = check_config(
        "--upstream", "https://ghcr.io", "--upstream", "https://registry-1.docker.io"
    )
    assert "warning" not in out


def test_serve_logs_the_warning_at_start(tmp_path: Path) -> None:
    settings = {"storage": {"path": str(tmp_path / "cache")},
                "upstreams": [{"url": f"http://127.0.0.1:{free_port()}"}]}  # fmt: skip
    mirror = start_mirror_process(tmp_path, settings)
    try:
        log = mirror.log()
    finally:
        mirror.process.stop()
    (line,) = [ln for ln in log.splitlines() if "?ns=docker.io" in ln]
    assert "WARNING" in line


def test_check_config_prints_freshness_budget_admin_pins(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(
        'tag_ttl = "10m"\nmax_stale = "2d"\n'
        f'[admin]\ntoken = "{SECRETS[1]}"\n'
        '[cache]\nmax_size = "50GiB"\npins = ["docker.io/library/alpine:3.20"]\n'
        '[[upstreams]]\nurl = "https://registry-1.docker.io"\nusername = "me"\n'
        f'password = "{SECRETS[0]}"\n'
    )
    out = check_config("--config", str(config))
    assert "budget: 50 GiB, eviction from 95% down to 85%" in out
    assert "upstream docker.io tags: trusted for 10m (tag_ttl), served stale up to 2d" in out
    assert "admin API: on" in out
    assert "pins: docker.io/library/alpine:3.20" in out
    assert "53687091200" not in out  # the budget is not in raw bytes
    for secret in SECRETS:
        assert secret not in out


def test_check_config_prints_the_s3_endpoint_and_redirect(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(
        '[storage]\nbackend = "s3"\n'
        '[storage.s3]\nbucket = "cache"\nendpoint_url = "http://127.0.0.1:9000"\n'
        f'region = "eu-west-1"\nredirect = true\npresign_ttl = "10m"\n'
        f'access_key_id = "AKIDEXAMPLE"\nsecret_access_key = "{SECRETS[2]}"\n'
    )
    out = check_config("--config", str(config))
    assert "s3 endpoint: http://127.0.0.1:9000, region eu-west-1" in out
    assert "s3 redirect: on (presigned URLs valid 10m)" in out
    assert "admin API: off" in out
    assert "pins: none" in out
    assert SECRETS[2] not in out


@pytest.mark.parametrize(
    ("count", "text"),
    [(512, "512 bytes"), (50 * 1024**3, "50 GiB"), (1536 * 1024**2, "1.50 GiB (1610612736 bytes)"),
     (1024**2, "1 MiB")],
)  # fmt: skip
def test_binary_size(count: int, text: str) -> None:
    assert binary_size(count) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(300, "5m"), (5400, "1h30m"), (7 * 86400, "7d"), (0.25, "0.25s"), (0, "0s")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
