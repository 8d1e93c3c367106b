"""Configuration: defaults < TOML < MIRROR_* environment < flags; errors name the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mirror.cli import build_parser, config_from_args
from mirror.config import ConfigError, build_config, load_config, parse_duration, parse_size


def test_defaults_are_docker_hub_on_disk() -> None:
    config = load_config(environ={})
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 5000)
    assert config.storage.backend == "disk"
    assert config.storage.path == Path("./data")
    (upstream,) = config.upstreams
    assert upstream.name == "docker.io"
    assert upstream.url == "https://registry-1.docker.io"
    assert upstream.is_docker_hub
    assert not config.offline
    fill = config.fill
    assert (fill.idle_timeout, fill.stall_timeout, fill.total_timeout) == (60, 120, 3600)
    assert (fill.max_resumes, fill.memory_limit) == (5, 4 * 1024**2)


def test_splice_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert load_config(environ={}).fill.splice is True
    toml = tmp_path / "mirror.toml"
    for text, expected in (("false", False), ("true", True)):
        toml.write_text(f"[fill]\nsplice = {text}\n")
        assert load_config(toml, environ={}).fill.splice is expected
    with pytest.raises(ConfigError) as refused:
        build_config({"fill": {"splice": "maybe"}})
    assert str(refused.value) == "fill.splice: expected true or false, got 'maybe'"


def test_stall_timeout_defaults_to_twice_the_idle_timeout() -> None:
    assert build_config({"fill": {"idle_timeout": "10s"}}).fill.stall_timeout == 20


def test_layers_win_in_order(tmp_path: Path) -> None:
    toml = tmp_path / "mirror.toml"
    toml.write_text(
        'listen = "127.0.0.1:6000"\ntag_ttl = "10m"\n'
        '[storage]\npath = "/from/toml"\n'
        '[[upstreams]]\nname = "ghcr.io"\nurl = "https://ghcr.io"\n'
    )
    env = {"MIRROR_CACHE_DIR": "/from/env", "MIRROR_LISTEN": "127.0.0.1:7000"}
    config = load_config(toml, {"listen": "127.0.0.1:8000"}, environ=env)
    assert config.listen_port == 8000  # flag beats env beats file
    assert config.storage.path == Path("/from/env")
    assert config.upstreams[0].name == "ghcr.io"
    assert config.upstreams[0].tag_ttl == 600


def test_cli_flags(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "serve", "--listen", "127.0.0.1:5001", "--cache-dir", str(tmp_path),
            "--upstream", "docker.io=https://registry-1.docker.io",
            "--upstream", "https://ghcr.io", "--upstream-username", "u",
            "--upstream-password", "s3cr3t-pw", "--offline", "--tag-ttl", "30s",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert [u.name for u in config.upstreams] == ["docker.io", "ghcr.io"]
    assert config.upstreams[0].username == "u"
    assert config.upstreams[0].tag_ttl == 30
    assert config.offline
    assert config.upstreams[0].password == "s3cr3t-pw"
    assert "s3cr3t-pw" not in repr(config), "passwords never show in a repr"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"listen": "nope"}, "listen"),
        ({"listen": "1.2.3.4:99999"}, "listen"),
        ({"upstream": "ftp://x"}, "^upstream: "),  # the shorthand, not the list it fills
        ({"tag_ttl": "soon"}, "^tag_ttl: "),  # the default, not an upstream's copy of it
        ({"max_stale": "-1s"}, "^max_stale: "),
        ({"upstreams": [{"url": "https://a", "name": "UPPER CASE"}]}, "upstreams[0].name"),
        ({"upstreams": [{"url": "https://a"}, {"url": "https://a"}]}, "duplicate"),
        ({"upstreams": [{"url": "https://a", "tag_ttl": "soon"}]}, "upstreams[0].tag_ttl"),
        ({"upstreams": [{"url": "https://a", "retries": 99}]}, "upstreams[0].retries"),
        ({"storage": {"backend": "tape"}}, "storage.backend"),
        ({"storage": {"backend": "s3"}}, "storage.s3.bucket"),
        ({"storage": {"s3": {"part_size": "1MiB"}}}, "storage.s3.part_size"),
        ({"cache": {"max_size": "lots"}}, "cache.max_size"),
        ({"cache": {"low_watermark": 0.99}}, "cache.low_watermark"),
        ({"log": {"format": "xml"}}, "log.format"),
        ({"offline": "perhaps"}, "offline"),
        ({"colour": "blue"}, "colour"),
        ({"storage": {"pth": "x"}}, "storage.pth"),
        # Numbers only in ASCII digits and of a sane length: never a traceback.
        ({"listen": "127.0.0.1:\u00b2"}, "listen"),
        ({"listen": "127.0.0.1:" + "9" * 5000}, "listen"),
        ({"cache": {"max_size": "9" * 5000}}, "cache.max_size"),
        ({"cache": {"max_size": "\u0663GiB"}}, "cache.max_size"),
        ({"cache": {"high_watermark": "most"}}, "cache.high_watermark"),
        ({"upstreams": [{"url": "https://a", "tag_ttl": float("nan")}]}, "upstreams[0].tag_ttl"),
        ({"upstreams": [{"url": "https://a", "max_stale": float("inf")}]}, "max_stale"),
        ({"fill": {"idle_timeout": "1m", "stall_timeout": "30s"}}, "fill.stall_timeout"),
        ({"fill": {"max_resumes": -1}}, "fill.max_resumes"),
        ({"fill": {"memory_limit": "1KiB"}}, "fill.memory_limit"),
        ({"fill": {"splice": "sometimes"}}, "fill.splice"),
        ({"fill": {"splice": 2}}, "fill.splice"),
    ],
)
def test_errors_name_the_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        build_config(raw)


def test_units() -> None:
    assert parse_size("50GiB", "x") == 50 * 1024**3
    assert parse_size("1.5 GB", "x") == 1_500_000_000
    assert parse_size(1024, "x") == 1024
    assert parse_duration("250ms", "x") == 0.25
    assert parse_duration("7d", "x") == 7 * 86400
    assert parse_duration(30, "x") == 30


def test_check_config_command(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "mirror", "check-config", "--cache-dir", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "upstream docker.io (default): https://registry-1.docker.io" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "mirror", "check-config", "--max-size", "huge"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "cache.max_size" in bad.stderr
    assert "'huge'" in bad.stderr


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "deploy" / "mirror.example.toml"
    config = load_config(example, environ={})
    assert config.default_upstream.name == "docker.io"
    assert len(config.upstreams) == 4
