"""``[tls]``, ``[auth]`` and ``[rate_limit]``: checked at load, every error names its field."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mirror.config import ConfigError, build_config
from mirror.config_security import AccessRule
from tests.support.htpasswd import write_htpasswd
from tests.support.pki import PrivateCA, cert_pem, key_pem

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good and bad certificate files, made once for the module."""
    root = tmp_path_factory.mktemp("pki")
    ca = PrivateCA.create(root / "ca")
    good = ca.issue_server("127.0.0.1", "localhost")
    expired = ca.issue_server(
        "127.0.0.1", not_before=NOW - datetime.timedelta(days=60),
        not_after=NOW - datetime.timedelta(days=1),
    )  # fmt: skip
    future = ca.issue_server("127.0.0.1", not_before=NOW + datetime.timedelta(days=2))
    client = ca.issue_client("alice")
    files = {
        "cert": cert_pem(good.cert, *good.chain),
        "key": key_pem(good.key),
        "reversed": cert_pem(*good.chain, good.cert),
        "expired": cert_pem(expired.cert, *expired.chain),
        "future": cert_pem(future.cert, *future.chain),
        "other_key": key_pem(expired.key),
        "encrypted_key": key_pem(good.key, b"secret"),
        "client_cert": cert_pem(client.cert, *client.chain),
        "client_key": key_pem(client.key),
        "not_pem": b"hello\n",
        "ca": ca.root_path.read_bytes(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def tls(pki: dict[str, Path], **changes: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"cert": str(pki["cert"]), "key": str(pki["key"])}
    table.update({k: str(pki[v]) if v in pki else v for k, v in changes.items()})
    return {"tls": {k: v for k, v in table.items() if v is not None}}


def test_a_good_tls_section(pki: dict[str, Path]) -> None:
    config = build_config(tls(pki, client_ca="ca")).security.tls
    assert config is not None
    assert config.certificate is not None
    assert config.certificate.names == ("localhost", "127.0.0.1")
    assert config.certificate.chain_length == 2
    assert config.client_ca == pki["ca"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": None}, "tls.key: required"),
        ({"cert": "/nonexistent/tls.crt"}, "tls.cert: cannot read '/nonexistent/tls.crt'"),
        ({"cert": "not_pem"}, "tls.cert: no PEM certificate in it"),
        (
            {"cert": "expired", "key": "other_key"},
            "tls.cert: certificate 1 of 2 (CN=127.0.0.1) expired on",
        ),
        (
            {"cert": "future", "key": "other_key"},
            "tls.cert: certificate 1 of 2 (CN=127.0.0.1) is not valid before",
        ),
        (
            {"cert": "reversed"},
            "tls.cert: certificate 2 (CN=127.0.0.1) did not issue certificate 1",
        ),
        ({"key": "other_key"}, "tls.key: the key does not belong to certificate 1 (CN=127.0.0.1)"),
        ({"key": "encrypted_key"}, "tls.key: the key is encrypted"),
        ({"key": "not_pem"}, "tls.key: no PEM private key in it"),
        (
            {"cert": "client_cert", "key": "client_key"},
            "tls.cert: certificate 1 (CN=alice) is not for TLS servers",
        ),
        ({"client_ca": "cert"}, "tls.client_ca: certificate 1 (CN=127.0.0.1) is not a CA"),
        ({"client_ca": "/nonexistent/ca.crt"}, "tls.client_ca: cannot read"),
        ({"reload_interval": "0s"}, "tls.reload_interval: must be at least 1s"),
        ({"ciphers": "ALL"}, "tls.ciphers: unknown setting"),
    ],
)
def test_tls_errors_name_the_file_and_the_problem(
    pki: dict[str, Path], changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(tls(pki, **changes))
    assert str(caught.value).startswith(message), str(caught.value)


def test_rules_groups_and_defaults(tmp_path: Path) -> None:
    raw = {
        "auth": {
            "htpasswd": str(write_htpasswd(tmp_path / "users", ("alice", "pw"))),
            "default": "deny",
            "groups": {"team-x": ["alice", "bob"]},
            "rules": [
                {"who": ["everyone"], "upstream": "docker.io", "repository": "library/*"},
                {"who": ["group:team-x", "user:carol"], "upstream": "ghcr.io",
                 "repository": "org/*", "actions": ["pull"]},
                {"who": "user:ops", "actions": ["admin", "pull"]},
                {"who": ["authenticated"], "repository": "secret/*", "effect": "deny"},
            ],
        }
    }  # fmt: skip
    auth = build_config(raw).security.auth
    assert auth is not None
    assert auth.default == "deny"
    assert auth.groups == {"team-x": frozenset({"alice", "bob"})}
    assert auth.rules == (
        AccessRule(anonymous=True, authenticated=True, upstream="docker.io",
                   repository="library/*"),
        AccessRule(users=frozenset({"carol"}), groups=frozenset({"team-x"}), upstream="ghcr.io",
                   repository="org/*"),
        AccessRule(users=frozenset({"ops"}), actions=frozenset({"admin", "pull"})),
        AccessRule(authenticated=True, repository="secret/*", allow=False),
    )  # fmt: skip
    assert auth.token is None


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (
            {"default": "allow"},
            "auth.default: expected one of anonymous-pull, authenticated-pull, deny",
        ),
        (
            {"htpasswd": "/nonexistent/htpasswd"},
            "auth.htpasswd: cannot read '/nonexistent/htpasswd'",
        ),
        ({"rules": [{"repository": "a/*"}]}, "auth.rules[0].who: required"),
        (
            {"rules": [{"who": ["group:nobody"]}]},
            "auth.rules[0].who: group 'nobody' is not defined",
        ),
        (
            {"rules": [{"who": ["admins"]}]},
            "auth.rules[0].who: 'admins' is not anonymous, authenticated",
        ),
        (
            {"rules": [{"who": ["anonymous"], "actions": ["push"]}]},
            "auth.rules[0].actions: expected a list of pull, admin",
        ),
        (
            {"rules": [{"who": ["user:ops"], "actions": ["admin"], "upstream": "docker.io"}]},
            "auth.rules[0].actions: admin is for the whole mirror",
        ),
        (
            {"rules": [{"who": ["anonymous"], "effect": "maybe"}]},
            "auth.rules[0].effect: expected 'allow' or 'deny'",
        ),
        (
            {"rules": [{"who": ["anonymous"], "repository": ""}]},
            "auth.rules[0].repository: expected a glob",
        ),
        ({"rules": [{"who": ["anonymous"], "tag": "x"}]}, "auth.rules[0].tag: unknown setting"),
        ({"groups": {"team x": ["a"]}}, "auth.groups.team x: a group name is"),
        ({"groups": {"team": "alice"}}, "auth.groups.team: expected a list of names"),
        ({"token": {}}, "auth.token.key: required"),
        (
            {"token": {"key": "/nonexistent/dir/token.key"}},
            "auth.token.key: '/nonexistent/dir/token.key' does not exist and cannot be made",
        ),
        (
            {"token": {"key": "KEY", "expires_in": "1s"}},
            "auth.token.expires_in: expected 10s to 1h",
        ),
        (
            {"token": {"key": "KEY", "refresh_expires_in": "1m", "expires_in": "5m"}},
            "auth.token.refresh_expires_in: expected 0 (none) or expires_in to 90d",
        ),
        (
            {"token": {"key": "KEY", "realm": "https://u:p@mirror/auth/token"}},
            "auth.token.realm: expected an http(s) URL, got 'https://***@mirror",
        ),
        ({"token": {"key": "KEY", "service": 'a"b'}}, "auth.token.service: expected letters"),
        ({"mode": "token"}, "auth.mode: unknown setting"),
        ({"unknown_users": "allow"}, "auth.unknown_users: expected 'refuse' or 'anonymous'"),
    ],
)
def test_auth_errors_name_the_field(tmp_path: Path, auth: dict[str, Any], message: str) -> None:
    if "token" in auth and auth["token"].get("key") == "KEY":
        auth["token"]["key"] = str(tmp_path / "token.key")
    with pytest.raises(ConfigError) as caught:
        build_config({"auth": auth})
    assert str(caught.value).startswith(message), str(caught.value)
    assert "u:p" not in str(caught.value)


@pytest.mark.parametrize(
    ("flag", "kind"),
    [
        ("-m", "MD5 (htpasswd -m)"),
        ("-s", "SHA-1 (htpasswd -s)"),
        ("-p", "crypt or plain text (htpasswd -d or -p)"),
        ("-2", "SHA-256 crypt (htpasswd -2)"),
        ("-5", "SHA-512 crypt (htpasswd -5)"),
    ],
)
def test_htpasswd_entries_other_than_bcrypt_are_refused(
    tmp_path: Path, flag: str, kind: str
) -> None:
    path = write_htpasswd(tmp_path / "users", ("alice", "first"))
    extra = subprocess.run(["htpasswd", "-nb", flag, "bob", "hunter2"], capture_output=True,
                           text=True, check=False)  # fmt: skip
    if extra.returncode != 0:
        pytest.skip(f"this htpasswd has no {flag}: {extra.stderr.strip()}")
    path.write_text(path.read_text() + extra.stdout.strip() + "\n")
    with pytest.raises(ConfigError) as caught:
        build_config({"auth": {"htpasswd": str(path)}})
    assert str(caught.value) == (
        f"auth.htpasswd: line 2 (user 'bob'): only bcrypt entries are accepted (htpasswd -B); "
        f"this one is {kind}"
    )
    assert extra.stdout.split(":", 1)[1].strip() not in str(caught.value), "never the hash"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"burst": 5}, "rate_limit.rate: expected requests per second above 0, got None"),
        ({"rate": 0}, "rate_limit.rate: expected requests per second above 0"),
        ({"rate": "fast"}, "rate_limit.rate: expected requests per second above 0"),
        ({"rate": 5, "burst": 0}, "rate_limit.burst: expected a whole number 1-1000000"),
        ({"rate": 5, "max_clients": 5}, "rate_limit.max_clients: expected a whole number"),
        ({"rate": 5, "per": "ip"}, "rate_limit.per: unknown setting"),
    ],
)
def test_rate_limit_errors_name_the_field(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"rate_limit": table})
    assert str(caught.value).startswith(message), str(caught.value)


def test_rate_limit_burst_defaults_to_one_second_of_rate() -> None:
    limit = build_config({"rate_limit": {"rate": 2.5}}).security.rate_limit
    assert limit is not None
    assert (limit.rate, limit.burst, limit.max_clients) == (2.5, 3, 10000)


def run_mirror(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mirror", *args], capture_output=True, text=True,
        cwd=PROJECT_ROOT, timeout=60, check=False,
    )  # fmt: skip


def test_check_config_describes_the_front_door_and_makes_no_key(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    users = write_htpasswd(tmp_path / "users", ("alice", "pw"), ("bob", "pw"))
    (tmp_path / "mirror.toml").write_text(
        f'listen = "127.0.0.1:5443"\n[storage]\npath = "{tmp_path / "cache"}"\n'
        f'[tls]\ncert = "{pki["cert"]}"\nkey = "{pki["key"]}"\nclient_ca = "{pki["ca"]}"\n'
        f'[auth]\nhtpasswd = "{users}"\ndefault = "deny"\n'
        '[[auth.rules]]\nwho = ["anonymous"]\nrepository = "library/*"\n'
        f'[auth.token]\nkey = "{tmp_path / "token.key"}"\n'
        'realm = "https://mirror.example:5443/auth/token"\n'
        "[rate_limit]\nrate = 20\nburst = 100\n"
    )
    done = run_mirror("check-config", "--config", str(tmp_path / "mirror.toml"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  listening on https://127.0.0.1:5443" in lines
    assert any(
        line.startswith("  tls: CN=127.0.0.1, for localhost, 127.0.0.1; expires ")
        and line.endswith("; chain of 2") for line in lines
    ), lines  # fmt: skip
    assert f"  tls: clients must show a certificate issued by {pki['ca']}" in lines
    assert f"  auth: 2 users from {users}; 1 rule, then default deny" in lines
    assert (
        "  auth: token auth, service 'registry-mirror', realm https://mirror.example:5443/auth/"
        "token, tokens valid 300s, refresh tokens 604800s"
    ) in lines
    assert f"  auth: signing key: a new ES256 key will be made at {tmp_path / 'token.key'}" in lines
    assert "  rate limit: 20 requests/s, bursts of 100, per user (anonymous callers per " \
           "address), 10000 clients remembered" in lines  # fmt: skip
    assert not (tmp_path / "token.key").exists(), "check-config changes nothing"


def test_check_config_fails_with_the_field_named(tmp_path: Path, pki: dict[str, Path]) -> None:
    (tmp_path / "mirror.toml").write_text(
        f'[tls]\ncert = "{pki["cert"]}"\nkey = "{pki["other_key"]}"\n'
    )
    done = run_mirror("check-config", "--config", str(tmp_path / "mirror.toml"))
    assert done.returncode == 2
    assert done.stderr.startswith(
        "registry-mirror: configuration error: tls.key: the key does not belong to certificate 1"
    ), done.stderr
