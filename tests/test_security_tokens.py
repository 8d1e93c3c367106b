"""The mirror's JWTs: what they carry, what verification refuses, and the signing key file."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mirror.config_security import TokenConfig
from mirror.security.keys import (
    KeyProblem,
    SigningKey,
    load_or_create_signing_key,
    read_signing_key,
    signing_key_from_pem,
)
from mirror.security.tokens import TokenAuthority, TokenInvalid, parse_scopes
from tests.support.clock import ManualClock
from tests.support.pki import key_pem

GRANT = "docker.io/library/alpine"


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create_signing_key(tmp_path / "token.key")


@pytest.fixture
def config(tmp_path: Path) -> TokenConfig:
    return TokenConfig(key=tmp_path / "token.key", service="mirror.test", issuer="mirror-issuer")


def authority(
    key: SigningKey, config: TokenConfig, clock: ManualClock | None = None
) -> TokenAuthority:
    return TokenAuthority(key, config, clock or ManualClock())


def test_an_access_token_carries_what_docker_hub_tokens_carry(
    key: SigningKey, config: TokenConfig
) -> None:
    clock = ManualClock()
    issued = authority(key, config, clock).issue("alice", [GRANT, "ghcr.io/org/app"])
    header = jwt.get_unverified_header(issued.token)
    assert header == {"alg": "ES256", "kid": key.key_id, "typ": "JWT"}
    claims = jwt.decode(issued.token, options={"verify_signature": False})
    assert claims.pop("jti")
    assert claims == {
        "iss": "mirror-issuer", "sub": "alice", "aud": "mirror.test",
        "exp": int(clock.now) + 300, "nbf": int(clock.now), "iat": int(clock.now),
        "access": [
            {"type": "repository", "name": GRANT, "actions": ["pull"]},
            {"type": "repository", "name": "ghcr.io/org/app", "actions": ["pull"]},
        ],
    }  # fmt: skip
    body = issued.body("refresh")
    assert body["token"] == body["access_token"] == issued.token
    assert body["expires_in"] == 300
    assert body["issued_at"] == "2023-11-14T22:13:20Z"
    assert body["refresh_token"] == "refresh"


def test_verification_gives_subject_and_grants(key: SigningKey, config: TokenConfig) -> None:
    tokens = authority(key, config)
    verified = tokens.verify(tokens.issue("", [GRANT]).token)
    assert (verified.subject, verified.pulls) == ("", frozenset({GRANT}))


def test_expired_and_not_yet_valid_tokens_are_refused(key: SigningKey, config: TokenConfig) -> None:
    clock = ManualClock()
    tokens = authority(key, config, clock)
    token = tokens.issue("alice", [GRANT]).token
    assert tokens.verify(token).subject == "alice"  # now remembered as verified
    clock.now += 300 + 10 - 1
    assert tokens.verify(token).subject == "alice", "within the 10 s leeway"
    clock.now += 2
    with pytest.raises(TokenInvalid) as caught:
        tokens.verify(token)
    assert caught.value.reason == "expired_token"
    clock.now -= 1000  # a token from the future (a clock far behind the issuer's)
    with pytest.raises(TokenInvalid) as caught:
        tokens.verify(token)
    assert caught.value.reason == "invalid_token"
    assert str(caught.value) == "token not valid yet"


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(ManualClock().now)
    claims = {"iss": "mirror-issuer", "sub": "alice", "aud": "mirror.test", "exp": now + 300,
              "nbf": now, "iat": now, "jti": "x",
              "access": [{"type": "repository", "name": GRANT, "actions": ["pull"]}]}  # fmt: skip
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _unsigned(claims: dict[str, Any], kid: str) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(claims)}."


@pytest.mark.parametrize(
    "forge",
    [
        "another key",
        "alg none",
        "HS256 with the public key as secret",
        "wrong audience",
        "wrong issuer",
        "unknown kid",
        "no jti",
        "exp not a number",
        "garbage",
        "too long",
        "a refresh token",
    ],
)
def test_forged_and_foreign_tokens_are_refused(
    key: SigningKey, config: TokenConfig, forge: str
) -> None:
    tokens = authority(key, config)
    kid = {"kid": key.key_id}
    other = ec.generate_private_key(ec.SECP256R1())
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    makers: dict[str, Callable[[], str]] = {
        "another key": lambda: jwt.encode(_claims(), other, "ES256", headers=kid),
        "alg none": lambda: _unsigned(_claims(), key.key_id),
        "HS256 with the public key as secret": lambda: _hmac(public_pem, key.key_id),
        "wrong audience": lambda: _sign(key, _claims(aud="registry.other")),
        "wrong issuer": lambda: _sign(key, _claims(iss="someone-else")),
        "unknown kid": lambda: jwt.encode(_claims(), key.private_key, "ES256",
                                          headers={"kid": "other"}),
        "no jti": lambda: _sign(key, _claims(jti=None)),
        "exp not a number": lambda: _sign(key, _claims(exp="tomorrow")),
        "garbage": lambda: "not.a.jwt",
        "too long": lambda: _sign(key, _claims(pad="x" * 9000)),
        "a refresh token": lambda: tokens.issue_refresh("alice", "fingerprint"),
    }  # fmt: skip
    with pytest.raises(TokenInvalid) as caught:
        tokens.verify(makers[forge]())
    assert caught.value.reason == "invalid_token"


def _sign(key: SigningKey, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, key.private_key, key.algorithm, headers={"kid": key.key_id})


def _hmac(secret: bytes, kid: str) -> str:
    # PyJWT refuses to sign HS256 with a PEM key itself; build the token by hand.
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(_claims())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def test_refresh_tokens_name_the_user_and_the_entry(key: SigningKey, config: TokenConfig) -> None:
    tokens = authority(key, config)
    refresh = tokens.issue_refresh("alice", "0123abcd")
    assert tokens.verify_refresh(refresh) == ("alice", "0123abcd")
    assert jwt.decode(refresh, options={"verify_signature": False})["aud"] == "refresh:mirror.test"
    with pytest.raises(TokenInvalid):
        tokens.verify_refresh(tokens.issue("alice", [GRANT]).token)


def test_scopes_as_clients_send_them() -> None:
    scopes = parse_scopes(
        ["repository:library/alpine:pull", "repository:127.0.0.1:5100/org/app:pull,push "
         "registry:catalog:*", "nonsense", "repository::pull"]
    )  # fmt: skip
    assert [(s.type, s.name, s.actions) for s in scopes] == [
        ("repository", "library/alpine", ("pull",)),
        ("repository", "127.0.0.1:5100/org/app", ("pull", "push")),
        ("registry", "catalog", ("*",)),
    ]
    assert len(parse_scopes(["repository:a:pull"] * 40)) == 16


def test_a_new_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    first = load_or_create_signing_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert first.algorithm == "ES256"
    again = load_or_create_signing_key(path)
    assert again.key_id == first.key_id, "the persisted key is reused"
    assert os.listdir(tmp_path) == ["token.key"], "no temporary file left"


def test_a_key_file_others_may_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    load_or_create_signing_key(path)
    path.chmod(0o664)
    with pytest.raises(KeyProblem, match=r"may be written by others than its owner \(mode 0664\)"):
        read_signing_key(path)
    path.chmod(0o644)
    assert read_signing_key(path).algorithm == "ES256", "readable by others is the operator's call"


@pytest.mark.parametrize(
    ("make", "algorithm"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
    ],
)
def test_other_key_types_sign_and_verify(config: TokenConfig, make: Any, algorithm: str) -> None:
    key = signing_key_from_pem(key_pem(make()))
    assert key.algorithm == algorithm
    tokens = authority(key, config)
    assert tokens.verify(tokens.issue("alice", [GRANT]).token).pulls == {GRANT}


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (key_pem(ec.generate_private_key(ec.SECP256R1()), b"pw"), "the key is encrypted"),
        (b"not a key", "no PEM private key in it"),
        (key_pem(ec.generate_private_key(ec.SECP521R1())), "unsupported key type"),
    ],
)
def test_unusable_keys(pem: bytes, message: str) -> None:
    with pytest.raises(KeyProblem, match=message):
        signing_key_from_pem(pem)
