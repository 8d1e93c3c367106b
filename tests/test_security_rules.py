"""Access rules, table-driven: first match wins, then the default; never a 404."""

from __future__ import annotations

from typing import Any

import pytest

from mirror.config import build_config
from mirror.security.rules import AccessRules, Decision

ALLOW, CHALLENGE, DENY = Decision.ALLOW, Decision.CHALLENGE, Decision.DENY


def rules(default: str, *raw_rules: dict[str, Any]) -> AccessRules:
    raw = {"auth": {"default": default, "groups": {"team-x": ["alice", "bob"], "ops": ["olga"]},
                    "rules": list(raw_rules)}}  # fmt: skip
    auth = build_config(raw).security.auth
    assert auth is not None
    return AccessRules(auth)


# The example of the issue: anonymous may pull docker.io/library/*, team X ghcr.io/org/*.
EXAMPLE = rules(
    "deny",
    {"who": ["user:mallory"], "effect": "deny"},
    {"who": ["everyone"], "upstream": "docker.io", "repository": "library/*"},
    {"who": ["group:team-x"], "upstream": "ghcr.io", "repository": "org/*"},
    {
        "who": ["group:team-x"],
        "upstream": "ghcr.io",
        "repository": "org/secret/*",
        "effect": "deny",
    },
    {"who": ["group:ops"], "actions": ["admin", "pull"]},
)


@pytest.mark.parametrize(
    ("user", "action", "upstream", "repository", "decision"),
    [
        (None, "pull", "docker.io", "library/alpine", ALLOW),
        ("alice", "pull", "docker.io", "library/alpine", ALLOW),
        (None, "pull", "docker.io", "bitnami/redis", CHALLENGE),  # default deny, no identity
        ("carol", "pull", "docker.io", "bitnami/redis", DENY),  # default deny, an identity
        (None, "pull", "ghcr.io", "org/app", CHALLENGE),
        ("alice", "pull", "ghcr.io", "org/app", ALLOW),
        ("bob", "pull", "ghcr.io", "org/team/app", ALLOW),  # '*' crosses '/'
        ("carol", "pull", "ghcr.io", "org/app", DENY),
        ("alice", "pull", "ghcr.io", "org", DENY),  # 'org/*' needs something after 'org/'
        ("alice", "pull", "ghcr.io", "orgx/app", DENY),
        ("alice", "pull", "GHCR.IO", "org/app", DENY),  # case-sensitive
        ("alice", "pull", "ghcr.io", "org/secret/keys", ALLOW),  # the broader rule came first
        ("mallory", "pull", "docker.io", "library/alpine", DENY),  # his deny rule is first
        ("olga", "pull", "quay.io", "any/thing", ALLOW),
        ("olga", "admin", None, None, ALLOW),
        ("alice", "admin", None, None, DENY),
        (None, "admin", None, None, CHALLENGE),
    ],
)
def test_first_matching_rule_decides(
    user: str | None, action: str, upstream: str | None, repository: str | None,
    decision: Decision,
) -> None:  # fmt: skip
    identity = EXAMPLE.identity(user)
    assert EXAMPLE.decide(identity, action, upstream, repository) is decision


@pytest.mark.parametrize(
    ("default", "user", "action", "decision"),
    [
        ("anonymous-pull", None, "pull", ALLOW),
        ("anonymous-pull", "carol", "pull", ALLOW),
        ("anonymous-pull", "carol", "admin", DENY),  # admin is never a default
        ("anonymous-pull", None, "admin", CHALLENGE),
        ("authenticated-pull", None, "pull", CHALLENGE),
        ("authenticated-pull", "carol", "pull", ALLOW),
        ("deny", None, "pull", CHALLENGE),
        ("deny", "carol", "pull", DENY),
    ],
)
def test_defaults(default: str, user: str | None, action: str, decision: Decision) -> None:
    policy = rules(default)
    repository = ("docker.io", "library/alpine") if action == "pull" else (None, None)
    assert policy.decide(policy.identity(user), action, *repository) is decision


def test_groups_belong_to_identities() -> None:
    assert EXAMPLE.identity("alice").groups == {"team-x"}
    assert EXAMPLE.identity("carol").groups == frozenset()
    assert EXAMPLE.identity(None).anonymous


@pytest.mark.parametrize(
    ("who", "user", "decision"),
    [
        (["anonymous"], None, ALLOW),
        (["anonymous"], "carol", DENY),
        (["authenticated"], None, CHALLENGE),
        (["authenticated"], "carol", ALLOW),
        (["user:carol"], "carol", ALLOW),
        (["user:carol"], "dave", DENY),
    ],
)
def test_who(who: list[str], user: str | None, decision: Decision) -> None:
    policy = rules("deny", {"who": who})
    assert policy.decide(policy.identity(user), "pull", "docker.io", "library/x") is decision
