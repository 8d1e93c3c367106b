"""What verification found: a :class:`SignatureCheck` per signature, a :class:`Verdict` per image.

Reasons come from the closed set :class:`Reason`, so they can be metric
labels and appear in refusal messages as they are.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    """Why a signature counts, or why it does not; why an image is admitted or refused."""

    VERIFIED = "verified"
    #: no ``.sig`` tag and no sigstore bundle among the referrers
    NO_SIGNATURE = "no_signature"
    #: malformed, altered, or not made by any trusted key
    SIGNATURE_INVALID = "signature_invalid"
    #: made by a key or certificate the policy does not trust
    KEY_NOT_TRUSTED = "key_not_trusted"
    #: a valid signature, but for another image
    DIGEST_MISMATCH = "digest_mismatch"
    #: a valid signature whose identity (docker-reference, certificate) the policy does not accept
    IDENTITY_MISMATCH = "identity_mismatch"
    #: the signature manifest names a blob the registry does not have
    BLOB_MISSING = "blob_missing"
    #: a kind of signature this mirror cannot check (it does not count)
    UNSUPPORTED = "unsupported"
    #: some signatures verify, fewer than the policy's threshold
    TOO_FEW_SIGNATURES = "too_few_signatures"
    #: the signatures could not be fetched (upstream down, nothing cached)
    UNAVAILABLE = "unavailable"
    #: a platform manifest admitted because the index that lists it was
    COVERED_BY_INDEX = "covered_by_index"
    #: the policy does not ask for signatures
    NOT_REQUIRED = "not_required"


REASON_TEXT = {
    Reason.VERIFIED: "signature verified",
    Reason.NO_SIGNATURE: "no signature found",
    Reason.SIGNATURE_INVALID: "signature does not verify",
    Reason.KEY_NOT_TRUSTED: "key not trusted",
    Reason.DIGEST_MISMATCH: "signature names another digest",
    Reason.IDENTITY_MISMATCH: "signature identity does not match",
    Reason.BLOB_MISSING: "signature blob missing",
    Reason.UNSUPPORTED: "unsupported signature",
    Reason.TOO_FEW_SIGNATURES: "too few valid signatures",
    Reason.UNAVAILABLE: "signatures unavailable",
    Reason.COVERED_BY_INDEX: "covered by a verified index",
    Reason.NOT_REQUIRED: "signatures not required",
}

# When nothing verifies, the reason reported for the image is the failure
# closest to success: a valid signature by the wrong key says more than
# a garbled one.
_FAILURE_ORDER = (
    Reason.KEY_NOT_TRUSTED,
    Reason.IDENTITY_MISMATCH,
    Reason.DIGEST_MISMATCH,
    Reason.SIGNATURE_INVALID,
    Reason.BLOB_MISSING,
    Reason.UNSUPPORTED,
)


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """The result of checking one signature.

    ``kind`` is ``cosign`` (a layer of a ``sha256-<hex>.sig`` manifest) or
    ``bundle`` (a sigstore bundle referrer); ``source`` is the digest of the
    blob or manifest that carried it; ``signer`` names the configured key or
    keyless identity that verified it (empty otherwise).
    """

    kind: str
    source: str
    reason: Reason
    signer: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether this signature counts."""
        return self.reason is Reason.VERIFIED


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one image under one policy.

    ``admitted`` is what the mirror does (a ``warn`` policy admits what it
    would refuse); ``reason`` says why; ``signers`` are the distinct trusted
    keys and identities whose signatures verified.
    """

    policy: str
    mode: str
    digest: str
    admitted: bool
    reason: Reason
    signers: tuple[str, ...] = ()
    checks: tuple[SignatureCheck, ...] = ()

    @property
    def signed(self) -> bool:
        """Whether enough trusted signatures verified (whatever the mode)."""
        return self.reason in (Reason.VERIFIED, Reason.COVERED_BY_INDEX)

    @property
    def cacheable(self) -> bool:
        """An answer that depends on an outage is never remembered."""
        return self.reason is not Reason.UNAVAILABLE

    def message(self) -> str:
        """One line for a ``403 DENIED`` or a log line: the policy and the reason."""
        text = f"trust policy {self.policy!r}: {REASON_TEXT[self.reason]}"
        if self.signers:
            text += f" (signed by {', '.join(self.signers)})"
        return text


def decisive_failure(checks: tuple[SignatureCheck, ...]) -> Reason:
    """The reason an image with no (or too few) valid signatures is reported under."""
    if not checks:
        return Reason.NO_SIGNATURE
    if any(check.ok for check in checks):
        return Reason.TOO_FEW_SIGNATURES
    found = {check.reason for check in checks}
    return next(reason for reason in _FAILURE_ORDER if reason in found)
