"""Access rules: who may pull which repositories, and who may use the admin API.

Rules are read in order and the first one that matches the caller, the
action, the upstream and the repository decides (``allow`` or ``deny``). When
none matches, ``auth.default`` decides: ``anonymous-pull`` (everyone may
pull, today's behaviour), ``authenticated-pull`` (any known user may pull)
or ``deny``. The admin action is never granted by a default.

Decisions are remembered (a bounded LRU), so a request costs one lookup.
Patterns are shell globs matched on the whole name, case-sensitive: ``*``
matches any characters including ``/``, so ``org/*`` covers ``org/a/b``.

A refusal is ``401`` with a challenge when the caller showed no identity (a
login may help) and ``403 DENIED`` when it did: never a 404 that would hide
the rule, and never a hint whether the repository exists.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cachetools import LRUCache

from mirror.config_security import AccessRule, AuthConfig


class Decision(enum.Enum):
    """What to answer a request."""

    ALLOW = "allow"
    CHALLENGE = "challenge"  # 401 UNAUTHORIZED with WWW-Authenticate
    DENY = "deny"  # 403 DENIED


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a user of the htpasswd file (with its groups), or anonymous (``None``)."""

    user: str | None
    groups: frozenset[str] = frozenset()

    @property
    def anonymous(self) -> bool:
        """No identity shown (or an anonymous token)."""
        return self.user is None


ANONYMOUS = Identity(None)


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: AccessRule
    upstream: re.Pattern[str]
    repository: re.Pattern[str]

    def covers(self, identity: Identity) -> bool:
        rule = self.rule
        if identity.user is None:
            return rule.anonymous
        return (
            rule.authenticated
            or identity.user in rule.users
            or not rule.groups.isdisjoint(identity.groups)
        )

    def matches(self, action: str, upstream: str | None, repository: str | None) -> bool:
        if action not in self.rule.actions:
            return False
        if upstream is None or repository is None:  # admin: not about a repository
            return True
        return bool(self.upstream.fullmatch(upstream) and self.repository.fullmatch(repository))


def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


class AccessRules:
    """The configured rules, groups and default, ready to decide."""

    def __init__(self, config: AuthConfig) -> None:
        self._default = config.default
        self._rules = tuple(
            _CompiledRule(r, _compile(r.upstream), _compile(r.repository)) for r in config.rules
        )
        self._groups_of = _invert(config.groups)
        # The configuration does not change while the process runs, and a user's groups
        # come from it, so each decision is made once (bounded: names come from clients).
        self._decided: LRUCache[tuple[str | None, str, str | None, str | None], bool] = LRUCache(
            16384
        )

    def identity(self, user: str | None) -> Identity:
        """The identity of ``user`` (None: anonymous), with the groups it belongs to."""
        if user is None:
            return ANONYMOUS
        return Identity(user, self._groups_of.get(user, frozenset()))

    def allows(
        self,
        identity: Identity,
        action: str,
        upstream: str | None = None,
        repository: str | None = None,
    ) -> bool:
        """Whether ``identity`` may ``pull`` from upstream/repository, or use ``admin``."""
        key = (identity.user, action, upstream, repository)
        known = self._decided.get(key)
        if known is None:
            known = self._decided[key] = self._evaluate(identity, action, upstream, repository)
        return known

    def _evaluate(
        self, identity: Identity, action: str, upstream: str | None, repository: str | None
    ) -> bool:
        for compiled in self._rules:
            if compiled.covers(identity) and compiled.matches(action, upstream, repository):
                return compiled.rule.allow
        if action != "pull":
            return False
        if self._default == "anonymous-pull":
            return True
        return self._default == "authenticated-pull" and not identity.anonymous

    def decide(
        self,
        identity: Identity,
        action: str,
        upstream: str | None = None,
        repository: str | None = None,
    ) -> Decision:
        """:meth:`allows` as an answer: allow, a challenge (anonymous) or a refusal."""
        if self.allows(identity, action, upstream, repository):
            return Decision.ALLOW
        return Decision.CHALLENGE if identity.anonymous else Decision.DENY


def _invert(groups: Mapping[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    member_of: dict[str, set[str]] = {}
    for group, members in groups.items():
        for user in members:
            member_of.setdefault(user, set()).add(group)
    return {user: frozenset(names) for user, names in member_of.items()}
