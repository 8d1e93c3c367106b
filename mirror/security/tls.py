"""The mirror's TLS server context, and certificate reloading without a restart.

Settings: TLS 1.2 and 1.3 only; for TLS 1.2 only forward-secret AEAD suites
(the Mozilla "intermediate" list); no renegotiation, no compression; ALPN
``http/1.1`` (aiohttp speaks nothing else, and saying so spares clients an
``h2`` attempt). With ``tls.client_ca`` every client must show a certificate
issued by one of those CAs, or the handshake fails (mutual TLS).

**Reloading** follows the files, not a signal: every ``tls.reload_interval``
the files are ``stat``-ed, and when one changed (inode, size or mtime; a
Kubernetes Secret volume swaps a symlink, certbot and cert-manager replace
files) a complete new context is built and checked. Only when that succeeds
does it take over: the listening context's ``sni_callback``, which OpenSSL
calls for every new handshake (with ``server_name`` None when the client sent
no SNI), moves the connection onto the newest context. Connections already
open keep theirs, so a transfer in flight is never dropped. A file set that
fails the checks (a key written before its certificate, an expired
certificate) is logged and skipped; the old certificate stays in use until
the files are right.

Why not ``load_cert_chain`` on the live context: OpenSSL drops the old
certificate before it checks the new key, so a half-written rotation leaves
the listener with no certificate at all, and a client CA once loaded can
never be removed from a context.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import ssl
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Protocol

from mirror.security.certificates import (
    CertificateProblem,
    Part,
    ServerCertificate,
    check_client_ca,
    check_server_files,
)

log = logging.getLogger(__name__)

# TLS 1.2 suites: ECDHE/DHE key exchange with AES-GCM or ChaCha20 (TLS 1.3 has only such).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL"

_FileState = tuple[int, int, int, int] | None


class TlsFiles(Protocol):
    """The settings the TLS context is built from (:class:`mirror.config_security.TlsConfig`)."""

    @property
    def cert(self) -> Path:
        """PEM: the server certificate, then its intermediates in order."""

    @property
    def key(self) -> Path:
        """PEM: the unencrypted private key of the certificate."""

    @property
    def client_ca(self) -> Path | None:
        """PEM: the CAs whose client certificates are accepted; None: none asked for."""

    @property
    def reload_interval(self) -> float:
        """Seconds between looks at the files."""


class TlsEvents(Protocol):
    """Where reload outcomes are counted (phase 2: :class:`mirror.metrics.Metrics`)."""

    def tls_reloaded(self, ok: bool, not_after: float) -> None:
        """A reload was tried; ``not_after`` is the serving certificate's expiry (epoch)."""


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _read(path: Path, part: Part) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateProblem(part, f"cannot read {str(path)!r}: {exc.strerror}") from None


def build_server_context(config: TlsFiles) -> tuple[ssl.SSLContext, ServerCertificate]:
    """A checked server context for ``config``; :class:`CertificateProblem` when the files fail."""
    now = _now()
    info = check_server_files(_read(config.cert, "cert"), _read(config.key, "key"), now)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(config.cert, config.key)
    except (ssl.SSLError, OSError) as exc:
        raise CertificateProblem("cert", f"OpenSSL refused the certificate or key: {exc}") from None
    if config.client_ca is not None:
        ca_pem = _read(config.client_ca, "client_ca")
        check_client_ca(ca_pem, now)
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cadata=ca_pem.decode("ascii", "replace"))
        except ssl.SSLError as exc:
            raise CertificateProblem("client_ca", f"OpenSSL refused the CAs: {exc}") from None
    return context, info


def _file_state(path: Path | None) -> _FileState:
    if path is None:
        return None
    try:
        st = os.stat(path)  # follows symlinks: a swapped Secret volume shows as a new inode
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class CertificateReloader:
    """Owns the listener's :attr:`context`; :meth:`reload_if_changed` moves new handshakes
    onto a new context when the certificate files change."""

    def __init__(self, config: TlsFiles, events: TlsEvents | None = None) -> None:
        """Build the first context; :class:`CertificateProblem` if the files fail the checks."""
        self._config = config
        self._events = events
        self._seen = self._files()
        self.context, self.certificate = build_server_context(config)
        self._current = self.context
        self._failed: tuple[_FileState, ...] | None = None
        self.context.sni_callback = self._select

    def _files(self) -> tuple[_FileState, ...]:
        config = self._config
        return tuple(_file_state(p) for p in (config.cert, config.key, config.client_ca))

    def _select(self, connection: ssl.SSLObject, server_name: str | None,
                context: ssl.SSLContext) -> None:  # fmt: skip
        # Called by OpenSSL in the event loop thread, during each handshake.
        if self._current is not context:
            connection.context = self._current

    def reload_if_changed(self) -> bool:
        """Rebuild the context if a file changed since the last load; True when one took over."""
        before = self._files()
        if before == self._seen or before == self._failed:
            return False
        try:
            context, info = build_server_context(self._config)
        except CertificateProblem as exc:
            self._failed = before  # said once per file state, not every interval
            log.warning("TLS certificate not reloaded, the old one stays in use: tls.%s: %s",
                        exc.part, exc)  # fmt: skip
            self._count(ok=False)
            return False
        if self._files() != before:
            return False  # written to while being read: take it on the next look
        self._current, self.certificate, self._seen = context, info, before
        log.info("TLS certificate reloaded: %s", info.describe(_now()))
        self._count(ok=True)
        return True

    def _count(self, ok: bool) -> None:
        if self._events is not None:
            self._events.tls_reloaded(ok, self.certificate.not_after.timestamp())

    async def watch(self, interval: float) -> None:
        """Look at the files every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.reload_if_changed)

    async def watching(self) -> AsyncGenerator[None, None]:
        """The watch as a context generator (an aiohttp ``cleanup_ctx`` wraps it)."""
        task = asyncio.create_task(self.watch(self._config.reload_interval))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
