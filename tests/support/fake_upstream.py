"""A fake OCI registry upstream on a real loopback socket, with fault injection.

::

    async with FakeUpstream(auth="token") as up:
        digest = up.add_blob(b"layer bytes")
        up.add_fault(Fault(digest, method="GET", cut_after=4, times=1))
        ...  # point the mirror at up.url
        assert up.count("GET", "/blobs/" + digest) == 2

See :class:`tests.support.fake_upstream_helpers.Fault` for the knobs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
import ssl
import time
from types import TracebackType
from typing import Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.fake_upstream_helpers import (
    CountingSite,
    Fault,
    RecordedRequest,
    Reply,
    abort,
    accepts,
    basic_matches,
    byte_range,
    oci_error,
    referrers_index,
    send_shaped,
    sleep_unless,
)

__all__ = ["SERVICE", "FakeUpstream", "Fault", "RecordedRequest"]

SERVICE = "fake-registry"
_V2 = re.compile(r"/v2/(?P<name>.+)/(?P<kind>manifests|blobs|tags|referrers)/(?P<ref>[^/]+)")
_CDN = re.compile(r"/cdn/(?P<ref>[^/]+)")


class FakeUpstream:
    """An OCI distribution registry on a loopback address serving what tests add to it.

    Two listeners share one aiohttp app: the registry (:attr:`url`) and a "CDN"
    (:attr:`cdn_url`, another port and so another origin) that serves
    ``/cdn/<digest>`` without auth, for testing blob redirects. Both listen on
    ``host`` (default ``127.0.0.1``; any of 127.0.0.0/8 works on Linux, so a
    test can stand up an "internal" host the mirror must never reach).
    ``cdn_host`` is the host name put in :attr:`cdn_url` (default ``host``).
    With ``ssl_context`` (a server context, such as
    :meth:`tests.support.pki.Issued.server_context` makes) both listeners speak
    HTTPS and their URLs say ``https``.

    Knobs that are plain attributes may be changed at any time: ``auth``,
    ``username``, ``password``, ``token_expires_in``, ``anonymous_tokens``,
    ``strict_accept`` (404 a manifest whose media type the ``Accept`` lines do not
    list), ``manifest_headers`` (added to every manifest response),
    ``blob_redirect`` (a base URL such as ``up.cdn_url``: blob requests whose
    method is in ``blob_redirect_methods`` get a 307 to ``<base>/cdn/<digest>``),
    ``referrers_api`` (answer ``/v2/<name>/referrers/<digest>`` with an index of the
    manifests whose ``subject`` is that digest, as OCI distribution 1.1 does; off: 404).
    """

    def __init__(
        self,
        *,
        auth: Literal["none", "basic", "token"] = "none",
        username: str = "user",
        password: str = "pass",
        token_expires_in: int | None = 300,
        anonymous_tokens: bool = True,
        host: str = "127.0.0.1",
        cdn_host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.auth = auth
        self.username = username
        self.password = password
        #: lifetime of issued tokens; ``None`` omits ``expires_in`` and never expires
        self.token_expires_in = token_expires_in
        #: whether ``/token`` answers requests without credentials
        self.anonymous_tokens = anonymous_tokens
        self.bind_host = host
        self.cdn_host = cdn_host or host
        self._ssl_context = ssl_context
        self.strict_accept = False
        #: False: answer every blob GET with the whole blob, whatever its Range says
        self.honour_range = True
        self.manifest_headers: dict[str, str] = {}
        self.blob_redirect: str | None = None
        self.blob_redirect_methods = frozenset({"GET", "HEAD"})
        self.referrers_api = False
        #: a base URL: every /v2/<name>/... request is answered 307 to the same path there
        self.redirect_registry: str | None = None
        #: the realm named in Bearer challenges (default: this registry's own ``/token``)
        self.token_realm: str | None = None
        self.faults: list[Fault] = []
        self.requests: list[RecordedRequest] = []
        self.token_requests = 0
        self._blobs: dict[str, bytes] = {}
        self._blob_repos: dict[str, set[str] | None] = {}
        self._manifests: dict[str, dict[str, tuple[bytes, str]]] = {}
        self._tags: dict[str, dict[str, str]] = {}
        self._tokens: dict[str, tuple[float | None, frozenset[str]]] = {}
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._sites: tuple[CountingSite, CountingSite] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def __aenter__(self) -> FakeUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # Short shutdown timeout: our own sleeps end on _stopping, so only a
        # handler blocked writing to a client that stopped reading can linger.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        self._sites = (
            CountingSite(self._runner, self.bind_host, self._ssl_context),
            CountingSite(self._runner, self.bind_host, self._ssl_context),
        )
        for site in self._sites:
            await site.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def _site(self, index: int) -> CountingSite:
        if self._sites is None:
            raise RuntimeError("FakeUpstream is not started; use `async with`")
        return self._sites[index]

    @property
    def url(self) -> str:
        """Registry base URL, ``http(s)://HOST:PORT`` (no trailing slash)."""
        return self._site(0).name

    @property
    def port(self) -> int:
        """Registry listener port."""
        return self._site(0).port

    @property
    def host(self) -> str:
        """``HOST:PORT``, the registry's host as in image references."""
        return f"{self.bind_host}:{self._site(0).port}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the CDN listener (a different origin than :attr:`url`)."""
        site = self._site(1)
        return f"{site.scheme}://{self.cdn_host}:{site.port}"

    @property
    def connections(self) -> int:
        """TCP connections accepted by the registry listener."""
        return self._site(0).accepted if self._sites else 0

    @property
    def cdn_connections(self) -> int:
        """TCP connections accepted by the CDN listener."""
        return self._site(1).accepted if self._sites else 0

    # -- content -------------------------------------------------------------

    def add_blob(self, data: bytes, repository: str | None = None) -> str:
        """Store a blob and return its ``sha256:`` digest.

        Without ``repository`` it is served under every repository; with one it is
        served only under the repositories it was added for.
        """
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self._blobs[digest] = data
        repos = self._blob_repos.get(digest, set())
        if repository is None or repos is None:
            self._blob_repos[digest] = None
        else:
            self._blob_repos[digest] = repos | {repository}
        return digest

    def add_manifest(
        self, repository: str, body: bytes, media_type: str, tag: str | None = None
    ) -> str:
        """Store a manifest (any media type) in ``repository``; return its digest."""
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self._manifests.setdefault(repository, {})[digest] = (body, media_type)
        self._tags.setdefault(repository, {})
        if tag is not None:
            self.set_tag(repository, tag, digest)
        return digest

    def set_tag(self, repository: str, tag: str, digest: str) -> None:
        """Point ``tag`` at ``digest``; takes effect for the next request."""
        self._tags.setdefault(repository, {})[tag] = digest

    def delete_tag(self, repository: str, tag: str) -> None:
        """Remove a tag (the manifest stays reachable by digest)."""
        self._tags.get(repository, {}).pop(tag, None)

    def add_fault(self, fault: Fault) -> Fault:
        """Append a fault rule and return it (its ``hits`` counts uses)."""
        self.faults.append(fault)
        return fault

    def expire_tokens(self) -> None:
        """Invalidate every issued token, as if all had expired."""
        self._tokens.clear()

    # -- inspection ----------------------------------------------------------

    def count(self, method: str | None, path: str | re.Pattern[str]) -> int:
        """Requests with ``method`` (``None``: any) whose path ends with ``path``
        (a ``str``) or contains a match of it (an ``re.Pattern``)."""
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method)
            and (r.path.endswith(path) if isinstance(path, str) else path.search(r.path))
        )

    @property
    def cdn_requests(self) -> list[RecordedRequest]:
        """The requests that arrived on the CDN listener."""
        return [r for r in self.requests if r.cdn]

    # -- request handling ----------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        sock = transport.get_extra_info("sockname") if transport else None
        peer = transport.get_extra_info("peername") if transport else None
        on_cdn = sock is not None and sock[1] == self._site(1).port
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                time=time.monotonic(),
                remote=(peer[0], peer[1]) if peer else None,
                cdn=on_cdn,
            )
        )
        reply = self._route(request, on_cdn)
        fault = next(
            (
                f
                for f in self.faults
                if f.active
                and f.matches(request.method, request.path, reply.kind, reply.digest)
                and (f.shapes_response or (reply.content and request.method == "GET"))
            ),
            None,
        )
        if fault is not None:
            fault.hits += 1
            if fault.status is not None:
                reply = self._error(fault.status, reply.kind, reply.name, digest=reply.digest)
            if fault.retry_after is not None:
                reply.headers["Retry-After"] = str(fault.retry_after)
            reply.headers.update(fault.headers)
            if fault.body is not None:
                reply.body = fault.body
        if reply.kind == "manifest":
            reply.headers.update(self.manifest_headers)
        if not on_cdn:
            reply.headers["Docker-Distribution-API-Version"] = "registry/2.0"
        return await self._send(request, reply, fault)

    def _route(self, request: web.Request, on_cdn: bool) -> Reply:
        path, method = request.path, request.method
        if on_cdn:
            m = _CDN.fullmatch(path)
            digest = m["ref"] if m else None
            return self._blob(request, None, digest) if digest else self._error(404, "cdn")
        if path == "/token":
            return self._token(request)
        if method not in ("GET", "HEAD"):
            return self._error(405, "other")
        if path == "/v2/":
            denied = self._denied(request, None)
            return denied or Reply(
                200, "ping", b"{}", CIMultiDict({"Content-Type": "application/json"})
            )
        m = _V2.fullmatch(path)
        if m is None:
            return self._error(404, "other")
        name, ref = m["name"], m["ref"]
        kind = {"manifests": "manifest", "blobs": "blob", "referrers": "referrers"}.get(
            m["kind"], "tags"
        )
        if self.redirect_registry:
            # Like registry.k8s.io: the whole API answered by another registry.
            location = self.redirect_registry + request.path_qs
            return Reply(307, kind, b"", CIMultiDict({"Location": location}), False, None, name)
        denied = self._denied(request, name)
        if denied is not None:
            denied.kind = kind  # so global and per-digest faults still see the endpoint
            denied.digest = ref if ref.startswith("sha256:") else None
            return denied
        if kind == "manifest":
            return self._manifest(request, name, ref)
        if kind == "blob":
            return self._blob(request, name, ref)
        if kind == "referrers":
            return self._referrers(request, name, ref)
        if ref == "list":
            return self._tag_list(request, name)
        return self._error(404, "tags", name)

    def _manifest(self, request: web.Request, name: str, ref: str) -> Reply:
        digest = self._tags.get(name, {}).get(ref, ref)
        entry = self._manifests.get(name, {}).get(digest)
        if entry is not None and self.strict_accept and not accepts(request, entry[1]):
            entry = None
        if entry is None:
            return self._error(404, "manifest", name, digest=digest)
        body, media_type = entry
        headers = CIMultiDict(
            {"Content-Type": media_type, "Docker-Content-Digest": digest, "ETag": f'"{digest}"'}
        )
        return Reply(200, "manifest", body, headers, True, digest, name)

    def _blob(self, request: web.Request, name: str | None, digest: str) -> Reply:
        kind = "blob" if name is not None else "cdn"
        data = self._blobs.get(digest)
        repos = self._blob_repos.get(digest)
        if data is None or (name is not None and repos is not None and name not in repos):
            return self._error(404, kind, name, digest=digest)
        if kind == "blob" and self.blob_redirect and request.method in self.blob_redirect_methods:
            # A random signature, like S3 presigned URLs: the CDN never needs auth.
            location = f"{self.blob_redirect}/cdn/{digest}?sig={secrets.token_hex(8)}"
            return Reply(307, kind, b"", CIMultiDict({"Location": location}), False, digest, name)
        headers = CIMultiDict(
            {
                "Content-Type": "application/octet-stream",
                "Docker-Content-Digest": digest,
                "ETag": f'"{digest}"',
                "Accept-Ranges": "bytes",
            }
        )
        status, size = 200, len(data)
        try:
            # Some registries and CDNs ignore Range and send the whole blob.
            span = byte_range(request.headers.get("Range", "") if self.honour_range else "", size)
        except ValueError:
            reply = self._error(416, kind, name, digest=digest)
            reply.headers["Content-Range"] = f"bytes */{size}"
            return reply
        if span is not None:
            status, data = 206, data[span[0] : span[1]]
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{size}"
        return Reply(status, kind, data, headers, True, digest, name)

    def _tag_list(self, request: web.Request, name: str) -> Reply:
        if name not in self._tags:
            return self._error(404, "tags", name)
        tags = sorted(self._tags[name])
        last = request.query.get("last")
        if last is not None:
            tags = [t for t in tags if t > last]
        headers = CIMultiDict({"Content-Type": "application/json"})
        if "n" in request.query:
            try:
                n = int(request.query["n"])
            except ValueError:
                return self._error(400, "tags", name)
            if len(tags) > n > 0:
                # Same shape as distribution: relative URL, rel="next".
                headers["Link"] = f'</v2/{name}/tags/list?last={tags[n - 1]}&n={n}>; rel="next"'
            tags = tags[:n]
        body = json.dumps({"name": name, "tags": tags}).encode()
        return Reply(200, "tags", body, headers, False, None, name)

    def _referrers(self, request: web.Request, name: str, digest: str) -> Reply:
        if not self.referrers_api:
            return self._error(404, "referrers", name)
        manifests = self._manifests.get(name, {}).values()
        body, filtered = referrers_index(manifests, digest, request.query.get("artifactType"))
        headers = CIMultiDict({"Content-Type": "application/vnd.oci.image.index.v1+json"})
        if filtered:
            headers["OCI-Filters-Applied"] = "artifactType"
        return Reply(200, "referrers", body, headers, False, digest, name)

    def _denied(self, request: web.Request, name: str | None) -> Reply | None:
        """``None`` if the request may proceed, else the 401 to answer."""
        header = request.headers.get("Authorization", "")
        if self.auth == "none":
            return None
        if self.auth == "basic":
            ok = basic_matches(header, self.username, self.password)
            return None if ok else self._error(401, "other", name)
        scheme, _, token = header.partition(" ")
        grant = self._tokens.get(token) if scheme.lower() == "bearer" else None
        if grant is None or (grant[0] is not None and time.monotonic() >= grant[0]):
            # Like Docker Hub: name the problem only when a token was presented.
            return self._error(401, "other", name, error="invalid_token" if header else None)
        if name is not None and name not in grant[1]:
            return self._error(401, "other", name, error="insufficient_scope")
        return None

    def _token(self, request: web.Request) -> Reply:
        self.token_requests += 1
        if request.method != "GET":
            return self._error(405, "token")
        service = request.query.get("service")
        if service not in (None, SERVICE):
            return self._error(400, "token")
        header = request.headers.get("Authorization")
        if header is not None:
            if not basic_matches(header, self.username, self.password):
                return self._basic_401()
        elif not self.anonymous_tokens:
            return self._basic_401()
        names = set()
        for scope in request.query.getall("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind == "repository" and "pull" in actions.split(","):
                names.add(name)
        token = secrets.token_urlsafe(24)
        ttl = self.token_expires_in
        self._tokens[token] = (None if ttl is None else time.monotonic() + ttl, frozenset(names))
        doc: dict[str, object] = {"token": token, "access_token": token}
        if ttl is not None:
            doc["expires_in"] = ttl
        doc["issued_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        headers = CIMultiDict({"Content-Type": "application/json"})
        return Reply(200, "token", json.dumps(doc).encode(), headers)

    def _basic_401(self) -> Reply:
        reply = self._error(401, "token")
        reply.headers["WWW-Authenticate"] = 'Basic realm="fake"'
        return reply

    def _error(
        self,
        status: int,
        kind: str,
        name: str | None = None,
        *,
        digest: str | None = None,
        error: str | None = None,
    ) -> Reply:
        headers = CIMultiDict({"Content-Type": "application/json"})
        if status == 401 and self.auth == "token":
            realm = self.token_realm or f"{self.url}/token"
            challenge = f'Bearer realm="{realm}",service="{SERVICE}"'
            if name is not None:
                challenge += f',scope="repository:{name}:pull"'
            if error is not None:
                challenge += f',error="{error}"'
            headers["WWW-Authenticate"] = challenge
        elif status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="fake"'
        return Reply(status, kind, oci_error(status, kind), headers, False, digest, name)

    # -- sending -------------------------------------------------------------

    async def _send(
        self, request: web.Request, reply: Reply, fault: Fault | None
    ) -> web.StreamResponse:
        delay = fault.first_byte_delay if fault is not None else 0.0
        if delay and not await sleep_unless(self._stopping, delay):
            return abort(request)
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        if fault is not None and fault.chunked and reply.content:
            resp.enable_chunked_encoding()  # no Content-Length: the size is known at the end
        else:
            resp.content_length = len(reply.body)
        try:
            await resp.prepare(request)
            if request.method == "HEAD" or not reply.body:
                pass
            elif fault is None or not (reply.content and fault.shapes_body):
                await resp.write(reply.body)
            elif not await send_shaped(request, resp, reply.body, fault, self._stopping):
                return resp
            await resp.write_eof()
        except ConnectionError:
            # The client went away mid-response; nothing left to tell it.
            pass
        return resp
