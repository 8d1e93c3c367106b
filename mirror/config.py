"""Configuration: the only module that reads files and the environment.

Settings come, later ones winning, from built-in defaults, one TOML file,
``MIRROR_*`` environment variables and command-line flags. Everything is
parsed once into frozen dataclasses and validated; a bad value raises
:class:`ConfigError` naming the field and the value. ``docs/configuration.md``
documents every field.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.config_values import (
    ConfigError,
    parse_bool,
    parse_duration,
    parse_listen,
    parse_size,
    read_secret,
    reject_unknown,
    sub_table,
)
from mirror.credentials import (
    CredentialError,
    Credentials,
    CredentialSources,
    parse_auths,
    resolve_credentials,
)

__all__ = [
    "DOCKER_HUB_NAME",
    "Config",
    "ConfigError",
    "load_config",
    "parse_duration",
    "parse_size",
]

DOCKER_HUB_URL = "https://registry-1.docker.io"
DOCKER_HUB_NAME = "docker.io"

_UPSTREAM_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?")

# Environment variable -> dotted setting path. Upstream credentials apply to
# the default upstream; more upstreams need the TOML file.
ENV_SETTINGS = {
    "MIRROR_LISTEN": "listen",
    "MIRROR_CACHE_DIR": "storage.path",
    "MIRROR_STORAGE": "storage.backend",
    "MIRROR_OFFLINE": "offline",
    "MIRROR_LOG_FORMAT": "log.format",
    "MIRROR_LOG_LEVEL": "log.level",
    "MIRROR_UPSTREAM": "upstream",
    "MIRROR_UPSTREAM_USERNAME": "upstream_username",
    "MIRROR_UPSTREAM_PASSWORD": "upstream_password",
    "MIRROR_AUTHS_FILE": "auths_file",
    "MIRROR_TAG_TTL": "tag_ttl",
    "MIRROR_MAX_SIZE": "cache.max_size",
    "MIRROR_S3_BUCKET": "storage.s3.bucket",
    "MIRROR_S3_PREFIX": "storage.s3.prefix",
    "MIRROR_S3_REGION": "storage.s3.region",
    "MIRROR_S3_ENDPOINT_URL": "storage.s3.endpoint_url",
    "MIRROR_ADMIN_TOKEN": "admin.token",
    "MIRROR_METRICS_LISTEN": "metrics.listen",
}


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

    @property
    def is_docker_hub(self) -> bool:
        """Docker Hub puts one-component names under ``library/``."""
        return self.name == DOCKER_HUB_NAME or urlsplit(self.url).hostname in (
            "registry-1.docker.io",
            "index.docker.io",
            "docker.io",
        )


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where and how blobs are kept in an S3-compatible bucket."""

    bucket: str = ""
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    part_size: int = 8 * 1024**2
    redirect: bool = False
    presign_ttl: float = 900.0


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The cache backend. ``path`` is the cache (disk) or the local spool (s3)."""

    backend: str = "disk"
    path: Path = Path("./data")
    s3: S3Config = S3Config()


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Size budget and eviction policy (``max_size`` 0 means unbounded)."""

    max_size: int = 0
    high_watermark: float = 0.95
    low_watermark: float = 0.85
    pins: tuple[str, ...] = ()
    memory: int = 64 * 1024**2


@dataclass(frozen=True, slots=True)
class FillConfig:
    """Limits on one upstream blob download.

    ``idle_timeout`` bounds one silent read (then the download is resumed);
    ``stall_timeout`` bounds the time without a byte, across resumes;
    ``max_resumes`` counts resumes in a row that brought no byte;
    ``memory_limit`` bounds what a download keeps in memory for its clients
    when the cache disk refuses writes.
    """

    idle_timeout: float = 60.0
    total_timeout: float = 3600.0
    chunk_size: int = 256 * 1024
    stall_timeout: float = 120.0
    max_resumes: int = 5
    memory_limit: int = 4 * 1024**2


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Access and application log settings."""

    format: str = "text"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole, validated configuration of one mirror process."""

    listen_host: str = "0.0.0.0"
    listen_port: int = 5000
    offline: bool = False
    upstreams: tuple[UpstreamConfig, ...] = (UpstreamConfig(DOCKER_HUB_NAME, DOCKER_HUB_URL),)
    storage: StorageConfig = StorageConfig()
    cache: CacheConfig = CacheConfig()
    fill: FillConfig = FillConfig()
    log: LogConfig = LogConfig()
    admin_token: str | None = field(default=None, repr=False)
    metrics_listen: tuple[str, int] | None = None

    @property
    def default_upstream(self) -> UpstreamConfig:
        """docker.io if configured, else the first upstream."""
        for upstream in self.upstreams:
            if upstream.name == DOCKER_HUB_NAME:
                return upstream
        return self.upstreams[0]

    def upstream(self, name: str) -> UpstreamConfig | None:
        """The configured upstream called ``name``, if any."""
        for upstream in self.upstreams:
            if upstream.name == name:
                return upstream
        return None


# ---------------------------------------------------------------- parsing


def _parse_upstream_url(value: object, where: str) -> str:
    url = str(value).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http(s) URL, got {value!r}")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{where}: URL must not carry credentials, query or fragment: {url!r}")
    return url


def _name_from_url(url: str) -> str:
    """The registry name an upstream answers to when none is given."""
    host = urlsplit(url).netloc.lower()
    return DOCKER_HUB_NAME if host in ("registry-1.docker.io", "index.docker.io") else host


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
    )


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


def _upstreams(raw: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[UpstreamConfig, ...]:
    defaults = {k: raw[k] for k in ("tag_ttl", "max_stale") if k in raw}
    tables = raw.get("upstreams")
    if tables is None:
        tables = [{"url": raw.get("upstream", DOCKER_HUB_URL)}]
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("upstreams: expected a non-empty list of tables")
    if raw.get("upstream_username") or raw.get("upstream_password"):
        tables = list(tables)
        index = _default_index(tables)
        table = dict(tables[index])
        table.setdefault("username", raw.get("upstream_username"))
        table.setdefault("password", raw.get("upstream_password"))
        tables[index] = table
    auths = _read_auths(str(raw["auths_file"]), "auths_file") if raw.get("auths_file") else {}
    sources = CredentialSources(environ, auths, _read_auths)
    result = tuple(_upstream(t, f"upstreams[{i}]", defaults, sources) for i, t in enumerate(tables))
    names = [u.name for u in result]
    if len(set(names)) != len(names):
        raise ConfigError(f"upstreams: duplicate upstream name in {names}")
    return result


def _default_index(tables: list[dict[str, Any]]) -> int:
    """Which table becomes the default upstream (see :attr:`Config.default_upstream`)."""
    for index, table in enumerate(tables):
        url = str(table.get("url", ""))
        if _upstream_name(table, url.rstrip("/")) == DOCKER_HUB_NAME:
            return index
    return 0


def _storage(raw: Mapping[str, Any]) -> StorageConfig:
    table = sub_table(raw, "storage", "")
    reject_unknown(table, "storage", {"backend", "path", "s3"})
    backend = str(table.get("backend", "disk"))
    if backend not in ("disk", "s3"):
        raise ConfigError(f"storage.backend: expected 'disk' or 's3', got {backend!r}")
    s3raw = sub_table(table, "s3", "storage.")
    reject_unknown(s3raw, "storage.s3", set(S3Config.__dataclass_fields__))
    part_size = parse_size(s3raw.get("part_size", "8MiB"), "storage.s3.part_size")
    if part_size < 5 * 1024**2:
        raise ConfigError(f"storage.s3.part_size: S3 needs at least 5MiB, got {part_size}")
    s3 = S3Config(
        bucket=str(s3raw.get("bucket", "")),
        prefix=str(s3raw.get("prefix", "")).strip("/"),
        region=s3raw.get("region"),
        endpoint_url=s3raw.get("endpoint_url"),
        access_key_id=s3raw.get("access_key_id"),
        secret_access_key=s3raw.get("secret_access_key"),
        part_size=part_size,
        redirect=parse_bool(s3raw.get("redirect", False), "storage.s3.redirect"),
        presign_ttl=parse_duration(s3raw.get("presign_ttl", 900), "storage.s3.presign_ttl"),
    )
    if backend == "s3" and not s3.bucket:
        raise ConfigError("storage.s3.bucket: required when storage.backend is 's3'")
    return StorageConfig(backend=backend, path=Path(str(table.get("path", "./data"))), s3=s3)


def _cache(raw: Mapping[str, Any]) -> CacheConfig:
    table = sub_table(raw, "cache", "")
    reject_unknown(table, "cache", set(CacheConfig.__dataclass_fields__))
    high = float(table.get("high_watermark", 0.95))
    low = float(table.get("low_watermark", 0.85))
    if not 0 < low < high <= 1:
        raise ConfigError(
            f"cache.low_watermark/high_watermark: need 0 < low < high <= 1, got {low}/{high}"
        )
    pins = table.get("pins", [])
    if not isinstance(pins, list) or not all(isinstance(p, str) for p in pins):
        raise ConfigError(f"cache.pins: expected a list of image references, got {pins!r}")
    return CacheConfig(
        max_size=parse_size(table.get("max_size", 0), "cache.max_size"),
        high_watermark=high,
        low_watermark=low,
        pins=tuple(pins),
        memory=parse_size(table.get("memory", "64MiB"), "cache.memory"),
    )


def _fill(raw: Mapping[str, Any]) -> FillConfig:
    table = sub_table(raw, "fill", "")
    reject_unknown(table, "fill", set(FillConfig.__dataclass_fields__))
    chunk = parse_size(table.get("chunk_size", "256KiB"), "fill.chunk_size")
    if not 4096 <= chunk <= 16 * 1024**2:
        raise ConfigError(f"fill.chunk_size: expected 4KiB-16MiB, got {chunk}")
    resumes = table.get("max_resumes", 5)
    if not isinstance(resumes, int) or isinstance(resumes, bool) or not 0 <= resumes <= 100:
        raise ConfigError(f"fill.max_resumes: expected a whole number 0-100, got {resumes!r}")
    memory = parse_size(table.get("memory_limit", "4MiB"), "fill.memory_limit")
    if not 64 * 1024 <= memory <= 1024**3:
        raise ConfigError(f"fill.memory_limit: expected 64KiB-1GiB, got {memory}")
    idle = parse_duration(table.get("idle_timeout", 60), "fill.idle_timeout")
    stall = parse_duration(table.get("stall_timeout", 2 * idle), "fill.stall_timeout")
    if stall < idle:
        raise ConfigError(f"fill.stall_timeout: must be at least fill.idle_timeout ({idle:g}s)")
    return FillConfig(
        idle_timeout=idle,
        total_timeout=parse_duration(table.get("total_timeout", "1h"), "fill.total_timeout"),
        chunk_size=chunk,
        stall_timeout=stall,
        max_resumes=resumes,
        memory_limit=memory,
    )


def _log(raw: Mapping[str, Any]) -> LogConfig:
    table = sub_table(raw, "log", "")
    reject_unknown(table, "log", {"format", "level"})
    fmt = str(table.get("format", "text"))
    if fmt not in ("text", "json"):
        raise ConfigError(f"log.format: expected 'text' or 'json', got {fmt!r}")
    level = str(table.get("level", "info")).lower()
    if level not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"log.level: expected debug, info, warning or error, got {level!r}")
    return LogConfig(format=fmt, level=level)


_TOP_LEVEL = {
    "listen", "offline", "upstream", "upstreams", "upstream_username", "upstream_password",
    "tag_ttl", "max_stale", "storage", "cache", "fill", "log", "admin", "metrics",
    "auths_file",
}  # fmt: skip


def build_config(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Config:
    """Validate a raw settings tree (TOML shape) into a :class:`Config`.

    ``environ`` is where ``password_env``/``username_env`` are looked up
    (default: the process environment).
    """
    reject_unknown(raw, "", _TOP_LEVEL)
    host, port = parse_listen(raw.get("listen", "0.0.0.0:5000"), "listen")
    admin = sub_table(raw, "admin", "")
    reject_unknown(admin, "admin", {"token", "token_file"})
    token = admin.get("token")
    if "token_file" in admin:
        token = read_secret(admin["token_file"], "admin.token_file")
    metrics = sub_table(raw, "metrics", "")
    reject_unknown(metrics, "metrics", {"listen"})
    metrics_listen = (
        parse_listen(metrics["listen"], "metrics.listen") if metrics.get("listen") else None
    )
    return Config(
        listen_host=host,
        listen_port=port,
        offline=parse_bool(raw.get("offline", False), "offline"),
        upstreams=_upstreams(raw, os.environ if environ is None else environ),
        storage=_storage(raw),
        cache=_cache(raw),
        fill=_fill(raw),
        log=_log(raw),
        admin_token=str(token) if token else None,
        metrics_listen=metrics_listen,
    )


def set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating tables on the way."""
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a table")
        node = child
    node[leaf] = value


def read_toml(path: Path) -> dict[str, Any]:
    """Read one TOML configuration file."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None


def load_config(
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < TOML file < ``MIRROR_*`` environment < ``overrides`` (CLI flags).

    ``overrides`` maps dotted setting paths to values; ``upstreams`` replaces
    the whole list.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("MIRROR_CONFIG"):
        path = Path(env["MIRROR_CONFIG"])
    tree: dict[str, Any] = read_toml(path) if path is not None else {}
    for name, dotted in ENV_SETTINGS.items():
        if name in env:
            set_path(tree, dotted, env[name])
    for dotted, value in (overrides or {}).items():
        set_path(tree, dotted, value)
    if "upstream" in tree and "upstreams" in tree and "upstreams" not in (overrides or {}):
        # A single --upstream/MIRROR_UPSTREAM URL replaces the file's list.
        del tree["upstreams"]
    return build_config(tree, env)
