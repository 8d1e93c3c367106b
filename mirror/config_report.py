"""What ``check-config`` and ``serve`` say about the settings: the values, and what to fix.

Pure: lines of text from a :class:`~mirror.config.Config`. No line ever holds
a secret (passwords, tokens, S3 keys, the admin token): only whether one is set.
"""

from __future__ import annotations

from mirror.config import Config, UpstreamConfig
from mirror.docker_hub import DOCKER_HUB_NAME

_BINARY_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
_DURATION_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def upstream_warnings(config: Config) -> list[str]:
    """Settings that work but will surprise: a default upstream that is not Docker Hub.

    containerd names the registry an image came from in ``?ns=``, so a client
    pulling ``alpine`` asks for ``ns=docker.io``. With no upstream of that name
    the mirror answers 403 and containerd silently goes around it; and a short
    name such as ``alpine`` gets no ``library/`` prefix, which only Docker Hub has.
    """
    default = config.default_upstream
    if default.name == DOCKER_HUB_NAME:
        return []
    return [
        f"the default upstream is {default.name!r}, not {DOCKER_HUB_NAME!r}: containerd asks "
        f"with ?ns={DOCKER_HUB_NAME} for Docker Hub images, gets 403 DENIED and goes around "
        f"the mirror to the real registry, and short names (alpine) get no library/ prefix. "
        f"If this upstream mirrors Docker Hub, name it: --upstream "
        f"{DOCKER_HUB_NAME}={default.url}, or name = {DOCKER_HUB_NAME!r} in its [[upstreams]]"
    ]


def settings_lines(config: Config) -> list[str]:
    """The settings an operator asks about first: freshness, budget, admin, pins, S3."""
    lines = [_budget(config)]
    lines += [_freshness(upstream) for upstream in config.upstreams]
    lines.append("admin API: " + ("on (admin.token is set)" if config.admin_token else "off"))
    lines.append(
        "/readyz: storage and every upstream (readiness.require_upstream)"
        if config.readiness_require_upstream
        else "/readyz: storage only; upstream health is reported, not required"
    )
    pins = config.cache.pins
    lines.append("pins: " + (", ".join(pins) if pins else "none"))
    if config.storage.backend == "s3":
        s3 = config.storage.s3
        lines.append(f"s3 endpoint: {s3.endpoint_url or 'AWS default'}, region "
                     f"{s3.region or 'default'}")  # fmt: skip
        redirect = f"on (presigned URLs valid {duration(s3.presign_ttl)})" if s3.redirect else "off"
        lines.append(f"s3 redirect: {redirect}")
    return lines


def _budget(config: Config) -> str:
    cache = config.cache
    if not cache.max_size:
        return "budget: unbounded (cache.max_size not set)"
    return (
        f"budget: {binary_size(cache.max_size)}, eviction from "
        f"{cache.high_watermark:.0%} down to {cache.low_watermark:.0%}"
    )


def _freshness(upstream: UpstreamConfig) -> str:
    return (
        f"upstream {upstream.name} tags: trusted for {duration(upstream.tag_ttl)} "
        f"(tag_ttl), served stale up to {duration(upstream.max_stale)} (max_stale)"
    )


def binary_size(count: int) -> str:
    """``53687091200`` -> ``50 GiB``; a size no unit divides keeps its exact bytes too."""
    for power in range(len(_BINARY_UNITS), 0, -1):
        scale = 1024**power
        if count >= scale:
            unit = _BINARY_UNITS[power - 1]
            if count % scale == 0:
                return f"{count // scale} {unit}"
            return f"{count / scale:.2f} {unit} ({count} bytes)"
    return f"{count} bytes"


def duration(seconds: float) -> str:
    """``300`` -> ``5m``; ``5400`` -> ``1h30m``; ``0.25`` -> ``0.25s``."""
    if seconds < 1 or seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for size, unit in _DURATION_UNITS:
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts) or "0s"
