"""A small read-only registry behind the mirror's front door, on a real socket.

It serves an :class:`tests.support.images.ImageSet` under every configured
upstream name, with :mod:`mirror.security` in front: the client-auth
middleware, the token endpoint and (optionally) TLS with certificate reload.
It records every request (credentials shortened), so tests and the client
experiments can see what clients send. It stands in for the mirror until the
front door is wired into it; naming follows :mod:`mirror.routing`:
``?ns=``, a configured upstream as first path component, else ``docker.io``
with ``library/`` for one-component names.

Run it alone for manual checks with real clients::

    python -m tests.support.guarded_registry --config mirror.toml --listen 127.0.0.1:5701 \\
        --log requests.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import queue
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from aiohttp.typedefs import Handler

from mirror.config import Config, load_config
from mirror.config_security import AuthConfig, TlsConfig
from mirror.errors import BlobUnknown, Denied, ManifestUnknown
from mirror.oci import validate_name
from mirror.routes.middleware import oci_errors
from mirror.security.gate import (
    Area,
    ClientGate,
    Pull,
    Resource,
    rate_limit_middleware,
)
from mirror.security.htpasswd import Htpasswd
from mirror.security.keys import load_or_create_signing_key
from mirror.security.limits import LoginThrottle, RateLimiter
from mirror.security.tls import CertificateReloader
from mirror.security.token_endpoint import TokenEndpoint
from mirror.security.tokens import TokenAuthority
from tests.support.images import ImageSet
from tests.support.recorded_events import RecordedEvents

_V2 = re.compile(r"/v2/(?P<name>.+?)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)")


def shorten_authorization(value: str) -> str:
    """``Basic alice:***``, ``Bearer <sub=alice, access=[...]>``: what a log may show."""
    scheme, _, credential = value.partition(" ")
    if scheme.lower() == "basic":
        try:
            user = base64.b64decode(credential).decode().partition(":")[0]
        except ValueError:
            user = "?"
        return f"Basic {user}:***"
    if scheme.lower() == "bearer":
        try:
            claims = jwt.decode(credential, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "Bearer <not a JWT>"
        names = [a.get("name") for a in claims.get("access", [])]
        return f"Bearer <sub={claims.get('sub')!r}, access={names}>"
    return f"{scheme} ***"


class Naming:
    """Request names to (upstream, repository), the way :mod:`mirror.routing` does."""

    def __init__(self, upstreams: tuple[str, ...], default: str = "docker.io") -> None:
        self.upstreams = upstreams
        self.default = default

    def resolve(self, name: str, ns: str | None = None) -> Pull:
        """Where ``name`` (and ``?ns=``) pulls from; :class:`Denied` for other registries."""
        first, sep, rest = name.partition("/")
        if ns is not None:
            if ns not in self.upstreams:
                raise Denied(f"registry {ns!r} is not configured on this mirror")
            return self._pull(ns, rest if sep and first == ns else name)
        if sep and first in self.upstreams:
            return self._pull(first, rest)
        if sep and ("." in first or ":" in first):
            raise Denied(f"registry {first!r} is not configured on this mirror")
        return self._pull(self.default, name)

    def _pull(self, upstream: str, repository: str) -> Pull:
        repository = validate_name(repository)
        if upstream == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        return Pull(upstream, repository)

    def classify(self, request: web.Request) -> Resource:
        """What a request is about, for the gate."""
        if request.path in ("/v2", "/v2/"):
            return Area.BASE
        if request.path.startswith("/admin/"):
            return Area.ADMIN
        match = _V2.fullmatch(request.path)
        if match is None:
            return None
        return self.resolve(match.group("name"), request.query.get("ns"))


class ImageStore:
    """The read-only registry API over an image set."""

    def __init__(self, images: ImageSet) -> None:
        self.images = images

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def content(self, request: web.Request) -> web.StreamResponse:
        match = _V2.fullmatch(request.path)
        assert match is not None
        ref = match.group("ref")
        if match.group("kind") == "blobs":
            blob = self.images.blobs.get(ref)
            if blob is None:
                raise BlobUnknown("no such blob")
            return web.FileResponse(blob.path, headers={"Docker-Content-Digest": ref})
        name = request.app[NAMING].resolve(match.group("name"), request.query.get("ns"))
        image = self.images.images.get(f"{name.repository}:{ref}")
        manifest = image.manifest if image is not None else self.images.manifests.get(ref)
        if manifest is None:
            raise ManifestUnknown("no such manifest")
        body = b"" if request.method == "HEAD" else manifest.data
        return web.Response(
            body=body, content_type=manifest.media_type,
            headers={"Docker-Content-Digest": manifest.digest,
                     "Content-Length": str(len(manifest.data))},
        )  # fmt: skip

    async def admin(self, request: web.Request) -> web.Response:
        return web.json_response({"admin": True})


NAMING = web.AppKey("naming", Naming)
RECORDED = web.AppKey("recorded", list[dict[str, Any]])


@web.middleware
async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: note every request and the status it got, credentials shortened."""
    entry: dict[str, Any] = {"method": request.method, "path": request.path_qs}
    entry["headers"] = {
        k: (shorten_authorization(v) if k.lower() == "authorization" else v)
        for k, v in request.headers.items()
    }
    request.app[RECORDED].append(entry)
    response = await handler(request)
    entry["status"] = response.status
    if "WWW-Authenticate" in response.headers:
        entry["challenge"] = response.headers["WWW-Authenticate"]
    return response


@dataclass
class Guard:
    """The front door's parts, built from a configuration the way the mirror will."""

    gate: ClientGate
    tokens: TokenAuthority | None
    events: RecordedEvents
    throttle: LoginThrottle


def build_guard(
    auth: AuthConfig, events: RecordedEvents, throttle: LoginThrottle, htpasswd_interval: float
) -> Guard:
    """Gate and token authority for ``auth``."""
    users = None
    if auth.htpasswd is not None:
        users = Htpasswd(auth.htpasswd, check_interval=htpasswd_interval)
    tokens = None
    if auth.token is not None:
        tokens = TokenAuthority(load_or_create_signing_key(auth.token.key), auth.token)
    gate = ClientGate(
        auth, users=users, tokens=tokens, throttle=throttle, events=events,
        admin_token="static-admin-token",
    )  # fmt: skip
    return Guard(gate, tokens, events, throttle)


def create_registry_app(config: Config, images: ImageSet, guard: Guard) -> web.Application:
    """The guarded registry for ``config`` (its ``auth`` and ``rate_limit`` sections)."""
    naming = Naming(tuple(u.name for u in config.upstreams))
    middlewares = [record, oci_errors, guard.gate.middleware(naming.classify)]
    limit = config.security.rate_limit
    if limit is not None:
        limiter = RateLimiter(limit.rate, limit.burst, limit.max_clients)
        middlewares.append(
            rate_limit_middleware(limiter, guard.events, lambda r: r.path.startswith("/v2"))
        )
    app = web.Application(middlewares=middlewares, client_max_size=1024)
    app[NAMING] = naming
    app[RECORDED] = []
    store = ImageStore(images)
    app.router.add_get("/v2/", store.base)
    app.router.add_get("/v2/{tail:.+}", store.content)
    app.router.add_get("/admin/cache", store.admin)
    if guard.tokens is not None:
        TokenEndpoint(guard.gate, guard.tokens, naming.resolve).register(app)
    return app


@dataclass
class RunningRegistry:
    """A guarded registry on loopback; ``url`` has no trailing slash."""

    url: str
    app: web.Application
    guard: Guard
    reloader: CertificateReloader | None

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every request so far, oldest first."""
        return self.app[RECORDED]


@asynccontextmanager
async def run_registry(
    config: Config,
    images: ImageSet,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    throttle: LoginThrottle | None = None,
    htpasswd_interval: float = 2.0,
) -> AsyncIterator[RunningRegistry]:
    """Serve the guarded registry for ``config`` (TLS when ``config.security.tls`` is set)."""
    assert config.security.auth is not None, "a guarded registry needs [auth]"
    events = RecordedEvents()
    throttle = throttle or LoginThrottle()
    guard = build_guard(config.security.auth, events, throttle, htpasswd_interval)
    app = create_registry_app(config, images, guard)
    tls: TlsConfig | None = config.security.tls
    reloader = CertificateReloader(tls, events) if tls is not None else None
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=reloader.context if reloader else None)
    await site.start()
    bound = runner.addresses[0][1]
    scheme = "https" if reloader else "http"
    netloc = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
    try:
        yield RunningRegistry(f"{scheme}://{netloc}", app, guard, reloader)
    finally:
        await runner.cleanup()


@contextmanager
def registry_in_thread(config: Config, images: ImageSet, host: str) -> Iterator[RunningRegistry]:
    """:func:`run_registry` on its own event loop in a thread, for tests whose clients
    block (subprocesses): the registry answers while they run."""
    started: queue.Queue[RunningRegistry | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with run_registry(config, images, host=host) as registry:
                started.put(registry)
                await stop.wait()
        except BaseException as exc:  # handed to the waiting test
            started.put(exc)

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    result = started.get(timeout=60)
    if isinstance(result, BaseException):
        raise result
    try:
        yield result
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        loop.close()


async def _serve_forever(config: Config, images: ImageSet, listen: str, log: Path) -> None:
    host, _, port = listen.rpartition(":")
    async with run_registry(config, images, host=host.strip("[]"), port=int(port)) as registry:
        print(f"guarded registry on {registry.url}", flush=True)
        written = 0
        while True:
            await asyncio.sleep(0.2)
            with log.open("a") as handle:
                for entry in registry.requests[written:]:
                    handle.write(json.dumps(entry) + "\n")
            written = len(registry.requests)


def main() -> None:
    """Serve until interrupted, appending each request to ``--log`` as one JSON line."""
    from tests.support.images import build_images, default_image_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--listen", default="127.0.0.1:5701")
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    images = build_images(default_image_dir(large_mb=1), large_mb=1)
    asyncio.run(_serve_forever(load_config(args.config), images, args.listen, args.log))


if __name__ == "__main__":
    main()
