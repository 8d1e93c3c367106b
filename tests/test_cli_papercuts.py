"""The command line as a new operator meets it (issue 17, papercuts 6 and 9).

Each command takes only the flags that mean something to it, ``warm --help``
shows its default mirror, ``--version`` answers, the README's quick start keeps
the Hub token off the command line (and the way it shows works), and a
``pip install .`` leaves nothing ``git status`` would show.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.support.cli import PROJECT_ROOT, run_cli

SECRET = "hub-token-from-env-3c2b"


@pytest.mark.parametrize("command", ["gc", "verify"])
@pytest.mark.parametrize(
    "flag",
    [("--listen", "127.0.0.1:5001"), ("--upstream-password", "x"), ("--upstream-username", "u"),
     ("--tag-ttl", "5m"), ("--offline",), ("--metrics-listen", "127.0.0.1:9"),
     ("--shutdown-grace", "3s")],
)  # fmt: skip
def test_cache_commands_refuse_serving_flags(command: str, flag: tuple[str, ...]) -> None:
    done = run_cli(command, *flag)
    assert done.returncode == 2
    assert f"unrecognized arguments: {flag[0]}" in done.stderr
    assert flag[0] not in run_cli(command, "--help").stdout


def test_healthcheck_takes_listen_but_no_cache_or_credentials() -> None:
    help_text = run_cli("healthcheck", "--help").stdout
    assert "--listen" in help_text
    for flag in ("--upstream-password", "--cache-dir", "--max-size"):
        assert flag not in help_text


def test_serve_and_check_config_keep_every_flag() -> None:
    for command in ("serve", "check-config"):
        help_text = run_cli(command, "--help").stdout
        for flag in ("--listen", "--cache-dir", "--upstream-password", "--shutdown-grace"):
            assert flag in help_text, (command, flag)


def test_warm_help_shows_its_default_mirror() -> None:
    assert "default: http://127.0.0.1:5000" in run_cli("warm", "--help").stdout


def test_version() -> None:
    done = run_cli("--version")
    assert done.returncode == 0
    assert re.fullmatch(r"registry-mirror \d+\.\d+\S*\n", done.stdout)


def test_readme_quick_start_keeps_the_token_off_the_command_line() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "--upstream-password" not in quick_start
    assert "MIRROR_UPSTREAM_PASSWORD=" in quick_start


def test_the_environment_way_of_the_readme_works() -> None:
    env = {"MIRROR_UPSTREAM_USERNAME": "me", "MIRROR_UPSTREAM_PASSWORD": SECRET}
    done = run_cli("check-config", env=env)
    assert done.returncode == 0, done.stderr
    assert "upstream docker.io (default): https://registry-1.docker.io as me" in done.stdout
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
@pytest.mark.parametrize(
    "path", ["build/lib/mirror/cli.py", "dist/registry_mirror-1.0.tar.gz",
             "registry_mirror.egg-info/PKG-INFO", "mirror/__pycache__/cli.cpython-311.pyc",
             "data/docker.io/blobs/x"],
)  # fmt: skip
def test_build_leftovers_are_ignored_by_git(path: str) -> None:
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", path],
        cwd=PROJECT_ROOT, capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, f"{path} is not ignored"
