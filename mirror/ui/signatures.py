"""The repository page's signature column, from the verdicts content trust remembers.

Pages never wait on signatures: a tag shows what the last pull (or
``/admin/cache`` listing) of it decided, and "not checked" until one did or
when its trust policy is ``allow``.
"""

from __future__ import annotations

from mirror.proxy.admission import Admission
from mirror.trust import Reason, Verdict
from mirror.ui.live_tags import SignatureLookup
from mirror.ui.model import SignatureState, SignatureStatus

__all__ = ["signature_lookup", "signature_status"]


def signature_status(verdict: Verdict | None) -> SignatureStatus:
    """How a page shows ``verdict`` (``None``: not checked)."""
    if verdict is None or verdict.reason is Reason.UNAVAILABLE:
        return SignatureStatus()
    if verdict.signed:
        return SignatureStatus(
            SignatureState.VERIFIED, f"{', '.join(verdict.signers)} (policy {verdict.policy})"
        )
    state = (
        SignatureState.UNSIGNED if verdict.reason is Reason.NO_SIGNATURE else SignatureState.INVALID
    )
    return SignatureStatus(state, verdict.message())


def signature_lookup(admission: Admission) -> SignatureLookup:
    """The UI's hook onto ``admission``'s remembered verdicts."""

    def lookup(upstream: str, repository: str, digest: str, tag: str) -> SignatureStatus:
        return signature_status(admission.remembered(upstream, repository, digest, tag))

    return lookup
