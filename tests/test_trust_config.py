"""The ``[trust]`` configuration: keys, trusted roots and policies, validated at load time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mirror.config import ConfigError, build_config
from mirror.trust import TrustSettings
from tests.support.cosign import CosignKey
from tests.support.fake_upstream import FakeUpstream
from tests.support.mirror_process import start_mirror_process
from tests.support.oci_content import push_to_fake, small_image
from tests.support.sigstore_bundles import made_up_trusted_root

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ROOT_TYPE = b"application/vnd.dev.sigstore.trustedroot+json;version=0.1"
UPSTREAMS = [{"url": "https://registry-1.docker.io"}, {"url": "https://ghcr.io"}]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh process, as an operator runs it."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MIRROR_")}
    environ["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Key files of every kind an operator might point at, and a trusted root."""
    folder = tmp_path_factory.mktemp("trust")
    key = CosignKey.generate()
    written = {
        "acme.pub": key.public_pem(),
        "ed.pub": CosignKey.generate("ed25519").public_pem(),
        "cosign.key": key.encrypted_pem(b"secret"),
        "p384.pub": ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        "broken.pub": b"-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        "notes.txt": b"this is not a key\n",
        "root.json": made_up_trusted_root(),
        "bad-root.json": b'{"mediaType": "' + ROOT_TYPE + b'"}',
    }
    for name, data in written.items():
        (folder / name).write_bytes(data)
    (folder / "a-directory").mkdir()
    return {name: folder / name for name in [*written, "a-directory"]}


def trust(files: dict[str, Path], **table: Any) -> TrustSettings:
    keys = {"acme": str(files["acme.pub"]), "ed": str(files["ed.pub"])}
    raw = {"upstreams": UPSTREAMS, "trust": {"keys": keys, **table}}
    return build_config(raw, environ={}).trust


def policy(**fields: Any) -> dict[str, Any]:
    return {"name": "p", "mode": "require", "keys": ["acme"], **fields}


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mirror.toml"
    path.write_text(text)
    return path


# ---------------------------------------------------------------- check-config


def test_check_config_shows_each_policy_and_its_signers(
    files: dict[str, Path], tmp_path: Path
) -> None:
    config = write_config(tmp_path, f"""
[trust.keys]
acme = "{files["acme.pub"]}"
[trust.roots]
ci = "{files["root.json"]}"
[[trust.policies]]
name = "official"
upstream = "docker.io"
repositories = ["library/*"]
mode = "require"
keys = ["acme"]
[[trust.policies.keyless]]
root = "ci"
issuer = "https://token.ci.example"
identity = "https://ci.example/acme/app"
[trust.default]
mode = "warn"
keys = ["acme"]
""")  # fmt: skip
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    head = "  trust policy 'official' for docker.io library/*: require 1 of key acme (ecdsa-p256 "
    tail = "keyless https://ci.example/acme/app (https://token.ci.example); docker-reference"
    assert any(line.startswith(head) and line.endswith(f"{tail} repository") for line in lines)
    assert any(line.startswith("  trust default: warn 1 of key acme") for line in lines), lines


@pytest.mark.parametrize(
    ("key_file", "expected"),
    [
        ("missing.pub", "cannot read '{path}': No such file or directory"),
        ("a-directory", "cannot read '{path}': Is a directory"),
        ("cosign.key", "'{path}' holds a private key (ENCRYPTED SIGSTORE PRIVATE KEY)"),
        ("notes.txt", "'{path}' not a PEM file"),
        ("p384.pub", "'{path}' ECDSA key on secp384r1: only P-256 is supported"),
        ("broken.pub", "'{path}' unreadable public key"),
    ],
)
def test_check_config_names_the_key_that_cannot_be_used(
    files: dict[str, Path], tmp_path: Path, key_file: str, expected: str
) -> None:
    path = files.get(key_file, tmp_path / key_file)
    config = write_config(tmp_path, f'[trust.keys]\nacme = "{path}"\n')
    result = run_cli("check-config", "--config", str(config))
    assert result.returncode == 2
    message = "registry-mirror: configuration error: trust.keys.acme: " + expected.format(path=path)
    assert result.stderr.strip().startswith(message)
    assert "this is not a key" not in result.stderr  # no file content is quoted
    assert "\n" not in result.stderr.strip()  # one line, no traceback


async def test_serve_enforces_a_require_policy(
    files: dict[str, Path], tmp_path: Path, up: FakeUpstream
) -> None:
    push_to_fake(up, "library/app", small_image("unsigned"), "1.0")
    settings = {
        "upstream": up.url,
        "storage": {"path": str(tmp_path / "cache")},
        "trust": {"keys": {"acme": str(files["acme.pub"])},
                  "default": {"mode": "require", "keys": ["acme"]}},
    }  # fmt: skip
    # From this (the main) thread: the child lives as long as the thread that started it.
    mirror = start_mirror_process(tmp_path, settings)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{mirror.url}/v2/library/app/manifests/1.0") as resp:
                status, body = resp.status, await resp.json()
    finally:
        mirror.process.stop()
    assert status == 403
    assert body["errors"][0]["message"] == "trust policy 'default': no signature found"


# ---------------------------------------------------------------- validation


P0 = "trust.policies[0]"
BAD_POLICIES: list[tuple[dict[str, Any], str]] = [
    ({"policies": [policy(mode="enforce")]}, f"{P0}.mode: expected one of allow, require, warn"),
    (
        {"policies": [policy(keys=["acme", "nobody"])]},
        f"{P0}.keys: no key named 'nobody' in trust.keys (have: acme, ed)",
    ),
    ({"policies": [policy(threshold=2)]}, f"{P0}.threshold: 2 signatures required but the"),
    ({"policies": [policy(threshold=0)]}, f"{P0}.threshold: expected a whole number from 1"),
    ({"policies": [policy(keys=[])]}, f"{P0}.threshold: 1 signatures required but the"),
    (
        {"policies": [policy(upstream="quay.io")]},
        f"{P0}.upstream: no upstream named 'quay.io' (have: docker.io, ghcr.io, *)",
    ),
    ({"policies": [policy(repositories=["Library/*"])]}, f"{P0}.repositories[0]: expected a"),
    ({"policies": [policy(repositories="library/*")]}, f"{P0}.repositories: expected a list"),
    ({"policies": [policy(), policy()]}, "trust.policies: duplicate policy name"),
    ({"policies": [policy(identity="loose")]}, f"{P0}.identity: expected one of repository,"),
    ({"policies": [policy(remap={"prefix": "a.example"})]}, f"{P0}.remap: needs prefix and"),
    (
        {"policies": [policy(keyless=[{"root": "ci", "issuer": "x", "identity": "y"}])]},
        f"{P0}.keyless[0].root: no root named 'ci' in trust.roots (have: none)",
    ),
    ({"policies": [policy(keyring="x")]}, f"{P0}.keyring: unknown setting"),
    ({"policies": {"name": "p"}}, "trust.policies: expected a list of tables"),
    ({"default": {"mode": "require"}}, "trust.default.threshold: 1 signatures required"),
    ({"cache_size": 0}, "trust.cache_size: expected a whole number 1-10000000"),
    ({"refusal_ttl": "soon"}, "trust.refusal_ttl: expected a duration"),
    ({"keys": {"bad name": "/x"}}, "trust.keys.bad name: names are letters, digits"),
    ({"keyz": {}}, "trust.keyz: unknown setting"),
]


@pytest.mark.parametrize(("table", "expected"), BAD_POLICIES)
def test_a_bad_policy_is_named(
    files: dict[str, Path], table: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        trust(files, **table)
    assert str(raised.value).startswith(expected)


def test_a_keyless_signer_is_checked_against_its_root(files: dict[str, Path]) -> None:
    roots = {"ci": str(files["root.json"])}
    good = {"root": "ci", "issuer": "https://token.ci.example", "identity": "https://ci.example/a"}
    found = trust(files, roots=roots, policies=[policy(keyless=[good], threshold=2)])
    assert [(s.root, s.identity) for s in found.policies[0].keyless] == [("ci", good["identity"])]
    assert [r.name for r in found.policies[0].roots] == ["ci"]
    with pytest.raises(ConfigError, match=r"keyless\[0\].issuer: expected the OIDC issuer's URL"):
        trust(files, roots=roots, policies=[policy(keyless=[{**good, "issuer": "ci"}])])
    bad_root = r"trust.roots.bad: '.*bad-root.json' is not a sigstore trusted root: tlogs: Field"
    with pytest.raises(ConfigError, match=bad_root):
        trust(files, roots={"bad": str(files["bad-root.json"])})


# ---------------------------------------------------------------- policy choice


def test_the_first_matching_policy_wins_and_the_default_takes_the_rest(
    files: dict[str, Path],
) -> None:
    found = trust(
        files,
        policies=[
            policy(name="hub-official", upstream="docker.io", repositories=["library/*"]),
            policy(name="team", repositories=["team/**"], keys=["ed"]),
            policy(name="all-of-hub", upstream="docker.io", repositories=["**"], mode="warn"),
        ],
    )
    chosen = {
        ("docker.io", "library/alpine"): "hub-official",
        ("docker.io", "library/alpine/extra"): "all-of-hub",
        ("ghcr.io", "library/alpine"): "default",
        ("ghcr.io", "team/a/b/c"): "team",
        ("docker.io", "team/app"): "team",
        ("docker.io", "someone/app"): "all-of-hub",
        ("ghcr.io", "teams/app"): "default",
    }
    assert {image: found.policy_for(*image).name for image in chosen} == chosen


def test_the_fingerprint_changes_with_the_policy_and_its_keys_only(
    files: dict[str, Path], tmp_path: Path
) -> None:
    base = trust(files, policies=[policy()]).policies[0].fingerprint
    assert trust(files, policies=[policy(name="renamed")]).policies[0].fingerprint == base
    assert trust(files, policies=[policy(repositories=["x/*"])]).policies[0].fingerprint == base
    changed = [
        trust(files, policies=[policy(mode="warn")]),
        trust(files, policies=[policy(keys=["ed"])]),
        trust(files, policies=[policy(identity="exact")]),
        trust(files, policies=[policy(keys=["acme", "ed"], threshold=2)]),
    ]
    rotated = tmp_path / "rotated.pub"
    rotated.write_bytes(CosignKey.generate().public_pem())
    raw = {"keys": {"acme": str(rotated)}, "policies": [policy()]}
    changed.append(build_config({"trust": raw}, environ={}).trust)
    prints = [settings.policies[0].fingerprint for settings in changed]
    assert base not in prints
    assert len(set(prints)) == len(prints)
