"""Upstream URLs with credentials in them: refused, and never echoed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SECRET = "Hunter2-s3cret"


# ---------------------------------------------------------------- credentials in URLs


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh process, as an operator runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    environ["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        capture_output=True, text=True, env={**environ, **(env or {})}, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "url",
    [
        f"http://user:{SECRET}@registry.example",
        f"http://:{SECRET}@registry.example",  # no user name: urlsplit's username is ""
        f"https://{SECRET}@registry.example",  # a token alone
        f"ftp://user:{SECRET}@registry.example",
        f"http://user:{SECRET}@registry.example/?q=1",
        f"http://user:{SECRET}/x@registry.example",  # "/" in it: urlsplit sees no userinfo
        f"http://user:p@{SECRET}@registry.example",  # an unescaped "@" in the password
        f"name=http://user:{SECRET}@registry.example",
    ],
)
def test_check_config_never_echoes_a_password_from_an_upstream_url(url: str) -> None:
    result = run_cli("check-config", "--upstream", url)
    assert result.returncode == 2
    assert "configuration error: upstreams[0]" in result.stderr
    assert "***@registry.example" in result.stderr
    assert SECRET not in result.stdout + result.stderr


def test_no_password_from_a_url_in_the_file_or_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "mirror.toml"
    config.write_text(f'[[upstreams]]\nurl = "https://me:{SECRET}@ghcr.io"\n')
    from_file = run_cli("check-config", "--config", str(config))
    from_env = run_cli("check-config", env={"MIRROR_UPSTREAM": f"https://me:{SECRET}@ghcr.io"})
    s3 = run_cli(
        "check-config",
        env={
            "MIRROR_STORAGE": "s3",
            "MIRROR_S3_BUCKET": "b",
            "MIRROR_S3_ENDPOINT_URL": f"http://key:{SECRET}@minio:9000",
        },
    )
    for result in (from_file, from_env, s3):
        assert result.returncode == 2, result.stdout
        assert "***@" in result.stderr
        assert SECRET not in result.stdout + result.stderr
