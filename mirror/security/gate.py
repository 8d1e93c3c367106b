"""Client authentication and access rules as one aiohttp middleware.

The app says what a request is about with a ``classify`` function:

- :class:`Pull` (``upstream``, ``repository``): a ``/v2/<name>/…`` request,
  after routing; the rules decide, and a Bearer token must also grant that
  repository;
- :attr:`Area.BASE`: ``/v2/``, where clients learn how to authenticate: any
  valid credential passes, none gets the challenge (as Docker Hub does, or
  clients would never send credentials);
- :attr:`Area.ADMIN`: the admin API, for identities the rules give ``admin``
  (and the static ``admin.token``);
- :attr:`Area.UI`: the web UI, for any valid credential; its challenge is
  ``Basic`` whatever the mode, as browsers can answer no other (the pages
  list every upstream's repositories, so there is no anonymous view);
- ``None``: public (``/healthz``, ``/metrics``, the token endpoint).

Credentials: ``Basic`` (htpasswd) on any request; ``Bearer`` tokens issued by
:mod:`mirror.security.token_endpoint` when token auth is on. Answers: 401
``UNAUTHORIZED`` with a ``WWW-Authenticate`` challenge for no or bad
credentials (``error="invalid_token"`` for a refused token,
``error="insufficient_scope"`` for a token of another repository, so clients
fetch a new one); 403 ``DENIED`` for a known identity the rules refuse; 429
while failed logins from the address are slowed down. The caller goes into
``request[CALLER]`` for the rate limit and the access log. Credentials are
never logged; a failed login is logged with the user name and the address.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mirror.config_security import AuthConfig
from mirror.errors import AuthenticationRequired, Denied, TooManyRequests
from mirror.security.challenge import (
    BasicCredentials,
    BearerCredentials,
    Credentials,
    MalformedCredentials,
    basic_challenge,
    bearer_challenge,
    carries_bearer,
    parse_authorization,
    pull_scope,
    token_realm,
)
from mirror.security.events import Credential, FailureReason, SecurityEvents
from mirror.security.htpasswd import Htpasswd, Verdict
from mirror.security.limits import LoginThrottle, RateLimiter, address_key
from mirror.security.rules import ANONYMOUS, AccessRules, Decision, Identity
from mirror.security.tokens import AccessToken, TokenAuthority, TokenInvalid

log = logging.getLogger(__name__)


class Area(enum.Enum):
    """Requests that are not about one repository."""

    BASE = "base"
    ADMIN = "admin"
    UI = "ui"


@dataclass(frozen=True, slots=True)
class Pull:
    """A pull from ``repository`` of the configured upstream named ``upstream``."""

    upstream: str
    repository: str

    @property
    def grant(self) -> str:
        """How a token names it: ``docker.io/library/alpine``."""
        return f"{self.upstream}/{self.repository}"


Resource = Pull | Area | None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request, and the token it used (if any)."""

    identity: Identity
    token: AccessToken | None = None
    credentials_shown: bool = False

    @property
    def user(self) -> str | None:
        """The user name, None when anonymous."""
        return self.identity.user


CALLER = web.RequestKey("caller", Caller)
#: whether the caller was let in to the admin API (a caller let in to /v2 was not)
ADMIN_GRANTED = web.RequestKey("admin_granted", bool)


def printable(text: str, limit: int = 64) -> str:
    """A client-chosen string made safe for one log line."""
    return text[:limit].encode("unicode_escape").decode("ascii")


class ClientGate:
    """Authenticates callers and applies the access rules."""

    def __init__(
        self,
        auth: AuthConfig,
        *,
        users: Htpasswd | None,
        tokens: TokenAuthority | None,
        throttle: LoginThrottle,
        events: SecurityEvents,
        admin_token: str | None = None,
    ) -> None:
        """``users`` is the htpasswd file of ``auth.htpasswd``, ``tokens`` the authority of
        ``auth.token`` (None where not configured); ``admin_token`` the static ``admin.token``."""
        self.rules = AccessRules(auth)
        self.users = users
        self.tokens = tokens
        self.events = events
        self._token_config = auth.token
        self._unknown_anonymous = auth.unknown_users == "anonymous"
        self._throttle = throttle
        self._admin_token = admin_token

    def challenge(self, request: web.BaseRequest, scope: str | None = None,
                  error: str | None = None) -> str:  # fmt: skip
        """The ``WWW-Authenticate`` value for this mirror and request."""
        if self._token_config is None:
            return basic_challenge()
        realm = token_realm(self._token_config.realm, request.secure, request.host)
        return bearer_challenge(realm, self._token_config.service, scope, error)

    def refuse(self, request: web.BaseRequest, message: str,
               error: str | None = None) -> AuthenticationRequired:  # fmt: skip
        """A 401 with this mirror's challenge, to raise."""
        return AuthenticationRequired(message, self.challenge(request, None, error))

    async def check_password(self, request: web.BaseRequest, credentials: BasicCredentials,
                             credential: Credential = "password") -> Identity:  # fmt: skip
        """The identity behind a user name and password; 401 or 429 when refused."""
        if self._unknown_anonymous and (
            self.users is None or not self.users.has_user(credentials.user)
        ):
            # A login meant for someone else (dockerd sends its Docker Hub login to
            # mirrors): no password to check, so nothing to count or slow down.
            return ANONYMOUS
        if self.users is None:
            self._failed(request, credentials.user, credential, "no_users")
            raise self.refuse(request, "this mirror has no users")
        if self.users.known_good(credentials.user, credentials.password):
            return self.rules.identity(credentials.user)  # the common case: no bcrypt, no wait
        try:
            waited = await self._throttle.wait_turn(request.remote)
        except TooManyRequests:
            self.events.login_throttled("refused")
            raise
        if waited:
            self.events.login_throttled("delayed")
        verdict = await self.users.verify(credentials.user, credentials.password)
        if verdict is not Verdict.OK:
            self._throttle.failed(request.remote)
            reason: FailureReason = (
                "unknown_user" if verdict is Verdict.UNKNOWN_USER else "wrong_password"
            )
            self._failed(request, credentials.user, credential, reason)
            raise self.refuse(request, "incorrect username or password")
        return self.rules.identity(credentials.user)

    def _failed(self, request: web.BaseRequest, user: str, credential: Credential,
                reason: FailureReason) -> None:  # fmt: skip
        log.warning(
            "failed login: user %s from %s (%s, %s)",
            printable(user), request.remote or "-", credential, reason,
        )  # fmt: skip
        self.events.auth_failed(credential, reason)

    def check_token(self, request: web.BaseRequest, token: str) -> Caller:
        """The caller behind a Bearer token; 401 ``invalid_token`` when refused."""
        if self.tokens is None:
            self.events.auth_failed("token", "invalid_token")
            raise self.refuse(request, "this mirror issues no tokens: use Basic auth")
        try:
            verified = self.tokens.verify(token)
        except TokenInvalid as exc:
            self.events.auth_failed("token", exc.reason)
            raise self.refuse(request, str(exc), "invalid_token") from None
        return Caller(self.rules.identity(verified.subject or None), verified, True)

    async def identify(self, request: web.BaseRequest) -> Caller:
        """Who is calling, from the ``Authorization`` header."""
        try:
            credentials: Credentials | None = parse_authorization(
                request.headers.get("Authorization")
            )
        except MalformedCredentials as exc:
            self.events.auth_failed("header", "malformed")
            raise self.refuse(request, str(exc)) from None
        if credentials is None:
            return Caller(ANONYMOUS)
        if isinstance(credentials, BearerCredentials):
            return self.check_token(request, credentials.token)
        return Caller(await self.check_password(request, credentials), None, True)

    def authorize(self, request: web.BaseRequest, caller: Caller, resource: Pull | Area) -> None:
        """Raise 401 or 403 unless ``caller`` may have ``resource``."""
        if resource is Area.BASE:
            if not caller.credentials_shown:
                self._refused(request, "authentication required", None)
            return
        if resource is Area.ADMIN:
            self._decide(request, self.rules.decide(caller.identity, "admin"), None)
            return
        if resource is Area.UI:
            if not caller.credentials_shown:
                self.events.access_refused("challenge")
                raise AuthenticationRequired("log in to see the cache", basic_challenge())
            return
        assert isinstance(resource, Pull)
        scope = pull_scope(resource.upstream, resource.repository)
        decision = self.rules.decide(
            caller.identity, "pull", resource.upstream, resource.repository
        )
        self._decide(request, decision, scope)
        if caller.token is not None and resource.grant not in caller.token.pulls:
            self._refused(request, "the token does not grant this repository", scope,
                          "insufficient_scope")  # fmt: skip

    def _decide(self, request: web.BaseRequest, decision: Decision, scope: str | None) -> None:
        if decision is Decision.CHALLENGE:
            self._refused(request, "authentication required", scope)
        if decision is Decision.DENY:
            self.events.access_refused("denied")
            raise Denied("access to this resource is denied")

    def _refused(self, request: web.BaseRequest, message: str, scope: str | None,
                 error: str | None = None) -> None:  # fmt: skip
        self.events.access_refused("challenge")
        raise AuthenticationRequired(message, self.challenge(request, scope, error))

    def is_admin(self, caller: Caller) -> bool:
        """Whether the rules give ``caller`` the admin API (the web UI's actions too)."""
        return self.rules.decide(caller.identity, "admin") is Decision.ALLOW

    def middleware(self, classify: Callable[[web.Request], Resource]) -> Middleware:
        """The middleware; ``classify`` says what each request is about."""

        @web.middleware
        async def client_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = classify(request)
            if resource is None:
                return await handler(request)
            if resource in (Area.ADMIN, Area.UI) and carries_bearer(
                request.headers.get("Authorization"), self._admin_token
            ):
                return await handler(request)  # the static admin.token, as before
            caller = await self.identify(request)
            self.authorize(request, caller, resource)
            request[CALLER] = caller
            request[ADMIN_GRANTED] = resource is Area.ADMIN
            return await handler(request)

        return client_auth


def rate_limit_middleware(
    limiter: RateLimiter, events: SecurityEvents, limited: Callable[[web.Request], bool]
) -> Middleware:
    """A 429 ``TOOMANYREQUESTS`` for clients over their rate (after :meth:`ClientGate.middleware`,
    so a known user is counted by name; others by address). ``limited`` picks the requests
    that count (the registry API and the token endpoint, not health probes)."""

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if limited(request):
            caller = request.get(CALLER)
            user = caller.user if caller is not None else None
            try:
                limiter.check(f"user:{user}" if user is not None else address_key(request.remote))
            except TooManyRequests:
                events.rate_limited("user" if user is not None else "address")
                raise
        return await handler(request)

    return rate_limit
