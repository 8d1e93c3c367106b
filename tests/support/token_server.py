"""A Docker Hub style token server for the token-auth upstream registry.

Run it as a subprocess, so it serves every test whatever event loop the test uses::

    python -m tests.support.token_server --listen 127.0.0.1:PORT \\
        --key token.key --cert token.crt --issuer ISSUER --service SERVICE \\
        --user testuser:testpass [--anonymous-pull yes|no] [--expires-in N] [--log FILE]

Endpoints:

* ``GET /token?service=&scope=&account=[&offline_token=true]`` with optional
  Basic credentials (wrong ones get 401);
* ``POST /token`` with a form: ``grant_type=password`` (``username``,
  ``password``) or ``grant_type=refresh_token`` (``refresh_token``), plus
  ``service``, ``scope`` (space separated) and ``access_type=offline`` for a
  refresh token.

Answers ``{token, access_token, expires_in, issued_at}``.  Tokens are RS256 JWTs
whose header carries the signing certificate (``x5c``); the registry checks it
against its ``auth.token.rootcertbundle``.  Known users get every action they
ask for, anonymous callers ``pull`` on repositories (or nothing with
``--anonymous-pull no``).  Every request is appended to ``--log`` as one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import secrets
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from multidict import MultiMapping

from tests.support.processes import ManagedProcess, start_process, wait_for_http

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ISSUER = "registry-mirror-test-issuer"
DEFAULT_SERVICE = "registry-testbed"


# ---------------------------------------------------------------- keys and JWTs


def make_signing_cert(directory: Path) -> tuple[Path, Path]:
    """Write a fresh RSA key and self-signed certificate; return (key path, cert path).

    The same certificate serves as the registry's ``rootcertbundle``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry-mirror test token signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "token.key", directory / "token.crt"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenSigner:
    """Signs claims as an RS256 JWT carrying its certificate in ``x5c``."""

    def __init__(self, key_path: Path, cert_path: Path) -> None:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError(f"{key_path} is not an RSA key")
        self._key = key
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        # x5c holds standard (not URL-safe) base64 of the DER certificate.
        der = cert.public_bytes(serialization.Encoding.DER)
        self._header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}

    def sign(self, claims: Mapping[str, Any]) -> str:
        """Return the compact JWT for ``claims``."""
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode())
            for part in (self._header, claims)
        )
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


def decode_jwt_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (for test assertions)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# ---------------------------------------------------------------- access rules


@dataclass(frozen=True)
class Scope:
    """One ``type:name:actions`` scope, e.g. ``repository:library/tiny:pull,push``."""

    type: str
    name: str
    actions: tuple[str, ...]

    def as_claim(self) -> dict[str, Any]:
        """The ``access`` claim entry distribution expects."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Parse repeated and/or space-separated scope strings; malformed ones are skipped."""
    scopes = []
    for value in values:
        for item in value.split():
            kind, _, rest = item.partition(":")
            # The name may itself contain ':' (e.g. a host:port prefix); actions follow the last.
            name, _, actions = rest.rpartition(":")
            if kind and name:
                scopes.append(Scope(kind, name, tuple(a for a in actions.split(",") if a)))
    return scopes


@dataclass
class TokenPolicy:
    """Who may do what, and how long tokens live."""

    issuer: str
    service: str
    users: dict[str, str]
    anonymous_pull: bool = True
    expires_in: int = 300
    refresh_tokens: dict[str, str] = field(default_factory=dict)

    def grant(self, user: str | None, requested: list[Scope]) -> list[Scope]:
        """Users get every action asked for; anonymous callers ``pull`` at most."""
        if user is not None:
            return [s for s in requested if s.actions]
        if not self.anonymous_pull:
            return []
        granted = [
            Scope(s.type, s.name, ("pull",))
            for s in requested
            if s.type == "repository" and "pull" in s.actions
        ]
        return granted

    def check_password(self, username: str, password: str) -> bool:
        """True for a known user with the right password."""
        expected = self.users.get(username)
        return expected is not None and secrets.compare_digest(expected, password)


# ---------------------------------------------------------------- HTTP server


class TokenService:
    """The aiohttp handlers, with the signer, policy and request log they share."""

    def __init__(self, signer: TokenSigner, policy: TokenPolicy, log: TextIO | None) -> None:
        self.signer = signer
        self.policy = policy
        self.log = log

    async def handle_get(self, request: web.Request) -> web.Response:
        """``GET /token``: anonymous or Basic-authenticated token request."""
        record = self._base_record(request)
        user: str | None = None
        credentials = _basic_credentials(request.headers.get("Authorization", ""))
        if credentials is not None:
            if not self.policy.check_password(*credentials):
                return self._deny(record, 401, "incorrect username or password", credentials[0])
            user = credentials[0]
        query = request.query
        offline = query.get("offline_token", "") == "true"
        record["account"] = user
        account = query.get("account") or user or ""
        return self._issue(record, query, user, account, offline)

    async def handle_post(self, request: web.Request) -> web.Response:
        """``POST /token``: OAuth2 password or refresh-token grant."""
        record = self._base_record(request)
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        grant_type = fields.get("grant_type", "")
        record["grant_type"] = grant_type
        if grant_type == "password":
            username = fields.get("username", "")
            if not self.policy.check_password(username, fields.get("password", "")):
                return self._deny(record, 401, "invalid_grant", username)
            user = username
        elif grant_type == "refresh_token":
            found = self.policy.refresh_tokens.get(fields.get("refresh_token", ""))
            if found is None:
                return self._deny(record, 401, "invalid_grant", None)
            user = found
        else:
            return self._deny(record, 400, "unsupported_grant_type", None)
        record["account"] = user
        offline = fields.get("access_type") == "offline"
        # Docker sends the scopes of a POST space-separated in one field.
        return self._issue(record, form, user, user, offline)

    async def handle_health(self, request: web.Request) -> web.Response:
        """Readiness probe; not logged, so the log holds token requests only."""
        return web.Response(text="ok")

    async def handle_other(self, request: web.Request) -> web.Response:
        """Anything but /token: 404, logged like the rest."""
        record = self._base_record(request)
        return self._deny(record, 404, "not found", None)

    def _issue(
        self,
        record: dict[str, Any],
        params: MultiMapping[Any],
        user: str | None,
        account: str,
        offline: bool,
    ) -> web.Response:
        requested = parse_scopes(str(v) for v in params.getall("scope", []))
        granted = self.policy.grant(user, requested)
        now = int(time.time())
        claims = {
            "iss": self.policy.issuer,
            "sub": account,
            "aud": str(params.get("service") or self.policy.service),
            "exp": now + self.policy.expires_in,
            "nbf": now - 5,  # a little slack for clock reads on both sides
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [s.as_claim() for s in granted],
        }
        token = self.signer.sign(claims)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.UTC)
        body: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.policy.expires_in,
            "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if user is not None and offline:
            refresh = secrets.token_hex(16)
            self.policy.refresh_tokens[refresh] = user
            body["refresh_token"] = refresh
        record.update(
            status=200,
            requested=[s.as_claim() for s in requested],
            granted=[s.as_claim() for s in granted],
            refresh_token=("refresh_token" in body),
        )
        self._write(record)
        return web.json_response(body)

    def _deny(
        self, record: dict[str, Any], status: int, message: str, account: str | None
    ) -> web.Response:
        record.update(status=status, account=account, error=message)
        self._write(record)
        headers = {"WWW-Authenticate": 'Basic realm="token-server"'} if status == 401 else {}
        return web.json_response({"details": message}, status=status, headers=headers)

    def _base_record(self, request: web.Request) -> dict[str, Any]:
        scheme = request.headers.get("Authorization", "").partition(" ")[0]
        return {
            "time": round(time.time(), 3),
            "method": request.method,
            "path": request.path,
            "query": request.query_string,
            "authorization": scheme or None,
            "user_agent": request.headers.get("User-Agent"),
        }

    def _write(self, record: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()  # tests read the log while the server runs


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) from a Basic Authorization header; malformed ones give ("", "")."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    return (user, password) if sep else ("", "")


def create_app(service: TokenService) -> web.Application:
    """The aiohttp application serving ``/token``."""
    app = web.Application()
    app.router.add_get("/token", service.handle_get)
    app.router.add_post("/token", service.handle_post)
    app.router.add_get("/healthz", service.handle_health)
    app.router.add_route("*", "/{tail:.*}", service.handle_other)
    return app


def read_token_log(path: Path) -> list[dict[str, Any]]:
    """Every logged token request, oldest first."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- running it


@dataclass
class TokenServer:
    """A token server running as a subprocess."""

    process: ManagedProcess
    url: str
    realm: str
    issuer: str
    service: str
    cert_path: Path
    log_path: Path

    def requests(self) -> list[dict[str, Any]]:
        """Every token request logged so far."""
        return read_token_log(self.log_path)

    def stop(self) -> None:
        """Stop the server by its PID."""
        self.process.stop()


def start_token_server(
    workdir: Path,
    *,
    port: int,
    users: Mapping[str, str],
    issuer: str = DEFAULT_ISSUER,
    service: str = DEFAULT_SERVICE,
    anonymous_pull: bool = True,
    expires_in: int = 300,
) -> TokenServer:
    """Make a signing certificate in ``workdir``, start the server and wait until it answers."""
    key_path, cert_path = make_signing_cert(workdir)
    log_path = workdir / "tokens.jsonl"
    argv = [
        sys.executable,
        "-m",
        "tests.support.token_server",
        f"--listen=127.0.0.1:{port}",
        f"--key={key_path}",
        f"--cert={cert_path}",
        f"--issuer={issuer}",
        f"--service={service}",
        f"--anonymous-pull={'yes' if anonymous_pull else 'no'}",
        f"--expires-in={expires_in}",
        f"--log={log_path}",
        *(f"--user={name}:{password}" for name, password in users.items()),
    ]
    process = start_process(
        "token server", argv, log_path=workdir / "token-server.log", cwd=PROJECT_ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
    except BaseException:
        process.stop()
        raise
    return TokenServer(process, url, f"{url}/token", issuer, service, cert_path, log_path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:5101", help="HOST:PORT")
    parser.add_argument("--key", type=Path, required=True, help="PEM RSA private key")
    parser.add_argument("--cert", type=Path, required=True, help="PEM certificate of the key")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER)
    parser.add_argument("--service", default=DEFAULT_SERVICE)
    parser.add_argument("--user", action="append", default=[], help="USER:PASSWORD, repeatable")
    parser.add_argument("--anonymous-pull", choices=["yes", "no"], default="yes")
    parser.add_argument("--expires-in", type=int, default=300, help="token lifetime, seconds")
    parser.add_argument("--log", type=Path, help="append one JSON line per request here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: serve until SIGTERM or SIGINT."""
    args = _parse_args(argv)
    users = dict(u.split(":", 1) for u in args.user)
    policy = TokenPolicy(
        args.issuer, args.service, users, args.anonymous_pull == "yes", args.expires_in
    )
    host, _, port = args.listen.rpartition(":")
    log = args.log.open("a") if args.log else None
    try:
        service = TokenService(TokenSigner(args.key, args.cert), policy, log)
        print(f"token server on http://{args.listen}/token", flush=True)
        web.run_app(create_app(service), host=host, port=int(port), print=None, access_log=None)
    finally:
        if log is not None:
            log.close()


if __name__ == "__main__":
    main()
