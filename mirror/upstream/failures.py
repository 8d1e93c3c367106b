"""What failed when a request got no HTTP answer, said for an operator.

aiohttp reports a DNS failure, a refused connection, a TLS handshake that
failed and a timeout as exception classes; a client (and the log) should read
``DNS lookup of registry.example failed`` rather than ``ClientConnectorDNSError``.
:func:`describe_failure` names the host and port that were dialled and what
went wrong, nothing else: never a URL's path, query or credentials.
"""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp

_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Timeouts:
    """The limits a request ran under, to say which one ran out."""

    connect: float
    read: float


def host_of(url: str) -> str:
    """``host:port`` of ``url`` (the scheme's default port included), without userinfo."""
    parts = urlsplit(url)
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        port = 0
    host = parts.hostname or "?"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def host_and_path(url: str) -> str:
    """``host:port/path`` of ``url``: no userinfo, query or fragment (they may hold secrets)."""
    return host_of(url) + urlsplit(url).path


def describe_failure(exc: BaseException, url: str, timeouts: Timeouts) -> str:
    """What went wrong reaching ``url``: DNS, refused, TLS, timeout, or a cut connection."""
    host = host_of(url)
    name = urlsplit(url).hostname or "?"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"DNS lookup of {name} failed ({_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate of {host} not trusted ({_reason(exc.certificate_error)})"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake with {host} failed ({_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no connection to {host} within {timeouts.connect:g}s (connect_timeout)"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return f"{host} sent nothing for {timeouts.read:g}s (read_timeout)"
    if isinstance(exc, TimeoutError):
        return f"{host} did not answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f"{host} closed the connection without answering"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if exc.os_error.errno == errno.ECONNREFUSED:
            return f"connection to {host} refused"
        return f"cannot connect to {host} ({_reason(exc.os_error)})"
    if isinstance(exc, aiohttp.ClientOSError):
        return f"connection to {host} failed ({_reason(exc)})"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return f"{host} sent a malformed or truncated answer"
    return f"request to {host} failed"


def _reason(error: BaseException) -> str:
    """The OS's or OpenSSL's own words, without the ``[Errno N]`` noise."""
    if isinstance(error, ssl.SSLError) and error.reason:
        return error.reason.lower().replace("_", " ")
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or "no detail"
