"""Sigstore bundles (cosign's newer format) attached to an image as referrers.

A bundle referrer is an OCI manifest whose ``artifactType`` (or config media
type) is ``application/vnd.dev.sigstore.bundle.v0.3+json``, whose ``subject``
is the image and whose one layer is the bundle JSON. The bundle holds either

- a ``messageSignature``: a signature over the SHA-256 of the signed bytes;
  for an image, over its manifest, so the signed digest *is* the image
  digest; or
- a ``dsseEnvelope`` around an in-toto statement whose ``subject`` lists the
  image digest (``cosign sign --new-bundle-format``, attestations);

and is verified with a configured public key (``publicKey`` material, keyed;
here) or a Fulcio certificate (keyless; :mod:`mirror.trust.keyless`). A keyed
bundle is trusted on its key alone, as a ``.sig`` signature is: its
transparency-log entry, if any, is not checked.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mirror.trust.keys import PublicKey
from mirror.trust.source import json_object
from mirror.trust.verdict import Reason, SignatureCheck

__all__ = [
    "BUNDLE_MEDIA_TYPES",
    "BUNDLE_V03",
    "BundleFormatError",
    "ParsedBundle",
    "bundle_layer",
    "check_keyed",
    "is_bundle_referrer",
    "parse_bundle",
    "statement_names",
]

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_MEDIA_TYPES = frozenset(
    {
        BUNDLE_V03,
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
        "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "application/vnd.dev.sigstore.bundle+json;version=0.1",
    }
)
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
_MAX_DSSE_SIGNATURES = 8


class BundleFormatError(ValueError):
    """Not a sigstore bundle this mirror understands."""


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    """The parts of a bundle that verification needs.

    For a message signature ``signed_digest`` is the SHA-256 it claims to sign
    (``None`` if it does not say); for a DSSE envelope ``payload_type`` and
    ``payload`` are set and ``signatures`` may hold several.
    """

    hint: str | None
    has_certificate: bool
    signatures: tuple[bytes, ...]
    signed_digest: bytes | None = None
    payload_type: str | None = None
    payload: bytes | None = None

    @property
    def is_dsse(self) -> bool:
        """Whether the signatures are over a DSSE envelope."""
        return self.payload is not None

    def signed_message(self) -> bytes:
        """The bytes a DSSE signature is over: the envelope's pre-authentication encoding."""
        assert self.payload is not None
        kind = str(self.payload_type).encode()
        return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(self.payload), self.payload)


def is_bundle_referrer(descriptor: dict[str, Any]) -> bool:
    """Whether a referrers-index entry announces a sigstore bundle."""
    return descriptor.get("artifactType") in BUNDLE_MEDIA_TYPES


def parse_bundle(data: bytes) -> ParsedBundle:
    """Parse bundle JSON; :class:`BundleFormatError` when it is not one."""
    doc = json_object(data)
    if doc is None or doc.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        raise BundleFormatError("not a sigstore bundle of a known version")
    material = _table(doc, "verificationMaterial")
    key = material.get("publicKey")
    hint = key.get("hint") if isinstance(key, dict) else None
    has_certificate = "certificate" in material or "x509CertificateChain" in material
    if isinstance(doc.get("messageSignature"), dict):
        return _message_signature(doc["messageSignature"], hint, has_certificate)
    if isinstance(doc.get("dsseEnvelope"), dict):
        return _dsse(doc["dsseEnvelope"], hint, has_certificate)
    raise BundleFormatError("neither a message signature nor a DSSE envelope")


def _message_signature(raw: dict[str, Any], hint: Any, certificate: bool) -> ParsedBundle:
    signature = _base64(raw.get("signature"), "messageSignature.signature")
    digest = raw.get("messageDigest")
    signed = None
    if isinstance(digest, dict):
        if digest.get("algorithm") != "SHA2_256":
            raise BundleFormatError(f"message digest algorithm {digest.get('algorithm')!r}")
        signed = _base64(digest.get("digest"), "messageSignature.messageDigest.digest")
    return ParsedBundle(_text(hint), certificate, (signature,), signed_digest=signed)


def _dsse(raw: dict[str, Any], hint: Any, certificate: bool) -> ParsedBundle:
    payload = _base64(raw.get("payload"), "dsseEnvelope.payload")
    payload_type = raw.get("payloadType")
    entries = raw.get("signatures")
    if not isinstance(payload_type, str) or not isinstance(entries, list) or not entries:
        raise BundleFormatError("DSSE envelope without payloadType or signatures")
    signatures = tuple(
        _base64(entry.get("sig") if isinstance(entry, dict) else None, "dsseEnvelope.signatures")
        for entry in entries[:_MAX_DSSE_SIGNATURES]
    )
    return ParsedBundle(
        _text(hint), certificate, signatures, payload_type=payload_type, payload=payload
    )


def statement_names(payload_type: str | None, payload: bytes | None, digest_hex: str) -> bool:
    """Whether an in-toto statement lists ``sha256:<digest_hex>`` among its subjects."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE or payload is None:
        return False
    statement = json_object(payload)
    subjects = statement.get("subject") if statement is not None else None
    if not isinstance(subjects, list):
        return False
    return any(
        isinstance(entry, dict)
        and isinstance(entry.get("digest"), dict)
        and entry["digest"].get("sha256") == digest_hex
        for entry in subjects
    )


def check_keyed(
    bundle: ParsedBundle, source: str, digest_hex: str, keys: Sequence[PublicKey]
) -> SignatureCheck:
    """Check a bundle against the configured keys (its own ``publicKey`` hint is not trusted)."""
    subject = bytes.fromhex(digest_hex)
    signed = subject if bundle.signed_digest is None else bundle.signed_digest
    for key in keys:
        if _verifies(bundle, key, signed):
            if bundle.is_dsse:
                ok = statement_names(bundle.payload_type, bundle.payload, digest_hex)
            else:
                ok = signed == subject
            reason = Reason.VERIFIED if ok else Reason.DIGEST_MISMATCH
            detail = f"key {key.name}" if ok else "signed for another digest"
            return SignatureCheck("bundle", source, reason, key.name, detail)
    if bundle.hint and not any(_hint_names(bundle.hint, key) for key in keys):
        return SignatureCheck("bundle", source, Reason.KEY_NOT_TRUSTED, "", "hint names no key")
    return SignatureCheck("bundle", source, Reason.SIGNATURE_INVALID, "", "no trusted key verifies")


def _verifies(bundle: ParsedBundle, key: PublicKey, signed_digest: bytes) -> bool:
    if bundle.is_dsse:
        message = bundle.signed_message()
        return any(key.verify(signature, message) for signature in bundle.signatures)
    return key.verify_sha256(bundle.signatures[0], signed_digest)


def _hint_names(hint: str, key: PublicKey) -> bool:
    """A hint is the key's SHA-256 fingerprint, hex or base64 as tools write it."""
    fingerprint = bytes.fromhex(key.key_id)
    return hint in (key.key_id, base64.b64encode(fingerprint).decode(), key.name)


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name)
    if not isinstance(value, dict):
        raise BundleFormatError(f"{name} missing")
    return value


def _base64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise BundleFormatError(f"{where} missing")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BundleFormatError(f"{where} is not base64") from None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def bundle_layer(manifest: bytes, subject_digest: str) -> tuple[str | None, str]:
    """The digest of a bundle referrer's bundle blob, or ``None`` and why not.

    The referrer must name ``subject_digest`` as its subject: a bundle listed
    under one image but made for another is not that image's signature.
    """
    doc = json_object(manifest)
    if doc is None:
        return None, "referrer is not a JSON manifest"
    subject = doc.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != subject_digest:
        return None, "referrer's subject is another image"
    layers = doc.get("layers")
    first = layers[0] if isinstance(layers, list) and layers else None
    if not isinstance(first, dict) or first.get("mediaType") not in BUNDLE_MEDIA_TYPES:
        return None, "referrer has no bundle layer"
    digest = first.get("digest")
    return (digest, "") if isinstance(digest, str) else (None, "bundle layer has no digest")
