"""Admission policies: which images must be signed, by whom, and what happens otherwise.

A policy applies to an upstream (by its configured name, or ``*``) and to
repositories matching one of its patterns; the first policy that matches an
image wins, and the default policy takes the rest. Patterns are globs over
the repository name: ``*`` stands for any characters but ``/``, ``**`` for
any characters, ``?`` for one character but ``/``. So ``library/*`` is every
official Docker Hub image and ``team/**`` everything under ``team/``.

Modes: ``allow`` (serve without looking), ``require`` (serve only when at
least ``threshold`` distinct trusted keys or keyless identities have a valid
signature on the image), ``warn`` (serve, but log and count what ``require``
would refuse).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property

from mirror.trust.identity import IdentityRule
from mirror.trust.keyless import KeylessIdentity, TrustedRootFile
from mirror.trust.keys import PublicKey

__all__ = ["MODES", "TrustPolicy", "TrustSettings", "compile_glob"]

MODES = ("allow", "require", "warn")
_GLOB_TOKENS = re.compile(r"\*\*|\*|\?|[^*?]+")


def compile_glob(pattern: str) -> re.Pattern[str]:
    """A repository glob as a regular expression matching whole names."""
    parts = []
    for token in _GLOB_TOKENS.findall(pattern):
        if token == "**":
            parts.append(".*")
        elif token == "*":
            parts.append("[^/]*")
        elif token == "?":
            parts.append("[^/]")
        else:
            parts.append(re.escape(token))
    return re.compile("".join(parts))


@dataclass(frozen=True)
class TrustPolicy:
    """One admission policy, with its keys and keyless identities resolved."""

    name: str
    mode: str = "allow"
    upstream: str = "*"
    repositories: tuple[str, ...] = ("**",)
    threshold: int = 1
    keys: tuple[PublicKey, ...] = ()
    keyless: tuple[KeylessIdentity, ...] = ()
    roots: tuple[TrustedRootFile, ...] = field(default=(), repr=False)
    identity: IdentityRule = field(default_factory=IdentityRule)

    def matches(self, upstream: str, repository: str) -> bool:
        """Whether this policy is for ``repository`` of the upstream named ``upstream``."""
        if self.upstream not in ("*", upstream):
            return False
        return any(pattern.fullmatch(repository) for pattern in self._patterns)

    @cached_property
    def _patterns(self) -> tuple[re.Pattern[str], ...]:
        return tuple(compile_glob(pattern) for pattern in self.repositories)

    @property
    def signers(self) -> int:
        """How many distinct signers the policy trusts."""
        return len(self.keys) + len(self.keyless)

    def keyless_by_root(self) -> list[tuple[TrustedRootFile, list[KeylessIdentity]]]:
        """The keyless identities grouped under the trusted root each names."""
        return [
            (root, [signer for signer in self.keyless if signer.root == root.name])
            for root in self.roots
        ]

    @cached_property
    def fingerprint(self) -> str:
        """A digest of everything a verdict depends on: changes when the policy or a key does."""
        doc = {
            "mode": self.mode,
            "threshold": self.threshold,
            "keys": sorted(key.der.hex() for key in self.keys),
            "keyless": sorted([s.root, s.issuer, s.identity] for s in self.keyless),
            "roots": sorted([r.name, hashlib.sha256(r.data).hexdigest()] for r in self.roots),
            "identity": [self.identity.match, self.identity.prefix, self.identity.signed_prefix],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class TrustSettings:
    """The ``[trust]`` configuration: policies in order, the default, the verdict cache."""

    policies: tuple[TrustPolicy, ...] = ()
    default: TrustPolicy = TrustPolicy("default")
    #: verdicts remembered (LRU)
    cache_size: int = 10_000
    #: seconds a refusal is remembered (a publisher may sign later); admissions last
    refusal_ttl: float = 60.0

    def policy_for(self, upstream: str, repository: str) -> TrustPolicy:
        """The first policy matching the image, else the default."""
        for policy in self.policies:
            if policy.matches(upstream, repository):
                return policy
        return self.default

    @property
    def enforcing(self) -> bool:
        """Whether any policy looks at signatures at all."""
        return any(p.mode != "allow" for p in (*self.policies, self.default))
