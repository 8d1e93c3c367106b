"""Configuration: the only module that reads files and the environment.

Settings come, later ones winning, from built-in defaults, one TOML file,
``MIRROR_*`` environment variables and command-line flags. Everything is
parsed once into frozen dataclasses and validated; a bad value raises
:class:`ConfigError` naming the field and the value. ``docs/configuration.md``
documents every field.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mirror.config_security import SecurityConfig, parse_security
from mirror.config_trust import parse_trust
from mirror.config_upstreams import UpstreamConfig, parse_upstream_flag, parse_upstreams
from mirror.config_values import (
    ConfigError,
    parse_bool,
    parse_duration,
    parse_fraction,
    parse_listen,
    parse_size,
    read_secret,
    redact_url,
    reject_unknown,
    sub_table,
)
from mirror.docker_hub import DOCKER_HUB_NAME, DOCKER_HUB_URL, registry_name
from mirror.trust.policy import TrustSettings

__all__ = [
    "DOCKER_HUB_NAME",
    "Config",
    "ConfigError",
    "UpstreamConfig",
    "load_config",
    "parse_duration",
    "parse_size",
    "parse_upstream_flag",
]

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
    "MIRROR_SHUTDOWN_GRACE": "shutdown_grace",
    "MIRROR_READINESS_REQUIRE_UPSTREAM": "readiness.require_upstream",
}


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
    when the cache disk refuses writes; ``splice`` lets a download from a
    plain-HTTP upstream move the body into its spool with ``splice(2)``.
    """

    idle_timeout: float = 60.0
    total_timeout: float = 3600.0
    chunk_size: int = 256 * 1024
    stall_timeout: float = 120.0
    max_resumes: int = 5
    memory_limit: int = 4 * 1024**2
    splice: bool = True


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
    #: seconds a SIGTERM/SIGINT leaves requests in flight and verified downloads to finish
    shutdown_grace: float = 8.0
    #: signature policies, keys and trusted roots (``[trust]``, mirror.config_trust)
    trust: TrustSettings = field(default_factory=TrustSettings)
    #: ``[tls]``, ``[auth]``, ``[rate_limit]`` (mirror.config_security)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    #: ``readiness.require_upstream``: /readyz fails while an upstream is down
    readiness_require_upstream: bool = False

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

    def upstream_named(self, registry: str) -> UpstreamConfig | None:
        """The configured upstream a client means by ``registry`` (``ns``, a prefix, a pin).

        Its name in any case, or for any of Docker Hub's host names the
        upstream that is Docker Hub (see :mod:`mirror.docker_hub`).
        """
        name = registry_name(registry)
        found = self.upstream(name)
        if found is None and name == DOCKER_HUB_NAME:
            found = next((u for u in self.upstreams if u.is_docker_hub), None)
        return found


# ---------------------------------------------------------------- parsing


def _endpoint_url(value: object, where: str) -> str | None:
    """An S3 endpoint: keys authenticate, so ``user:password@`` in it is a mistake to stop."""
    if value is None or value == "":
        return None
    url = str(value)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http(s) URL, got {redact_url(url)!r}")
    if "@" in parts.netloc:
        raise ConfigError(
            f"{where}: URL must not carry credentials (use access_key_id and "
            f"secret_access_key): {redact_url(url)!r}"
        )
    return url


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
        endpoint_url=_endpoint_url(s3raw.get("endpoint_url"), "storage.s3.endpoint_url"),
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
    high = parse_fraction(table.get("high_watermark", 0.95), "cache.high_watermark")
    low = parse_fraction(table.get("low_watermark", 0.85), "cache.low_watermark")
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
        splice=parse_bool(table.get("splice", True), "fill.splice"),
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
    "auths_file", "shutdown_grace", "trust", "tls", "auth", "rate_limit", "readiness",
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
    upstreams = parse_upstreams(raw, os.environ if environ is None else environ)
    readiness = sub_table(raw, "readiness", "")
    reject_unknown(readiness, "readiness", {"require_upstream"})
    return Config(
        listen_host=host,
        listen_port=port,
        offline=parse_bool(raw.get("offline", False), "offline"),
        upstreams=upstreams,
        storage=_storage(raw),
        cache=_cache(raw),
        fill=_fill(raw),
        log=_log(raw),
        admin_token=str(token) if token else None,
        metrics_listen=metrics_listen,
        shutdown_grace=parse_duration(raw.get("shutdown_grace", 8), "shutdown_grace"),
        trust=parse_trust(raw, tuple(u.name for u in upstreams)),
        security=parse_security(raw),
        readiness_require_upstream=parse_bool(
            readiness.get("require_upstream", False), "readiness.require_upstream"
        ),
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
    spelled: Mapping[str, str] | None = None,
) -> Config:
    """Defaults < TOML file < ``MIRROR_*`` environment < ``overrides`` (CLI flags).

    ``overrides`` maps dotted setting paths to values; ``upstreams`` replaces
    the whole list. ``spelled`` says how the user wrote each override
    (``tag_ttl`` -> ``--tag-ttl``): an error about a setting that a flag or an
    environment variable set names that flag or variable too.
    """
    env = os.environ if environ is None else environ
    if path is None and env.get("MIRROR_CONFIG"):
        path = Path(env["MIRROR_CONFIG"])
    tree: dict[str, Any] = read_toml(path) if path is not None else {}
    names: dict[str, str] = {}
    for name, dotted in ENV_SETTINGS.items():
        if name in env:
            set_path(tree, dotted, env[name])
            names[dotted] = name
    for dotted, value in (overrides or {}).items():
        set_path(tree, dotted, value)
        names[dotted] = (spelled or {}).get(dotted, dotted)
    if "upstream" in tree and "upstreams" in tree and "upstreams" not in (overrides or {}):
        # A single --upstream/MIRROR_UPSTREAM URL replaces the file's list.
        del tree["upstreams"]
    try:
        return build_config(tree, env)
    except ConfigError as exc:
        raise exc.sourced(names) from None
