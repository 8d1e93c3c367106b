"""Keyless sigstore bundles, verified offline with the ``sigstore`` package.

A keyless bundle carries a short-lived Fulcio certificate for the signer's
OIDC identity and a transparency-log entry with its inclusion proof,
checkpoint and signed entry timestamp. Given the operator's trusted root
(the CA certificates and log keys, as ``trusted_root.json``), everything is
checked locally; no log or CA is asked at pull time:

1. the certificate chains to the root's CA at the time the log recorded the
   entry, and carries a valid SCT (``sigstore``);
2. its identity (SAN) and OIDC issuer are one of the policy's;
3. the log entry's inclusion proof, checkpoint and promise verify against
   the root's log keys, and match the signature (``sigstore``);
4. the signature verifies with the certificate's key over the image digest
   (message signature) or over an in-toto statement naming it (DSSE).

``sigstore`` is an optional dependency (``pip install
'registry-mirror[keyless]'``); :mod:`mirror.config_trust` refuses keyless
policies without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mirror.trust.bundles import ParsedBundle, statement_names
from mirror.trust.verdict import Reason, SignatureCheck

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.verify import Verifier

__all__ = ["KeylessIdentity", "TrustedRootFile", "check_keyless", "load_trusted_root"]


@dataclass(frozen=True, slots=True)
class KeylessIdentity:
    """A signer the policy trusts: a certificate identity (SAN) from an OIDC issuer."""

    root: str
    issuer: str
    identity: str

    @property
    def label(self) -> str:
        """How verdicts and the admin page name this signer."""
        return f"{self.identity} ({self.issuer})"


@dataclass(frozen=True)
class TrustedRootFile:
    """An operator-supplied sigstore trusted root (``trusted_root.json``), by name."""

    name: str
    data: bytes = field(repr=False)

    @cached_property
    def verifier(self) -> Verifier:
        """A sigstore verifier for this root (built once; it makes no network call)."""
        return load_trusted_root(self.data)


def load_trusted_root(data: bytes) -> Verifier:
    """A verifier for ``trusted_root.json``; ``ValueError`` saying what is wrong with it."""
    from pydantic import ValidationError
    from sigstore.errors import Error
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootDocument

    try:
        document = TrustedRootDocument.from_json(data)
        if not document.ctlogs:
            raise ValueError("ctlogs: no certificate transparency log keys")
        # The verifier checks that CA certificates and log keys are there.
        return Verifier(trusted_root=TrustedRoot(document))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "document"
        raise ValueError(f"{where}: {first['msg']}") from None
    except Error as exc:
        raise ValueError(str(exc)) from None


def check_keyless(
    data: bytes,
    bundle: ParsedBundle,
    source: str,
    digest_hex: str,
    identities: Sequence[tuple[TrustedRootFile, Sequence[KeylessIdentity]]],
) -> SignatureCheck:
    """Verify a certificate-carrying bundle under each trusted root; the best result wins."""
    checks = [
        _under_root(data, bundle, source, digest_hex, root, accepted)
        for root, accepted in identities
    ]
    if not checks:
        return SignatureCheck("bundle", source, Reason.KEY_NOT_TRUSTED, "", "no keyless signers")
    return next((check for check in checks if check.ok), checks[0])


def _under_root(
    data: bytes,
    parsed: ParsedBundle,
    source: str,
    digest_hex: str,
    root: TrustedRootFile,
    accepted: Sequence[KeylessIdentity],
) -> SignatureCheck:
    from sigstore.errors import CertValidationError
    from sigstore.models import Bundle

    policy = _AcceptedIdentities(accepted)
    try:
        bundle = Bundle.from_json(data)
        if parsed.is_dsse:
            payload_type, payload = root.verifier.verify_dsse(bundle, policy)
            named = statement_names(payload_type, payload, digest_hex)
        else:
            signed = parsed.signed_digest or bytes.fromhex(digest_hex)
            root.verifier.verify_artifact(_sha256(signed), bundle, policy)
            named = signed.hex() == digest_hex
    except _IdentityMismatch as exc:
        return SignatureCheck("bundle", source, Reason.IDENTITY_MISMATCH, "", str(exc))
    except CertValidationError as exc:
        return SignatureCheck("bundle", source, Reason.KEY_NOT_TRUSTED, "", str(exc)[:200])
    except Exception as exc:  # sigstore raises many types on hostile input; none may escape
        return SignatureCheck("bundle", source, Reason.SIGNATURE_INVALID, "", _say(exc))
    signer = policy.matched.label if policy.matched else ""
    if not named:
        return SignatureCheck("bundle", source, Reason.DIGEST_MISMATCH, signer, "another digest")
    return SignatureCheck("bundle", source, Reason.VERIFIED, signer, signer)


def _sha256(digest: bytes) -> Any:
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    return Hashed(algorithm=HashAlgorithm.SHA2_256, digest=digest)


def _say(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:200]


class _IdentityMismatch(Exception):
    """The certificate verified but names none of the accepted identities."""


class _AcceptedIdentities:
    """A sigstore verification policy: any one of the accepted identities; remembers which."""

    def __init__(self, accepted: Sequence[KeylessIdentity]) -> None:
        self.accepted = accepted
        self.matched: KeylessIdentity | None = None

    def verify(self, cert: Certificate) -> None:
        """Raise :class:`_IdentityMismatch` unless ``cert`` names an accepted identity."""
        from sigstore.errors import VerificationError
        from sigstore.verify.policy import Identity

        for candidate in self.accepted:
            try:
                Identity(identity=candidate.identity, issuer=candidate.issuer).verify(cert)
            except VerificationError:
                continue
            self.matched = candidate
            return
        raise _IdentityMismatch("certificate identity or issuer is not one the policy accepts")
