"""The mirror's token endpoint (``/auth/token``), as docker, containerd, podman and skopeo call it.

``GET /auth/token?service=S&scope=repository:NAME:pull[&scope=…][&account=U][&offline_token=true]``
    with optional ``Authorization: Basic``: anonymous callers get an anonymous
    token, callers with credentials one for their user. ``offline_token=true``
    (``docker login``) also gives a ``refresh_token``.
``POST /auth/token`` (form): ``grant_type=password`` with ``username`` and
    ``password`` (``access_type=offline`` for a refresh token), or
    ``grant_type=refresh_token`` with ``refresh_token``; ``scope`` holds the
    scopes separated by spaces.

Each requested ``repository:NAME:…pull…`` scope is resolved to an upstream and
a repository (``resolve``, the mirror's routing without ``?ns=``) and granted
when the rules allow the caller to pull it. Scopes the caller may not have
are left out of the token (as Docker Hub does): the registry request then
answers 401 or 403. Answers are ``Cache-Control: no-store``. Bad credentials
are 401 (counted, logged and slowed down like every login); a malformed
request is 400.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from urllib.parse import parse_qs

from aiohttp import web

from mirror.errors import MirrorError, TokenRequestInvalid
from mirror.security.challenge import (
    TOKEN_PATH,
    BasicCredentials,
    BearerCredentials,
    MalformedCredentials,
    parse_authorization,
)
from mirror.security.events import Grant
from mirror.security.gate import ClientGate, Pull
from mirror.security.rules import ANONYMOUS, Identity
from mirror.security.tokens import Scope, TokenAuthority, TokenInvalid, parse_scopes

_MAX_FORM = 16 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

#: a scope's repository name -> what it pulls from; a MirrorError for names it cannot place
Resolve = Callable[[str], Pull]


class TokenEndpoint:
    """Request handlers for ``GET`` and ``POST`` on the token path."""

    def __init__(self, gate: ClientGate, tokens: TokenAuthority, resolve: Resolve) -> None:
        self._gate = gate
        self._tokens = tokens
        self._resolve = resolve

    def register(self, app: web.Application, path: str = TOKEN_PATH) -> None:
        """Add the routes to ``app``."""
        app.router.add_get(path, self.get)
        app.router.add_post(path, self.post)

    async def get(self, request: web.Request) -> web.Response:
        """The docker registry token request: anonymous or with Basic credentials."""
        try:
            credentials = parse_authorization(request.headers.get("Authorization"))
        except MalformedCredentials as exc:
            self._gate.events.auth_failed("header", "malformed")
            raise self._gate.refuse(request, str(exc)) from None
        if isinstance(credentials, BearerCredentials):
            raise TokenRequestInvalid("the token endpoint takes Basic credentials, not a token")
        identity: Identity = ANONYMOUS
        grant: Grant = "anonymous"
        if isinstance(credentials, BasicCredentials):
            identity, grant = await self._gate.check_password(request, credentials), "basic"
        offline = request.query.get("offline_token", "").lower() == "true"
        return self._answer(identity, grant, request.query.getall("scope", []), offline)

    async def post(self, request: web.Request) -> web.Response:
        """The OAuth2 form: ``password`` and ``refresh_token`` grants."""
        form = await _read_form(request)
        grant_type = _one(form, "grant_type")
        scopes = form.get("scope", [])
        if grant_type == "password":
            user, password = _one(form, "username"), _one(form, "password")
            if not user:
                raise TokenRequestInvalid("grant_type=password needs username and password")
            credentials = BasicCredentials(user, password)
            identity = await self._gate.check_password(request, credentials)
            offline = _one(form, "access_type") == "offline"
            return self._answer(identity, "password", scopes, offline)
        if grant_type == "refresh_token":
            identity = self._refresh_identity(request, _one(form, "refresh_token"))
            return self._answer(identity, "refresh_token", scopes, False)
        raise TokenRequestInvalid("grant_type must be password or refresh_token")

    def _refresh_identity(self, request: web.Request, token: str) -> Identity:
        try:
            user, fingerprint = self._tokens.verify_refresh(token)
        except TokenInvalid as exc:
            self._gate.events.auth_failed("refresh_token", exc.reason)
            raise self._gate.refuse(request, str(exc), "invalid_token") from None
        users = self._gate.users
        if users is None or users.fingerprint(user) != fingerprint:
            # The user is gone or has a new password: the login is over.
            self._gate.events.auth_failed("refresh_token", "invalid_token")
            raise self._gate.refuse(request, "the login has ended: log in again", "invalid_token")
        return self._gate.rules.identity(user)

    def _granted(self, identity: Identity, scopes: list[Scope]) -> set[str]:
        granted = set()
        for scope in scopes:
            if scope.type != "repository" or "pull" not in scope.actions:
                continue
            try:
                pull = self._resolve(scope.name)
            except MirrorError:
                continue  # a name no configured upstream serves: nothing to grant
            if self._gate.rules.allows(identity, "pull", pull.upstream, pull.repository):
                granted.add(pull.grant)
        return granted

    def _answer(self, identity: Identity, grant: Grant, scopes: Iterable[str],
                offline: bool) -> web.Response:  # fmt: skip
        pulls = self._granted(identity, parse_scopes(scopes))
        issued = self._tokens.issue(identity.user or "", pulls)
        refresh = None
        users = self._gate.users
        if offline and identity.user is not None and users is not None:
            fingerprint = users.fingerprint(identity.user)
            if fingerprint is not None and self._tokens.refresh_enabled:
                refresh = self._tokens.issue_refresh(identity.user, fingerprint)
        self._gate.events.token_issued("anonymous" if identity.anonymous else grant)
        return web.json_response(issued.body(refresh), headers=_NO_STORE)


async def _read_form(request: web.Request) -> dict[str, list[str]]:
    """The url-encoded form of a POST, at most 16 KiB (the app's own body limit is smaller)."""
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise TokenRequestInvalid("expected an application/x-www-form-urlencoded form")
    body = b""
    while len(body) <= _MAX_FORM:
        chunk = await request.content.read(_MAX_FORM + 1 - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > _MAX_FORM:
        raise TokenRequestInvalid("form too large")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise TokenRequestInvalid("the form is not UTF-8 url-encoded text") from None


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name, [])
    return values[0] if values else ""
