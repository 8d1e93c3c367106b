"""Admission: whether a manifest may be served, by the signatures its publisher made.

Before a manifest goes out (by tag or by digest, ``GET`` or ``HEAD``), the
trust policy that matches its upstream and repository decides
(:class:`~mirror.trust.verifier.TrustVerifier`, through the pull-through
stores: :class:`~mirror.proxy.signatures.ProxySignatures`):

* ``allow``: nothing is looked at;
* ``require``: served only when enough trusted signatures verify, else
  ``403 DENIED`` naming the policy and the reason;
* ``warn``: served, but what ``require`` would refuse is logged and counted.

What the policy applies to:

* **an image or an index**: the policy applies to its own digest. For an
  index that is what a tag names and what publishers sign;
* **a platform manifest** fetched by digest after an admitted index that
  lists it (as every client pulls: tag, index, then platform by digest): it
  is admitted as covered by that index, which must still be cached (its
  bytes are checked to list the child). Otherwise it needs signatures of its
  own (``cosign sign --recursive`` makes them). The mirror remembers which
  index admitted which children in memory, so after a restart the index is
  verified again the first time a client asks for it;
* **a signature, attestation, SBOM or other artifact** (a manifest that is
  no index and has no image layer: nothing a runtime can run), and the
  index a referrers fallback tag (``sha256-<hex>``) names, are served
  without a verdict: they are the evidence the verifier reads, and cosign,
  skopeo and podman fetch them through the mirror to verify for themselves.
  (The platform manifests of such an index are covered by nothing: an
  image tagged that way still needs its own signatures.)

Verdicts are cached per (policy fingerprint, digest) by the verifier, so a
hit costs no fetch and no cryptography.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cachetools import LRUCache

from mirror.errors import Denied
from mirror.metrics import Metrics
from mirror.oci import INDEX_MEDIA_TYPES, parse_digest
from mirror.proxy.manifests import ManifestAnswer
from mirror.proxy.referrers import is_fallback_tag
from mirror.proxy.signatures import CachedSignatures, ProxySignatures, SignatureStores
from mirror.routing import Target
from mirror.trust import Subject, TrustVerifier, Verdict, VerdictCache

__all__ = ["Admission", "is_image_manifest", "without_verdict"]

log = logging.getLogger(__name__)

#: platform manifests remembered as children of an admitted index
_CHILDREN = 50_000
_IMAGE_LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")

ChildKey = tuple[str, str, str]  # (upstream, repository, child digest)


class Admission:
    """Applies the trust policies to manifests about to be served."""

    def __init__(self, verifier: TrustVerifier, stores: SignatureStores, metrics: Metrics) -> None:
        self._verifier = verifier
        self._stores = stores
        self._metrics = metrics
        # child -> (index digest, the reference the index was pulled by)
        self._parents: LRUCache[ChildKey, tuple[str, str | None]] = LRUCache(maxsize=_CHILDREN)
        # Reports read the cache only: their verdicts must never decide a pull.
        settings = verifier.settings
        self._reports = TrustVerifier(
            settings, VerdictCache(settings.cache_size, settings.refusal_ttl)
        )

    async def cached_status(self, target: Target, digest: str, tag: str) -> dict[str, Any] | None:
        """What the cache holds of an image's signatures, under its policy; asks nobody.

        ``None`` under an ``allow`` policy, for an artifact, and for a
        manifest that is no longer cached: there is nothing to report.
        """
        policy = self._verifier.settings.policy_for(target.upstream.name, target.repository)
        if policy.mode == "allow":
            return None
        stored = await self._stores.manifests.cached(target.upstream.name, parse_digest(digest))
        if stored is None:
            return None
        if without_verdict(stored.media_type, stored.body, tag):
            return None
        subject = Subject(target.upstream.name, target.repository, digest, tag)
        verdict = await self._reports.check(subject, CachedSignatures(target, self._stores))
        return {
            "digest": digest,
            "policy": verdict.policy,
            "mode": verdict.mode,
            "signed": verdict.signed,
            "signers": list(verdict.signers),
            "reason": verdict.reason.value,
        }

    def remembered(self, upstream: str, repository: str, digest: str, tag: str) -> Verdict | None:
        """The last verdict on an image pulled (or listed) by ``tag``, from memory only.

        For pages that must never wait on signatures: ``None`` until a pull or
        an ``/admin/cache`` listing has checked the image, and under ``allow``.
        """
        subject = Subject(upstream, repository, digest, tag)
        pulled = self._verifier.remembered(subject)
        return pulled if pulled is not None else self._reports.remembered(subject)

    async def admit(self, target: Target, answer: ManifestAnswer, reference: str | None) -> None:
        """Return if ``answer`` may be served; raise ``403 DENIED`` if its policy refuses it.

        ``reference`` is the tag the client asked for (``None`` by digest).
        """
        policy = self._verifier.settings.policy_for(target.upstream.name, target.repository)
        if policy.mode == "allow":
            return
        body = answer.body or await self._cached_body(target, answer.digest)
        if without_verdict(answer.media_type, body, reference):
            return
        index = answer.media_type in INDEX_MEDIA_TYPES
        verdict = await self._verdict(target, answer.digest, reference)
        self._record(target, answer.digest, verdict)
        if verdict.signed and index and body is not None:
            self._remember_children(target, answer.digest, reference, body)

    async def _verdict(self, target: Target, digest: str, reference: str | None) -> Verdict:
        source = ProxySignatures(target, self._stores)
        subject = Subject(target.upstream.name, target.repository, digest, reference or digest)
        parent = self._parents.get((target.upstream.name, target.repository, digest))
        if parent is not None:
            index_digest, index_reference = parent
            index_body = await self._cached_body(target, index_digest)
            if index_body is not None:
                index = Subject(target.upstream.name, target.repository, index_digest,
                                index_reference or index_digest)  # fmt: skip
                return await self._verifier.check_platform(subject, index, index_body, source)
        return await self._verifier.check(subject, source)

    def _record(self, target: Target, digest: str, verdict: Verdict) -> None:
        """Count the verdict; log and refuse what is not admitted; log what warn lets by."""
        name = f"{target.upstream.name}/{target.repository}@{digest}"
        if verdict.signed:
            self._metrics.signature_verdict("verified")
            return
        if verdict.admitted:
            self._metrics.signature_verdict("warned")
            log.warning("serving %s unverified: %s", name, verdict.message())
            return
        self._metrics.signature_verdict("refused", verdict.reason.value)
        log.warning("refused %s: %s", name, verdict.message())
        raise Denied(verdict.message(), {"policy": verdict.policy, "reason": verdict.reason.value})

    def _remember_children(
        self, target: Target, digest: str, reference: str | None, body: bytes
    ) -> None:
        for child in _children(body):
            self._parents[(target.upstream.name, target.repository, child)] = (digest, reference)

    async def _cached_body(self, target: Target, digest: str) -> bytes | None:
        stored = await self._stores.manifests.cached(target.upstream.name, parse_digest(digest))
        return stored.body if stored is not None else None


def without_verdict(media_type: str, body: bytes | None, tag: str | None) -> bool:
    """Whether a manifest is served without a verdict: an artifact, or a referrers index.

    ``body`` may be unknown (a ``HEAD`` answered from a tag record); then
    only an index under a fallback tag is let by.
    """
    if media_type in INDEX_MEDIA_TYPES:
        return tag is not None and is_fallback_tag(tag)
    return body is not None and not is_image_manifest(body)


def is_image_manifest(body: bytes) -> bool:
    """Whether a (non-index) manifest has image layers: something a runtime can run.

    Schema 1 manifests (``fsLayers``) are images; anything unreadable counts as
    one, so that it is judged rather than waved through.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    if not isinstance(doc, dict) or "fsLayers" in doc:
        return True
    layers = doc.get("layers")
    if not isinstance(layers, list):
        return True
    return any(
        not isinstance(layer, dict)
        or not isinstance(layer.get("mediaType"), str)
        or layer["mediaType"].startswith(_IMAGE_LAYER_PREFIXES)
        for layer in layers
    )


def _children(body: bytes) -> list[str]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return []
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        return []
    return [
        e["digest"] for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)
    ]
