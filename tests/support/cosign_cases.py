"""cosign-signed images, valid and broken in every way the verifier must notice.

Each :class:`SignedCase` is an image (its own, so each has its own digest)
and the ``sha256-<hex>.sig`` manifest beside it, with the reason the verifier
must give. Signatures name the image as ``registry.example/<repository>``
(pass ``Subject(REGISTRY, repository, …)``), whatever registry holds them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass

from mirror.trust import Reason
from tests.support.cosign import CosignKey, payload, sign_layer, signature_manifest
from tests.support.oci_content import Content, sha256, small_image

REGISTRY = "registry.example"
TAG = "1.0"


@dataclass(frozen=True)
class SignedCase:
    """An image, its signature manifest (``None``: unsigned) and the expected reason.

    ``missing_blob`` must not be in the registry (push, then delete it);
    ``altered_blob`` must be served with other bytes than its digest says.
    """

    name: str
    image: Content
    signature: Content | None
    expected: Reason
    missing_blob: str | None = None
    altered_blob: str | None = None

    @property
    def signature_tag(self) -> str:
        """cosign's tag for the image's signatures."""
        return self.image.digest.replace(":", "-") + ".sig"


def cosign_cases(trusted: CosignKey, other: CosignKey, repository: str) -> list[SignedCase]:
    """One case per outcome, signed for ``REGISTRY/repository``."""
    name = f"{REGISTRY}/{repository}"

    def image(label: str) -> Content:
        return small_image(f"{repository}:{label}")

    def signed(label: str, key: CosignKey = trusted, **fields: str) -> tuple[Content, Content]:
        subject = image(label)
        reference = fields.get("reference", f"{name}:{TAG}")
        data = payload(reference, fields.get("digest", subject.digest))
        return subject, signature_manifest([sign_layer(key, data)])

    cases = [SignedCase("unsigned", image("unsigned"), None, Reason.NO_SIGNATURE)]
    for label, key, expected in (
        ("valid", trusted, Reason.VERIFIED),
        ("other-key", other, Reason.SIGNATURE_INVALID),
    ):
        cases.append(SignedCase(label, *signed(label, key), expected))
    other_image = image("another-image").digest
    cases.append(
        SignedCase(
            "other-digest", *signed("other-digest", digest=other_image), Reason.DIGEST_MISMATCH
        )
    )
    cases.append(
        SignedCase(
            "other-repository",
            *signed("other-repository", reference=f"{REGISTRY}/mallory/app:{TAG}"),
            Reason.IDENTITY_MISMATCH,
        )
    )
    cases += _tampered(image, trusted, name)
    return cases


def _tampered(image: Callable[[str], Content], trusted: CosignKey, name: str) -> list[SignedCase]:
    """Signatures altered after signing, and signature blobs gone or replaced."""
    cases = []
    subject = image("tampered-payload")
    data, signature = sign_layer(trusted, payload(f"{name}:{TAG}", subject.digest))
    altered = data.replace(b'"optional":null', b'"optional":{"x":"y"}')
    cases.append(
        SignedCase("tampered-payload", subject, signature_manifest([(altered, signature)]),
                   Reason.SIGNATURE_INVALID)
    )  # fmt: skip
    subject = image("tampered-signature")
    data, signature = sign_layer(trusted, payload(f"{name}:{TAG}", subject.digest))
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 0x01
    flipped = base64.b64encode(bytes(raw)).decode()
    cases.append(
        SignedCase("tampered-signature", subject, signature_manifest([(data, flipped)]),
                   Reason.SIGNATURE_INVALID)
    )  # fmt: skip
    gone = (("missing-blob", Reason.BLOB_MISSING), ("altered-blob", Reason.SIGNATURE_INVALID))
    for label, expected in gone:
        subject = image(label)
        layer = sign_layer(trusted, payload(f"{name}:{TAG}", subject.digest))
        manifest = signature_manifest([layer])
        blob = sha256(layer[0])
        cases.append(
            SignedCase(label, subject, manifest, expected,
                       missing_blob=blob if label == "missing-blob" else None,
                       altered_blob=blob if label == "altered-blob" else None)
        )  # fmt: skip
    return cases
