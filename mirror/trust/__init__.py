"""Content trust: which images the mirror serves, by the signatures their publishers made.

::

    keys.py            PEM public keys (ECDSA P-256, Ed25519, RSA) and signature checks
    identity.py        a payload's docker-reference against the pulled image (signedIdentity)
    simple_signing.py  cosign's sha256-<hex>.sig manifests and simple-signing payloads
    bundles.py         sigstore bundles as referrers; keyed verification
    keyless.py         keyless bundles against a trusted root, offline (``sigstore`` package)
    policy.py          policies by upstream and repository glob; modes allow / require / warn
    source.py          Subject, and the SignatureSource protocol the pull-through core implements
    verdict.py         the closed set of reasons; SignatureCheck, Verdict
    verifier.py        TrustVerifier: collect, check, decide; the verdict cache

Nothing here does I/O of its own: keys and trusted roots arrive as bytes
from :mod:`mirror.config_trust`, signatures through a
:class:`~mirror.trust.source.SignatureSource`.
"""

from mirror.trust.policy import TrustPolicy, TrustSettings
from mirror.trust.source import SignatureSource, SignatureSourceUnavailable, Subject
from mirror.trust.verdict import Reason, SignatureCheck, Verdict
from mirror.trust.verifier import TrustVerifier, VerdictCache

__all__ = [
    "Reason",
    "SignatureCheck",
    "SignatureSource",
    "SignatureSourceUnavailable",
    "Subject",
    "TrustPolicy",
    "TrustSettings",
    "TrustVerifier",
    "Verdict",
    "VerdictCache",
]
