"""``registry-mirror serve`` as a process: bind, serve, stop within a grace period.

Start-up binds the listening socket first, then opens the cache, then says
"listening on ...": the line is true when it appears, and a port in use
fails before anything else is touched. Failures raise
:class:`mirror.lifecycle.StartupError`.

On SIGTERM or SIGINT (``docker stop``, Kubernetes, systemd, Ctrl-C):

1. stop accepting: the listening sockets close, idle connections close;
2. drain: requests in flight, including clients following a download, get
   up to ``shutdown_grace`` to finish; downloads whose bytes are verified
   get what is left of it to commit;
3. cancel the rest: a cancelled download discards its partial object;
4. return, and the process exits 0.

A second signal ends the wait at once.

With ``[tls]`` the main listener serves HTTPS with the context of a
:class:`mirror.security.tls.CertificateReloader`, whose file watch runs from
start-up to clean-up of the app; the separate metrics listener stays plain HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl

from aiohttp import web

from mirror.app import FILLS, METRICS, SHUTDOWN, create_app
from mirror.config import Config
from mirror.lifecycle import CONFIG_ERROR, ShutdownClock, StartupError, bind_listener
from mirror.routes.access import AccessLogger
from mirror.security.certificates import CertificateProblem
from mirror.security.tls import CertificateReloader

startup_log = logging.getLogger("mirror.startup")
shutdown_log = logging.getLogger("mirror.shutdown")

_POLL = 0.05
# After the grace, how long a cancelled request may take to unwind.
_CANCEL_WAIT = 1.0


class _Signals:
    """SIGTERM/SIGINT: the first starts the shutdown, the next ones hurry it."""

    def __init__(self, clock: ShutdownClock) -> None:
        self.received = asyncio.Event()
        self.name = ""
        self._clock = clock
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.received.is_set():
            shutdown_log.warning("%s again: stopping without waiting", sig.name)
            self._clock.hurry()
            return
        self.name = sig.name
        self._clock.start()
        self.received.set()

    def remove(self) -> None:
        """Give the signals back to Python's defaults."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def tls_context(app: web.Application, config: Config) -> ssl.SSLContext | None:
    """The main listener's TLS context, None without ``[tls]``; its file watch joins the app."""
    if config.security.tls is None:
        return None
    try:
        reloader = CertificateReloader(config.security.tls, app[METRICS])
    except CertificateProblem as exc:
        # Checked when the configuration was loaded, so the files changed since.
        raise StartupError(f"tls.{exc.part}: {exc}", CONFIG_ERROR) from None
    app[METRICS].tls_serving(reloader.certificate.not_after.timestamp())
    app.cleanup_ctx.append(lambda _app: reloader.watching())
    return reloader.context


async def serve(config: Config) -> None:
    """Serve until a stop signal, then shut down within ``config.shutdown_grace``."""
    sock = bind_listener(config.listen_host, config.listen_port, "listen")
    app = create_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("mirror.access"),
        access_log_class=AccessLogger,
        shutdown_timeout=_CANCEL_WAIT,
    )
    signals = _Signals(app[SHUTDOWN])
    try:
        context = tls_context(app, config)
        await runner.setup()  # opens the cache; may raise StartupError
        await web.SockSite(runner, sock, ssl_context=context).start()
        host, port = sock.getsockname()[:2]
        scheme = "http" if context is None else "https"
        startup_log.info("listening on %s://%s:%d", scheme, host, port)
        if config.metrics_listen is not None:
            startup_log.info("metrics also on http://%s:%d/metrics", *config.metrics_listen)
        await signals.received.wait()
        await _drain(runner, app, signals.name)
    finally:
        sock.close()  # when start-up failed before the site took it
        await runner.cleanup()
        signals.remove()
    shutdown_log.info("stopped")


async def _drain(runner: web.AppRunner, app: web.Application, signame: str) -> None:
    clock = app[SHUTDOWN]
    for site in list(runner.sites):
        await site.stop()  # no new connections
    server = runner.server
    assert server is not None
    server.pre_shutdown()  # idle keep-alive connections close now, busy ones after their response
    await asyncio.sleep(0)
    shutdown_log.info(
        "%s received: no longer accepting connections; draining %d requests and %d downloads"
        " (shutdown_grace %gs)",
        signame, len(server.connections), len(app[FILLS]), clock.grace,
    )  # fmt: skip
    # aiohttp signals no "last connection closed", so the count is polled.
    while server.connections and clock.remaining() > 0:  # noqa: ASYNC110
        await asyncio.sleep(_POLL)
    if server.connections:
        shutdown_log.warning(
            "shutdown_grace over: cancelling %d requests still running", len(server.connections)
        )
    else:
        shutdown_log.info("all requests finished")
