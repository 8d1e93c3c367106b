"""The verifier: finds an image's signatures through a source, checks them, decides, remembers.

::

    verifier = TrustVerifier(settings)
    verdict = await verifier.check(Subject("docker.io", "library/alpine", digest, "3.20"), source)
    if not verdict.admitted:
        raise Denied(verdict.message())

Verdicts are remembered per (policy fingerprint, image): a hit costs no
fetch and no cryptography; a change of policy or keys changes the
fingerprint, so old verdicts are never used again. Admissions are kept until
evicted (a digest's signatures cannot become invalid without a policy
change); refusals for ``refusal_ttl`` only, because the publisher may sign
the image later. Nothing is remembered when the signatures were unavailable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from cachetools import LRUCache

from mirror.trust.bundles import (
    BundleFormatError,
    bundle_layer,
    check_keyed,
    is_bundle_referrer,
    parse_bundle,
)
from mirror.trust.keyless import check_keyless
from mirror.trust.policy import TrustPolicy, TrustSettings
from mirror.trust.simple_signing import (
    check_payload,
    parse_signature_manifest,
    signature_tag,
)
from mirror.trust.source import (
    SignatureSource,
    SignatureSourceUnavailable,
    Subject,
    fetch_blob,
    fetch_manifest,
    json_object,
    matches_digest,
)
from mirror.trust.verdict import Reason, SignatureCheck, Verdict, decisive_failure

__all__ = ["MAX_REFERRERS", "TrustVerifier", "VerdictCache"]

#: bundle referrers looked at per image
MAX_REFERRERS = 32

CacheKey = tuple[str, str, str, str]


class VerdictCache:
    """Verdicts by (policy fingerprint, digest, repository, reference): LRU, refusals expire."""

    def __init__(
        self, size: int, refusal_ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: LRUCache[CacheKey, tuple[Verdict, float]] = LRUCache(maxsize=size)
        self._refusal_ttl = refusal_ttl
        self._clock = clock

    def get(self, key: CacheKey) -> Verdict | None:
        """The remembered verdict, unless it has expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        verdict, expires = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        return verdict

    def put(self, key: CacheKey, verdict: Verdict) -> None:
        """Remember a verdict: admissions until evicted, refusals for ``refusal_ttl``."""
        ttl = float("inf") if verdict.signed else self._refusal_ttl
        self._entries[key] = (verdict, self._clock() + ttl)

    def __len__(self) -> int:
        return len(self._entries)


class TrustVerifier:
    """Decides, per :class:`~mirror.trust.policy.TrustSettings`, whether an image may be served."""

    def __init__(self, settings: TrustSettings, cache: VerdictCache | None = None) -> None:
        self.settings = settings
        if cache is None:
            cache = VerdictCache(settings.cache_size, settings.refusal_ttl)
        self.cache = cache

    async def check(self, subject: Subject, source: SignatureSource) -> Verdict:
        """The verdict for ``subject`` under its policy; signatures come from ``source``."""
        policy = self.settings.policy_for(subject.registry, subject.repository)
        if policy.mode == "allow":
            return Verdict(policy.name, policy.mode, subject.digest, True, Reason.NOT_REQUIRED)
        key = _cache_key(policy, subject)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        try:
            checks = await self._collect(subject, policy, source)
        except SignatureSourceUnavailable:
            return _decide(policy, subject, Reason.UNAVAILABLE, ())
        verdict = _judge(policy, subject, checks)
        if verdict.cacheable:
            self.cache.put(key, verdict)
        return verdict

    def remembered(self, subject: Subject) -> Verdict | None:
        """The cached verdict on ``subject`` (``None`` under ``allow``); fetches nothing."""
        policy = self.settings.policy_for(subject.registry, subject.repository)
        if policy.mode == "allow":
            return None
        return self.cache.get(_cache_key(policy, subject))

    async def check_platform(
        self, child: Subject, index: Subject, index_body: bytes, source: SignatureSource
    ) -> Verdict:
        """A platform manifest: admitted when an index listing it is, else on its own signatures.

        Publishers sign the index (what a tag names); ``cosign sign --recursive``
        signs the platform manifests too, which the fallback covers.
        """
        if _lists(index_body, index.digest, child.digest):
            parent = await self.check(index, source)
            if parent.signed:
                return _decide(
                    self.settings.policy_for(child.registry, child.repository),
                    child,
                    Reason.COVERED_BY_INDEX,
                    parent.checks,
                    parent.signers,
                )
        return await self.check(child, source)

    async def _collect(
        self, subject: Subject, policy: TrustPolicy, source: SignatureSource
    ) -> tuple[SignatureCheck, ...]:
        # Independent lookups (the .sig tag, the referrers): one wait for both.
        cosign, bundles = await asyncio.gather(
            self._cosign_checks(subject, policy, source),
            self._bundle_checks(subject, policy, source),
        )
        return (*cosign, *bundles)

    async def _cosign_checks(
        self, subject: Subject, policy: TrustPolicy, source: SignatureSource
    ) -> list[SignatureCheck]:
        tag = signature_tag(subject.digest)
        body = await source.tagged_manifest(subject.repository, tag)
        if body is None:
            return []
        layers = parse_signature_manifest(body)
        if layers is None:
            return [SignatureCheck("cosign", tag, Reason.SIGNATURE_INVALID, "", "not a manifest")]
        checks = []
        for layer in layers:
            payload = await fetch_blob(source, subject.repository, layer.digest)
            if isinstance(payload, Reason):
                checks.append(SignatureCheck("cosign", layer.digest, payload, "", "payload blob"))
            else:
                checks.append(check_payload(layer, payload, subject, policy.keys, policy.identity))
        return checks

    async def _bundle_checks(
        self, subject: Subject, policy: TrustPolicy, source: SignatureSource
    ) -> list[SignatureCheck]:
        descriptors = await source.referrers(subject.repository, subject.digest)
        bundles = [d for d in descriptors if is_bundle_referrer(d)][:MAX_REFERRERS]
        checks = []
        for descriptor in bundles:
            digest = str(descriptor.get("digest"))
            checks.append(await self._bundle_check(subject, policy, source, digest))
        return checks

    async def _bundle_check(
        self, subject: Subject, policy: TrustPolicy, source: SignatureSource, referrer: str
    ) -> SignatureCheck:
        manifest = await fetch_manifest(source, subject.repository, referrer)
        if isinstance(manifest, Reason):
            return SignatureCheck("bundle", referrer, manifest, "", "referrer manifest")
        layer, why = bundle_layer(manifest, subject.digest)
        if layer is None:
            return SignatureCheck("bundle", referrer, Reason.SIGNATURE_INVALID, "", why)
        data = await fetch_blob(source, subject.repository, layer)
        if isinstance(data, Reason):
            return SignatureCheck("bundle", layer, data, "", "bundle blob")
        try:
            parsed = parse_bundle(data)
        except BundleFormatError as exc:
            return SignatureCheck("bundle", layer, Reason.UNSUPPORTED, "", str(exc))
        digest_hex = subject.digest.split(":", 1)[1]
        if not parsed.has_certificate:
            return check_keyed(parsed, layer, digest_hex, policy.keys)
        return check_keyless(data, parsed, layer, digest_hex, policy.keyless_by_root())


def _cache_key(policy: TrustPolicy, subject: Subject) -> CacheKey:
    # The repository matters (signatures live per repository, identities name
    # it); the reference only where the identity rule compares it.
    reference = subject.reference or "" if policy.identity.match == "exact" else ""
    return (policy.fingerprint, subject.digest, subject.name, reference)


def _judge(policy: TrustPolicy, subject: Subject, checks: tuple[SignatureCheck, ...]) -> Verdict:
    signers = tuple(sorted({check.signer for check in checks if check.ok}))
    reason = Reason.VERIFIED if len(signers) >= policy.threshold else decisive_failure(checks)
    return _decide(policy, subject, reason, checks, signers)


def _decide(
    policy: TrustPolicy,
    subject: Subject,
    reason: Reason,
    checks: tuple[SignatureCheck, ...],
    signers: tuple[str, ...] = (),
) -> Verdict:
    signed = reason in (Reason.VERIFIED, Reason.COVERED_BY_INDEX)
    admitted = signed or policy.mode == "warn"
    return Verdict(policy.name, policy.mode, subject.digest, admitted, reason, signers, checks)


def _lists(index_body: bytes, index_digest: str, child_digest: str) -> bool:
    """Whether ``index_body`` is the index ``index_digest`` and lists ``child_digest``."""
    if not matches_digest(index_body, index_digest):
        return False
    doc = json_object(index_body)
    entries = doc.get("manifests") if doc is not None else None
    return isinstance(entries, list) and any(
        isinstance(entry, dict) and entry.get("digest") == child_digest for entry in entries
    )
