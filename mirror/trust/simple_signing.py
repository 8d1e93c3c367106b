"""cosign's classic signatures: the ``sha256-<hex>.sig`` tag and its simple-signing payloads.

The signature of ``repo@sha256:X`` is an OCI manifest tagged ``sha256-X.sig``
in the same repository. Each of its layers is one signature: the blob is the
payload::

    {"critical": {"identity": {"docker-reference": "registry/repo"},
                  "image": {"docker-manifest-digest": "sha256:X"},
                  "type": "cosign container image signature"},
     "optional": {...} | null}

and the layer's annotation ``dev.cosignproject.cosign/signature`` is the
base64 signature over the payload bytes (see :mod:`mirror.trust.keys` for
what each key type signs). A layer counts only when, in this order: its blob
matches its descriptor, a trusted key verifies the signature, the payload is
a cosign image signature naming this very digest, and its docker-reference
passes the policy's :class:`~mirror.trust.identity.IdentityRule`. Nothing in
the payload is read before its signature has verified.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mirror.trust.identity import IdentityRule
from mirror.trust.keys import PublicKey
from mirror.trust.source import Subject, json_object
from mirror.trust.verdict import Reason, SignatureCheck

__all__ = [
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING_MEDIA_TYPE",
    "SignatureLayer",
    "check_payload",
    "parse_signature_manifest",
    "signature_tag",
]

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
#: layers of one signature manifest that are looked at (cosign appends one per signing)
MAX_SIGNATURE_LAYERS = 64


def signature_tag(digest: str) -> str:
    """``sha256:abc…`` -> ``sha256-abc….sig``: where cosign keeps the signatures of an image."""
    return digest.replace(":", "-", 1) + ".sig"


@dataclass(frozen=True, slots=True)
class SignatureLayer:
    """One layer of a signature manifest: the payload's digest and the signature annotation."""

    digest: str
    signature: str | None


def parse_signature_manifest(body: bytes) -> list[SignatureLayer] | None:
    """The simple-signing layers of a ``.sig`` manifest; ``None`` if it is not one."""
    doc = json_object(body)
    layers = doc.get("layers") if doc is not None else None
    if not isinstance(layers, list):
        return None
    found = []
    for layer in layers[:MAX_SIGNATURE_LAYERS]:
        if not isinstance(layer, dict) or layer.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        digest = layer.get("digest")
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        if isinstance(digest, str):
            found.append(SignatureLayer(digest, signature if isinstance(signature, str) else None))
    return found


def check_payload(
    layer: SignatureLayer,
    payload: bytes,
    subject: Subject,
    keys: Sequence[PublicKey],
    identity: IdentityRule,
) -> SignatureCheck:
    """Check one signature whose payload blob already matched ``layer.digest``."""

    def result(reason: Reason, detail: str, signer: str = "") -> SignatureCheck:
        return SignatureCheck("cosign", layer.digest, reason, signer, detail)

    signature = _decode_signature(layer.signature)
    if signature is None:
        return result(Reason.SIGNATURE_INVALID, "no base64 signature annotation")
    signer = next((key for key in keys if key.verify(signature, payload)), None)
    if signer is None:
        return result(Reason.SIGNATURE_INVALID, "no trusted key verifies it")
    critical = _critical(payload)
    if critical is None or critical.get("type") != COSIGN_SIGNATURE_TYPE:
        return result(Reason.UNSUPPORTED, "not a cosign container image signature", signer.name)
    image = critical.get("image")
    named = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if named != subject.digest:
        return result(Reason.DIGEST_MISMATCH, f"payload names {str(named)[:80]}", signer.name)
    reference = _docker_reference(critical)
    if not identity.accepts(reference, subject.name, subject.reference):
        return result(Reason.IDENTITY_MISMATCH, f"payload names {reference!r}", signer.name)
    return result(Reason.VERIFIED, f"key {signer.name}", signer.name)


def _decode_signature(value: str | None) -> bytes | None:
    if not value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _critical(payload: bytes) -> dict[str, Any] | None:
    doc = json_object(payload)
    critical = doc.get("critical") if doc is not None else None
    return critical if isinstance(critical, dict) else None


def _docker_reference(critical: dict[str, Any]) -> str | None:
    identity = critical.get("identity")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    return reference if isinstance(reference, str) else None
