"""The ``[[upstreams]]`` part of the configuration: parsed into :class:`UpstreamConfig`.

Part of :mod:`mirror.config` (which re-exports what others need); split out
because upstreams carry the most settings: URL and name, credentials, timeouts
and retries, and where the upstream may send the mirror (``redirects``,
``redirect_allow``). Error messages never quote a credential: an upstream URL
with ``user:password@`` in it is refused with the userinfo blanked out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.config_values import (
    ConfigError,
    parse_duration,
    read_secret,
    redact_url,
    reject_unknown,
)
from mirror.credentials import (
    CredentialError,
    Credentials,
    CredentialSources,
    parse_auths,
    resolve_credentials,
)
from mirror.docker_hub import DOCKER_HUB_NAME, DOCKER_HUB_URL, is_docker_hub_host, registry_name
from mirror.upstream.addresses import parse_allow_entry

REDIRECT_MODES = ("none", "blobs", "all")
# Upstreams whose whole API answers with redirects by design: registry.k8s.io
# sends every /v2/ request on to the Artifact Registry (or S3) nearest the
# caller. Over HTTPS only that registry picks the targets, and they still
# have to be public addresses, so following them is the safe default there.
_API_REDIRECTORS = frozenset({"registry.k8s.io"})

_UPSTREAM_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One upstream registry the mirror pulls from."""

    name: str
    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tag_ttl: float = 300.0
    max_stale: float = 7 * 86400.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    #: longest ``Retry-After`` (on 429/503) the mirror waits out before retrying
    retry_after_max: float = 10.0
    #: which redirects to follow: ``none``, ``blobs`` or ``all`` (see mirror.upstream.egress)
    redirects: str = "blobs"
    #: host names and networks, besides public addresses, it may redirect to or name as realm
    redirect_allow: tuple[str, ...] = ()

    @property
    def is_docker_hub(self) -> bool:
        """Named or reached as Docker Hub (see :mod:`mirror.docker_hub`)."""
        host = urlsplit(self.url).hostname or ""
        return is_docker_hub_host(self.name) or is_docker_hub_host(host)


# ---------------------------------------------------------------- parsing


def _parse_upstream_url(value: object, where: str) -> str:
    url = str(value).rstrip("/")
    shown = redact_url(url)
    # Userinfo, even where an unescaped "/" in the password hides it from urlsplit.
    if "@" in url:
        raise ConfigError(
            f"{where}: URL must not carry credentials (use username and password_file, "
            f"password_env or auths_file): {shown!r}"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http(s) URL, got {shown!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{where}: URL must not carry a query or fragment: {shown!r}")
    return url


def _name_from_url(url: str) -> str:
    """The registry name an upstream answers to when none is given."""
    return registry_name(urlsplit(url).netloc)


def parse_upstream_flag(value: str) -> dict[str, Any]:
    """``--upstream [NAME=]URL`` -> a raw upstream table."""
    name, sep, url = value.partition("=")
    if sep and "://" not in name:
        return {"name": name, "url": url}
    return {"url": value}


_CREDENTIAL_KEYS = {"password_file", "password_env", "username_env", "docker_config"}


def _upstream(
    raw: Mapping[str, Any],
    where: str,
    defaults: Mapping[str, Any],
    sources: CredentialSources,
) -> UpstreamConfig:
    reject_unknown(raw, where, {f for f in UpstreamConfig.__dataclass_fields__} | _CREDENTIAL_KEYS)
    if "url" not in raw:
        raise ConfigError(f"{where}.url: required")
    url = _parse_upstream_url(raw["url"], f"{where}.url")
    name = _upstream_name(raw, url)
    if _UPSTREAM_NAME_RE.fullmatch(name) is None:
        raise ConfigError(f"{where}.name: expected a registry host name, got {name!r}")
    if "password_file" in raw:
        raw = {**raw, "password": read_secret(raw["password_file"], f"{where}.password_file")}
    try:
        found = resolve_credentials(raw, where, (name, url), sources)
    except CredentialError as exc:
        raise ConfigError(str(exc)) from None
    merged = {**defaults, **raw}
    retries = merged.get("retries", 3)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise ConfigError(f"{where}.retries: expected a whole number 0-10, got {retries!r}")
    return UpstreamConfig(
        name=name,
        url=url,
        username=found.username if found else None,
        password=found.password or None if found else None,
        tag_ttl=parse_duration(merged.get("tag_ttl", 300), f"{where}.tag_ttl"),
        max_stale=parse_duration(merged.get("max_stale", "7d"), f"{where}.max_stale"),
        connect_timeout=parse_duration(
            merged.get("connect_timeout", 10), f"{where}.connect_timeout"
        ),
        read_timeout=parse_duration(merged.get("read_timeout", 60), f"{where}.read_timeout"),
        retries=retries,
        retry_after_max=parse_duration(
            merged.get("retry_after_max", 10), f"{where}.retry_after_max"
        ),
        redirects=_redirect_mode(merged, url, f"{where}.redirects"),
        redirect_allow=_redirect_allow(merged.get("redirect_allow", []), f"{where}.redirect_allow"),
    )


def _redirect_mode(raw: Mapping[str, Any], url: str, where: str) -> str:
    parts = urlsplit(url)
    default = "all" if parts.scheme == "https" and parts.hostname in _API_REDIRECTORS else "blobs"
    mode = raw.get("redirects", default)
    if mode not in REDIRECT_MODES:
        raise ConfigError(f"{where}: expected one of {', '.join(REDIRECT_MODES)}, got {mode!r}")
    return str(mode)


def _redirect_allow(value: object, where: str) -> tuple[str, ...]:
    """Validated allowlist entries, normalised (``CDN.Example.`` -> ``cdn.example``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of host names and networks, got {value!r}")
    entries = []
    for entry in value:
        try:
            entries.append(str(parse_allow_entry(entry)))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return tuple(entries)


def _upstream_name(raw: Mapping[str, Any], url: str) -> str:
    return str(raw.get("name") or _name_from_url(url)).lower()


def _read_auths(path: str, where: str) -> dict[str, Credentials]:
    """Credentials from a docker ``config.json``; errors never quote the file's content."""
    try:
        return parse_auths(Path(str(path)).read_text())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {str(path)!r}: {exc.strerror}") from None
    except CredentialError as exc:
        raise ConfigError(f"{where}: {str(path)!r}: {exc}") from None


# Top-level settings that every upstream takes unless its table sets its own.
_UPSTREAM_DEFAULTS = ("tag_ttl", "max_stale")


def parse_upstreams(
    raw: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[UpstreamConfig, ...]:
    """The upstreams of a raw settings tree (``upstreams``, or the ``upstream`` shorthand).

    A top-level setting that applies to upstreams (``tag_ttl``, ``max_stale``,
    ``upstream_username``, the ``upstream`` URL) is reported by its own name
    when it is wrong, not as the upstream it was copied into.
    """
    defaults = {k: parse_duration(raw[k], k) for k in _UPSTREAM_DEFAULTS if k in raw}
    tables = raw.get("upstreams")
    shorthand = tables is None
    if tables is None:
        tables = [{"url": raw.get("upstream", DOCKER_HUB_URL)}]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("upstreams: expected a non-empty list of tables")
    tables = _with_top_level_credentials(raw, tables)
    auths = _read_auths(str(raw["auths_file"]), "auths_file") if raw.get("auths_file") else {}
    sources = CredentialSources(environ, auths, _read_auths)
    try:
        result = tuple(
            _upstream(t, f"upstreams[{i}]", defaults, sources) for i, t in enumerate(tables)
        )
    except ConfigError as exc:
        raise exc.renamed({"upstreams[0].url": "upstream"} if shorthand else {}) from None
    names = [u.name for u in result]
    if len(set(names)) != len(names):
        raise ConfigError(f"upstreams: duplicate upstream name in {names}")
    return result


def _with_top_level_credentials(
    raw: Mapping[str, Any], tables: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``tables`` with ``upstream_username``/``upstream_password`` in the default upstream's.

    Each fills in only what the table does not set itself (a username in the
    file and the password from the environment is a usual split). A password
    that no username goes with would be dropped without a word: an error.
    """
    for key in ("upstream_username", "upstream_password"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{key}: expected a string")  # never quote a credential
    if not (raw.get("upstream_username") or raw.get("upstream_password")):
        return tables
    tables = list(tables)
    index = _default_index(tables)
    table = dict(tables[index])
    if raw.get("upstream_username"):
        table.setdefault("username", raw["upstream_username"])
    if raw.get("upstream_password"):
        if not (table.get("username") or table.get("username_env")):
            raise ConfigError(
                "upstream_password: set, but the default upstream has no username to go with it"
            )
        table.setdefault("password", raw["upstream_password"])
    tables[index] = table
    return tables


def _default_index(tables: list[dict[str, Any]]) -> int:
    """Which table becomes the default upstream (see :attr:`Config.default_upstream`)."""
    for index, table in enumerate(tables):
        url = str(table.get("url", ""))
        if _upstream_name(table, url.rstrip("/")) == DOCKER_HUB_NAME:
            return index
    return 0
