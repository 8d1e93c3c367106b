"""Publishers' public keys, as cosign and sigstore write them, and signature checks with them.

Pure: :mod:`mirror.config_trust` reads the PEM files and hands their bytes to
:func:`parse_public_key`. Accepted, as ``cosign public-key`` and
``cosign generate-key-pair`` write them (PEM ``PUBLIC KEY``, PKIX):

- ECDSA on P-256, signatures DER-encoded over SHA-256 of the message;
- Ed25519, signatures over the message itself;
- RSA of at least 2048 bits, PKCS #1 v1.5 signatures over SHA-256 (what
  cosign's verifier for an RSA key checks).

Other curves, DSA, short RSA keys, certificates and private keys are refused
with an error that says what was given instead. The cryptography is the
``cryptography`` package's; nothing here computes a signature itself.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

__all__ = ["KeyFormatError", "PublicKey", "parse_public_key"]

MIN_RSA_BITS = 2048
_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
# PEM labels of private keys, including cosign's encrypted ones.
_PRIVATE_LABELS = ("PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")

VerifyingKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class KeyFormatError(ValueError):
    """The bytes are not a public key the mirror can verify with; the message says why."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A named, trusted public key.

    ``key_id`` is the hex SHA-256 of the key's DER ``SubjectPublicKeyInfo``
    (what sigstore bundles hint at, base64-encoded); ``algorithm`` is
    ``ecdsa-p256``, ``ed25519`` or ``rsa-<bits>``.
    """

    name: str
    algorithm: str
    key_id: str
    der: bytes = field(repr=False)
    key: VerifyingKey = field(repr=False, compare=False)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature over ``message``."""
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            else:
                self.key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verify_sha256(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` signs the message whose SHA-256 is ``digest``.

        Ed25519 signs messages, not digests: for such a key this is always False.
        """
        prehashed = Prehashed(hashes.SHA256())
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, digest, ec.ECDSA(prehashed))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, digest, padding.PKCS1v15(), prehashed)
            else:
                return False
        except InvalidSignature:
            return False
        return True


def parse_public_key(name: str, data: bytes) -> PublicKey:
    """A :class:`PublicKey` from PEM bytes; :class:`KeyFormatError` says what is wrong."""
    label = _pem_label(data)
    if label is None:
        raise KeyFormatError("not a PEM file (no '-----BEGIN ...-----' line)")
    if label.endswith(_PRIVATE_LABELS):
        raise KeyFormatError(
            f"holds a private key ({label}): give the public key "
            "(cosign public-key --key KEY writes it)"
        )
    if label == "CERTIFICATE":
        raise KeyFormatError(
            "holds a certificate, not a public key "
            "(openssl x509 -pubkey -noout -in CERT writes its key)"
        )
    if label != "PUBLIC KEY":
        raise KeyFormatError(f"holds {label!r}, not a 'PUBLIC KEY'")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"unreadable public key: {exc}") from None
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    algorithm, verifying = _supported(key)
    return PublicKey(name, algorithm, hashlib.sha256(der).hexdigest(), der, verifying)


def _pem_label(data: bytes) -> str | None:
    match = _PEM_LABEL.search(data)
    return match.group(1).decode() if match else None


def _supported(key: object) -> tuple[str, VerifyingKey]:
    """A supported key and its algorithm's name; :class:`KeyFormatError` for any other."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise KeyFormatError(f"ECDSA key on {key.curve.name}: only P-256 is supported")
        return "ecdsa-p256", key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFormatError(f"RSA key of {key.key_size} bits: at least 2048 are needed")
        return f"rsa-{key.key_size}", key
    kind = type(key).__name__.removeprefix("_").replace("PublicKey", "")
    raise KeyFormatError(f"a {kind} key: expected ECDSA P-256, Ed25519 or RSA")
