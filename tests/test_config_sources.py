"""A bad setting is named as the operator set it: the file's field, the flag, the variable.

Top-level defaults that apply to upstreams (``tag_ttl``, ``max_stale``, the
``upstream`` shorthand, the default upstream's credentials) are named as
themselves, never as the upstream they were copied into. Everything runs
through the real command line.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run_cli

PASSWORD = "Hunter2-pw"


def config_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "mirror.toml"
    path.write_text(text)
    return str(path)


def refused(*args: str, env: dict[str, str] | None = None) -> str:
    """The one error line of ``check-config ARGS``, which must exit 2."""
    result = run_cli("check-config", *args, env=env)
    assert result.returncode == 2, result.stdout
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    return line.removeprefix("registry-mirror: configuration error: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('tag_ttl = "5x"\n', "tag_ttl: expected a duration such as '5m', got '5x'"),
        ('max_stale = "soon"\n', "max_stale: expected a duration such as '5m', got 'soon'"),
        ('upstream = "ftp://x"\n', "upstream: expected an http(s) URL, got 'ftp://x'"),
        ("upstream_username = 5\n", "upstream_username: expected a string"),
        # A table's own setting is still named by its place in the list.
        (
            'tag_ttl = "1m"\n[[upstreams]]\nurl = "https://a.example"\n'
            '[[upstreams]]\nurl = "https://b.example"\ntag_ttl = "5x"\n',
            "upstreams[1].tag_ttl: expected a duration such as '5m', got '5x'",
        ),
    ],
)
def test_a_field_of_the_file_is_named_as_written(tmp_path: Path, text: str, expected: str) -> None:
    assert refused("--config", config_file(tmp_path, text)) == expected


DURATION = "expected a duration such as '5m', got "


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--tag-ttl", "5x"], {}, f"tag_ttl: {DURATION}'5x' (set by --tag-ttl)"),
        ([], {"MIRROR_TAG_TTL": "xx"}, f"tag_ttl: {DURATION}'xx' (set by MIRROR_TAG_TTL)"),
        # The flag wins over the environment, and is the one named.
        (
            ["--tag-ttl", "5x"], {"MIRROR_TAG_TTL": "1m"},
            f"tag_ttl: {DURATION}'5x' (set by --tag-ttl)",
        ),
        (
            [], {"MIRROR_UPSTREAM": "ftp://x"},
            "upstream: expected an http(s) URL, got 'ftp://x' (set by MIRROR_UPSTREAM)",
        ),
        (
            [], {"MIRROR_MAX_SIZE": "lots"},
            "cache.max_size: expected a size such as '50GiB', got 'lots' (set by MIRROR_MAX_SIZE)",
        ),
        (
            ["--listen", "nowhere"], {},
            "listen: expected HOST:PORT, got 'nowhere' (set by --listen)",
        ),
        (
            [], {"MIRROR_OFFLINE": "maybe"},
            "offline: expected true or false, got 'maybe' (set by MIRROR_OFFLINE)",
        ),
    ],
)  # fmt: skip
def test_a_flag_or_variable_is_named_with_its_setting(
    args: list[str], env: dict[str, str], expected: str
) -> None:
    assert refused(*args, env=env) == expected


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [
        (["--upstream-password", PASSWORD], {}, "--upstream-password"),
        ([], {"MIRROR_UPSTREAM_PASSWORD": PASSWORD}, "MIRROR_UPSTREAM_PASSWORD"),
    ],
)
def test_a_password_without_a_username_is_an_error_not_dropped(
    args: list[str], env: dict[str, str], source: str
) -> None:
    line = refused(*args, env=env)
    assert line == (
        "upstream_password: set, but the default upstream has no username to go with it "
        f"(set by {source})"
    )
    assert PASSWORD not in line


def test_the_password_may_come_from_elsewhere_than_the_username(tmp_path: Path) -> None:
    text = '[[upstreams]]\nurl = "https://ghcr.io"\nusername = "robot"\n'
    result = run_cli(
        "check-config", "--config", config_file(tmp_path, text),
        env={"MIRROR_UPSTREAM_PASSWORD": PASSWORD},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "upstream ghcr.io (default): https://ghcr.io as robot" in result.stdout
    both = run_cli("check-config", "--upstream-username", "u", "--upstream-password", PASSWORD)
    assert both.returncode == 0, both.stderr
    assert PASSWORD not in both.stdout + both.stderr
