"""The ``[tls]``, ``[auth]`` and ``[rate_limit]`` parts of the configuration.

Part of :mod:`mirror.config`; split out because these settings name files that
must be checked when the configuration is loaded, so that ``check-config``
and start-up fail with the field named: the certificate chain (readable, in
order, in its validity, the key belonging to it), the client CA, the htpasswd
file (bcrypt only) and the token signing key (or the directory it will be made
in). Rules are checked against the groups they name. All three sections are
absent by default: no TLS, no client authentication, no rate limit.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.config_values import ConfigError, parse_duration, redact_url, reject_unknown
from mirror.security.certificates import CertificateProblem, ServerCertificate
from mirror.security.htpasswd import HtpasswdError, read_htpasswd
from mirror.security.keys import KeyProblem, check_key_path
from mirror.security.tls import build_server_context

AUTH_DEFAULTS = ("anonymous-pull", "authenticated-pull", "deny")
UNKNOWN_USERS = ("refuse", "anonymous")
ACTIONS = ("pull", "admin")
# Characters that may stand in a quoted WWW-Authenticate parameter without escaping.
_TOKEN_NAME_RE = re.compile(r"[A-Za-z0-9._:@/-]{1,200}")
_GROUP_RE = re.compile(r"[A-Za-z0-9._-]{1,100}")


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """The mirror's own certificate; ``client_ca`` turns on mutual TLS."""

    cert: Path
    key: Path
    client_ca: Path | None = None
    #: how often the files are looked at for a new certificate
    reload_interval: float = 30.0
    #: what the certificate was when the configuration was loaded (for ``check-config``)
    certificate: ServerCertificate | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class AccessRule:
    """``who`` may (or, with ``allow`` False, may not) do ``actions`` on matching repositories."""

    anonymous: bool = False
    authenticated: bool = False
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    upstream: str = "*"
    repository: str = "*"
    actions: frozenset[str] = frozenset({"pull"})
    allow: bool = True


@dataclass(frozen=True, slots=True)
class TokenConfig:
    """Docker token auth: the mirror issues its own short-lived JWTs."""

    key: Path
    service: str = "registry-mirror"
    issuer: str = "registry-mirror"
    #: where clients fetch tokens; default ``<scheme>://<Host header>/auth/token``
    realm: str | None = None
    expires_in: float = 300.0
    #: lifetime of refresh tokens (``docker login``); 0: none, clients keep the password
    refresh_expires_in: float = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Client authentication and access rules (first matching rule wins, then ``default``)."""

    htpasswd: Path | None = None
    default: str = "anonymous-pull"
    #: a login of a user not in the htpasswd file: ``refuse`` (401) or ``anonymous``
    #: (dockerd sends its Docker Hub login to a registry mirror)
    unknown_users: str = "refuse"
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    rules: tuple[AccessRule, ...] = ()
    token: TokenConfig | None = None


@dataclass(frozen=True, slots=True)
class RateLimitConfig:
    """A token bucket per client: ``rate`` requests a second, ``burst`` at once."""

    rate: float
    burst: int
    max_clients: int = 10000


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """The three sections; None where not configured."""

    tls: TlsConfig | None = None
    auth: AuthConfig | None = None
    rate_limit: RateLimitConfig | None = None


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {value!r}")
    return value


def _path(value: object, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: expected a file path, got {value!r}")
    return Path(value)


def _tls(raw: dict[str, Any]) -> TlsConfig:
    reject_unknown(raw, "tls", {"cert", "key", "client_ca", "reload_interval"})
    for required in ("cert", "key"):
        if required not in raw:
            raise ConfigError(f"tls.{required}: required when [tls] is configured")
    interval = parse_duration(raw.get("reload_interval", "30s"), "tls.reload_interval")
    if interval < 1:
        raise ConfigError(f"tls.reload_interval: must be at least 1s, got {interval:g}s")
    ca = raw.get("client_ca")
    config = TlsConfig(
        cert=_path(raw["cert"], "tls.cert"),
        key=_path(raw["key"], "tls.key"),
        client_ca=_path(ca, "tls.client_ca") if ca is not None else None,
        reload_interval=interval,
    )
    try:
        _, certificate = build_server_context(config)
    except CertificateProblem as exc:
        raise ConfigError(f"tls.{exc.part}: {exc}") from None
    return TlsConfig(config.cert, config.key, config.client_ca, interval, certificate)


def _names(value: object, where: str, pattern: re.Pattern[str]) -> frozenset[str]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and pattern.fullmatch(v) for v in value
    ):
        raise ConfigError(f"{where}: expected a list of names, got {value!r}")
    return frozenset(value)


def _groups(raw: dict[str, Any]) -> dict[str, frozenset[str]]:
    table = _table(raw, "groups", "auth.groups") or {}
    groups = {}
    for name, members in table.items():
        if _GROUP_RE.fullmatch(name) is None:
            raise ConfigError(f"auth.groups.{name}: a group name is letters, digits, '._-'")
        groups[name] = _names(members, f"auth.groups.{name}", re.compile(r"[^\x00-\x20:]+"))
    return groups


def _who(value: object, where: str, groups: Mapping[str, frozenset[str]]) -> dict[str, Any]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f'{where}: expected a list such as ["anonymous", "group:team"]')
    who: dict[str, Any] = {"anonymous": False, "authenticated": False, "users": set(),
                           "groups": set()}  # fmt: skip
    for entry in value:
        kind, _, name = str(entry).partition(":")
        if entry in ("anonymous", "authenticated"):
            who[str(entry)] = True
        elif entry == "everyone":
            who["anonymous"] = who["authenticated"] = True
        elif kind == "user" and name:
            who["users"].add(name)
        elif kind == "group" and name in groups:
            who["groups"].add(name)
        elif kind == "group":
            raise ConfigError(f"{where}: group {name!r} is not defined in [auth.groups]")
        else:
            raise ConfigError(
                f"{where}: {entry!r} is not anonymous, authenticated, everyone, "
                f"user:NAME or group:NAME"
            )
    return {**who, "users": frozenset(who["users"]), "groups": frozenset(who["groups"])}


def _pattern(value: object, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 255 or value.strip() != value:
        raise ConfigError(f"{where}: expected a glob pattern such as 'library/*', got {value!r}")
    return value


def _rule(raw: object, where: str, groups: Mapping[str, frozenset[str]]) -> AccessRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    reject_unknown(raw, where, {"who", "upstream", "repository", "actions", "effect"})
    if "who" not in raw:
        raise ConfigError(f"{where}.who: required")
    actions = raw.get("actions", ["pull"])
    if not isinstance(actions, list) or not actions or not set(actions) <= set(ACTIONS):
        raise ConfigError(f"{where}.actions: expected a list of {', '.join(ACTIONS)}")
    effect = raw.get("effect", "allow")
    if effect not in ("allow", "deny"):
        raise ConfigError(f"{where}.effect: expected 'allow' or 'deny', got {effect!r}")
    upstream = _pattern(raw.get("upstream", "*"), f"{where}.upstream")
    repository = _pattern(raw.get("repository", "*"), f"{where}.repository")
    if "admin" in actions and (upstream, repository) != ("*", "*"):
        raise ConfigError(
            f"{where}.actions: admin is for the whole mirror; leave upstream and repository out"
        )
    return AccessRule(
        **_who(raw["who"], f"{where}.who", groups),
        upstream=upstream,
        repository=repository,
        actions=frozenset(actions),
        allow=effect == "allow",
    )


def _quoted_name(value: object, where: str) -> str:
    if not isinstance(value, str) or _TOKEN_NAME_RE.fullmatch(value) is None:
        raise ConfigError(f"{where}: expected letters, digits and '._:@/-', got {value!r}")
    return value


def _realm(value: object) -> str | None:
    if value is None:
        return None
    url = str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or "@" in parts.netloc:
        raise ConfigError(f"auth.token.realm: expected an http(s) URL, got {redact_url(url)!r}")
    if '"' in url or "," in url or parts.fragment:
        raise ConfigError(f"auth.token.realm: the URL may not hold '\"', ',' or '#': {url!r}")
    return url


def _token(raw: dict[str, Any]) -> TokenConfig:
    reject_unknown(raw, "auth.token", set(TokenConfig.__dataclass_fields__))
    if "key" not in raw:
        raise ConfigError("auth.token.key: required (a path; a new key is made there if absent)")
    key = _path(raw["key"], "auth.token.key")
    try:
        check_key_path(key)
    except KeyProblem as exc:
        raise ConfigError(f"auth.token.key: {exc}") from None
    expires = parse_duration(raw.get("expires_in", "5m"), "auth.token.expires_in")
    if not 10 <= expires <= 3600:
        raise ConfigError(f"auth.token.expires_in: expected 10s to 1h, got {expires:g}s")
    refresh = parse_duration(raw.get("refresh_expires_in", "7d"), "auth.token.refresh_expires_in")
    if refresh and not expires <= refresh <= 90 * 86400:
        raise ConfigError(
            f"auth.token.refresh_expires_in: expected 0 (none) or expires_in to 90d, "
            f"got {refresh:g}s"
        )
    return TokenConfig(
        key=key,
        service=_quoted_name(raw.get("service", "registry-mirror"), "auth.token.service"),
        issuer=_quoted_name(raw.get("issuer", "registry-mirror"), "auth.token.issuer"),
        realm=_realm(raw.get("realm")),
        expires_in=expires,
        refresh_expires_in=refresh,
    )


def _auth(raw: dict[str, Any]) -> AuthConfig:
    reject_unknown(
        raw, "auth", {"htpasswd", "default", "unknown_users", "groups", "rules", "token"}
    )
    htpasswd = _path(raw["htpasswd"], "auth.htpasswd") if "htpasswd" in raw else None
    if htpasswd is not None:
        try:
            read_htpasswd(htpasswd)
        except HtpasswdError as exc:
            raise ConfigError(f"auth.htpasswd: {exc}") from None
    default = raw.get("default", "anonymous-pull")
    if default not in AUTH_DEFAULTS:
        raise ConfigError(
            f"auth.default: expected one of {', '.join(AUTH_DEFAULTS)}, got {default!r}"
        )
    unknown_users = raw.get("unknown_users", "refuse")
    if unknown_users not in UNKNOWN_USERS:
        raise ConfigError(
            f"auth.unknown_users: expected 'refuse' or 'anonymous', got {unknown_users!r}"
        )
    groups = _groups(raw)
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise ConfigError("auth.rules: expected a list of tables ([[auth.rules]])")
    token = _table(raw, "token", "auth.token")
    return AuthConfig(
        htpasswd=htpasswd,
        default=default,
        unknown_users=unknown_users,
        groups=groups,
        rules=tuple(_rule(r, f"auth.rules[{i}]", groups) for i, r in enumerate(rules)),
        token=_token(token) if token is not None else None,
    )


def _rate_limit(raw: dict[str, Any]) -> RateLimitConfig:
    reject_unknown(raw, "rate_limit", {"rate", "burst", "max_clients"})
    rate = raw.get("rate")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
        raise ConfigError(f"rate_limit.rate: expected requests per second above 0, got {rate!r}")
    burst = raw.get("burst", max(1, math.ceil(rate)))
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10**6:
        raise ConfigError(f"rate_limit.burst: expected a whole number 1-1000000, got {burst!r}")
    clients = raw.get("max_clients", 10000)
    if isinstance(clients, bool) or not isinstance(clients, int) or not 100 <= clients <= 10**7:
        raise ConfigError(
            f"rate_limit.max_clients: expected a whole number 100-10000000, got {clients!r}"
        )
    return RateLimitConfig(rate=float(rate), burst=burst, max_clients=clients)


def parse_security(raw: Mapping[str, Any]) -> SecurityConfig:
    """The ``tls``, ``auth`` and ``rate_limit`` tables of a raw settings tree."""
    tls = _table(raw, "tls", "tls")
    auth = _table(raw, "auth", "auth")
    rate_limit = _table(raw, "rate_limit", "rate_limit")
    return SecurityConfig(
        tls=_tls(tls) if tls is not None else None,
        auth=_auth(auth) if auth is not None else None,
        rate_limit=_rate_limit(rate_limit) if rate_limit is not None else None,
    )


def describe_security(security: SecurityConfig, now: datetime.datetime) -> list[str]:
    """``check-config`` lines for the three sections (nothing when none is configured)."""
    lines = []
    tls = security.tls
    if tls is not None and tls.certificate is not None:
        lines.append(f"tls: {tls.certificate.describe(now)}")
        if tls.client_ca is not None:
            lines.append(f"tls: clients must show a certificate issued by {tls.client_ca}")
        lines.append(f"tls: certificate files looked at every {tls.reload_interval:g}s")
    if security.auth is not None:
        lines += _describe_auth(security.auth)
    limit = security.rate_limit
    if limit is not None:
        lines.append(
            f"rate limit: {limit.rate:g} requests/s, bursts of {limit.burst}, per user "
            f"(anonymous callers per address), {limit.max_clients} clients remembered"
        )
    return lines


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _describe_auth(auth: AuthConfig) -> list[str]:
    users = "no users (anonymous only)"
    if auth.htpasswd is not None:
        users = f"{_count(len(read_htpasswd(auth.htpasswd)), 'user')} from {auth.htpasswd}"
    rules = _count(len(auth.rules), "rule")
    lines = [f"auth: {users}; {rules}, then default {auth.default}"]
    if auth.unknown_users == "anonymous":
        lines.append("auth: logins of users not in the htpasswd file count as anonymous")
    token = auth.token
    if token is None:
        lines.append("auth: Basic credentials on every request")
        return lines
    realm = token.realm or "<scheme>://<Host>/auth/token"
    lines.append(
        f"auth: token auth, service {token.service!r}, realm {realm}, tokens valid "
        f"{token.expires_in:g}s, refresh tokens {token.refresh_expires_in:g}s"
    )
    lines.append(f"auth: signing key: {check_key_path(token.key)}")
    return lines
