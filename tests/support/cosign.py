"""cosign's keys and classic signatures, made the way cosign makes them (for test fixtures).

Keys, as ``cosign generate-key-pair`` writes them:

- the public key: PEM ``PUBLIC KEY`` (PKIX);
- the private key: PEM ``ENCRYPTED SIGSTORE PRIVATE KEY`` around the JSON
  ``{"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": …},
  "cipher": {"name": "nacl/secretbox", "nonce": …}, "ciphertext": …}``, the
  secretbox sealing the PKCS #8 DER key under ``scrypt(password, salt)``.

Signatures, as cosign's signature specification describes them: the
simple-signing payload (:func:`payload`), signed with ECDSA P-256 over SHA-256
(DER; Ed25519 over the payload; RSA PKCS #1 v1.5 with SHA-256), base64 in the
annotation ``dev.cosignproject.cosign/signature`` of a layer of media type
``application/vnd.dev.cosign.simplesigning.v1+json`` in an OCI manifest
tagged ``sha256-<hex>.sig`` (:func:`signature_manifest`).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import nacl.secret
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from mirror.oci import OCI_MANIFEST
from tests.support.oci_content import OCI_CONFIG, Content, descriptor

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
ENCRYPTED_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
SCRYPT_PARAMS = {"N": 32768, "r": 8, "p": 1}

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class CosignKey:
    """A signing key pair."""

    private: PrivateKey = field(repr=False)

    @classmethod
    def generate(cls, kind: str = "ecdsa") -> CosignKey:
        """A fresh ``ecdsa`` (P-256), ``ed25519`` or ``rsa`` (2048-bit) key."""
        if kind == "ed25519":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if kind == "rsa":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def public_pem(self) -> bytes:
        """What ``cosign.pub`` holds."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, payload: bytes) -> bytes:
        """A signature over ``payload``, by cosign's convention for the key type."""
        if isinstance(self.private, ec.EllipticCurvePrivateKey):
            return self.private.sign(payload, ec.ECDSA(hashes.SHA256()))
        if isinstance(self.private, rsa.RSAPrivateKey):
            return self.private.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return self.private.sign(payload)

    def encrypted_pem(self, password: bytes) -> bytes:
        """What ``cosign.key`` holds: the PKCS #8 key sealed under the password."""
        der = self.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        salt = os.urandom(32)
        nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
        box = nacl.secret.SecretBox(_scrypt(password, salt))
        sealed = box.encrypt(der, nonce).ciphertext
        doc = {
            "kdf": {"name": "scrypt", "params": SCRYPT_PARAMS, "salt": _b64(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
            "ciphertext": _b64(sealed),
        }
        return _pem(ENCRYPTED_LABEL, json.dumps(doc).encode())

    @classmethod
    def from_encrypted_pem(cls, pem: bytes, password: bytes) -> CosignKey:
        """Open a ``cosign.key`` (``nacl.exceptions.CryptoError`` on a wrong password)."""
        doc = json.loads(_unpem(pem, ENCRYPTED_LABEL))
        kdf, cipher = doc["kdf"], doc["cipher"]
        assert kdf["name"] == "scrypt"
        assert cipher["name"] == "nacl/secretbox"
        key = _scrypt(password, base64.b64decode(kdf["salt"]), kdf["params"])
        box = nacl.secret.SecretBox(key)
        der = box.decrypt(base64.b64decode(doc["ciphertext"]), base64.b64decode(cipher["nonce"]))
        private = serialization.load_der_private_key(der, password=None)
        assert isinstance(private, PrivateKey)
        return cls(private)


def payload(docker_reference: str, digest: str, optional: dict[str, str] | None = None) -> bytes:
    """A simple-signing payload, serialised as cosign (Go's encoding/json) does."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": optional,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_manifest(layers: Sequence[tuple[bytes, str | None]]) -> Content:
    """A ``.sig`` manifest with one layer per (payload, base64 signature), and its blobs.

    The config is the one cosign writes: an image config whose rootfs lists
    the payloads' digests.
    """
    blobs = [data for data, _ in layers]
    config = {
        "architecture": "",
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [descriptor("", b)["digest"] for b in blobs]},
        "config": {},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    entries = []
    for data, signature in layers:
        entry = descriptor(SIMPLE_SIGNING, data)
        entry["annotations"] = {SIGNATURE_ANNOTATION: signature} if signature is not None else {}
        entries.append(entry)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config_bytes),
        "layers": entries,
    }
    body = json.dumps(manifest, separators=(",", ":")).encode()
    return Content(OCI_MANIFEST, body, [config_bytes, *blobs])


def sign_layer(key: CosignKey, data: bytes) -> tuple[bytes, str]:
    """A (payload, base64 signature) pair for :func:`signature_manifest`."""
    return data, base64.b64encode(key.sign(data)).decode()


def _scrypt(password: bytes, salt: bytes, params: dict[str, int] = SCRYPT_PARAMS) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["N"], r=params["r"], p=params["p"]).derive(
        password
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(label: str, data: bytes) -> bytes:
    body = base64.b64encode(data).decode()
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return (f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n").encode()


def _unpem(pem: bytes, label: str) -> bytes:
    text = pem.decode()
    start, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    assert start in text, f"not a {label}"
    return base64.b64decode("".join(text.split(start, 1)[1].split(end, 1)[0].split()))
