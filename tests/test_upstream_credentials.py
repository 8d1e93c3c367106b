"""Per-upstream credentials: where they come from, and where they go (only to
their upstream and its token realm; never to a CDN, another upstream or a log)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from mirror.config import ConfigError, build_config, load_config
from mirror.credentials import Credentials, parse_auths, registry_key
from tests.support.fake_upstream import FakeUpstream
from tests.test_routing import push_image, sha256

SECRET = "s3cr3t-Pa55word"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def write_auths(path: Path, auths: dict[str, dict[str, str]]) -> Path:
    path.write_text(json.dumps({"auths": auths, "credsStore": "desktop"}))
    return path


# ---------------------------------------------------------------- parsing


def test_registry_keys() -> None:
    assert registry_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_key("registry-1.docker.io") == "docker.io"
    assert registry_key("https://GHCR.io") == "ghcr.io"
    assert registry_key("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000"
    assert registry_key("quay.io") == "quay.io"


def test_parse_auths_forms() -> None:
    text = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hubuser:" + SECRET)},
                "ghcr.io": {"username": "gh", "password": "tok:with:colons"},
                "quay.io": {},  # kept by a credential helper
                "registry.example": {"identitytoken": "x"},
            }
        }
    )
    auths = parse_auths(text)
    assert auths == {
        "docker.io": Credentials("hubuser", SECRET),
        "ghcr.io": Credentials("gh", "tok:with:colons"),
    }
    assert SECRET not in repr(auths)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"auths": []}',
        '{"auths": {"ghcr.io": "x"}}',
        json.dumps({"auths": {"ghcr.io": {"auth": "%%%" + SECRET}}}),
        json.dumps({"auths": {"ghcr.io": {"auth": b64("no-colon-" + SECRET)}}}),
    ],
)
def test_bad_auths_file_is_a_config_error_without_secrets(tmp_path: Path, text: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        build_config({"auths_file": str(path)}, environ={})
    assert "auths_file" in str(caught.value)
    assert SECRET not in str(caught.value)


# ---------------------------------------------------------------- config sources


def test_docker_config_per_upstream_and_global_auths_file(tmp_path: Path) -> None:
    own = write_auths(tmp_path / "own.json", {"ghcr.io": {"auth": b64("gh:" + SECRET)}})
    everyone = write_auths(
        tmp_path / "all.json",
        {
            "https://index.docker.io/v1/": {"auth": b64("hub:hubpass")},
            "http://127.0.0.1:5999": {"auth": b64("local:localpass")},
        },
    )
    config = build_config(
        {
            "auths_file": str(everyone),
            "upstreams": [
                {"url": "https://ghcr.io", "docker_config": str(own)},
                {"url": "https://registry-1.docker.io"},
                {"name": "private", "url": "http://127.0.0.1:5999"},
                {"url": "https://quay.io"},
            ],
        },
        environ={},
    )
    found = {u.name: (u.username, u.password) for u in config.upstreams}
    assert found == {
        "ghcr.io": ("gh", SECRET),
        "docker.io": ("hub", "hubpass"),
        "private": ("local", "localpass"),  # matched by URL host:port
        "quay.io": (None, None),
    }
    assert SECRET not in repr(config)
    assert "hubpass" not in repr(config)


def test_docker_config_without_an_entry_is_an_error(tmp_path: Path) -> None:
    path = write_auths(tmp_path / "c.json", {"quay.io": {"auth": b64("q:" + SECRET)}})
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.docker_config: no credentials"):
        build_config({"upstreams": [{"url": "https://ghcr.io", "docker_config": str(path)}]})


def test_credentials_from_environment_variables() -> None:
    raw = {
        "upstreams": [
            {"url": "https://ghcr.io", "username_env": "GH_USER", "password_env": "GH_TOKEN"}
        ]
    }
    config = build_config(raw, environ={"GH_USER": "gh", "GH_TOKEN": SECRET})
    assert (config.upstreams[0].username, config.upstreams[0].password) == ("gh", SECRET)
    with pytest.raises(ConfigError, match="GH_TOKEN"):
        build_config(raw, environ={"GH_USER": "gh"})


def test_env_credentials_go_to_the_default_upstream(tmp_path: Path) -> None:
    path = tmp_path / "mirror.toml"
    path.write_text(
        '[[upstreams]]\nurl = "https://ghcr.io"\n'
        '[[upstreams]]\nurl = "https://registry-1.docker.io"\n'
    )
    env = {"MIRROR_UPSTREAM_USERNAME": "hub", "MIRROR_UPSTREAM_PASSWORD": SECRET}
    config = load_config(path, environ=env)
    assert config.default_upstream.name == "docker.io"
    assert (config.default_upstream.username, config.default_upstream.password) == ("hub", SECRET)
    ghcr = config.upstream("ghcr.io")
    assert ghcr is not None
    assert (ghcr.username, ghcr.password) == (None, None)


# ---------------------------------------------------------------- on the wire


@pytest.fixture
async def hub() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
async def private() -> AsyncIterator[FakeUpstream]:
    """Token auth, no anonymous tokens, blobs redirected to a CDN on another origin."""
    async with FakeUpstream(
        auth="token", username="gh", password=SECRET, anonymous_tokens=False
    ) as upstream:
        upstream.blob_redirect = upstream.cdn_url
        yield upstream


async def test_credentials_reach_only_their_upstream_and_realm(
    tmp_path: Path,
    hub: FakeUpstream,
    private: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.support.mirror_app import run_mirror

    caplog.set_level(logging.DEBUG)
    auths = write_auths(tmp_path / "config.json", {"ghcr.io": {"auth": b64("gh:" + SECRET)}})
    config = build_config(
        {
            "listen": "127.0.0.1:0",
            "storage": {"path": str(tmp_path / "cache")},
            "auths_file": str(auths),
            "upstreams": [
                {"name": "docker.io", "url": hub.url, "retries": 0},
                # The fake CDN listens on loopback: only allowed explicitly.
                {
                    "name": "ghcr.io",
                    "url": private.url,
                    "retries": 0,
                    "redirect_allow": ["127.0.0.1"],
                },
            ],
        },
        environ={},
    )
    assert SECRET not in repr(config)
    image = push_image(private, "org/app", "v1", b"private layer")
    public = push_image(hub, "library/alpine", "3", b"public layer")
    async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
        for path in ("org/app/manifests/v1?ns=ghcr.io", "ghcr.io/org/app/manifests/v1"):
            async with http.get(f"{mirror.url}/v2/{path}") as resp:
                assert resp.status == 200, await resp.text()
                assert sha256(await resp.read()) == image.digest
        async with http.get(f"{mirror.url}/v2/org/app/blobs/{image.layer_digest}?ns=ghcr.io") as r:
            assert (r.status, await r.read()) == (200, image.layer)
        async with http.get(f"{mirror.url}/v2/alpine/manifests/3") as resp:
            assert sha256(await resp.read()) == public.digest
    basic = "Basic " + b64("gh:" + SECRET)
    tokens = [r for r in private.requests if r.path == "/token"]
    assert tokens
    assert all(r.headers.get("Authorization") == basic for r in tokens)
    # The registry itself sees the token (after a first anonymous try), never the password.
    registry = [r for r in private.requests if not r.cdn and r.path.startswith("/v2/org")]
    assert {r.headers.get("Authorization", "Bearer ").split(" ")[0] for r in registry} == {"Bearer"}
    assert private.cdn_requests, "the blob was not redirected: the test proves nothing"
    assert all(r.headers.get("Authorization") is None for r in private.cdn_requests)
    assert all(r.headers.get("Authorization") is None for r in hub.requests)
    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    assert SECRET not in logged
    assert b64("gh:" + SECRET) not in logged


def test_check_config_never_prints_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mirror.cli import main

    auths = write_auths(tmp_path / "config.json", {"ghcr.io": {"auth": b64("gh:" + SECRET)}})
    monkeypatch.setenv("MIRROR_AUTHS_FILE", str(auths))
    status = main(["check-config", "--upstream", "ghcr.io=https://ghcr.io"])
    out = capsys.readouterr()
    assert status == 0
    assert "upstream ghcr.io (default): https://ghcr.io as gh" in out.out
    assert SECRET not in out.out + out.err


async def test_registry_that_redirects_to_another_registry_with_its_own_tokens(
    tmp_path: Path,
) -> None:
    """registry.k8s.io sends every request on to Artifact Registry, which wants its own token.

    The mirror answers the second registry's challenge with an anonymous token
    from that registry's realm; the first registry's credentials go nowhere else.
    """
    from tests.support.mirror_app import run_mirror

    async with (
        FakeUpstream(auth="basic", username="k8s", password=SECRET) as front,
        FakeUpstream(auth="token") as backend,
    ):
        front.redirect_registry = backend.url
        image = push_image(backend, "pause", "3.9", b"pause layer")
        config = build_config(
            {
                "listen": "127.0.0.1:0",
                "storage": {"path": str(tmp_path / "cache")},
                "upstreams": [
                    # Over plain http on loopback, neither the API redirects nor the
                    # second registry are allowed by default.
                    {"name": "registry.k8s.io", "url": front.url, "retries": 0,
                     "username": "k8s", "password": SECRET,
                     "redirects": "all", "redirect_allow": ["127.0.0.1"]},
                ],
            },
            environ={},
        )  # fmt: skip
        async with run_mirror(config) as mirror, aiohttp.ClientSession() as http:
            async with http.get(f"{mirror.url}/v2/pause/manifests/3.9") as resp:
                assert resp.status == 200, await resp.text()
                assert sha256(await resp.read()) == image.digest
            async with http.get(f"{mirror.url}/v2/pause/blobs/{image.layer_digest}") as resp:
                assert (resp.status, await resp.read()) == (200, image.layer)
        assert backend.token_requests >= 1
        backend_auth = {r.headers.get("Authorization") for r in backend.requests}
        basic = "Basic " + b64("k8s:" + SECRET)
        assert basic not in backend_auth, "the front registry's password reached another host"
        front_auth = {r.headers.get("Authorization") for r in front.requests}
        assert all(a is None or a == basic for a in front_auth), "a foreign token reached front"
