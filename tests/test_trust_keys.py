"""Public keys as cosign writes them, what is refused instead, cosign's encrypted private key."""

from __future__ import annotations

import base64
import hashlib
import json

import nacl.exceptions
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa, x25519

from mirror.trust.keys import KeyFormatError, parse_public_key
from tests.support.cosign import ENCRYPTED_LABEL, CosignKey
from tests.support.sigstore_bundles import self_signed_ca


def pem_of(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("kind", "algorithm"), [("ecdsa", "ecdsa-p256"), ("ed25519", "ed25519"), ("rsa", "rsa-2048")]
)
def test_cosign_public_keys_load_and_verify(kind: str, algorithm: str) -> None:
    key = CosignKey.generate(kind)
    public = parse_public_key("k", key.public_pem())
    der = base64.b64decode(b"".join(key.public_pem().splitlines()[1:-1]))
    assert (public.algorithm, public.key_id) == (algorithm, hashlib.sha256(der).hexdigest())
    assert public.verify(key.sign(b"payload"), b"payload")
    assert not public.verify(key.sign(b"payload"), b"payloaD")
    assert not public.verify(b"\x30\x00", b"payload")


def test_a_digest_signature_verifies_for_ecdsa_and_rsa_only() -> None:
    digest = hashlib.sha256(b"manifest").digest()
    for kind in ("ecdsa", "rsa"):
        key = CosignKey.generate(kind)
        assert parse_public_key(kind, key.public_pem()).verify_sha256(key.sign(b"manifest"), digest)
    ed = CosignKey.generate("ed25519")
    assert not parse_public_key("ed", ed.public_pem()).verify_sha256(ed.sign(b"manifest"), digest)


def self_signed_certificate() -> bytes:
    return self_signed_ca().public_bytes(serialization.Encoding.PEM)


def private_pkcs8() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_sec1() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "not a PEM file"),
        (b"ssh-ed25519 AAAAC3Nza... me@host\n", "not a PEM file"),
        (b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n", "unreadable"),
        (CosignKey.generate().encrypted_pem(b"pw"), f"holds a private key ({ENCRYPTED_LABEL})"),
        (private_pkcs8(), "holds a private key (PRIVATE KEY)"),
        (private_sec1(), "holds a private key (EC PRIVATE KEY)"),
        (self_signed_certificate(), "holds a certificate, not a public key"),
        (pem_of(ec.generate_private_key(ec.SECP384R1()).public_key()), "secp384r1: only P-256"),
        (pem_of(rsa.generate_private_key(65537, 1024).public_key()), "RSA key of 1024 bits"),
        (pem_of(dsa.generate_private_key(2048).public_key()), "a DSA key: expected ECDSA P-256"),
        (pem_of(x25519.X25519PrivateKey.generate().public_key()), "a X25519 key: expected"),
    ],
)
def test_what_is_not_a_usable_public_key_is_named(data: bytes, expected: str) -> None:
    with pytest.raises(KeyFormatError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_public_key("k", data)


def test_cosign_encrypted_private_key_has_cosigns_format_and_opens_with_the_password() -> None:
    key = CosignKey.generate()
    pem = key.encrypted_pem(b"correct horse")
    lines = pem.decode().splitlines()
    assert lines[0] == f"-----BEGIN {ENCRYPTED_LABEL}-----"
    assert lines[-1] == f"-----END {ENCRYPTED_LABEL}-----"
    doc = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert doc["kdf"]["name"] == "scrypt"
    assert doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert len(base64.b64decode(doc["kdf"]["salt"])) == 32
    assert doc["cipher"]["name"] == "nacl/secretbox"
    assert len(base64.b64decode(doc["cipher"]["nonce"])) == 24
    opened = CosignKey.from_encrypted_pem(pem, b"correct horse")
    assert opened.public_pem() == key.public_pem()
    with pytest.raises(nacl.exceptions.CryptoError):
        CosignKey.from_encrypted_pem(pem, b"wrong")
