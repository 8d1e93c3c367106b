"""``registry-mirror healthcheck``: GET ``/healthz`` of the running mirror (a container's probe).

Without ``[tls]`` the probe asks ``listen`` over plain HTTP. With ``[tls]`` it
speaks HTTPS and verifies the certificate: the probe dials a loopback address,
not the name the certificate is for, so it does not match the host name;
instead the chain must lead to a certificate of the configured ``tls.cert``
file (the server certificate itself or one of its intermediates) or to a CA
the system trusts. With ``tls.client_ca`` (mutual TLS) the listener refuses
every client without a certificate, the probe too: it asks the separate
metrics listener (``metrics.listen``, plain HTTP, which answers ``/healthz``
as well) instead, and fails saying so when none is configured.
"""

from __future__ import annotations

import ssl
import sys
import urllib.request

from mirror.config import Config
from mirror.config_security import TlsConfig

_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


class ProbeUnavailable(ValueError):
    """The configuration leaves the probe no listener it can ask."""


def _url(scheme: str, host: str, port: int) -> str:
    host = _LOOPBACK.get(host, host)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/healthz"


def probe_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context that trusts the certificates of ``tls.cert`` and the system's CAs."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=tls.cert)
    # The server certificate (or an intermediate) is a trust anchor of its own: the
    # private root that issued it is usually not in the file.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False  # loopback is dialled, not the certificate's name
    return context


def probe_target(config: Config) -> tuple[str, ssl.SSLContext | None]:
    """The URL the probe asks, and its TLS context (None: plain HTTP)."""
    tls = config.security.tls
    if tls is None:
        return _url("http", config.listen_host, config.listen_port), None
    if tls.client_ca is None:
        return _url("https", config.listen_host, config.listen_port), probe_context(tls)
    if config.metrics_listen is None:
        raise ProbeUnavailable(
            "tls.client_ca: the TLS listener asks every client for a certificate, the probe "
            "has none; configure metrics.listen (plain HTTP), which the probe asks instead"
        )
    return _url("http", *config.metrics_listen), None


def healthcheck(config: Config) -> int:
    """0 when ``/healthz`` answered, 1 (with a line on stderr) when not."""
    try:
        url, context = probe_target(config)
    except ProbeUnavailable as exc:
        print(f"registry-mirror healthcheck: {exc}", file=sys.stderr)
        return 1
    # No proxy: HTTP_PROXY in a container's environment is for the upstreams, not for this.
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(url, timeout=5) as resp:
            resp.read()
    except (OSError, ValueError) as exc:
        print(f"registry-mirror healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0
