"""A real upstream registry for tests: CNCF distribution (Debian ``docker-registry``).

``running_registry`` starts ``docker-registry serve`` on a free 127.0.0.1 port
with auth ``none``, ``basic`` (htpasswd, bcrypt) or ``token`` (the token server
in ``token_server.py``), pushes an ``ImageSet`` into it over the registry HTTP
API, and stops everything by PID afterwards.

Distribution writes one Apache "combined" line per request to stdout and its
structured log to stderr; they go to separate files here (``access_log_path``
and ``log_path``), and ``UpstreamRegistry.requests`` / ``count_requests`` parse
the former, so tests can assert what reached the upstream.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

from tests.support.images import Image, ImageSet, Manifest
from tests.support.processes import (
    ManagedProcess,
    ProcessError,
    free_port,
    start_process,
    wait_for_http,
)
from tests.support.token_server import TokenServer, start_token_server

AuthMode = Literal["none", "basic", "token"]
_T = TypeVar("_T")

REGISTRY_BIN_ENV = "MIRROR_TEST_REGISTRY_BIN"
DEFAULT_REGISTRY_BIN = "/usr/bin/docker-registry"
DEFAULT_USERNAME = "testuser"
DEFAULT_PASSWORD = "testpass"
SERVICE = "registry-testbed"
BASIC_REALM = "registry-testbed"
INSTALL_HINT = "run .ci/install-debian-packages (as root) to install it"
START_ATTEMPTS = 3  # free_port() can race with another process grabbing the port
UPLOAD_BLOCK = 1024 * 1024
LOG_SYNC_PARAM = "log-sync"
# Sent by the fixtures' own requests, so they are easy to tell apart in the access log.
USER_AGENT = "registry-mirror-test-support"


# ---------------------------------------------------------------- access log


# 127.0.0.1 - - [23/Nov/2026:16:14:20 +0000] "GET /v2/?x=1 HTTP/1.1" 200 2 "" "curl/7.88.1"
_ACCESS_LINE = re.compile(
    r"^(?P<remote>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<method>\S+) (?P<uri>\S+) (?P<proto>[^"]+)" (?P<status>\d{3}) (?P<size>\d+|-) '
    r'"(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"$'
)


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as distribution logged it."""

    method: str
    path: str  # without the query string
    query: str
    status: int
    # Body bytes written.  A manifest HEAD logs the size of the body it left out; a blob HEAD 0.
    size: int
    user_agent: str
    time: str

    @property
    def is_log_sync(self) -> bool:
        """True for the probes ``UpstreamRegistry.sync_log`` sends."""
        return self.path == "/v2/" and self.query.startswith(f"{LOG_SYNC_PARAM}=")


def parse_access_log(path: Path, offset: int = 0) -> list[AccessLogEntry]:
    """Parse the combined-format lines of ``path`` from byte ``offset``; skip anything else."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        match = _ACCESS_LINE.match(line)
        if match is None:
            continue
        target = urllib.parse.urlsplit(match["uri"])
        entries.append(
            AccessLogEntry(
                method=match["method"],
                path=target.path,
                query=target.query,
                status=int(match["status"]),
                size=0 if match["size"] == "-" else int(match["size"]),
                user_agent=match["agent"],
                time=match["time"],
            )
        )
    return entries


# ---------------------------------------------------------------- HTTP client


@dataclass
class Response:
    """A fully read HTTP response."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        """The body parsed as JSON."""
        return json.loads(self.body)


def http_request(
    url: str,
    method: str = "GET",
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | BinaryIO | None = None,
    timeout: float = 60.0,
) -> Response:
    """One request on a fresh connection; file bodies are streamed (set Content-Length)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=timeout, blocksize=UPLOAD_BLOCK
    )
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        conn.request(method, target, body=body, headers=all_headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


def basic_auth_header(username: str, password: str) -> str:
    """``Basic base64(user:password)``."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


class RegistryError(RuntimeError):
    """The registry answered something unexpected."""


@dataclass
class RegistryClient:
    """Synchronous registry API client for fixtures: push, read and delete content."""

    registry: UpstreamRegistry
    _tokens: dict[str, str] = field(default_factory=dict)

    def auth_headers(self, repository: str, actions: Iterable[str] = ("pull",)) -> dict[str, str]:
        """Authorization headers for ``actions`` on ``repository`` (as the configured user)."""
        return self.registry.auth_headers(repository, actions, cache=self._tokens)

    def request(
        self,
        method: str,
        repository: str,
        path: str,
        *,
        actions: Iterable[str] = ("pull",),
        headers: Mapping[str, str] | None = None,
        body: bytes | BinaryIO | None = None,
    ) -> Response:
        """``METHOD /v2/<repository>/<path>`` with credentials; ``path`` may be a full URL."""
        url = urllib.parse.urljoin(f"{self.registry.url}/v2/{repository}/", path)
        all_headers = {**self.auth_headers(repository, actions), **(headers or {})}
        return http_request(url, method, headers=all_headers, body=body)

    def has_blob(self, repository: str, digest: str) -> bool:
        """True when the repository already holds the blob."""
        return self.request("HEAD", repository, f"blobs/{digest}").status == 200

    def push_blob(self, repository: str, digest: str, path: Path, size: int) -> None:
        """Monolithic upload: POST an upload session, then PUT the whole file with ?digest=."""
        push = ("pull", "push")
        started = self.request("POST", repository, "blobs/uploads/", actions=push)
        _expect(started, 202, f"start upload to {repository}")
        location = started.headers["Location"]
        separator = "&" if "?" in location else "?"
        with path.open("rb") as data:
            done = self.request(
                "PUT",
                repository,
                f"{location}{separator}digest={digest}",
                actions=push,
                headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                body=data,
            )
        _expect(done, 201, f"upload {digest} to {repository}")

    def push_manifest(self, repository: str, reference: str, manifest: Manifest) -> None:
        """PUT a manifest by tag or digest; check the digest the registry computed."""
        resp = self.request(
            "PUT",
            repository,
            f"manifests/{reference}",
            actions=("pull", "push"),
            headers={"Content-Type": manifest.media_type},
            body=manifest.data,
        )
        _expect(resp, 201, f"put manifest {repository}:{reference}")
        got = resp.headers.get("Docker-Content-Digest")
        if got != manifest.digest:
            raise RegistryError(f"{repository}:{reference} stored as {got}, not {manifest.digest}")

    def get_manifest(self, repository: str, reference: str, media_type: str) -> Response:
        """GET a manifest, accepting ``media_type`` only."""
        return self.request(
            "GET", repository, f"manifests/{reference}", headers={"Accept": media_type}
        )

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (storage delete is enabled); tags pointing at it go too.

        The registries are shared by the whole session: restore what you delete.
        """
        resp = self.request("DELETE", repository, f"manifests/{digest}", actions=("*",))
        _expect(resp, 202, f"delete {repository}@{digest}")

    def push_image(self, image_set: ImageSet, image: Image) -> None:
        """Push an image: blobs first, then child manifests, then the tagged manifest."""
        for child in image_set.children(image):
            self._push_manifest_tree(image_set, image.repository, child, child.digest)
        self._push_manifest_tree(image_set, image.repository, image.manifest, image.tag)

    def _push_manifest_tree(
        self, image_set: ImageSet, repository: str, manifest: Manifest, reference: str
    ) -> None:
        if not manifest.is_index:
            for blob in image_set.blobs_of(manifest):
                if not self.has_blob(repository, blob.digest):
                    self.push_blob(repository, blob.digest, blob.path, blob.size)
        self.push_manifest(repository, reference, manifest)


def _expect(resp: Response, status: int, what: str) -> None:
    if resp.status != status:
        detail = resp.body[:500].decode(errors="replace")
        raise RegistryError(f"{what}: HTTP {resp.status}, expected {status}: {detail}")


# ---------------------------------------------------------------- the registry


@dataclass
class UpstreamRegistry:
    """A running distribution registry and how to reach it."""

    url: str
    auth: AuthMode
    username: str | None
    password: str | None
    workdir: Path
    process: ManagedProcess
    token_server: TokenServer | None = None

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, as image references spell it."""
        return self.url.removeprefix("http://")

    @property
    def token_realm(self) -> str | None:
        """The Bearer realm (token mode only)."""
        return self.token_server.realm if self.token_server else None

    @property
    def service(self) -> str | None:
        """The token ``service`` (token mode only)."""
        return SERVICE if self.token_server else None

    @property
    def access_log_path(self) -> Path:
        """One Apache combined-format line per request (distribution's stdout)."""
        return self.process.log_path

    @property
    def log_path(self) -> Path:
        """Distribution's structured log (stderr): errors, ``response completed`` lines."""
        return self.workdir / "registry.log"

    @property
    def token_log_path(self) -> Path | None:
        """Token requests as JSON lines (token mode only)."""
        return self.token_server.log_path if self.token_server else None

    def client(self) -> RegistryClient:
        """A synchronous API client using the configured credentials."""
        return RegistryClient(self)

    def auth_headers(
        self,
        repository: str,
        actions: Iterable[str] = ("pull",),
        *,
        cache: dict[str, str] | None = None,
    ) -> dict[str, str]:
        """Authorization headers as the configured user; token mode fetches a token."""
        if self.auth == "none":
            return {}
        assert self.username is not None
        assert self.password is not None
        basic = basic_auth_header(self.username, self.password)
        if self.auth == "basic":
            return {"Authorization": basic}
        scope = f"repository:{repository}:{','.join(actions)}"
        token = cache.get(scope) if cache is not None else None
        if token is None:
            token = self.fetch_token([scope], authorization=basic)
            if cache is not None:
                cache[scope] = token
        return {"Authorization": f"Bearer {token}"}

    def fetch_token(self, scopes: Iterable[str], *, authorization: str | None = None) -> str:
        """Ask the token server for a token (anonymous unless ``authorization`` is given)."""
        if self.token_server is None:
            raise RegistryError(f"a registry with auth {self.auth!r} has no token server")
        query = urllib.parse.urlencode(
            [("service", SERVICE), *(("scope", scope) for scope in scopes)]
        )
        headers = {"Authorization": authorization} if authorization else {}
        resp = http_request(f"{self.token_server.realm}?{query}", headers=headers)
        _expect(resp, 200, "token request")
        body = resp.json()
        assert isinstance(body, dict)
        return str(body["token"])

    def token_requests(self, since: int = 0) -> list[dict[str, object]]:
        """Token requests logged after the first ``since`` ones (see ``token_log_mark``)."""
        return self.token_server.requests()[since:] if self.token_server else []

    def token_log_mark(self) -> int:
        """How many token requests have been logged so far."""
        return len(self.token_requests())

    def sync_log(self, timeout: float = 5.0) -> None:
        """Wait until every finished request is in the access log.

        Distribution writes the access line after its handler returns, which can
        be just after the client got the last byte; a probe request sent now is
        logged after those, so seeing the probe means they are there too.
        """
        marker = uuid.uuid4().hex
        http_request(f"{self.url}/v2/?{LOG_SYNC_PARAM}={marker}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if f"{LOG_SYNC_PARAM}={marker}" in self.access_log_path.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise RegistryError(f"log probe {marker} never reached {self.access_log_path}")

    def log_mark(self) -> int:
        """A position in the access log; pass it as ``since`` to see only later requests."""
        self.sync_log()
        return self.access_log_path.stat().st_size

    def requests(self, since: int = 0, *, sync: bool = True) -> list[AccessLogEntry]:
        """Requests logged after ``since`` (a ``log_mark``), without the sync probes."""
        if sync:
            self.sync_log()
        entries = parse_access_log(self.access_log_path, since)
        return [entry for entry in entries if not entry.is_log_sync]

    def count_requests(self, since: int = 0) -> Counter[tuple[str, str]]:
        """Requests after ``since`` counted by (method, path without query)."""
        return Counter((entry.method, entry.path) for entry in self.requests(since))

    def count(self, method: str, path: str, since: int = 0) -> int:
        """How many ``method path`` requests (query ignored) arrived after ``since``."""
        return self.count_requests(since)[(method, path)]

    def seed(self, image_set: ImageSet, refs: Iterable[str] | None = None) -> None:
        """Push the images named in ``refs`` (``repository:tag``), or all of ``image_set``."""
        client = self.client()
        for ref in image_set.images if refs is None else refs:
            client.push_image(image_set, image_set.image(ref))

    def stop(self) -> None:
        """Stop the registry and the token server, by PID."""
        try:
            self.process.stop()
        finally:
            if self.token_server is not None:
                self.token_server.stop()


def registry_binary() -> str:
    """Path of ``docker-registry`` (``$MIRROR_TEST_REGISTRY_BIN`` overrides)."""
    path = os.environ.get(REGISTRY_BIN_ENV, DEFAULT_REGISTRY_BIN)
    if not os.access(path, os.X_OK):
        raise ProcessError(f"{path} not found; {INSTALL_HINT}")
    return path


def start_registry(
    workdir: Path,
    *,
    auth: AuthMode = "none",
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    anonymous_pull: bool = True,
    token_expires_in: int = 300,
) -> UpstreamRegistry:
    """Start an empty registry (and token server) in ``workdir``; wait until /v2/ answers.

    Distribution 2.8 allows 60 s of clock skew on ``exp`` and ``nbf``: a token is
    refused only ``token_expires_in + 60`` s after it was issued.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    token_server = None
    if auth == "token":
        token_server = _start_with_retries(
            lambda port: start_token_server(
                workdir / "token",
                port=port,
                users={username: password},
                service=SERVICE,
                anonymous_pull=anonymous_pull,
                expires_in=token_expires_in,
            )
        )
    try:
        auth_section = _auth_section(workdir, auth, username, password, token_server)
        process, port = _start_with_retries(
            lambda port: (_start_distribution(workdir, port, auth_section), port)
        )
    except BaseException:
        if token_server is not None:
            token_server.stop()
        raise
    with_credentials = auth != "none"
    return UpstreamRegistry(
        url=f"http://127.0.0.1:{port}",
        auth=auth,
        username=username if with_credentials else None,
        password=password if with_credentials else None,
        workdir=workdir,
        process=process,
        token_server=token_server,
    )


@contextlib.contextmanager
def running_registry(
    workdir: Path,
    image_set: ImageSet | None = None,
    *,
    auth: AuthMode = "none",
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    anonymous_pull: bool = True,
    token_expires_in: int = 300,
    refs: Iterable[str] | None = None,
) -> Iterator[UpstreamRegistry]:
    """``start_registry``, seed it with ``image_set`` (all or ``refs``), stop it on exit."""
    registry = start_registry(
        workdir,
        auth=auth,
        username=username,
        password=password,
        anonymous_pull=anonymous_pull,
        token_expires_in=token_expires_in,
    )
    try:
        if image_set is not None:
            registry.seed(image_set, refs)
        yield registry
    finally:
        registry.stop()


def _start_with_retries(start: Callable[[int], _T]) -> _T:
    """Call ``start(port)`` with fresh ports until one is not taken meanwhile."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return start(free_port())
        except ProcessError as exc:
            if "address already in use" not in str(exc) or attempt == START_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def serve_distribution(name: str, config_path: Path, workdir: Path) -> ManagedProcess:
    """Run ``docker-registry serve CONFIG``; logs go to workdir (access.log, registry.log)."""
    # REGISTRY_* variables override config.yml in distribution; keep the caller's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    return start_process(
        name,
        [registry_binary(), "serve", str(config_path)],
        log_path=workdir / "access.log",
        stderr_path=workdir / "registry.log",
        env=env,
    )


def _start_distribution(
    workdir: Path, port: int, auth_section: dict[str, object] | None
) -> ManagedProcess:
    config_path = workdir / "config.yml"
    config_path.write_text(_registry_config(workdir, port, auth_section))
    process = serve_distribution("docker-registry", config_path, workdir)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v2/", process, timeout=30)
    except ProcessError as exc:
        process.stop()
        errors = (workdir / "registry.log").read_text(errors="replace")[-2000:]
        raise ProcessError(f"{exc}\nregistry.log:\n{errors}") from None
    return process


def _registry_config(workdir: Path, port: int, auth_section: dict[str, object] | None) -> str:
    """config.yml as JSON, which is valid YAML and quotes paths safely."""
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "fields": {"service": "upstream"}},
        "storage": {
            "filesystem": {"rootdirectory": str(workdir / "data")},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"127.0.0.1:{port}", "secret": "registry-mirror-tests"},
    }
    if auth_section is not None:
        config["auth"] = auth_section
    return json.dumps(config, indent=2) + "\n"


def _auth_section(
    workdir: Path,
    auth: AuthMode,
    username: str,
    password: str,
    token_server: TokenServer | None,
) -> dict[str, object] | None:
    """The ``auth`` section of the registry config (None: no auth)."""
    if auth == "none":
        return None
    if auth == "basic":
        htpasswd = workdir / "htpasswd"
        htpasswd.write_text(_bcrypt_htpasswd_line(username, password))
        return {"htpasswd": {"realm": BASIC_REALM, "path": str(htpasswd)}}
    assert token_server is not None
    return {
        "token": {
            "realm": token_server.realm,
            "service": SERVICE,
            "issuer": token_server.issuer,
            "rootcertbundle": str(token_server.cert_path),
        }
    }


def _bcrypt_htpasswd_line(username: str, password: str) -> str:
    """``user:$2y$...`` via ``htpasswd -Bbn``: distribution accepts bcrypt entries only."""
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise ProcessError(f"htpasswd (apache2-utils) not found; {INSTALL_HINT}")
    result = subprocess.run(
        [htpasswd, "-Bbn", username, password], capture_output=True, text=True, check=True
    )
    return result.stdout.strip() + "\n"
