"""The key the mirror signs its tokens with: loaded from a PEM file, made if absent.

Accepted keys and the JWT algorithm each gives: EC P-256 (``ES256``, what the
mirror makes), EC P-384 (``ES384``), Ed25519 (``EdDSA``) and RSA of 2048 bits
or more (``RS256``). Only the mirror reads its tokens, so the choice is free;
P-256 signs and verifies fast and keeps tokens short.

A made key is written with mode 0600, through a temporary file that is linked
into place only if the path is still free: two replicas starting together on
a shared volume both end up with the one key that won. A key file that others
than its owner may write is refused: whoever can replace it can mint tokens.
Replicas of one fleet must share the key (a token from one is checked by
another), so give them the same file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

SigningKeyTypes = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
VerifyingKeyTypes = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}


class KeyProblem(ValueError):
    """The signing key file cannot be used (or made)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key, the JWT algorithm it signs with, and its key id (``kid``)."""

    private_key: SigningKeyTypes
    algorithm: str
    key_id: str

    @property
    def public_key(self) -> VerifyingKeyTypes:
        """What tokens are verified with."""
        return self.private_key.public_key()


def _algorithm(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name in _EC_ALGORITHMS:
        return _EC_ALGORITHMS[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= 2048:
        return "RS256"
    raise KeyProblem(
        "unsupported key type: use EC P-256 or P-384, Ed25519, or RSA of 2048 bits or more"
    )


def _key_id(key: SigningKeyTypes) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b32encode(hashlib.sha256(der).digest()[:15]).decode().lower()


def signing_key_from_pem(pem: bytes) -> SigningKey:
    """Parse an unencrypted PEM private key into a :class:`SigningKey`."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise KeyProblem("the key is encrypted: the mirror needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyProblem("no PEM private key in it") from None
    algorithm = _algorithm(key)
    assert isinstance(key, SigningKeyTypes)  # _algorithm accepts no other type
    return SigningKey(key, algorithm, _key_id(key))


def check_key_permissions(path: Path) -> None:
    """Refuse a key file that group or others may write."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KeyProblem(
            f"{str(path)!r} may be written by others than its owner "
            f"(mode {stat.S_IMODE(mode):04o}): chmod 600 it"
        )


def read_signing_key(path: Path) -> SigningKey:
    """Load an existing key file, with its permission check."""
    try:
        check_key_permissions(path)
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyProblem(f"cannot read {str(path)!r}: {exc.strerror}") from None
    return signing_key_from_pem(pem)


def load_or_create_signing_key(path: Path) -> SigningKey:
    """The key at ``path``; a new EC P-256 key is written there first if there is none."""
    if path.exists():
        return read_signing_key(path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process made one meanwhile
            os.link(temporary, path)
    except OSError as exc:
        raise KeyProblem(f"cannot write a new key to {str(path)!r}: {exc.strerror}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return read_signing_key(path)


def check_key_path(path: Path) -> str:
    """What ``check-config`` says about the key file; :class:`KeyProblem` if unusable."""
    if path.exists():
        key = read_signing_key(path)
        return f"{key.algorithm} key {key.key_id} from {path}"
    parent = path.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise KeyProblem(
            f"{str(path)!r} does not exist and cannot be made: {str(parent)!r} is not a "
            f"writable directory"
        )
    return f"a new ES256 key will be made at {path}"
