"""The ``[trust]`` part of the configuration: keys, trusted roots and admission policies.

Part of :mod:`mirror.config` (which calls :func:`parse_trust`); split out
like :mod:`mirror.config_upstreams`. Key files and trusted roots are read
here, once, at load time, so that ``check-config`` finds an unreadable,
malformed or private key before the mirror starts::

    [trust.keys]
    acme = "/etc/registry-mirror/keys/acme.pub"        # cosign public key (PEM)

    [trust.roots]
    sigstore = "/etc/registry-mirror/trusted_root.json"

    [[trust.policies]]
    name = "acme-apps"
    upstream = "registry.acme.example"
    repositories = ["apps/**"]
    mode = "require"                                   # allow | require | warn
    keys = ["acme"]
    [[trust.policies.keyless]]
    root = "sigstore"
    issuer = "https://token.actions.githubusercontent.com"
    identity = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"

    [trust.default]
    mode = "allow"

Every error names the setting (``trust.policies[0].keys[1]``) and never
quotes a key file's content.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mirror.config_values import ConfigError, parse_duration, reject_unknown, sub_table
from mirror.trust.identity import IDENTITY_MATCHES, IdentityRule
from mirror.trust.keyless import KeylessIdentity, TrustedRootFile
from mirror.trust.keys import KeyFormatError, PublicKey, parse_public_key
from mirror.trust.policy import MODES, TrustPolicy, TrustSettings

__all__ = ["describe_trust", "parse_trust"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GLOB_RE = re.compile(r"[a-z0-9._/*?-]+")
_TRUST_KEYS = {"cache_size", "refusal_ttl", "keys", "roots", "default", "policies"}
_POLICY_KEYS = {"mode", "threshold", "keys", "keyless", "identity", "remap"}


def parse_trust(raw: Mapping[str, Any], upstream_names: tuple[str, ...]) -> TrustSettings:
    """The ``trust`` table of a raw settings tree, with files read and keys parsed."""
    table = sub_table(raw, "trust", "")
    reject_unknown(table, "trust", _TRUST_KEYS)
    keys = {name: _key(name, path) for name, path in _files(table, "keys").items()}
    roots = {name: _root(name, path) for name, path in _files(table, "roots").items()}
    found = _Resolved(keys, roots)
    policies = table.get("policies", [])
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        raise ConfigError("trust.policies: expected a list of tables ([[trust.policies]])")
    parsed = tuple(
        _policy(p, f"trust.policies[{i}]", found, upstream_names) for i, p in enumerate(policies)
    )
    names = [p.name for p in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"trust.policies: duplicate policy name in {names}")
    default_table = sub_table(table, "default", "trust.")
    reject_unknown(default_table, "trust.default", _POLICY_KEYS)
    default = _rules(default_table, "trust.default", "default", found)
    size = table.get("cache_size", 10_000)
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 10_000_000:
        raise ConfigError(f"trust.cache_size: expected a whole number 1-10000000, got {size!r}")
    ttl = parse_duration(table.get("refusal_ttl", 60), "trust.refusal_ttl")
    return TrustSettings(parsed, default, size, ttl)


class _Resolved:
    """The named keys and roots that policies refer to."""

    def __init__(self, keys: dict[str, PublicKey], roots: dict[str, TrustedRootFile]) -> None:
        self.keys = keys
        self.roots = roots


def _files(table: Mapping[str, Any], section: str) -> dict[str, str]:
    entries = sub_table(table, section, "trust.")
    for name, path in entries.items():
        if _NAME_RE.fullmatch(name) is None:
            raise ConfigError(f"trust.{section}.{name}: names are letters, digits, '.', '_', '-'")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"trust.{section}.{name}: expected a file path, got {path!r}")
    return entries


def _read(path: str, where: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path!r}: {exc.strerror}") from None


def _key(name: str, path: str) -> PublicKey:
    try:
        return parse_public_key(name, _read(path, f"trust.keys.{name}"))
    except KeyFormatError as exc:
        raise ConfigError(f"trust.keys.{name}: {path!r} {exc}") from None


def _root(name: str, path: str) -> TrustedRootFile:
    where = f"trust.roots.{name}"
    if importlib.util.find_spec("sigstore") is None:
        raise ConfigError(
            f"{where}: keyless verification needs the sigstore package "
            "(pip install 'registry-mirror[keyless]')"
        )
    root = TrustedRootFile(name, _read(path, where))
    try:
        root.verifier  # noqa: B018  (built now, so a bad root fails check-config)
    except ValueError as exc:
        raise ConfigError(f"{where}: {path!r} is not a sigstore trusted root: {exc}") from None
    return root


def _policy(
    raw: Mapping[str, Any], where: str, found: _Resolved, upstream_names: tuple[str, ...]
) -> TrustPolicy:
    reject_unknown(raw, where, _POLICY_KEYS | {"name", "upstream", "repositories"})
    name = raw.get("name", where.removeprefix("trust."))
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected a name, got {name!r}")
    upstream = raw.get("upstream", "*")
    if upstream != "*" and upstream not in upstream_names:
        known = ", ".join(upstream_names)
        raise ConfigError(f"{where}.upstream: no upstream named {upstream!r} (have: {known}, *)")
    repositories = raw.get("repositories", ["**"])
    if not isinstance(repositories, list) or not repositories:
        raise ConfigError(f"{where}.repositories: expected a list of repository globs")
    for index, pattern in enumerate(repositories):
        if not isinstance(pattern, str) or _GLOB_RE.fullmatch(pattern) is None:
            raise ConfigError(
                f"{where}.repositories[{index}]: expected a repository glob such as "
                f"'library/*', got {pattern!r}"
            )
    rules = _rules(raw, where, name, found)
    return TrustPolicy(
        name, rules.mode, str(upstream), tuple(repositories), rules.threshold,
        rules.keys, rules.keyless, rules.roots, rules.identity,
    )  # fmt: skip


def _rules(raw: Mapping[str, Any], where: str, name: str, found: _Resolved) -> TrustPolicy:
    """The mode, signers and identity rule shared by a policy and the default."""
    mode = raw.get("mode", "allow")
    if mode not in MODES:
        raise ConfigError(f"{where}.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    keys = tuple(_named_key(k, f"{where}.keys", found) for k in _list(raw, "keys", where))
    keyless = tuple(
        _keyless(entry, f"{where}.keyless[{i}]", found)
        for i, entry in enumerate(_list(raw, "keyless", where))
    )
    roots = tuple(found.roots[r] for r in dict.fromkeys(s.root for s in keyless))
    signers = len(keys) + len(keyless)
    threshold = raw.get("threshold", 1)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 1:
        raise ConfigError(f"{where}.threshold: expected a whole number from 1, got {threshold!r}")
    if mode != "allow" and threshold > signers:
        raise ConfigError(
            f"{where}.threshold: {threshold} signatures required but the policy trusts "
            f"{signers} keys and keyless identities"
        )
    return TrustPolicy(
        name, str(mode), threshold=threshold, keys=keys, keyless=keyless, roots=roots,
        identity=_identity(raw, where),
    )  # fmt: skip


def _list(raw: Mapping[str, Any], field: str, where: str) -> list[Any]:
    value = raw.get(field, [])
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{field}: expected a list, got {value!r}")
    return value


def _named_key(name: object, where: str, found: _Resolved) -> PublicKey:
    if not isinstance(name, str) or name not in found.keys:
        known = ", ".join(found.keys) or "none"
        raise ConfigError(f"{where}: no key named {name!r} in trust.keys (have: {known})")
    return found.keys[name]


def _keyless(raw: object, where: str, found: _Resolved) -> KeylessIdentity:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table with root, issuer and identity")
    reject_unknown(raw, where, {"root", "issuer", "identity"})
    root = raw.get("root")
    if root not in found.roots:
        known = ", ".join(found.roots) or "none"
        raise ConfigError(f"{where}.root: no root named {root!r} in trust.roots (have: {known})")
    issuer, identity = raw.get("issuer"), raw.get("identity")
    if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")):
        raise ConfigError(f"{where}.issuer: expected the OIDC issuer's URL, got {issuer!r}")
    if not isinstance(identity, str) or not identity:
        raise ConfigError(f"{where}.identity: expected the certificate identity (email or URI)")
    return KeylessIdentity(str(root), issuer, identity)


def _identity(raw: Mapping[str, Any], where: str) -> IdentityRule:
    match = raw.get("identity", "repository")
    if match not in IDENTITY_MATCHES:
        choices = ", ".join(IDENTITY_MATCHES)
        raise ConfigError(f"{where}.identity: expected one of {choices}, got {match!r}")
    remap = sub_table(raw, "remap", f"{where}.")
    if not remap:
        return IdentityRule(str(match))
    reject_unknown(remap, f"{where}.remap", {"prefix", "signed_prefix"})
    prefix, signed = remap.get("prefix"), remap.get("signed_prefix")
    if not isinstance(prefix, str) or not prefix or not isinstance(signed, str) or not signed:
        raise ConfigError(f"{where}.remap: needs prefix and signed_prefix (registry/path)")
    return IdentityRule(str(match), prefix, signed)


def describe_trust(trust: TrustSettings) -> list[str]:
    """``check-config`` lines: each policy's scope and signers, then the default."""
    return [
        *(_describe(p, f"trust policy {p.name!r} for {_scope(p)}") for p in trust.policies),
        _describe(trust.default, "trust default"),
    ]


def _scope(policy: TrustPolicy) -> str:
    upstream = "every upstream" if policy.upstream == "*" else policy.upstream
    return f"{upstream} {' '.join(policy.repositories)}"


def _describe(policy: TrustPolicy, head: str) -> str:
    if policy.mode == "allow":
        return f"{head}: allow (signatures not checked)"
    signers = [f"key {k.name} ({k.algorithm} {k.key_id[:12]})" for k in policy.keys]
    signers += [f"keyless {s.label}" for s in policy.keyless]
    return (
        f"{head}: {policy.mode} {policy.threshold} of {', '.join(signers)}; "
        f"docker-reference {policy.identity.match}"
    )
